//! numpy broadcasting, the one definition every part of bnnc uses.
//!
//! Shapes are aligned at their last axis; a missing leading axis counts as extent 1, and an
//! extent of 1 repeats to any other extent. Type inference gives elementwise results the
//! [`shape`] of their operands; the interpreter, the ONNX frontend's constant folding and the
//! backends read an operand broadcast to a result through its [`strides`].

use crate::types::Shape;

/// Why shapes do not broadcast. The text is a reason: callers add the node and op.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BroadcastError {
    /// Some axis has two extents, neither of them 1: no shape is the broadcast of all.
    #[error("shapes {} do not broadcast", list(.0))]
    Incompatible(Vec<Shape>),
    /// `from` does not broadcast to exactly `to`: it has more axes, or an extent that is
    /// neither 1 nor `to`'s.
    #[error("shape {from:?} does not broadcast to {to:?}")]
    NotTo { from: Shape, to: Shape },
}

/// `[2], [3] and [4]`.
fn list(shapes: &[Shape]) -> String {
    let texts: Vec<String> = shapes.iter().map(|s| format!("{s:?}")).collect();
    match texts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => texts.concat(),
    }
}

/// The shape all of `shapes` broadcast to (numpy's `broadcast_shapes`). No shapes give the
/// scalar shape `[]`.
pub fn shape(shapes: &[&[usize]]) -> Result<Shape, BroadcastError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut result = vec![1; rank];
    for s in shapes {
        for (r, &d) in result[rank - s.len()..].iter_mut().zip(*s) {
            match (*r, d) {
                (x, y) if x == y || y == 1 => {}
                (1, y) => *r = y,
                _ => {
                    return Err(BroadcastError::Incompatible(
                        shapes.iter().map(|s| s.to_vec()).collect(),
                    ))
                }
            }
        }
    }
    Ok(result)
}

/// Whether `from` broadcasts to exactly `to` (ONNX's unidirectional broadcasting): `to` has
/// at least its axes, and each of its extents is 1 or `to`'s.
pub fn broadcasts_to(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == 1 || f == t)
}

/// The element strides, one per axis of `to`, at which a dense row-major tensor of shape
/// `from` is read when it is broadcast to `to`: its own strides on its axes, 0 on the axes
/// it lacks or repeats. Errs unless `from` [`broadcasts_to`] `to`.
pub fn strides(from: &[usize], to: &[usize]) -> Result<Vec<usize>, BroadcastError> {
    if !broadcasts_to(from, to) {
        return Err(BroadcastError::NotTo {
            from: from.to_vec(),
            to: to.to_vec(),
        });
    }
    let lead = to.len() - from.len();
    let mut strides = vec![0; to.len()];
    let mut step = 1usize;
    for (a, &d) in from.iter().enumerate().rev() {
        if d != 1 {
            strides[lead + a] = step;
        }
        // Saturating: a product that overflows lies left of an extent of 0, and an empty
        // tensor is never read.
        step = step.saturating_mul(d);
    }
    Ok(strides)
}

/// The index of the element of the operand that the row-major element `flat` of `to` reads,
/// given the operand's [`strides`] to `to`.
pub fn source_index(flat: usize, to: &[usize], strides: &[usize]) -> usize {
    debug_assert_eq!(to.len(), strides.len());
    let mut rest = flat;
    let mut index = 0;
    for (&extent, &stride) in to.iter().zip(strides).rev() {
        // `max(1)`: a shape with an extent of 0 has no elements to ask about.
        index += rest % extent.max(1) * stride;
        rest /= extent.max(1);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_shape() {
        assert_eq!(shape(&[&[2, 1, 4], &[3, 1]]), Ok(vec![2, 3, 4]));
        assert_eq!(shape(&[&[5], &[]]), Ok(vec![5]));
        assert_eq!(shape(&[&[1], &[0]]), Ok(vec![0]));
        assert_eq!(shape(&[&[3, 1], &[1, 4], &[2, 1, 1]]), Ok(vec![2, 3, 4]));
        assert_eq!(shape(&[]), Ok(vec![]));
    }

    #[test]
    fn incompatible_shapes_are_named() {
        let err = shape(&[&[2, 3], &[4]]).unwrap_err();
        assert_eq!(err.to_string(), "shapes [2, 3] and [4] do not broadcast");
        let err = shape(&[&[1], &[2], &[3]]).unwrap_err();
        assert_eq!(err.to_string(), "shapes [1], [2] and [3] do not broadcast");
        // 0 is an extent like any other: only 1 repeats.
        assert!(shape(&[&[0], &[3]]).is_err());
    }

    #[test]
    fn unidirectional() {
        assert!(broadcasts_to(&[3, 1], &[2, 3, 4]));
        assert!(broadcasts_to(&[], &[2]));
        assert!(!broadcasts_to(&[1, 3], &[3]));
        assert!(!broadcasts_to(&[2], &[3]));
        // Both broadcast to [2, 3], but [1, 3] is not [2, 3].
        assert!(!broadcasts_to(&[2, 3], &[1, 3]));
    }

    #[test]
    fn strides_of_a_broadcast_operand() {
        assert_eq!(strides(&[3, 1], &[2, 3, 4]), Ok(vec![0, 1, 0]));
        assert_eq!(strides(&[2, 3, 4], &[2, 3, 4]), Ok(vec![12, 4, 1]));
        assert_eq!(strides(&[1, 1], &[5, 6]), Ok(vec![0, 0]));
        assert_eq!(strides(&[], &[5]), Ok(vec![0]));
        let err = strides(&[2], &[3]).unwrap_err();
        assert_eq!(err.to_string(), "shape [2] does not broadcast to [3]");
        assert!(strides(&[1, 3], &[3]).is_err());
    }

    #[test]
    fn source_indices() {
        let to = [2, 3, 2];
        let s = strides(&[3, 1], &to).unwrap();
        let read: Vec<usize> = (0..12).map(|i| source_index(i, &to, &s)).collect();
        assert_eq!(read, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        let s = strides(&[2, 1, 2], &to).unwrap();
        let read: Vec<usize> = (0..12).map(|i| source_index(i, &to, &s)).collect();
        assert_eq!(read, vec![0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3]);
    }
}
