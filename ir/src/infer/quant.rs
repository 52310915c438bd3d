//! Quantizers: QONNX Quant, BipolarQuant and Trunc, ONNX QuantizeLinear and DequantizeLinear.
//!
//! A quantizer's values are integers times its scale, so its result is typed as such (an
//! integer type, scaled per tensor or per channel) when the constant parameters say exactly
//! which: a zero zero point, and a scale that is one value or varies along one axis. Anything
//! else, and Trunc, whose integer range may vary per element, is `f32`.

use super::arity;
use crate::broadcast;
use crate::op::{QuantAttrs, TruncAttrs};
use crate::tensor::Tensor;
use crate::types::{checked_numel, ElemType, IntType, Scale, TensorType};

/// QONNX Quant: integers of the bit width (bipolar or binary at one bit), times the scale.
pub(super) fn quant(
    attrs: &QuantAttrs,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<TensorType, String> {
    arity(inputs, 4, 4)?;
    let x = inputs[0];
    for (i, what) in [(1, "scale"), (2, "zero point"), (3, "bit width")] {
        broadcasts_to(&inputs[i].shape, &x.shape, what)?;
    }
    let scale = constant(consts, 1, "scale")?;
    let zeropt = constant(consts, 2, "zero point")?;
    let bits = bit_width(constant(consts, 3, "bit width")?)?;
    let base = match (bits, attrs.signed) {
        (1, true) => IntType::Bipolar,
        (1, false) => IntType::Binary,
        (b, true) => IntType::Signed(b),
        (b, false) => IntType::Unsigned(b),
    };
    let elem = if all_zero(zeropt) {
        scaled(base, scale_kind(scale, &x.shape))
    } else {
        ElemType::F32
    };
    Ok(TensorType::new(elem, x.shape.clone()))
}

/// QONNX BipolarQuant: ±1 times the scale.
pub(super) fn bipolar_quant(
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let x = inputs[0];
    broadcasts_to(&inputs[1].shape, &x.shape, "scale")?;
    let scale = constant(consts, 1, "scale")?;
    Ok(TensorType::new(
        scaled(IntType::Bipolar, scale_kind(scale, &x.shape)),
        x.shape.clone(),
    ))
}

/// QONNX Trunc (v2 has a sixth operand, the output scale).
pub(super) fn trunc(attrs: &TruncAttrs, inputs: &[&TensorType]) -> Result<TensorType, String> {
    let n = if attrs.v2 { 6 } else { 5 };
    arity(inputs, n, n)?;
    let x = inputs[0];
    let names = [
        "scale",
        "zero point",
        "input bit width",
        "output bit width",
        "output scale",
    ];
    for (i, what) in names.iter().enumerate().take(n - 1) {
        broadcasts_to(&inputs[i + 1].shape, &x.shape, what)?;
    }
    // The result's integer range depends on rounding and bit widths that may vary per
    // element; `f32` is the safe type.
    Ok(TensorType::new(ElemType::F32, x.shape.clone()))
}

/// ONNX QuantizeLinear: integers of the declared type.
pub(super) fn quantize_linear(
    axis: usize,
    out: IntType,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 2, 3)?;
    check_linear_quant_params(inputs, axis)?;
    Ok(TensorType::new(ElemType::Int(out), inputs[0].shape.clone()))
}

/// ONNX DequantizeLinear: the integers times a constant scale, when the zero point is 0.
pub(super) fn dequantize_linear(
    axis: usize,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<TensorType, String> {
    arity(inputs, 2, 3)?;
    check_linear_quant_params(inputs, axis)?;
    let q = inputs[0];
    let zp_is_zero = match inputs.get(2) {
        None => true,
        Some(_) => consts[2].is_some_and(all_zero),
    };
    let elem = match (&q.elem, consts[1]) {
        (ElemType::Int(t), Some(scale)) if zp_is_zero => {
            let kind = if scale.len() == 1 {
                scale_kind(scale, &q.shape)
            } else {
                channel_scale(axis, scale.to_f32_vec())
            };
            scaled(*t, kind)
        }
        _ => ElemType::F32,
    };
    Ok(TensorType::new(elem, q.shape.clone()))
}

fn constant<'a>(consts: &[Option<&'a Tensor>], i: usize, what: &str) -> Result<&'a Tensor, String> {
    consts
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("{what} must be a constant"))
}

/// The bit width of a Quant: one integer in 1..=32.
fn bit_width(t: &Tensor) -> Result<u8, String> {
    let v = t.to_f64_vec();
    match v.as_slice() {
        [b] if b.fract() == 0.0 && (1.0..=32.0).contains(b) => Ok(*b as u8),
        [b] => Err(format!("bit width {b} is not an integer in 1..=32")),
        _ => Err(format!("bit width has {} elements, expected 1", v.len())),
    }
}

fn all_zero(t: &Tensor) -> bool {
    t.to_f64_vec().iter().all(|&v| v == 0.0)
}

