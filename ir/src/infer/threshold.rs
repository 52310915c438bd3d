//! FINN MultiThreshold and the lowered integer Threshold: `out_scale * count + out_bias`,
//! `count` the thresholds an element reaches.
//!
//! The result takes the type the attributes declare only when every level fits it, since
//! model files carry annotations that contradict their levels and the passes trust the type.

use super::arity;
use crate::op::ThresholdAttrs;
use crate::tensor::Tensor;
use crate::types::{ElemType, IntType, Scale, TensorType};

/// FINN MultiThreshold: thresholds `(C, N)` or `(1, N)` for the channel axis.
pub(super) fn multithreshold(
    attrs: &ThresholdAttrs,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 2, 2)?;
    check_thresholds(attrs, inputs[0], inputs[1])?;
    Ok(TensorType::new(
        threshold_type(attrs, inputs[1]),
        inputs[0].shape.clone(),
    ))
}

/// The lowered Threshold: a MultiThreshold with an optional third operand, a constant
/// direction (+1 or -1) per channel.
pub(super) fn threshold(
    attrs: &ThresholdAttrs,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<TensorType, String> {
    arity(inputs, 2, 3)?;
    check_thresholds(attrs, inputs[0], inputs[1])?;
    if let Some(directions) = inputs.get(2) {
        let channels = inputs[0].shape[attrs.channel_axis];
        if directions.shape != [channels] {
            return Err(format!(
                "directions have shape {:?}, expected [{channels}]",
                directions.shape
            ));
        }
        if let Some(d) = consts[2] {
            if d.to_f64_vec().iter().any(|&x| x != 1.0 && x != -1.0) {
                return Err("directions must be +1 (ascending) or -1 (descending)".into());
            }
        }
    }
    Ok(TensorType::new(
        threshold_type(attrs, inputs[1]),
        inputs[0].shape.clone(),
    ))
}

/// A threshold's result type: the one its attributes declare when every level it can give
/// (`out_scale * count + out_bias` in f32, for `count` in `0..=N`) is a value of it, else the
/// narrowest integer type of the levels (f32 when they are not all integers). So an
/// annotation that contradicts the levels (a UINT1 output biased by -1, a BIPOLAR one whose
/// levels are 0 and 1) never makes a type lie to the passes and backends.
fn threshold_type(attrs: &ThresholdAttrs, thresholds: &TensorType) -> ElemType {
    let levels = thresholds.shape.get(1).copied().unwrap_or(0);
    let values: Vec<f32> = (0..=levels)
        .map(|count| attrs.out_scale * count as f32 + attrs.out_bias)
        .collect();
    let scaled_fits = |t: IntType, s: f32| {
        values.iter().all(|&v| {
            let i = (f64::from(v) / f64::from(s)).round();
            t.contains(i) && (i as f32 * s).to_bits() == v.to_bits()
        })
    };
    let fits = match &attrs.out_type {
        ElemType::F32 => true,
        ElemType::Int(t) => values.iter().all(|&v| t.contains(f64::from(v))),
        ElemType::Scaled(t, Scale::Tensor(s)) => scaled_fits(*t, *s),
        ElemType::Scaled(t, Scale::Channel { values: scales, .. }) => {
            scales.iter().all(|&s| scaled_fits(*t, s))
        }
    };
    if fits {
        return attrs.out_type.clone();
    }
    if values.iter().all(|v| v.is_finite() && v.fract() == 0.0) {
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        ElemType::Int(IntType::covering(lo as i64, hi as i64))
    } else {
        ElemType::F32
    }
}

fn check_thresholds(attrs: &ThresholdAttrs, x: &TensorType, t: &TensorType) -> Result<(), String> {
    let rank = x.shape.len();
    let axis = attrs.channel_axis;
    if axis >= rank {
        return Err(format!("channel axis {axis} out of range for rank {rank}"));
    }
    let c = x.shape[axis];
    match t.shape[..] {
        [rows, _] if rows == 1 || rows == c => Ok(()),
        _ => Err(format!(
            "thresholds have shape {:?}, expected ({c}, N) or (1, N) for {c} channels on axis {axis}",
            t.shape
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::{f32t, infer_vars};
    use crate::op::Op;

    #[test]
    fn threshold_shapes() {
        let attrs = ThresholdAttrs {
            out_scale: 2.0,
            out_bias: -1.0,
            out_type: ElemType::BIPOLAR,
            channel_axis: 1,
        };
        let op = Op::MultiThreshold(attrs);
        assert_eq!(
            infer_vars(&op, &[f32t(&[1, 4, 2, 2]), f32t(&[4, 1])]).unwrap()[0].elem,
            ElemType::BIPOLAR
        );
        assert!(infer_vars(&op, &[f32t(&[1, 4, 2, 2]), f32t(&[1, 3])]).is_ok());
        let err = infer_vars(&op, &[f32t(&[1, 4, 2, 2]), f32t(&[3, 1])]).unwrap_err();
        assert!(err.contains("expected (4, N) or (1, N)"), "{err}");
    }
}
