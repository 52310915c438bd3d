//! Bit layouts of packed bipolar tensors.
//!
//! A bipolar value is one bit: 1 for +1, 0 for -1. Bits are packed into little-endian 64-bit
//! words along the reduction axis, bit `i % 64` of word `i / 64` holding element `i`; the bits
//! of the last word past the end are 0, in activations and weights alike, so that they never
//! differ and never count in `popcount(a ^ w)`.
//!
//! - Activations are channels-last: a `(1, C, H, W)` tensor is `H * W` pixels of
//!   [`words`]`(C)` words each, a `(1, K)` tensor one row of `words(K)` words.
//! - Low-bit integers (1-4 bits, the activations of bit-serial layers) are bit planes,
//!   channels-last: per pixel, the `words(C)` words of plane 0 (bit 0 of every channel's
//!   two's complement integer), then of plane 1, and so on; the top plane of a signed type
//!   counts negatively.
//! - Weights are packed at compile time, with this module's functions, by `bnnc_ir::packing`
//!   (convolution filters tap by tap, a tap's channels in words as a pixel's are; matrix
//!   columns of `words(K)` words). This module is the one definition of the layout.

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
}
