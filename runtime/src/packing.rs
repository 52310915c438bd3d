//! Bit layouts of packed bipolar tensors.
//!
//! A bipolar value is one bit: 1 for +1, 0 for -1. Bits are packed into little-endian 64-bit
//! words along the reduction axis, bit `i % 64` of word `i / 64` holding element `i`; the bits
//! of the last word past the end are 0, in activations and weights alike, so that they never
//! differ and never count in `popcount(a ^ w)`.
//!
//! - Activations are channels-last: a `(1, C, H, W)` tensor is `H * W` pixels of
//!   [`words`]`(C)` words each, a `(1, K)` tensor one row of `words(K)` words.
//! - Convolution weights `(M, C, KH, KW)` are `M` filters of `KH * KW` taps of `words(C)`
//!   words each, so that a tap's words line up with a pixel's.
//! - Matrix weights `(K, M)` are `M` columns of `words(K)` words each.

/// Bits in a packed word.
pub const WORD_BITS: usize = 64;

/// Words holding `bits` packed bits.
pub fn words(bits: usize) -> usize {
    bits.div_ceil(WORD_BITS)
}

/// Packs a run of bipolar values (`>= 0` is +1) into [`words`]`(values.len())` words.
pub fn pack_bipolar(values: impl ExactSizeIterator<Item = f32>) -> Vec<u64> {
    let mut packed = vec![0u64; words(values.len())];
    for (i, v) in values.enumerate() {
        if v >= 0.0 {
            packed[i / WORD_BITS] |= 1 << (i % WORD_BITS);
        }
    }
    packed
}

/// Packs convolution weights `(M, C, KH, KW)` (any number of kernel axes: `taps` is their
/// product) into `M * taps * words(C)` words, filter by filter, tap by tap.
pub fn pack_conv_weights(w: &[f32], m: usize, c: usize, taps: usize) -> Vec<u64> {
    let mut packed = Vec::with_capacity(m * taps * words(c));
    for filter in w.chunks_exact(c * taps).take(m) {
        for tap in 0..taps {
            packed.extend(pack_bipolar((0..c).map(|ch| filter[ch * taps + tap])));
        }
    }
    packed
}

/// Packs matrix weights `(K, M)` (row-major) into `M * words(K)` words, column by column.
pub fn pack_matrix_weights(w: &[f32], k: usize, m: usize) -> Vec<u64> {
    let mut packed = Vec::with_capacity(m * words(k));
    for col in 0..m {
        packed.extend(pack_bipolar((0..k).map(|row| w[row * m + col])));
    }
    packed
}

/// The bipolar values of `len` packed bits.
pub fn unpack_bipolar(packed: &[u64], len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            if packed[i / WORD_BITS] >> (i % WORD_BITS) & 1 == 1 {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_padding() {
        let v: Vec<f32> = (0..70)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect();
        let p = pack_bipolar(v.iter().copied());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0] & 0b1111, 0b1001);
        // Bits 6..64 of the last word are padding, always 0.
        assert_eq!(p[1] >> 6, 0);
        assert_eq!(unpack_bipolar(&p, 70), v);
    }

    #[test]
    fn conv_weights_are_tap_major_within_a_filter() {
        // One filter, 2 channels, 2 taps: w[c][tap].
        let w = [1.0, -1.0, -1.0, 1.0];
        // Tap 0 holds channels (1, -1) = 0b01; tap 1 holds (-1, 1) = 0b10.
        assert_eq!(pack_conv_weights(&w, 1, 2, 2), vec![0b01, 0b10]);
    }

    #[test]
    fn matrix_weights_are_column_major() {
        // (K=2, M=2): columns (1, 1) and (-1, 1).
        let w = [1.0, -1.0, 1.0, 1.0];
        assert_eq!(pack_matrix_weights(&w, 2, 2), vec![0b11, 0b10]);
    }
}
