//! Pooling and reductions: MaxPool, MinMaxPool, AveragePool, GlobalAveragePool and ReduceMean.
//!
//! Max and min pick input values, so they keep the input's type (a per-channel scale holds on
//! the batch and channel axes, which pooling keeps); averages are `f32`.

use super::{arity, map_channel_axis};
use crate::op::PoolAttrs;
use crate::types::{ElemType, Shape, TensorType};

/// MaxPool.
pub(super) fn max_pool(attrs: &PoolAttrs, inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let shape = pool_shape(attrs, inputs[0])?;
    // Pooling keeps the batch and channel axes, so a per-channel scale on them holds.
    let elem = map_channel_axis(&inputs[0].elem, |a| (a < 2).then_some(a));
    Ok(TensorType::new(elem, shape))
}

/// AveragePool.
pub(super) fn average_pool(
    attrs: &PoolAttrs,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    Ok(TensorType::new(
        ElemType::F32,
        pool_shape(attrs, inputs[0])?,
    ))
}

/// MinMaxPool: a max or (where `min` says so) a min pool per channel.
pub(super) fn min_max_pool(
    attrs: &PoolAttrs,
    min: &[bool],
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let shape = pool_shape(attrs, inputs[0])?;
    if min.len() != shape[1] {
        return Err(format!("{} min flags for {} channels", min.len(), shape[1]));
    }
    let elem = map_channel_axis(&inputs[0].elem, |a| (a < 2).then_some(a));
    Ok(TensorType::new(elem, shape))
}

/// GlobalAveragePool: every spatial axis averaged to one element.
pub(super) fn global_average_pool(inputs: &[&TensorType]) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    if x.shape.len() < 3 {
        return Err(format!(
            "input has rank {}, expected at least 3 (N, C, spatial...)",
            x.shape.len()
        ));
    }
    let mut shape = x.shape.clone();
    shape[2..].fill(1);
    Ok(TensorType::new(ElemType::F32, shape))
}

/// ReduceMean over `axes` (all of them when empty), kept as extents of 1 with `keep_dims`.
pub(super) fn reduce_mean(
    axes: &[usize],
    keep_dims: bool,
    inputs: &[&TensorType],
) -> Result<TensorType, String> {
    arity(inputs, 1, 1)?;
    let x = inputs[0];
    let reduced = reduced_axes(axes, x.shape.len())?;
    let shape = x
        .shape
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (reduced[i], keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    Ok(TensorType::new(ElemType::F32, shape))
}

fn pool_shape(attrs: &PoolAttrs, x: &TensorType) -> Result<Shape, String> {
    let window = attrs.window();
    window.check_rank(&x.shape)?;
    for i in 0..attrs.kernel.len() {
        let pads = window.axis_pads(i);
        // onnxruntime's rule; it also guarantees every window holds an input element.
        if pads.0 >= attrs.kernel[i] || pads.1 >= attrs.kernel[i] {
            return Err(format!(
                "pads {pads:?} of spatial axis {i} are not smaller than the kernel {}",
                attrs.kernel[i]
            ));
        }
    }
    let mut shape = x.shape[..2].to_vec();
    shape.extend(window.output_extents(&x.shape)?);
    Ok(shape)
}

/// Which axes a ReduceMean reduces (no axes: all of them, as ONNX does).
fn reduced_axes(axes: &[usize], rank: usize) -> Result<Vec<bool>, String> {
    if axes.is_empty() {
        return Ok(vec![true; rank]);
    }
    let mut reduced = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(format!("axis {a} out of range for rank {rank}"));
        }
        if std::mem::replace(&mut reduced[a], true) {
            return Err(format!("axis {a} is listed twice"));
        }
    }
    Ok(reduced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tests::{f32t, infer_vars, typed};
    use crate::op::Op;

    fn pool(kernel: usize, stride: usize, pads: [usize; 4], ceil_mode: bool) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![kernel; 2],
            strides: vec![stride; 2],
            dilations: vec![1; 2],
            pads: pads.to_vec(),
            ceil_mode,
            count_include_pad: false,
        }
    }

    #[test]
    fn pooling_shapes() {
        let shape = |attrs: PoolAttrs, x: &[usize]| {
            infer_vars(&Op::MaxPool(attrs), &[f32t(x)]).map(|t| t[0].shape.clone())
        };
        assert_eq!(
            shape(pool(2, 2, [0; 4], false), &[1, 1, 5, 5]),
            Ok(vec![1, 1, 2, 2])
        );
        assert_eq!(
            shape(pool(2, 2, [0; 4], true), &[1, 1, 5, 5]),
            Ok(vec![1, 1, 3, 3])
        );
        // 6 + 1 left pad, k 2, s 2: the partial 4th window starts at 5, inside the input.
        assert_eq!(
            shape(pool(2, 2, [1, 1, 0, 0], true), &[1, 1, 6, 6]),
            Ok(vec![1, 1, 4, 4])
        );
        // 5 + 1 right pad, k 2, s 3: a 3rd window would start at 6, past the input: dropped.
        assert_eq!(
            shape(pool(2, 3, [0, 0, 1, 1], true), &[1, 1, 5, 5]),
            Ok(vec![1, 1, 2, 2])
        );
        assert!(shape(pool(2, 2, [2, 2, 0, 0], false), &[1, 1, 6, 6])
            .unwrap_err()
            .contains("smaller than the kernel"));
        let bip = typed(ElemType::BIPOLAR, &[1, 2, 4, 4]);
        assert_eq!(
            infer_vars(
                &Op::MaxPool(pool(2, 2, [0; 4], false)),
                std::slice::from_ref(&bip)
            )
            .unwrap()[0]
                .elem,
            ElemType::BIPOLAR
        );
        assert_eq!(
            infer_vars(&Op::AveragePool(pool(2, 2, [0; 4], false)), &[bip]).unwrap()[0].elem,
            ElemType::F32
        );
    }
}
