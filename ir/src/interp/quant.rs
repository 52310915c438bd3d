//! Quantizers: QONNX Quant, BipolarQuant and Trunc (as `qonnx.custom_op.general` computes them
//! in numpy float32) and ONNX QuantizeLinear / DequantizeLinear (as onnxruntime does).

use super::strided::{expand, Expanded};
use super::{f32_result, floats, numel, single};
use crate::op::{QuantAttrs, TruncAttrs};
use crate::tensor::Tensor;
use crate::types::IntType;

/// qonnx's `min_int` and `max_int` as float32 (`2^31 - 1` rounds to `2^31`, as numpy's
/// `astype(float32)` does).
/// The integer range of a QONNX Quant (or Trunc) of `bits` bits (1 to 64, which callers
/// check), as f32 bounds; shared with the native backend's quantizer.
pub fn quant_range(signed: bool, narrow: bool, bits: u32) -> (f32, f32) {
    let b = i64::from(bits);
    let (min, max) = match (signed, narrow) {
        (true, false) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
        (true, true) => (-(1i64 << (b - 1)) + 1, (1i64 << (b - 1)) - 1),
        (false, false) => (0, (1i64 << b) - 1),
        (false, true) => (0, (1i64 << b) - 2),
    };
    (min as f32, max as f32)
}

/// `np.where(y > max, max, y)` then `np.where(y < min, min, y)`: NaN passes through.
fn clamp(y: f32, min: f32, max: f32) -> f32 {
    let y = if y > max { max } else { y };
    if y < min {
        min
    } else {
        y
    }
}

/// A bit width operand: one integer in 1..=64 (Quant further limits it to 32).
fn bit_width(t: &Tensor, what: &str, max: f32) -> Result<u32, String> {
    let b = single(t, what)?;
    if b.fract() != 0.0 || !(1.0..=max).contains(&b) {
        return Err(format!("{what} {b} is not an integer in 1..={max}"));
    }
    Ok(b as u32)
}

/// QONNX Quant: `y = x / scale + zeropt`, then either the bipolar special case (signed 1-bit:
/// `y >= 0 ? 1 : -1`) or clamp to the integer range and round (clamping first, as qonnx does),
/// then `(y - zeropt) * scale`.
pub(super) fn quant(attrs: &QuantAttrs, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let (scale, zeropt) = (floats(x[1]), floats(x[2]));
    let scale = expand(&scale, x[1].shape(), out)?;
    let zeropt = expand(&zeropt, x[2].shape(), out)?;
    let bits = bit_width(x[3], "bit width", 32.0)?;
    let bipolar = bits == 1 && attrs.signed;
    let (min, max) = quant_range(attrs.signed, attrs.narrow, bits);
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (s, z) = (scale.at(i), zeropt.at(i));
            let y = v / s + z;
            let q = if bipolar {
                // NaN >= 0 is false: -1, as np.where gives.
                if y >= 0.0 {
                    1.0
                } else {
                    -1.0
                }
            } else {
                attrs.rounding.apply(clamp(y, min, max))
            };
            (q - z) * s
        })
        .collect();
    f32_result(out, y)
}

/// QONNX BipolarQuant: `(x >= 0 ? 1 : -1) * scale`; x = 0 gives +1 and NaN gives -1.
pub(super) fn bipolar_quant(x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let scale = floats(x[1]);
    let scale = expand(&scale, x[1].shape(), out)?;
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &v)| if v >= 0.0 { 1.0 } else { -1.0 } * scale.at(i))
        .collect();
    f32_result(out, y)
}

