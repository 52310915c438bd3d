//! Linear layers: Conv, Gemm, MatMul, their XNOR-popcount and bit-serial twins, and BatchNorm.
//!
//! A sum of products of integers is typed as its exact integer accumulator (times the
//! operands' scales) while it stays within f32's exact integers, since that is what lets the
//! passes lower a quantized layer to integer arithmetic. A bias, Gemm's alpha or BatchNorm
//! make the result `f32`.

use std::sync::Arc;

use super::{arity, F32_EXACT_LIMIT};
use crate::broadcast;
use crate::op::{ConvAttrs, GemmAttrs};
use crate::packing;
use crate::types::{checked_numel, ElemType, IntType, Scale, Shape, TensorType};

/// ONNX Conv: weights `(M, C/group, kernel...)`, an optional bias `(M)`.
pub(super) fn conv(attrs: &ConvAttrs, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 3)?;
    let (shape, k) = conv_shape(attrs, inputs[0], inputs[1])?;
    if let Some(bias) = inputs.get(2) {
        let m = inputs[1].shape[0];
        if bias.shape != [m] {
            return Err(format!("bias has shape {:?}, expected [{m}]", bias.shape));
        }
    }
    let elem = if inputs.len() == 3 {
        ElemType::F32
    } else {
        accumulator(&inputs[0].elem, &inputs[1].elem, k, Some((0, 1)))
    };
    Ok(TensorType::new(elem, shape))
}

/// ONNX Gemm: `alpha * A' B' + C`.
pub(super) fn gemm(attrs: &GemmAttrs, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 3)?;
    let (shape, k) = gemm_shape(attrs, inputs)?;
    let elem = if inputs.len() == 3 || attrs.alpha != 1.0 {
        ElemType::F32
    } else {
        let b_out_axis = if attrs.trans_b { 0 } else { 1 };
        accumulator(&inputs[0].elem, &inputs[1].elem, k, Some((b_out_axis, 1)))
    };
    Ok(TensorType::new(elem, shape))
}

/// ONNX MatMul, with numpy's broadcasting and vector rules.
pub(super) fn matmul(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let (shape, k) = matmul_shape(&inputs[0].shape, &inputs[1].shape)?;
    let b_rank = inputs[1].shape.len();
    let channel = (b_rank >= 2).then(|| (b_rank - 1, shape.len() - 1));
    Ok(TensorType::new(
        accumulator(&inputs[0].elem, &inputs[1].elem, k, channel),
        shape,
    ))
}

/// BatchNormalization: scale, bias, mean and variance per channel (axis 1).
pub(super) fn batchnorm(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 5, 5)?;
    let x = inputs[0];
    if x.shape.len() < 2 {
        return Err(format!(
            "input has rank {}, expected at least 2",
            x.shape.len()
        ));
    }
    let c = x.shape[1];
    for (t, what) in inputs[1..]
        .iter()
        .zip(["scale", "bias", "mean", "variance"])
    {
        if t.shape != [c] {
            return Err(format!(
                "{what} has shape {:?}, expected [{c}] (the input's channels)",
                t.shape
            ));
        }
    }
    Ok(TensorType::new(ElemType::F32, x.shape.clone()))
}

/// XNOR-popcount product: bipolar `(.., K)` times weights packed as `(M, words(K))`.
pub(super) fn xnor_matmul(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let (a, w) = (&inputs[0].shape, &inputs[1].shape);
    let (Some(&k), &[m, words]) = (a.last(), w.as_slice()) else {
        return Err(format!(
            "operands have shapes {a:?} and {w:?}, expected (.., K) and packed \
             (M, words(K))"
        ));
    };
    if words != packing::words(k) {
        return Err(format!("{words} words per column pack {k} rows"));
    }
    let (shape, k) = matmul_shape(a, &[k, m])?;
    Ok(TensorType::new(xnor_accumulator(k)?, shape))
}

/// XNOR-popcount convolution: weights packed as `(M, kernel..., words(C))`.
pub(super) fn xnor_conv(attrs: &ConvAttrs, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let (x, w) = (inputs[0], inputs[1]);
    let c = x.shape.get(1).copied().unwrap_or(0);
    let (Some((&m, rest)), Some(&words)) = (w.shape.split_first(), w.shape.last()) else {
        return Err(format!("packed weights of shape {:?}", w.shape));
    };
    // Each filter packs its group's channels (all of them with one group).
    let g = attrs.group;
    if g == 0 || c % g != 0 {
        return Err(format!("group {g} does not divide the {c} input channels"));
    }
    let cg = c / g;
    if words != packing::words(cg) {
        return Err(format!("{words} words per tap pack {cg} channels"));
    }
    // The weights' logical shape (M, C/group, K...).
    let mut logical = vec![m, cg];
    logical.extend_from_slice(&rest[..rest.len() - 1]);
    let logical = TensorType::new(ElemType::BIPOLAR, logical);
    let (shape, k) = conv_shape(attrs, x, &logical)?;
    Ok(TensorType::new(xnor_accumulator(k)?, shape))
}

