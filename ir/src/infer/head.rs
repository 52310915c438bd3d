//! Network heads: Softmax and TopK.
//!
//! Softmax gives probabilities, `f32`. TopK picks values, so they keep the input's type (a
//! per-channel scale only off the sorted axis), and gives their indices as `i64`.

use super::{arity, map_channel_axis};
use crate::types::{ElemType, TensorType};

/// Softmax along `axis`.
pub(super) fn softmax(axis: usize, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let rank = inputs[0].shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(TensorType::new(ElemType::F32, inputs[0].shape.clone()))
}

/// TopK: the `k` values along `axis`, then their indices.
pub(super) fn top_k(
    k: usize,
    axis: usize,
    inputs: &[&TensorType],
) -> Result<Vec<TensorType>, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    let rank = x.shape.len();
    if axis >= rank {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    if k > x.shape[axis] {
        return Err(format!(
            "k = {k} exceeds the extent {} of axis {axis}",
            x.shape[axis]
        ));
    }
    let mut shape = x.shape.clone();
    shape[axis] = k;
    let values = map_channel_axis(&x.elem, |a| (a != axis).then_some(a));
    Ok(vec![
        TensorType::new(values, shape.clone()),
        TensorType::new(ElemType::I64, shape),
    ])
}
