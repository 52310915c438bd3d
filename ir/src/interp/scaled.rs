//! Linear layers on scaled integers: the accumulator is exact, the value rounds once.
//!
//! A value typed `Scaled(int, s)` is `int * s` rounded once to f32, and a quantized layer
//! computes an integer accumulator that its scale multiplies (`semantics.md`, "Folding
//! BatchNorm"). So when both operands of a Conv, Gemm or MatMul are integers or scaled
//! integers, the interpreter sums the integers exactly and the value is `acc * S`, one
//! rounding, with `S = s_a * s_w[c]` in f32 as inference types it; a bias or Gemm's `C` joins
//! that value as it joins a float sum. This is what makes a Scaled type true, and what lets
//! integer thresholds reproduce such a layer exactly.
//!
//! onnxruntime sums the same float operands product by product, which agrees with this up to
//! float rounding, and exactly when every scale is a power of two: then each partial sum is
//! exact, and this module leaves those layers to the float kernels (the same result, without
//! converting the weights on every call).

use super::strided::expand;
use super::{compute, f32_result, floats, numel};
use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{is_power_of_two, ElemType, IntType, Scale, TensorType};

/// Accumulators beyond this many units are not all exact in f32.
const F32_EXACT_LIMIT: i128 = 1 << 24;

/// How a linear layer on scaled integers computes: the scales factored out of its sum.
#[derive(Clone, Debug, PartialEq)]
pub struct IntegerFirst {
    /// The activations' scale: their integers are `x / a_scale`, rounded.
    pub a_scale: f32,
    /// The weights' scales, one, or one per output channel along `w_axis`.
    pub w_scales: Vec<f32>,
    /// The weights' output-channel axis.
    pub w_axis: usize,
    /// The sum's scales, `a_scale * w_scales[c]`: the value is `acc * out_scales[c]`.
    pub out_scales: Vec<f32>,
    /// The result's output-channel axis.
    pub out_axis: usize,
}

impl IntegerFirst {
    /// The scale of the sum at flat index `i` of a result of shape `out`.
    pub fn out_scale_at(&self, out: &[usize], i: usize) -> f32 {
        let inner = numel(&out[self.out_axis + 1..]).max(1);
        self.out_scales[(i / inner) % self.out_scales.len()]
    }

    /// The weights' integers: each value divided by its scale, rounded (exact for values
    /// `int * s` rounded once, while `|int| < 2^22`).
    pub fn weight_integers(&self, w: &[f32], w_shape: &[usize]) -> Vec<f32> {
        let inner = numel(&w_shape[self.w_axis + 1..]).max(1);
        let scales = &self.w_scales;
        w.iter()
            .enumerate()
            .map(|(i, &v)| (v / scales[(i / inner) % scales.len()]).round())
            .collect()
    }

    /// The activations' integers.
    pub fn activation_integers(&self, x: &[f32]) -> Vec<f32> {
        let s = self.a_scale;
        x.iter().map(|&v| (v / s).round()).collect()
    }
}

/// The plan for linear `op` with operand types `types` and result shape `out`, or `None`
/// where the float kernels compute it: an operand that is not an integer or scaled integer,
/// an activation scale that is not one per tensor, a weight scale not along the output
/// channels, an accumulator that may pass 2^24 units (inference types those f32), or scales
/// that are all powers of two (the float sums are exact then).
pub fn integer_first(op: &Op, types: &[&TensorType], out: &[usize]) -> Option<IntegerFirst> {
    let (a_ty, w_ty) = (types.first()?, types.get(1)?);
    let w_rank = w_ty.shape.len();
    // The weights' output-channel axis, the result's, and the reduction length.
    let (w_axis, out_axis, k) = match op {
        Op::Conv(_) => (0, 1, numel(w_ty.shape.get(1..)?)),
        Op::Gemm(g) => (
            usize::from(!g.trans_b),
            1,
            *a_ty.shape.get(usize::from(!g.trans_a))?,
        ),
        Op::MatMul if w_rank >= 2 => (
            w_rank - 1,
            out.len().checked_sub(1)?,
            w_ty.shape[w_rank - 2],
        ),
        _ => return None,
    };
    let a_scale = match &a_ty.elem {
        ElemType::Int(_) => 1.0,
        ElemType::Scaled(_, Scale::Tensor(s)) => *s,
        _ => return None,
    };
    let w_scales = match &w_ty.elem {
        ElemType::Int(_) => vec![1.0],
        ElemType::Scaled(_, Scale::Tensor(s)) => vec![*s],
        ElemType::Scaled(_, Scale::Channel { axis, values }) if *axis == w_axis => values.to_vec(),
        _ => return None,
    };
    let pow2 = |s: &f32| is_power_of_two(s.abs());
    if pow2(&a_scale) && w_scales.iter().all(pow2) {
        return None;
    }
    let (ia, iw) = (a_ty.elem.int_type()?, w_ty.elem.int_type()?);
    let largest = |t: IntType| i128::from(t.min().unsigned_abs().max(t.max().unsigned_abs()));
    if largest(ia) * largest(iw) * k as i128 > F32_EXACT_LIMIT {
        return None;
    }
    let out_scales = w_scales.iter().map(|s_w| a_scale * s_w).collect();
    Some(IntegerFirst {
        a_scale,
        w_scales,
        w_axis,
        out_axis,
        out_scales,
    })
}