/// Bit-serial product: integer activations `(.., K)` (times `a_scale`), integer weights
/// `(K, M)`.
pub(super) fn bitserial_matmul(a_scale: f32, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let (a, w) = (inputs[0], inputs[1]);
    if a.shape.is_empty() || w.shape.len() != 2 {
        return Err(format!(
            "operands have shapes {:?} and {:?}, expected (.., K) and (K, M)",
            a.shape, w.shape
        ));
    }
    let (shape, k) = matmul_shape(&a.shape, &w.shape)?;
    Ok(TensorType::new(
        bit_serial_accumulator(a, w, a_scale, k)?,
        shape,
    ))
}

/// Bit-serial convolution (any group) of integer activations and weights.
pub(super) fn bitserial_conv(
    attrs: &ConvAttrs,
    a_scale: f32,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let (shape, k) = conv_shape(attrs, inputs[0], inputs[1])?;
    Ok(TensorType::new(
        bit_serial_accumulator(inputs[0], inputs[1], a_scale, k)?,
        shape,
    ))
}

/// The result shape of a convolution and its reduction length `K = C/group * prod(kernel)`.
fn conv_shape(attrs: &ConvAttrs, x: &TensorType, w: &TensorType) -> Result<(Shape, usize), String> {
    let window = attrs.window();
    window.check_rank(&x.shape)?;
    let rank = x.shape.len();
    if w.shape.len() != rank {
        return Err(format!(
            "weight has rank {}, input has rank {rank}",
            w.shape.len()
        ));
    }
    if w.shape[2..] != attrs.kernel[..] {
        return Err(format!(
            "weight has kernel {:?}, the attribute says {:?}",
            &w.shape[2..],
            attrs.kernel
        ));
    }
    let (c, m, g) = (x.shape[1], w.shape[0], attrs.group);
    if g == 0 || c % g != 0 || m % g != 0 {
        return Err(format!(
            "group {g} does not divide the {c} input channels and the {m} output channels"
        ));
    }
    if w.shape[1].checked_mul(g) != Some(c) {
        return Err(format!(
            "weight has {} input channels per group ({g} groups), input has {c} channels",
            w.shape[1]
        ));
    }
    let mut shape = vec![x.shape[0], m];
    shape.extend(window.output_extents(&x.shape)?);
    let k = checked_numel(&w.shape[1..]).ok_or("weight has too many elements")?;
    Ok((shape, k))
}

/// The result shape of Gemm and its reduction length.
fn gemm_shape(attrs: &GemmAttrs, inputs: &[&TensorType]) -> Result<(Shape, usize), String> {
    let (a, b) = (&inputs[0].shape, &inputs[1].shape);
    if a.len() != 2 || b.len() != 2 {
        return Err(format!(
            "operands have shapes {a:?} and {b:?}, expected two matrices"
        ));
    }
    let (m, ka) = if attrs.trans_a {
        (a[1], a[0])
    } else {
        (a[0], a[1])
    };
    let (kb, n) = if attrs.trans_b {
        (b[1], b[0])
    } else {
        (b[0], b[1])
    };
    if ka != kb {
        return Err(format!(
            "A has {ka} columns (after transA), B has {kb} rows (after transB)"
        ));
    }
    if let Some(c) = inputs.get(2) {
        // Unidirectional broadcast of C to (M, N).
        if !broadcast::broadcasts_to(&c.shape, &[m, n]) {
            return Err(format!(
                "C of shape {:?} does not broadcast to ({m}, {n})",
                c.shape
            ));
        }
    }
    Ok((vec![m, n], ka))
}

