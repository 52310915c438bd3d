//! Elementwise ops: broadcast arithmetic, Relu, Sign and Clip.
//!
//! The shape is the operands' broadcast. The element type follows what the op does to an
//! integer range: Relu and Sign map integers to integers, Clip narrows them, and arithmetic
//! with a constant keeps (scaled) integers where every result is exact or rounds once, so that
//! a quantized layer's rescaling stays typed. Arithmetic on two i64 operands (shape
//! computations) stays i64.

use super::{arity, F32_EXACT_LIMIT};
use crate::broadcast;
use crate::op::BinaryOp;
use crate::tensor::Tensor;
use crate::types::{is_power_of_two, ElemType, IntType, Scale, TensorType};

/// Add, Sub, Mul, Div and Pow with numpy broadcasting.
pub(super) fn binary(
    op: BinaryOp,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let shape =
        broadcast::shape(&[&inputs[0].shape, &inputs[1].shape]).map_err(|e| e.to_string())?;
    // Two i64 operands (shape arithmetic) stay integers, exact affine maps of scaled
    // integers stay scaled integers; everything else is float.
    let elem = if inputs[0].elem == ElemType::I64 && inputs[1].elem == ElemType::I64 {
        ElemType::I64
    } else {
        affine_type(op, inputs, consts).unwrap_or(ElemType::F32)
    };
    Ok(TensorType::new(elem, shape))
}

/// Relu: `max(x, 0)`.
pub(super) fn relu(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    Ok(TensorType::new(
        relu_type(&inputs[0].elem),
        inputs[0].shape.clone(),
    ))
}

/// Sign: -1, 0 or 1.
pub(super) fn sign(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    Ok(TensorType::new(
        sign_type(&inputs[0].elem),
        inputs[0].shape.clone(),
    ))
}

/// Abs: integers stay integers (their range folded at 0); anything else is f32.
pub(super) fn abs(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let elem = match &inputs[0].elem {
        ElemType::Int(t) => {
            let (lo, hi) = (t.min(), t.max());
            let top = lo.unsigned_abs().max(hi.unsigned_abs());
            let bottom = if lo <= 0 && hi >= 0 {
                0
            } else {
                lo.unsigned_abs().min(hi.unsigned_abs())
            };
            match (i64::try_from(bottom), i64::try_from(top)) {
                (Ok(b), Ok(t)) => ElemType::Int(IntType::covering(b, t)),
                _ => ElemType::F32,
            }
        }
        _ => ElemType::F32,
    };
    Ok(TensorType::new(elem, inputs[0].shape.clone()))
}

/// Round (halves to even): integers are their own rounding; anything else is f32.
pub(super) fn round(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let elem = match &inputs[0].elem {
        e @ ElemType::Int(_) => e.clone(),
        _ => ElemType::F32,
    };
    Ok(TensorType::new(elem, inputs[0].shape.clone()))
}

/// A comparison: 0 or 1 (`binary`) over the operands' broadcast.
pub(super) fn compare(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    let shape =
        broadcast::shape(&[&inputs[0].shape, &inputs[1].shape]).map_err(|e| e.to_string())?;
    Ok(TensorType::new(ElemType::BINARY, shape))
}

/// Clip to `[min, max]`.
pub(super) fn clip(min: f32, max: f32, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    Ok(TensorType::new(
        clip_type(&inputs[0].elem, min, max),
        inputs[0].shape.clone(),
    ))
}

fn clip_type(elem: &ElemType, min: f32, max: f32) -> ElemType {
    // Clip is monotone, so the results of [t.min, t.max] span [clip(t.min), clip(t.max)].
    let clip = |v: f64| v.max(f64::from(min)).min(f64::from(max));
    let as_int = |v: f64| (v.fract() == 0.0 && v.abs() < 9e15).then_some(v as i64);
    let narrowed = |t: IntType| -> Option<Option<IntType>> {
        let (lo, hi) = (as_int(clip(t.min() as f64))?, as_int(clip(t.max() as f64))?);
        Some((lo > t.min() || hi < t.max()).then(|| IntType::covering(lo.min(hi), hi.max(lo))))
    };
    match elem {
        ElemType::Int(t) => match narrowed(*t) {
            Some(Some(n)) => ElemType::Int(n),
            Some(None) => elem.clone(),
            None => ElemType::F32,
        },
        // In units of a positive per-tensor scale, bounds that are multiples of it act on the
        // integers alone.
        ElemType::Scaled(t, Scale::Tensor(s)) if *s > 0.0 => {
            let units = |b: f32| {
                if b.is_infinite() {
                    return Some(f64::from(b));
                }
                let k = (b / s).round();
                (k * s == b).then_some(f64::from(k))
            };
            let (Some(lo), Some(hi)) = (units(min), units(max)) else {
                return ElemType::F32;
            };
            let clip = |v: f64| v.max(lo).min(hi);
            let (a, b) = (clip(t.min() as f64), clip(t.max() as f64));
            match (as_int(a), as_int(b)) {
                (Some(a), Some(b)) if a > t.min() || b < t.max() => {
                    ElemType::Scaled(IntType::covering(a.min(b), b.max(a)), Scale::Tensor(*s))
                }
                (Some(_), Some(_)) => elem.clone(),
                _ => ElemType::F32,
            }
        }
        _ => ElemType::F32,
    }
}