/// Checks that a parameter of shape `p` broadcasts to `x` without changing `x`'s shape.
fn broadcasts_to(p: &[usize], x: &[usize], what: &str) -> Result<(), String> {
    if broadcast::broadcasts_to(p, x) {
        return Ok(());
    }
    Err(format!(
        "{what} of shape {p:?} does not broadcast to the input's shape {x:?}"
    ))
}

/// QuantizeLinear / DequantizeLinear parameters: per tensor, or 1-D along `axis`.
fn check_linear_quant_params(inputs: &[&TensorType], axis: usize) -> Result<(), String> {
    let x = inputs[0];
    let scale = inputs[1];
    let n = checked_numel(&scale.shape).ok_or("scale has too many elements")?;
    if n != 1 {
        let rank = x.shape.len();
        if axis >= rank {
            return Err(format!("axis {axis} out of range for rank {rank}"));
        }
        if scale.shape != [x.shape[axis]] {
            return Err(format!(
                "scale of shape {:?} is neither one value nor one per index of axis {axis} ({})",
                scale.shape, x.shape[axis]
            ));
        }
    }
    if let Some(zp) = inputs.get(2) {
        if checked_numel(&zp.shape) != Some(n) {
            return Err(format!(
                "zero point of shape {:?} does not match the scale's {:?}",
                zp.shape, scale.shape
            ));
        }
    }
    Ok(())
}

/// How a constant scale applies to a tensor of shape `x` (the scale broadcasts to `x`).
enum ScaleKind {
    One,
    Tensor(f32),
    Channel {
        axis: usize,
        values: Vec<f32>,
    },
    /// Several axes vary, or a scale that does not describe integers (0, inf, NaN).
    Other,
}

fn scale_kind(scale: &Tensor, x: &[usize]) -> ScaleKind {
    let values = scale.to_f32_vec();
    if values.iter().any(|v| !v.is_finite() || *v == 0.0) {
        return ScaleKind::Other;
    }
    // Right-align the scale's shape with x's: axes of extent > 1 are where it varies.
    let offset = x.len() as isize - scale.shape().len() as isize;
    let varying: Vec<usize> = (0..scale.shape().len())
        .filter(|&i| scale.shape()[i] > 1)
        .collect();
    match varying[..] {
        [] => uniform_scale(&values),
        [i] if offset + i as isize >= 0 => channel_scale((offset + i as isize) as usize, values),
        _ => ScaleKind::Other,
    }
}

fn channel_scale(axis: usize, values: Vec<f32>) -> ScaleKind {
    if values.iter().any(|v| !v.is_finite() || *v == 0.0) {
        return ScaleKind::Other;
    }
    match uniform_scale(&values) {
        ScaleKind::Other => ScaleKind::Channel { axis, values },
        uniform => uniform,
    }
}

/// `One` or `Tensor` when every value is the same, else `Other`.
fn uniform_scale(values: &[f32]) -> ScaleKind {
    match values.first() {
        Some(&s) if values.iter().all(|&v| v == s) => {
            if s == 1.0 {
                ScaleKind::One
            } else {
                ScaleKind::Tensor(s)
            }
        }
        _ => ScaleKind::Other,
    }
}

