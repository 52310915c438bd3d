//! Data movement: Reshape, Transpose, Pad and Concat.
//!
//! Values move but do not change, so the element type is the input's, except where it depends
//! on axes or on new values: a per-channel scale follows its axis (and is lost where the axis
//! is merged, padded or concatenated along), and a pad value may widen the integer range.

use super::{arity, map_channel_axis};
use crate::types::{checked_numel, ElemType, IntType, Scale, Shape, TensorType};

/// Reshape to `shape`, which must hold as many elements.
pub(super) fn reshape(shape: &[usize], inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    let to = checked_numel(shape).ok_or("target shape has too many elements")?;
    let from = checked_numel(&x.shape).ok_or("input has too many elements")?;
    if to != from {
        return Err(format!(
            "cannot reshape {:?} ({from} elements) to {shape:?} ({to} elements)",
            x.shape
        ));
    }
    let elem = if shape == x.shape {
        x.elem.clone()
    } else {
        map_channel_axis(&x.elem, |_| None)
    };
    Ok(TensorType::new(elem, shape.to_vec()))
}

/// Transpose: result axis `i` is input axis `perm[i]`.
pub(super) fn transpose(perm: &[usize], inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    check_permutation(perm, x.shape.len())?;
    let shape = perm.iter().map(|&p| x.shape[p]).collect();
    let elem = map_channel_axis(&x.elem, |a| perm.iter().position(|&p| p == a));
    Ok(TensorType::new(elem, shape))
}

/// Constant padding: `pads` holds the begins of every axis, then the ends.
pub(super) fn pad(
    pads: &[usize],
    value: f32,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    let rank = x.shape.len();
    if pads.len() != 2 * rank {
        return Err(format!(
            "{} pads for an input of rank {rank}, expected {}",
            pads.len(),
            2 * rank
        ));
    }
    let shape = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            d.checked_add(pads[i])
                .and_then(|d| d.checked_add(pads[rank + i]))
        })
        .collect::<Option<Shape>>()
        .ok_or("padded shape overflows")?;
    let elem = if pads.iter().all(|&p| p == 0) {
        x.elem.clone()
    } else {
        let padded = |a: usize| pads[a] != 0 || pads[rank + a] != 0;
        pad_type(
            &map_channel_axis(&x.elem, |a| (!padded(a)).then_some(a)),
            value,
        )
    };
    Ok(TensorType::new(elem, shape))
}

/// Concat along `axis`: the operands agree on every other axis.
pub(super) fn concat(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, usize::MAX)?;
    let first = inputs[0];
    let rank = first.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    let mut extent = 0usize;
    for (i, t) in inputs.iter().enumerate() {
        let same_except_axis = t.shape.len() == rank
            && t.shape
                .iter()
                .zip(&first.shape)
                .enumerate()
                .all(|(a, (x, y))| a == axis || x == y);
        if !same_except_axis {
            return Err(format!(
                "operand {i} has shape {:?}, which does not match {:?} outside axis {axis}",
                t.shape, first.shape
            ));
        }
        extent = extent
            .checked_add(t.shape[axis])
            .ok_or("concatenated extent overflows")?;
    }
    let mut shape = first.shape.clone();
    shape[axis] = extent;
    let elem = if inputs.iter().all(|t| t.elem == first.elem) {
        map_channel_axis(&first.elem, |a| (a != axis).then_some(a))
    } else {
        ElemType::F32
    };
    Ok(TensorType::new(elem, shape))
}

fn check_permutation(perm: &[usize], rank: usize) -> Result<(), String> {
    let mut seen = vec![false; rank];
    let ok = perm.len() == rank
        && perm
            .iter()
            .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "perm {perm:?} is not a permutation of the {rank} axes"
        ))
    }
}

fn pad_type(elem: &ElemType, value: f32) -> ElemType {
    let (int, units) = match elem {
        ElemType::F32 => return ElemType::F32,
        ElemType::Int(t) => (*t, f64::from(value)),
        ElemType::Scaled(t, Scale::Tensor(s)) => {
            let k = (value / s).round();
            if k * s != value {
                return ElemType::F32;
            }
            (*t, f64::from(k))
        }
        ElemType::Scaled(t, Scale::Channel { .. }) if value == 0.0 => (*t, 0.0),
        ElemType::Scaled(..) => return ElemType::F32,
    };
    if int.contains(units) {
        return elem.clone();
    }
    if units.fract() != 0.0 || units.abs() > 9e15 {
        return ElemType::F32;
    }
    // Widen the range to take the pad value (bipolar padded with 0 becomes i2).
    let v = units as i64;
    let widened = IntType::covering(int.min().min(v), int.max().max(v));
    match elem {
        ElemType::Scaled(_, s) => ElemType::Scaled(widened, s.clone()),
        _ => ElemType::Int(widened),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::{f32t, infer_vars, typed};
    use crate::op::Op;

    #[test]
    fn layout_types() {
        let scale = Scale::Channel {
            axis: 1,
            values: vec![1.0, 2.0].into(),
        };
        let x = typed(ElemType::Scaled(IntType::Signed(4), scale), &[1, 2, 3]);
        let t = infer_vars(
            &Op::Transpose {
                perm: vec![0, 2, 1],
            },
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert!(matches!(
            &t[0].elem,
            ElemType::Scaled(_, Scale::Channel { axis: 2, .. })
        ));
        assert_eq!(t[0].shape, vec![1, 3, 2]);
        assert!(infer_vars(
            &Op::Transpose {
                perm: vec![0, 0, 1]
            },
            std::slice::from_ref(&x)
        )
        .is_err());
        let r = infer_vars(&Op::Reshape { shape: vec![6] }, std::slice::from_ref(&x)).unwrap();
        assert_eq!(r[0].elem, ElemType::F32);
        assert!(infer_vars(&Op::Reshape { shape: vec![7] }, &[x])
            .unwrap_err()
            .contains("6 elements"));

        let bip = typed(ElemType::BIPOLAR, &[1, 2, 2]);
        let pad = |value| Op::Pad {
            pads: vec![0, 0, 1, 0, 0, 1],
            value,
        };
        let t = infer_vars(&pad(0.0), std::slice::from_ref(&bip)).unwrap();
        assert_eq!(t[0], typed(ElemType::Int(IntType::Signed(2)), &[1, 2, 4]));
        assert_eq!(
            infer_vars(&pad(-1.0), std::slice::from_ref(&bip)).unwrap()[0].elem,
            ElemType::BIPOLAR
        );
        assert_eq!(
            infer_vars(&pad(0.5), std::slice::from_ref(&bip)).unwrap()[0].elem,
            ElemType::F32
        );

        let c = infer_vars(&Op::Concat { axis: 2 }, &[bip.clone(), bip.clone()]).unwrap();
        assert_eq!(c[0], typed(ElemType::BIPOLAR, &[1, 2, 4]));
        assert!(infer_vars(&Op::Concat { axis: 1 }, &[bip, f32t(&[1, 2, 3])]).is_err());
    }
}