/// The numpy matmul result shape and the reduction length.
fn matmul_shape(a: &[usize], b: &[usize]) -> Result<(Shape, usize), String> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank at least 1".into());
    }
    let ka = a[a.len() - 1];
    let kb = if b.len() == 1 { b[0] } else { b[b.len() - 2] };
    if ka != kb {
        return Err(format!(
            "A of shape {a:?} has {ka} columns, B of shape {b:?} has {kb} rows"
        ));
    }
    let batch_a = &a[..a.len().saturating_sub(2)];
    let batch_b = &b[..b.len().saturating_sub(2)];
    let mut shape = broadcast::shape(&[batch_a, batch_b])
        .map_err(|_| format!("batch axes of {a:?} and {b:?} do not broadcast"))?;
    if a.len() >= 2 {
        shape.push(a[a.len() - 2]);
    }
    if b.len() >= 2 {
        shape.push(b[b.len() - 1]);
    }
    Ok((shape, ka))
}

/// Sums of `k` products of `a` and `b` elements: an exact integer accumulator when both are
/// integers. `b_channel` = (axis of `b`, axis of the result) that carry the output channels,
/// for a per-output-channel weight scale.
fn accumulator(
    a: &ElemType,
    b: &ElemType,
    k: usize,
    b_channel: Option<(usize, usize)>,
) -> ElemType {
    let (Some(ta), Some(tb)) = (a.int_type(), b.int_type()) else {
        return ElemType::F32;
    };
    let corners = [ta.min(), ta.max()]
        .into_iter()
        .flat_map(|x| [tb.min(), tb.max()].map(|y| i128::from(x) * i128::from(y)));
    let (pmin, pmax) = corners.fold((i128::MAX, i128::MIN), |(lo, hi), p| (lo.min(p), hi.max(p)));
    let k = k as i128;
    let (lo, hi) = (pmin.saturating_mul(k).min(0), pmax.saturating_mul(k).max(0));
    if lo < -F32_EXACT_LIMIT || hi > F32_EXACT_LIMIT {
        return ElemType::F32;
    }
    // In range of f32's exact integers, so the casts are lossless.
    let int = IntType::covering(lo as i64, hi as i64);
    let scale_a = match a {
        ElemType::Int(_) => None,
        ElemType::Scaled(_, s) => Some(s),
        ElemType::F32 => return ElemType::F32,
    };
    let scale_b = match b {
        ElemType::Int(_) => None,
        ElemType::Scaled(_, s) => Some(s),
        ElemType::F32 => return ElemType::F32,
    };
    let tensor_a = match scale_a {
        None => 1.0,
        Some(Scale::Tensor(s)) => *s,
        Some(Scale::Channel { .. }) => return ElemType::F32,
    };
    match scale_b {
        None if scale_a.is_none() => ElemType::Int(int),
        None => ElemType::Scaled(int, Scale::Tensor(tensor_a)),
        Some(Scale::Tensor(s)) => ElemType::Scaled(int, Scale::Tensor(tensor_a * s)),
        Some(Scale::Channel { axis, values }) => match b_channel {
            Some((b_axis, out_axis)) if *axis == b_axis => {
                let values: Arc<[f32]> = values.iter().map(|v| tensor_a * v).collect();
                ElemType::Scaled(
                    int,
                    Scale::Channel {
                        axis: out_axis,
                        values,
                    },
                )
            }
            _ => ElemType::F32,
        },
    }
}

/// An XNOR-popcount dot product of length `k` lies in `[-k, k]`.
fn xnor_accumulator(k: usize) -> Result<ElemType, String> {
    let k = i64::try_from(k)
        .ok()
        .filter(|&k| i128::from(k) <= F32_EXACT_LIMIT);
    let k = k.ok_or("reduction length too large for an exact accumulator")?;
    Ok(ElemType::Int(IntType::covering(-k, k)))
}