/// The type of `x op c` for a value `x` of integers times a power-of-two scale (or plain
/// integers) and a scalar constant `c`, when every result is exact in f32 or rounds once:
/// adding or subtracting a multiple of the scale shifts the integers, multiplying or dividing
/// by a positive power of two moves the scale, and any other multiplier makes a scaled
/// integer ([`scaling_type`]). (`(x + 1) / 2` of a bipolar `x` is `u2*0.5`.)
fn affine_type(
    op: BinaryOp,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Option<ElemType> {
    if op == BinaryOp::Mul {
        if let Some(elem) = scaling_type(inputs, consts) {
            return Some(elem);
        }
    }
    let scalar = |i: usize| {
        consts[i]
            .filter(|t| t.len() == 1)
            .map(|t| t.to_f32_vec()[0])
    };
    let (value, c, const_first) = match (scalar(0), scalar(1)) {
        (None, Some(c)) => (inputs[0], c, false),
        (Some(c), None) => (inputs[1], c, true),
        _ => return None,
    };
    let (int, s) = value.elem.exact_scaled()?;
    let (lo, hi) = (i128::from(int.min()), i128::from(int.max()));
    let units = (c / s).round();
    let is_multiple = units * s == c && units.abs() <= F32_EXACT_LIMIT as f32;
    let k = units as i128;
    let (range, scale) = match (op, const_first) {
        (BinaryOp::Add, _) if is_multiple => ((lo + k, hi + k), s),
        (BinaryOp::Sub, false) if is_multiple => ((lo - k, hi - k), s),
        (BinaryOp::Sub, true) if is_multiple => ((k - hi, k - lo), s),
        (BinaryOp::Div, false) if is_power_of_two(c) && is_power_of_two(s / c) => ((lo, hi), s / c),
        _ => return None,
    };
    if range.0 < -F32_EXACT_LIMIT || range.1 > F32_EXACT_LIMIT {
        return None;
    }
    // Within +-2^24, so the casts are lossless.
    let int = IntType::covering(range.0 as i64, range.1 as i64);
    Some(if scale == 1.0 {
        ElemType::Int(int)
    } else {
        ElemType::Scaled(int, Scale::Tensor(scale))
    })
}

/// The type of `x * c` for integers `x` (or integers times a power-of-two scale) and a
/// constant `c`, one number or one per channel (axis 1), finite and nonzero: `int * (s * c)`
/// rounded once, a scaled integer whatever `c` is. (A lowered XNOR-Net layer is its integer
/// accumulator times its per-channel weight scale.)
fn scaling_type(inputs: &[&TensorType], consts: &[Option<&Tensor>]) -> Option<ElemType> {
    let (value, c) = match (consts[0], consts[1]) {
        (None, Some(c)) => (inputs[0], c),
        (Some(c), None) => (inputs[1], c),
        _ => return None,
    };
    let (int, s) = value.elem.exact_scaled()?;
    let factors = c.to_f32_vec();
    // `s * c` is exact (a power-of-two `s`), and a normal result keeps it so.
    let scales: Vec<f32> = factors.iter().map(|&f| s * f).collect();
    if !scales.iter().all(|v| v.is_normal()) {
        return None;
    }
    if scales.iter().all(|&v| v == 1.0) {
        return Some(ElemType::Int(int));
    }
    if let [scale] = scales[..] {
        return Some(ElemType::Scaled(int, Scale::Tensor(scale)));
    }
    // One factor per channel: `c` varies only along axis 1 of `x` (aligned right) and adds
    // no axis.
    let (x, cs) = (&value.shape, c.shape());
    let offset = x.len().checked_sub(cs.len())?;
    let per_channel = x.len() >= 2
        && cs
            .iter()
            .enumerate()
            .all(|(i, &d)| d == 1 || (offset + i == 1 && d == x[1]));
    per_channel.then(|| {
        ElemType::Scaled(
            int,
            Scale::Channel {
                axis: 1,
                values: scales.into(),
            },
        )
    })
}

fn relu_type(elem: &ElemType) -> ElemType {
    match elem {
        // max(±1, 0) is {0, 1}.
        ElemType::Int(IntType::Bipolar) => ElemType::BINARY,
        ElemType::Scaled(IntType::Bipolar, Scale::Tensor(s)) => {
            ElemType::Scaled(IntType::Binary, Scale::Tensor(s.abs()))
        }
        ElemType::Scaled(IntType::Bipolar, Scale::Channel { axis, values })
            if values.iter().all(|&v| v > 0.0) =>
        {
            ElemType::Scaled(
                IntType::Binary,
                Scale::Channel {
                    axis: *axis,
                    values: values.clone(),
                },
            )
        }
        ElemType::Scaled(IntType::Bipolar, _) => ElemType::F32,
        // Any other integer range that holds its positive values holds 0 too.
        other => other.clone(),
    }
}

fn sign_type(elem: &ElemType) -> ElemType {
    let scale_nonzero = match elem {
        ElemType::Scaled(_, Scale::Tensor(s)) => *s != 0.0 && !s.is_nan(),
        ElemType::Scaled(_, Scale::Channel { values, .. }) => {
            values.iter().all(|v| *v != 0.0 && !v.is_nan())
        }
        _ => true,
    };
    let scale_positive = match elem {
        ElemType::Scaled(_, Scale::Tensor(s)) => *s > 0.0,
        ElemType::Scaled(_, Scale::Channel { values, .. }) => values.iter().all(|v| *v > 0.0),
        _ => true,
    };
    match elem.int_type() {
        // No zero among ±s: the signs are ±1 again.
        Some(IntType::Bipolar) if scale_nonzero => ElemType::BIPOLAR,
        Some(t) if t.min() >= 0 && scale_positive => ElemType::BINARY,
        _ => ElemType::Int(IntType::Signed(2)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::{f32t, infer_vars, typed};
    use crate::op::Op;

    #[test]
    fn elementwise_types() {
        let bip = typed(ElemType::BIPOLAR, &[3]);
        assert_eq!(
            infer_vars(&Op::Sign, std::slice::from_ref(&bip)).unwrap()[0].elem,
            ElemType::BIPOLAR
        );
        assert_eq!(
            infer_vars(&Op::Sign, &[f32t(&[3])]).unwrap()[0].elem,
            ElemType::Int(IntType::Signed(2))
        );
        assert_eq!(
            infer_vars(&Op::Relu, std::slice::from_ref(&bip)).unwrap()[0].elem,
            ElemType::BINARY
        );
        let clip = |min, max| {
            infer_vars(
                &Op::Clip { min, max },
                &[typed(ElemType::Int(IntType::Signed(8)), &[3])],
            )
        };
        assert_eq!(
            clip(-8.0, 7.0).unwrap()[0].elem,
            ElemType::Int(IntType::Signed(4))
        );
        assert_eq!(
            clip(0.0, 3.0).unwrap()[0].elem,
            ElemType::Int(IntType::Unsigned(2))
        );
        assert_eq!(
            clip(-1000.0, 1000.0).unwrap()[0].elem,
            ElemType::Int(IntType::Signed(8))
        );
        assert_eq!(clip(-0.5, 3.0).unwrap()[0].elem, ElemType::F32);
        let add = infer_vars(
            &Op::Binary(crate::op::BinaryOp::Add),
            &[f32t(&[2, 1, 3]), f32t(&[4, 1])],
        )
        .unwrap();
        assert_eq!(add[0].shape, vec![2, 4, 3]);
        let i64s = [typed(ElemType::I64, &[2]), typed(ElemType::I64, &[1])];
        assert_eq!(
            infer_vars(&Op::Binary(crate::op::BinaryOp::Mul), &i64s).unwrap()[0].elem,
            ElemType::I64
        );
    }
}