/// QONNX Trunc. Operands: x, scale, zero point, input bit width, output bit width, and in v2
/// the output scale.
///
/// v1: `y = round_half_even(x / scale + zp) / 2^(in_bw - out_bw)`, rounded with the mode, then
/// `(y - zp) * scale`.
/// v2 (qonnx's opset 2 `trunc`): the shift is `2^round(log2(out_scale / scale))`, the result is
/// clamped to the output range (signed, narrow, out_bw) before rounding, and rescaled as
/// `(y - zp / shift) * out_scale`; the input bit width is not used.
pub(super) fn trunc(attrs: &TruncAttrs, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let params: Vec<_> = x[1..].iter().map(|t| floats(t)).collect();
    let expanded = params
        .iter()
        .zip(&x[1..])
        .map(|(p, t)| expand(p, t.shape(), out))
        .collect::<Result<Vec<Expanded<'_>>, String>>()?;
    let [scale, zeropt, in_bits, out_bits, rest @ ..] = &expanded[..] else {
        return Err(format!("expects at least 5 operands, got {}", x.len()));
    };
    let mut y = Vec::with_capacity(data.len());
    if attrs.v2 {
        let [out_scale] = rest else {
            return Err("Trunc v2 expects an output scale operand".into());
        };
        let bits = bit_width(x[4], "output bit width", 64.0)?;
        let (min, max) = quant_range(attrs.signed, attrs.narrow, bits);
        for (i, &v) in data.iter().enumerate() {
            let (s, z, os) = (scale.at(i), zeropt.at(i), out_scale.at(i));
            let r = (v / s + z).round_ties_even();
            let shift = 2f32.powf((os / s).log2().round_ties_even());
            let t = attrs.rounding.apply(clamp(r / shift, min, max));
            y.push((t - z / shift) * os);
        }
    } else {
        for (i, &v) in data.iter().enumerate() {
            let (s, z) = (scale.at(i), zeropt.at(i));
            let r = (v / s + z).round_ties_even();
            // numpy's `2.0 ** (in_bw - out_bw)` in float32.
            let shift = 2f32.powf(in_bits.at(i) - out_bits.at(i));
            let t = attrs.rounding.apply(r / shift);
            y.push((t - z) * s);
        }
    }
    f32_result(out, y)
}

/// Scale and zero point of QuantizeLinear / DequantizeLinear: one value, or one per index
/// along `axis`. Returns a function from element index to parameter index.
fn param_index(x_shape: &[usize], axis: usize, len: usize) -> impl Fn(usize) -> usize {
    let per_axis = len != 1;
    let inner = if per_axis {
        numel(x_shape.get(axis + 1..).unwrap_or(&[]))
    } else {
        1
    };
    move |i| {
        if per_axis && inner > 0 {
            (i / inner) % len
        } else {
            0
        }
    }
}

/// ONNX QuantizeLinear: `clamp(round_half_even(x / scale) + zp, out.min, out.max)`, as
/// onnxruntime's MLAS computes it (a division, not a multiplication by the reciprocal). NaN
/// saturates to the minimum.
pub(super) fn quantize_linear(
    axis: usize,
    int: IntType,
    x: &[&Tensor],
    out: &[usize],
) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let scale = floats(x[1]);
    let zeropt = x.get(2).map(|t| floats(t));
    let zp_at = |j: usize| zeropt.as_ref().map_or(0.0, |z| z[j]);
    let index = param_index(x[0].shape(), axis, scale.len());
    let (min, max) = (int.min() as f32, int.max() as f32);
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = index(i);
            let q = (v / scale[j]).round_ties_even() + zp_at(j);
            if q.is_nan() {
                min
            } else {
                q.clamp(min, max)
            }
        })
        .collect();
    f32_result(out, y)
}