/// The exact accumulator of a bit-serial product of `k` terms: activations of integers (times
/// `a_scale`) and integer weights. Untyped operands (`interp::eval` on bare tensors) give
/// `f32`: the kernel reads the integers off the values.
fn bit_serial_accumulator(
    a: &TensorType,
    w: &TensorType,
    a_scale: f32,
    k: usize,
) -> Result<ElemType, String> {
    if a.elem == ElemType::F32 || w.elem == ElemType::F32 {
        return Ok(ElemType::F32);
    }
    let a_int = match &a.elem {
        ElemType::Int(t) if a_scale == 1.0 => *t,
        ElemType::Scaled(t, Scale::Tensor(s)) if *s == a_scale => *t,
        other => {
            return Err(format!(
                "the activations are typed {other}, not integers times a_scale {a_scale:?}"
            ))
        }
    };
    let ElemType::Int(_) = w.elem else {
        return Err(format!("the weights are typed {}, not integers", w.elem));
    };
    match accumulator(&ElemType::Int(a_int), &w.elem, k, None) {
        acc @ ElemType::Int(_) => Ok(acc),
        _ => Err("the integer dot products may pass 2^24".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::{f32t, infer_vars, typed};
    use crate::op::Op;

    fn conv(
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[usize],
        group: usize,
    ) -> ConvAttrs {
        ConvAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            pads: pads.to_vec(),
            group,
        }
    }

    #[test]
    fn bipolar_gemm_accumulator() {
        let gemm = Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        });
        let inputs = [
            typed(ElemType::BIPOLAR, &[1, 784]),
            typed(ElemType::BIPOLAR, &[256, 784]),
        ];
        let out = infer_vars(&gemm, &inputs).unwrap();
        assert_eq!(
            out,
            vec![typed(ElemType::Int(IntType::Signed(11)), &[1, 256])]
        );
        // With a bias the result is float.
        let with_c = [inputs[0].clone(), inputs[1].clone(), f32t(&[256])];
        assert_eq!(infer_vars(&gemm, &with_c).unwrap()[0].elem, ElemType::F32);
        // An alpha other than 1 scales the accumulator off the integers.
        let scaled_gemm = Op::Gemm(GemmAttrs {
            alpha: 0.5,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        });
        assert_eq!(
            infer_vars(&scaled_gemm, &inputs).unwrap()[0].elem,
            ElemType::F32
        );
        // A float operand makes it float.
        let float_in = [f32t(&[1, 784]), typed(ElemType::BIPOLAR, &[256, 784])];
        assert_eq!(infer_vars(&gemm, &float_in).unwrap()[0].elem, ElemType::F32);
    }

    #[test]
    fn gemm_shapes() {
        let gemm = |trans_a, trans_b| {
            Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a,
                trans_b,
            })
        };
        let out = infer_vars(
            &gemm(true, false),
            &[f32t(&[3, 2]), f32t(&[3, 5]), f32t(&[1, 5])],
        )
        .unwrap();
        assert_eq!(out[0].shape, vec![2, 5]);
        let err = infer_vars(&gemm(false, false), &[f32t(&[2, 3]), f32t(&[4, 5])]).unwrap_err();
        assert!(err.contains("3 columns"), "{err}");
        let err = infer_vars(
            &gemm(false, false),
            &[f32t(&[2, 3]), f32t(&[3, 5]), f32t(&[5, 5])],
        )
        .unwrap_err();
        assert!(err.contains("does not broadcast"), "{err}");
    }

    #[test]
    fn bipolar_conv_accumulator_and_per_channel_scale() {
        let attrs = conv(&[3, 3], &[1, 1], &[1, 1], &[1, 1, 1, 1], 1);
        let inputs = [
            typed(ElemType::BIPOLAR, &[1, 64, 8, 8]),
            typed(ElemType::BIPOLAR, &[128, 64, 3, 3]),
        ];
        let out = infer_vars(&Op::Conv(attrs.clone()), &inputs).unwrap();
        // K = 64 * 9 = 576 -> [-576, 576] -> i11.
        assert_eq!(
            out,
            vec![typed(ElemType::Int(IntType::Signed(11)), &[1, 128, 8, 8])]
        );

        let w_scale = Scale::Channel {
            axis: 0,
            values: vec![0.5, 0.25].into(),
        };
        let inputs = [
            typed(
                ElemType::Scaled(IntType::Unsigned(8), Scale::Tensor(0.5)),
                &[1, 3, 4, 4],
            ),
            typed(ElemType::Scaled(IntType::Bipolar, w_scale), &[2, 3, 3, 3]),
        ];
        let out = infer_vars(&Op::Conv(attrs), &inputs).unwrap();
        // Products lie in [-255, 255], K = 27.
        let ElemType::Scaled(int, Scale::Channel { axis: 1, values }) = &out[0].elem else {
            panic!("expected per-channel result, got {}", out[0].elem);
        };
        assert_eq!(*int, IntType::covering(-255 * 27, 255 * 27));
        assert_eq!(&values[..], &[0.25, 0.125]);
    }

    #[test]
    fn conv_shapes() {
        // Depthwise, dilated, strided with asymmetric pads.
        let dw = conv(&[3, 3], &[2, 1], &[1, 2], &[1, 0, 0, 2], 4);
        let out = infer_vars(&Op::Conv(dw), &[f32t(&[2, 4, 7, 7]), f32t(&[4, 1, 3, 3])]).unwrap();
        // H: (7 + 1 - 3) / 2 + 1 = 3; W: (7 + 2 - 5) / 1 + 1 = 5.
        assert_eq!(out[0].shape, vec![2, 4, 3, 5]);
        let one_d = conv(&[2], &[1], &[1], &[0, 0], 1);
        assert_eq!(
            infer_vars(&Op::Conv(one_d), &[f32t(&[1, 2, 5]), f32t(&[3, 2, 2])]).unwrap()[0].shape,
            vec![1, 3, 4]
        );
    }

    #[test]
    fn conv_errors() {
        let attrs = conv(&[3, 3], &[1, 1], &[1, 1], &[0; 4], 1);
        let err = infer_vars(
            &Op::Conv(attrs.clone()),
            &[f32t(&[1, 4, 5, 5]), f32t(&[8, 3, 3, 3])],
        )
        .unwrap_err();
        assert_eq!(
            err,
            "weight has 3 input channels per group (1 groups), input has 4 channels"
        );
        let err = infer_vars(
            &Op::Conv(attrs.clone()),
            &[f32t(&[1, 3, 2, 2]), f32t(&[8, 3, 3, 3])],
        )
        .unwrap_err();
        assert!(err.contains("does not fit"), "{err}");
        let bias = [f32t(&[1, 3, 5, 5]), f32t(&[8, 3, 3, 3]), f32t(&[4])];
        assert!(infer_vars(&Op::Conv(attrs.clone()), &bias)
            .unwrap_err()
            .contains("bias"));
        let grouped = ConvAttrs { group: 2, ..attrs };
        assert!(infer_vars(
            &Op::Conv(grouped),
            &[f32t(&[1, 3, 5, 5]), f32t(&[8, 3, 3, 3])]
        )
        .unwrap_err()
        .contains("group"));
    }

    #[test]
    fn matmul_shapes_and_types() {
        let out = |a: &[usize], b: &[usize]| {
            infer_vars(&Op::MatMul, &[f32t(a), f32t(b)]).map(|t| t[0].shape.clone())
        };
        assert_eq!(out(&[3], &[3]), Ok(vec![]));
        assert_eq!(out(&[3], &[3, 4]), Ok(vec![4]));
        assert_eq!(out(&[2, 3], &[3]), Ok(vec![2]));
        assert_eq!(out(&[5, 1, 2, 3], &[4, 3, 6]), Ok(vec![5, 4, 2, 6]));
        assert!(out(&[2, 3], &[4, 5]).is_err());
        assert!(out(&[2, 2, 3], &[3, 3, 5]).is_err());
        let scale = Scale::Channel {
            axis: 1,
            values: vec![2.0, 4.0].into(),
        };
        let inputs = [
            typed(ElemType::Int(IntType::Signed(2)), &[1, 3]),
            typed(ElemType::Scaled(IntType::Bipolar, scale), &[3, 2]),
        ];
        let t = infer_vars(&Op::MatMul, &inputs).unwrap();
        assert!(
            matches!(
                &t[0].elem,
                ElemType::Scaled(IntType::Signed(4), Scale::Channel { axis: 1, .. })
            ),
            "{}",
            t[0].elem
        );
    }

    #[test]
    fn xnor_types() {
        let attrs = conv(&[3, 3], &[1, 1], &[1, 1], &[1; 4], 1);
        let t = infer_vars(
            &Op::XnorConv(attrs),
            &[
                typed(ElemType::BIPOLAR, &[1, 3, 4, 4]),
                // 2 filters of 3 channels, packed: (M, KH, KW, words(C)).
                typed(ElemType::I64, &[2, 3, 3, 1]),
            ],
        );
        assert_eq!(
            t.unwrap()[0],
            typed(ElemType::Int(IntType::Signed(6)), &[1, 2, 4, 4])
        );
        let t = infer_vars(
            &Op::XnorMatMul,
            &[
                typed(ElemType::BIPOLAR, &[2, 8]),
                // (K, M) = (8, 4) packed: (M, words(K)).
                typed(ElemType::I64, &[4, 1]),
            ],
        );
        assert_eq!(
            t.unwrap()[0],
            typed(ElemType::Int(IntType::Signed(5)), &[2, 4])
        );
        // Words that do not pack the reduction are an error.
        let wrong = infer_vars(
            &Op::XnorMatMul,
            &[
                typed(ElemType::BIPOLAR, &[2, 80]),
                typed(ElemType::I64, &[4, 1]),
            ],
        );
        assert!(wrong
            .unwrap_err()
            .contains("1 words per column pack 80 rows"));
    }
}