/// The value of linear `op` on `x` computed integer-first, or `None` where the float kernels
/// give it (see [`integer_first`]).
pub(super) fn linear(
    op: &Op,
    x: &[&Tensor],
    types: &[&TensorType],
    out: &[usize],
) -> Option<Result<Tensor, String>> {
    let plan = integer_first(op, types, out)?;
    let a_int = Tensor::f32(
        x[0].shape().to_vec(),
        plan.activation_integers(&floats(x[0])),
    );
    let w_int = Tensor::f32(
        x[1].shape().to_vec(),
        plan.weight_integers(&floats(x[1]), x[1].shape()),
    );
    let sums_op = match op {
        Op::Gemm(g) => Op::Gemm(crate::op::GemmAttrs {
            alpha: 1.0,
            beta: 0.0,
            ..g.clone()
        }),
        other => other.clone(),
    };
    Some(finish(op, x, out, &plan, &sums_op, &a_int, &w_int))
}

/// Sums the integers, scales them once, and joins the bias (Conv) or `alpha` and `C` (Gemm).
fn finish(
    op: &Op,
    x: &[&Tensor],
    out: &[usize],
    plan: &IntegerFirst,
    sums_op: &Op,
    a_int: &Tensor,
    w_int: &Tensor,
) -> Result<Tensor, String> {
    let sums = compute(sums_op, &[a_int, w_int], &[out.to_vec()])?.swap_remove(0);
    let mut y: Vec<f32> = floats(&sums)
        .iter()
        .enumerate()
        .map(|(i, &acc)| acc * plan.out_scale_at(out, i))
        .collect();
    match op {
        Op::Conv(_) => {
            if let Some(bias) = x.get(2) {
                let bias = floats(bias);
                let per = numel(&out[2..]).max(1);
                for (i, v) in y.iter_mut().enumerate() {
                    *v += bias[(i / per) % bias.len().max(1)];
                }
            }
        }
        Op::Gemm(g) => {
            if g.alpha != 1.0 {
                y.iter_mut().for_each(|v| *v *= g.alpha);
            }
            if let Some(c) = x.get(2).filter(|_| g.beta != 0.0) {
                let c_data = floats(c);
                let c = expand(&c_data, c.shape(), out)?;
                for (i, v) in y.iter_mut().enumerate() {
                    *v += if g.beta == 1.0 {
                        c.at(i)
                    } else {
                        g.beta * c.at(i)
                    };
                }
            }
        }
        _ => {}
    }
    f32_result(out, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{ConvAttrs, GemmAttrs};

    fn typed(elem: ElemType, shape: &[usize]) -> TensorType {
        TensorType::new(elem, shape.to_vec())
    }

    fn tenths() -> ElemType {
        ElemType::Scaled(IntType::Bipolar, Scale::Tensor(0.1))
    }

    #[test]
    fn ten_tenths_round_once() {
        let a = Tensor::f32(vec![1, 10], vec![1.0; 10]);
        let w = Tensor::f32(vec![10, 1], vec![0.1; 10]);
        let types = [
            &typed(ElemType::BIPOLAR, &[1, 10]),
            &typed(tenths(), &[10, 1]),
        ];
        let y = linear(&Op::MatMul, &[&a, &w], &types, &[1, 1])
            .expect("scaled operands")
            .unwrap();
        // 10 * 0.1f32 rounds to 1.0; adding 0.1f32 ten times, one rounding each, does not.
        assert_eq!(y.to_f32_vec(), [1.0]);
        let one_by_one = (0..10).fold(0.0_f32, |acc, _| acc + 0.1);
        assert_eq!(one_by_one, 1.000_000_1);
    }

    #[test]
    fn per_channel_weights_then_bias() {
        let attrs = ConvAttrs {
            kernel: vec![1],
            strides: vec![1],
            pads: vec![0, 0],
            dilations: vec![1],
            group: 1,
        };
        let (s0, s1) = (0.3_f32, -0.7_f32);
        let x = Tensor::f32(vec![1, 2, 1], vec![3.0, -2.0]);
        let w = Tensor::f32(vec![2, 2, 1], vec![s0, s0, -s1, s1]);
        let b = Tensor::f32(vec![2], vec![0.5, 0.25]);
        let w_elem = ElemType::Scaled(
            IntType::Bipolar,
            Scale::Channel {
                axis: 0,
                values: vec![s0, s1].into(),
            },
        );
        let types = [
            &typed(ElemType::Int(IntType::Signed(3)), &[1, 2, 1]),
            &typed(w_elem, &[2, 2, 1]),
            &typed(ElemType::F32, &[2]),
        ];
        let y = linear(&Op::Conv(attrs), &[&x, &w, &b], &types, &[1, 2, 1])
            .expect("scaled operands")
            .unwrap();
        // Channel 0: (3 - 2) * s0 + 0.5; channel 1: (-3 - 2) * s1 + 0.25.
        assert_eq!(y.to_f32_vec(), [s0 + 0.5, -5.0 * s1 + 0.25]);
    }

    #[test]
    fn gemm_alpha_and_c_join_the_scaled_value() {
        let a = Tensor::f32(vec![1, 2], vec![1.0, 1.0]);
        let w = Tensor::f32(vec![1, 2], vec![0.1, 0.1]);
        let c = Tensor::f32(vec![1], vec![1.0]);
        let attrs = GemmAttrs {
            alpha: 2.0,
            beta: 0.5,
            trans_a: false,
            trans_b: true,
        };
        let types = [
            &typed(ElemType::BIPOLAR, &[1, 2]),
            &typed(tenths(), &[1, 2]),
            &typed(ElemType::F32, &[1]),
        ];
        let y = linear(&Op::Gemm(attrs), &[&a, &w, &c], &types, &[1, 1])
            .expect("scaled operands")
            .unwrap();
        assert_eq!(y.to_f32_vec(), [2.0 * 0.1_f32 * 2.0 + 0.5]);
    }

    #[test]
    fn left_to_the_float_kernels() {
        let x = Tensor::f32(vec![1, 2], vec![1.0, 1.0]);
        let w = Tensor::f32(vec![2, 1], vec![0.5, 0.5]);
        let halves = typed(
            ElemType::Scaled(IntType::Bipolar, Scale::Tensor(0.5)),
            &[2, 1],
        );
        let bipolar = typed(ElemType::BIPOLAR, &[1, 2]);
        let float = typed(ElemType::F32, &[1, 2]);
        let tenths = typed(tenths(), &[2, 1]);
        let run = |types: [&TensorType; 2]| linear(&Op::MatMul, &[&x, &w], &types, &[1, 1]);
        // Powers of two: the float sums are exact already.
        assert!(run([&bipolar, &halves]).is_none());
        // A float operand.
        assert!(run([&float, &tenths]).is_none());
        // Activations scaled per channel: no one scale to factor out of the sum.
        let per_channel = typed(
            ElemType::Scaled(
                IntType::Bipolar,
                Scale::Channel {
                    axis: 1,
                    values: vec![0.1, 0.2].into(),
                },
            ),
            &[1, 2],
        );
        assert!(run([&per_channel, &tenths]).is_none());
    }
}
