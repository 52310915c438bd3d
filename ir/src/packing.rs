//! Bipolar weights packed into 64-bit words, as the lowered XNOR ops hold them.
//!
//! The bit layout is the runtime's, defined once in [`bnnc_runtime::packing`]: a bipolar
//! value is one bit, 1 for +1 and 0 for -1, bit `i % 64` of word `i / 64` holding element `i`
//! of a run, the bits past the end of the last word 0. Generated code packs activations in
//! that layout, so a weight word and an activation word line up for `popcount(a ^ w)`.
//!
//! - Convolution weights `(M, C, K...)` are `(M, K..., words(C))`: filter by filter, tap by
//!   tap, a tap's channels in words as a pixel's are.
//! - Matrix weights `(K, M)` are `(M, words(K))`: column by column.
//!
//! The words are stored as the bits of `i64` tensor elements.

use bnnc_runtime::packing::{pack_bipolar, unpack_bipolar};
pub use bnnc_runtime::packing::{words, WORD_BITS};

use crate::tensor::Tensor;

/// Packs a run of `len` bipolar values (`>= 0` is +1) onto `out`, [`words`]`(len)` words.
fn pack_run(values: impl ExactSizeIterator<Item = f32>, out: &mut Vec<i64>) {
    out.extend(pack_bipolar(values).into_iter().map(|w| w as i64));
}

/// The `len` bipolar values of a run of words.
fn unpack_run(run: &[i64], len: usize) -> Vec<f32> {
    let words: Vec<u64> = run.iter().map(|&w| w as u64).collect();
    unpack_bipolar(&words, len)
}

/// Convolution weights `(M, C, K...)` packed as `(M, K..., words(C))`.
pub fn pack_conv_weights(w: &Tensor) -> Option<Tensor> {
    let shape = w.shape();
    let (&m, &c) = (shape.first()?, shape.get(1)?);
    let taps: usize = shape[2..].iter().product();
    let values = w.to_f32_vec();
    let mut packed = Vec::with_capacity(m * taps * words(c));
    for filter in values.chunks_exact((c * taps).max(1)).take(m) {
        for tap in 0..taps {
            pack_run((0..c).map(|ch| filter[ch * taps + tap]), &mut packed);
        }
    }
    let mut packed_shape = vec![m];
    packed_shape.extend_from_slice(&shape[2..]);
    packed_shape.push(words(c));
    Tensor::try_i64(packed_shape, packed)
}

/// The `(M, C, K...)` bipolar values of convolution weights packed for `c` channels.
pub fn unpack_conv_weights(packed: &Tensor, c: usize) -> Vec<f32> {
    let shape = packed.shape();
    let m = shape.first().copied().unwrap_or(0);
    let taps: usize = shape[1..shape.len().saturating_sub(1)].iter().product();
    let words_c = words(c);
    let data = packed.to_i64_vec();
    let mut out = vec![0.0; m * c * taps];
    for f in 0..m {
        for tap in 0..taps {
            let run = unpack_run(&data[(f * taps + tap) * words_c..][..words_c], c);
            for (ch, v) in run.into_iter().enumerate() {
                out[(f * c + ch) * taps + tap] = v;
            }
        }
    }
    out
}

/// Matrix weights `(K, M)` packed as `(M, words(K))`.
pub fn pack_matrix_weights(w: &Tensor) -> Option<Tensor> {
    let &[k, m] = w.shape() else {
        return None;
    };
    let values = w.to_f32_vec();
    let mut packed = Vec::with_capacity(m * words(k));
    for col in 0..m {
        pack_run((0..k).map(|row| values[row * m + col]), &mut packed);
    }
    Tensor::try_i64(vec![m, words(k)], packed)
}

/// The `(K, M)` bipolar values of matrix weights packed for `k` rows.
pub fn unpack_matrix_weights(packed: &Tensor, k: usize) -> Vec<f32> {
    let m = packed.shape().first().copied().unwrap_or(0);
    let words_k = words(k);
    let data = packed.to_i64_vec();
    let mut out = vec![0.0; k * m];
    for col in 0..m {
        let run = unpack_run(&data[col * words_k..][..words_k], k);
        for (row, v) in run.into_iter().enumerate() {
            out[row * m + col] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_weights_round_trip_with_a_partial_word() {
        // 2 filters of 70 channels and 2 taps.
        let values: Vec<f32> = (0..2 * 70 * 2)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let w = Tensor::f32(vec![2, 70, 1, 2], values.clone());
        let packed = pack_conv_weights(&w).unwrap();
        assert_eq!(packed.shape(), &[2, 1, 2, 2]);
        // Bits past channel 70 in each tap's last word are 0.
        assert!(packed
            .to_i64_vec()
            .iter()
            .skip(1)
            .step_by(2)
            .all(|&w| w >> 6 == 0));
        assert_eq!(unpack_conv_weights(&packed, 70), values);
    }

    #[test]
    fn matrix_weights_round_trip() {
        let values: Vec<f32> = (0..65 * 3)
            .map(|i| if i % 5 < 2 { 1.0 } else { -1.0 })
            .collect();
        let w = Tensor::f32(vec![65, 3], values.clone());
        let packed = pack_matrix_weights(&w).unwrap();
        assert_eq!(packed.shape(), &[3, 2]);
        assert_eq!(unpack_matrix_weights(&packed, 65), values);
    }
}