/// ONNX DequantizeLinear: `(q - zp) * scale` in float32.
pub(super) fn dequantize_linear(
    axis: usize,
    x: &[&Tensor],
    out: &[usize],
) -> Result<Tensor, String> {
    let data = floats(x[0]);
    let scale = floats(x[1]);
    let zeropt = x.get(2).map(|t| floats(t));
    let zp_at = |j: usize| zeropt.as_ref().map_or(0.0, |z| z[j]);
    let index = param_index(x[0].shape(), axis, scale.len());
    let y = data
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let j = index(i);
            (q - zp_at(j)) * scale[j]
        })
        .collect();
    f32_result(out, y)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::interp::eval;
    use crate::op::{Op, RoundingMode};

    fn quant_op(signed: bool, narrow: bool, rounding: RoundingMode) -> Op {
        Op::Quant(QuantAttrs {
            signed,
            narrow,
            rounding,
        })
    }

    /// Quant of `x` (1-D) with a scalar scale, zero point and bit width.
    fn quant1(op: &Op, x: &[f32], scale: f32, zp: f32, bits: f32) -> Vec<f32> {
        let x = Tensor::f32(vec![x.len()], x.to_vec());
        let (s, z, b) = (
            Tensor::scalar(scale),
            Tensor::scalar(zp),
            Tensor::scalar(bits),
        );
        let out = eval(op, &[&x, &s, &z, &b]).unwrap();
        out[0].as_f32().unwrap().to_vec()
    }

    #[test]
    fn rounding_modes_on_halves() {
        let xs = [-2.5f32, -1.5, -0.5, 0.5, 1.5, 2.5, 0.3, -0.7];
        let cases = [
            (
                RoundingMode::HalfEven,
                [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 0.0, -1.0],
            ),
            (
                RoundingMode::Ceil,
                [-2.0, -1.0, -0.0, 1.0, 2.0, 3.0, 1.0, -0.0],
            ),
            (
                RoundingMode::Floor,
                [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 0.0, -1.0],
            ),
            (
                RoundingMode::Up,
                [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 1.0, -1.0],
            ),
            (
                RoundingMode::Down,
                [-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 0.0, -0.0],
            ),
            (
                RoundingMode::HalfUp,
                [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 0.0, -1.0],
            ),
            (
                RoundingMode::HalfDown,
                [-2.0, -1.0, -0.0, 0.0, 1.0, 2.0, 0.0, -1.0],
            ),
        ];
        for (mode, want) in cases {
            let got: Vec<f32> = xs.iter().map(|&x| mode.apply(x)).collect();
            assert_eq!(got, want, "{mode:?}");
            // Through Quant with scale 1 (8 bits: no clamping) the same.
            assert_eq!(
                quant1(&quant_op(true, false, mode), &xs, 1.0, 0.0, 8.0),
                want,
                "{mode:?}"
            );
        }
        assert!(RoundingMode::HalfUp.apply(f32::NAN).is_nan());
    }

    #[test]
    fn quant_ranges_and_narrow() {
        let xs = [-300.0f32, -128.0, -127.6, 127.4, 200.0];
        assert_eq!(
            quant1(
                &quant_op(true, false, RoundingMode::HalfEven),
                &xs,
                1.0,
                0.0,
                8.0
            ),
            [-128.0, -128.0, -128.0, 127.0, 127.0]
        );
        assert_eq!(
            quant1(
                &quant_op(true, true, RoundingMode::HalfEven),
                &xs,
                1.0,
                0.0,
                8.0
            ),
            [-127.0, -127.0, -127.0, 127.0, 127.0]
        );
        assert_eq!(
            quant1(
                &quant_op(false, false, RoundingMode::HalfEven),
                &[-3.0, 2.4, 16.0],
                1.0,
                0.0,
                4.0
            ),
            [0.0, 2.0, 15.0]
        );
        assert_eq!(
            quant1(
                &quant_op(false, true, RoundingMode::HalfEven),
                &[-3.0, 2.4, 16.0],
                1.0,
                0.0,
                4.0
            ),
            [0.0, 2.0, 14.0]
        );
    }

    #[test]
    fn quant_clamps_then_rounds() {
        // qonnx clamps y = x / scale + zp to the range, then rounds. The bounds are integers,
        // so this equals rounding first for every number; what the order decides is that the
        // zero point is subtracted from a clamped value: 2-bit unsigned, zp 0.5, CEIL:
        // 3.2 + 0.5 = 3.7 -> 3 -> 2.5 and -0.9 + 0.5 = -0.4 -> 0 -> -0.5.
        let u = quant_op(false, false, RoundingMode::Ceil);
        assert_eq!(quant1(&u, &[3.2, -0.9], 1.0, 0.5, 2.0), [2.5, -0.5]);
        // 2 bits signed: [-2, 1] in units of 0.5.
        let q = quant_op(true, false, RoundingMode::Ceil);
        assert_eq!(
            quant1(&q, &[1.4, -2.3, 0.6], 0.5, 0.0, 2.0),
            [0.5, -1.0, 0.5]
        );
        // NaN passes both np.where comparisons and every rounding.
        assert!(quant1(&u, &[f32::NAN], 1.0, 0.0, 2.0)[0].is_nan());
    }

    #[test]
    fn signed_one_bit_quant_is_bipolar() {
        let q = quant_op(true, false, RoundingMode::HalfEven);
        assert_eq!(
            quant1(&q, &[-0.3, 0.0, 0.2, 5.0, f32::NAN], 0.5, 0.0, 1.0),
            [-0.5, 0.5, 0.5, 0.5, -0.5]
        );
    }

    #[test]
    fn per_channel_weight_scale() {
        // A conv weight (2, 1, 1, 2) with scale (2, 1, 1, 1), 4-bit signed.
        let w = Tensor::f32(vec![2, 1, 1, 2], vec![0.26, -0.9, 0.26, -0.9]);
        let s = Tensor::f32(vec![2, 1, 1, 1], vec![0.25, 0.125]);
        let (z, b) = (Tensor::scalar(0.0), Tensor::scalar(4.0));
        let out = eval(
            &quant_op(true, false, RoundingMode::HalfEven),
            &[&w, &s, &z, &b],
        )
        .unwrap();
        // 0.26 / 0.25 = 1.04 -> 1 -> 0.25; -0.9 / 0.25 = -3.6 -> -4 -> -1.0;
        // 0.26 / 0.125 = 2.08 -> 2 -> 0.25; -0.9 / 0.125 = -7.2 -> -7 -> -0.875.
        assert_eq!(out[0].as_f32().unwrap(), &[0.25, -1.0, 0.25, -0.875]);
    }

    #[test]
    fn bipolar_quant_zero_is_plus_one() {
        let x = Tensor::f32(vec![4], vec![0.0, -0.0, -1e-30, f32::NAN]);
        let out = eval(&Op::BipolarQuant, &[&x, &Tensor::scalar(2.0)]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[2.0, 2.0, -2.0, -2.0]);
    }

    #[test]
    fn trunc_v1_and_v2() {
        let attrs = TruncAttrs {
            rounding: RoundingMode::Floor,
            signed: true,
            narrow: false,
            v2: false,
        };
        let x = Tensor::f32(vec![4], vec![100.0, -100.0, 7.6, 255.0]);
        let (s, z) = (Tensor::scalar(1.0), Tensor::scalar(0.0));
        let (ib, ob) = (Tensor::scalar(8.0), Tensor::scalar(4.0));
        let out = eval(&Op::Trunc(attrs.clone()), &[&x, &s, &z, &ib, &ob]).unwrap();
        // round(x) / 16 floored: 6.25 -> 6, -6.25 -> -7, 8 / 16 -> 0, 255 / 16 -> 15.
        assert_eq!(out[0].as_f32().unwrap(), &[6.0, -7.0, 0.0, 15.0]);
        // v2 with out_scale 16: shift 16, clamp to 4-bit signed [-8, 7], rescale by 16.
        let v2 = TruncAttrs { v2: true, ..attrs };
        let os = Tensor::scalar(16.0);
        let out = eval(&Op::Trunc(v2), &[&x, &s, &z, &ib, &ob, &os]).unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[96.0, -112.0, 0.0, 112.0]);
    }

    #[test]
    fn quantize_dequantize_linear() {
        let x = Tensor::f32(vec![1, 2, 3], vec![0.0, 1.0, 2.5, -1.0, 300.0, -300.0]);
        let s = Tensor::f32(vec![2], vec![0.5, 1.0]);
        let z = Tensor::f32(vec![2], vec![1.0, 0.0]);
        let op = Op::QuantizeLinear {
            axis: 1,
            out: IntType::Signed(8),
        };
        let q = eval(&op, &[&x, &s, &z]).unwrap().remove(0);
        // Channel 0: x / 0.5 rounds half to even (5.0 -> 5) then + 1; channel 1 saturates.
        assert_eq!(q.as_f32().unwrap(), &[1.0, 3.0, 6.0, -1.0, 127.0, -128.0]);
        let d = eval(&Op::DequantizeLinear { axis: 1 }, &[&q, &s, &z]).unwrap();
        assert_eq!(
            d[0].as_f32().unwrap(),
            &[0.0, 1.0, 2.5, -1.0, 127.0, -128.0]
        );
        let u = Op::QuantizeLinear {
            axis: 0,
            out: IntType::Unsigned(8),
        };
        let half = Tensor::f32(vec![3], vec![0.5, 1.5, -3.0]);
        let q = eval(&u, &[&half, &Tensor::scalar(1.0)]).unwrap();
        assert_eq!(q[0].as_f32().unwrap(), &[0.0, 2.0, 0.0]);
    }

    proptest! {
        /// Quant's output is always `k * scale` for an integer k of the range.
        #[test]
        fn quant_output_on_the_grid(
            xs in proptest::collection::vec(-1000.0f32..1000.0, 1..32),
            scale in 0.001f32..10.0,
            bits in 2u32..=8,
            signed: bool,
            narrow: bool,
            mode in 0usize..7,
        ) {
            let modes = [
                RoundingMode::HalfEven, RoundingMode::Ceil, RoundingMode::Floor, RoundingMode::Up,
                RoundingMode::Down, RoundingMode::HalfUp, RoundingMode::HalfDown,
            ];
            let out = quant1(&quant_op(signed, narrow, modes[mode]), &xs, scale, 0.0, bits as f32);
            let (min, max) = quant_range(signed, narrow, bits);
            for y in out {
                // y = k * scale was computed in f32 from the integer k: dividing recovers it.
                let k = (y / scale).round();
                prop_assert!(k >= min && k <= max, "{y} = {k} * {scale} outside [{min}, {max}]");
                prop_assert_eq!(k * scale, y);
            }
        }
    }
}