fn scaled(int: IntType, kind: ScaleKind) -> ElemType {
    match kind {
        ScaleKind::One => ElemType::Int(int),
        ScaleKind::Tensor(s) => ElemType::Scaled(int, Scale::Tensor(s)),
        ScaleKind::Channel { axis, values } => ElemType::Scaled(
            int,
            Scale::Channel {
                axis,
                values: values.into(),
            },
        ),
        ScaleKind::Other => ElemType::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::infer_output_types;
    use crate::infer::tests::{f32t, infer_vars, typed};
    use crate::op::{Op, RoundingMode};

    /// Infers with the given operands, constants where data is given.
    fn infer_with(
        op: &Op,
        inputs: &[(TensorType, Option<Tensor>)],
    ) -> Result<Vec<TensorType>, String> {
        let types: Vec<&TensorType> = inputs.iter().map(|(t, _)| t).collect();
        let consts: Vec<Option<&Tensor>> = inputs.iter().map(|(_, c)| c.as_ref()).collect();
        infer_output_types(op, &types, &consts)
    }

    fn constant(t: Tensor) -> (TensorType, Option<Tensor>) {
        (f32t(t.shape()), Some(t))
    }

    fn quant(signed: bool, narrow: bool) -> Op {
        Op::Quant(QuantAttrs {
            signed,
            narrow,
            rounding: RoundingMode::HalfEven,
        })
    }

    fn quant_type(
        op: &Op,
        x: &[usize],
        scale: Tensor,
        zp: f32,
        bits: f32,
    ) -> Result<ElemType, String> {
        let inputs = [
            (f32t(x), None),
            constant(scale),
            constant(Tensor::scalar(zp)),
            constant(Tensor::scalar(bits)),
        ];
        Ok(infer_with(op, &inputs)?.remove(0).elem)
    }

    #[test]
    fn quant_types() {
        let q = quant(true, false);
        assert_eq!(
            quant_type(&q, &[1, 4], Tensor::scalar(1.0), 0.0, 8.0),
            Ok(ElemType::Int(IntType::Signed(8)))
        );
        assert_eq!(
            quant_type(&q, &[1, 4], Tensor::scalar(0.5), 0.0, 4.0),
            Ok(ElemType::Scaled(IntType::Signed(4), Scale::Tensor(0.5)))
        );
        assert_eq!(
            quant_type(&q, &[1, 4], Tensor::scalar(1.0), 0.0, 1.0),
            Ok(ElemType::BIPOLAR)
        );
        assert_eq!(
            quant_type(&quant(false, false), &[4], Tensor::scalar(1.0), 0.0, 1.0),
            Ok(ElemType::BINARY)
        );
        assert_eq!(
            quant_type(&quant(false, true), &[4], Tensor::scalar(1.0), 0.0, 3.0),
            Ok(ElemType::Int(IntType::Unsigned(3)))
        );
        // A nonzero zero point shifts the integers off the grid of the type.
        assert_eq!(
            quant_type(&q, &[4], Tensor::scalar(1.0), 1.0, 8.0),
            Ok(ElemType::F32)
        );
    }

    #[test]
    fn quant_per_channel_scale() {
        let q = quant(true, true);
        let scale = Tensor::f32(vec![3, 1, 1, 1], vec![0.5, 0.25, 0.125]);
        let elem = quant_type(&q, &[3, 2, 3, 3], scale, 0.0, 8.0).unwrap();
        let ElemType::Scaled(IntType::Signed(8), Scale::Channel { axis: 0, values }) = elem else {
            panic!("expected a per-channel scale on axis 0, got {elem}");
        };
        assert_eq!(&values[..], &[0.5, 0.25, 0.125]);
        // A scale of shape (C, 1) right-aligned against (N, C, L) varies along axis 1.
        let scale = Tensor::f32(vec![2, 1], vec![0.5, 2.0]);
        let elem = quant_type(&q, &[1, 2, 5], scale, 0.0, 4.0).unwrap();
        assert!(
            matches!(elem, ElemType::Scaled(_, Scale::Channel { axis: 1, .. })),
            "{elem}"
        );
        // Varying along two axes is not a per-channel scale.
        let scale = Tensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(quant_type(&q, &[2, 2], scale, 0.0, 4.0), Ok(ElemType::F32));
    }

    #[test]
    fn quant_errors() {
        let q = quant(true, false);
        let err = |r: Result<ElemType, String>| r.unwrap_err();
        assert!(err(quant_type(&q, &[4], Tensor::scalar(1.0), 0.0, 0.0)).contains("1..=32"));
        assert!(err(quant_type(&q, &[4], Tensor::scalar(1.0), 0.0, 2.5)).contains("not an integer"));
        assert!(err(quant_type(
            &q,
            &[4],
            Tensor::f32(vec![3], vec![1.0; 3]),
            0.0,
            8.0
        ))
        .contains("broadcast"));
        let inputs = [
            (f32t(&[4]), None),
            (f32t(&[]), None),
            constant(Tensor::scalar(0.0)),
            constant(Tensor::scalar(8.0)),
        ];
        assert_eq!(
            infer_with(&q, &inputs).unwrap_err(),
            "scale must be a constant"
        );
        assert_eq!(
            infer_vars(&q, &[f32t(&[4])]).unwrap_err(),
            "expects 4 operands, got 1"
        );
    }

    #[test]
    fn bipolar_quant_types() {
        let inputs = [(f32t(&[2, 3]), None), constant(Tensor::scalar(1.0))];
        assert_eq!(
            infer_with(&Op::BipolarQuant, &inputs).unwrap()[0].elem,
            ElemType::BIPOLAR
        );
        let inputs = [(f32t(&[2, 3]), None), constant(Tensor::scalar(0.25))];
        assert_eq!(
            infer_with(&Op::BipolarQuant, &inputs).unwrap()[0].elem,
            ElemType::Scaled(IntType::Bipolar, Scale::Tensor(0.25))
        );
    }

    #[test]
    fn dequantize_types() {
        let q = typed(ElemType::Int(IntType::Signed(8)), &[1, 2]);
        let inputs = [
            (q.clone(), None),
            constant(Tensor::scalar(0.5)),
            constant(Tensor::scalar(0.0)),
        ];
        assert_eq!(
            infer_with(&Op::DequantizeLinear { axis: 1 }, &inputs).unwrap()[0].elem,
            ElemType::Scaled(IntType::Signed(8), Scale::Tensor(0.5))
        );
        let inputs = [
            (q, None),
            constant(Tensor::scalar(0.5)),
            constant(Tensor::scalar(3.0)),
        ];
        assert_eq!(
            infer_with(&Op::DequantizeLinear { axis: 1 }, &inputs).unwrap()[0].elem,
            ElemType::F32
        );
        let ql = Op::QuantizeLinear {
            axis: 1,
            out: IntType::Signed(8),
        };
        let inputs = [
            (f32t(&[1, 2]), None),
            constant(Tensor::f32(vec![3], vec![1.0; 3])),
        ];
        assert!(infer_with(&ql, &inputs).is_err());
    }
}
