//! Pooling and reductions.

use bnnc_ir::{Op, PoolAttrs};

use super::window::window;
use super::{const_operand, normalize_axes, operand, operands, to_usize, NodeResult, OnnxNode};
use crate::import::Importer;
use crate::shape_fold::int_values;

/// The attributes of MaxPool and AveragePool.
fn pool_attrs(cx: &Importer, node: &OnnxNode, count_include_pad: bool) -> NodeResult<PoolAttrs> {
    let kernel = node
        .attrs
        .ints("kernel_shape")?
        .ok_or("attribute `kernel_shape` is missing")?
        .iter()
        .map(|&k| {
            to_usize(k, "a kernel extent").and_then(|k| {
                if k == 0 {
                    Err("a kernel extent of 0".into())
                } else {
                    Ok(k)
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let x_shape = cx.shape(operand(cx, node, 0)?);
    if x_shape.len() != kernel.len() + 2 {
        return Err(format!("input of shape {x_shape:?} for a {}-d kernel", kernel.len()).into());
    }
    let window = window(&node.attrs, &kernel, &x_shape[2..])?;
    Ok(PoolAttrs {
        kernel,
        strides: window.strides,
        dilations: window.dilations,
        pads: window.pads,
        ceil_mode: node.attrs.flag_or("ceil_mode", false)?,
        count_include_pad,
    })
}

/// ONNX MaxPool without the indices result (`storage_order` only concerns those).
pub fn max_pool(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if node.output(1).is_some() {
        return Err("the indices result of MaxPool is not supported".into());
    }
    let attrs = pool_attrs(cx, node, false)?;
    let inputs = operands(cx, node, 1)?;
    cx.add_node(node, Op::MaxPool(attrs), &inputs)
}

/// ONNX AveragePool.
pub fn average_pool(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let count_include_pad = node.attrs.flag_or("count_include_pad", false)?;
    let attrs = pool_attrs(cx, node, count_include_pad)?;
    let inputs = operands(cx, node, 1)?;
    cx.add_node(node, Op::AveragePool(attrs), &inputs)
}

/// ONNX GlobalAveragePool.
pub fn global_average_pool(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    cx.add_node(node, Op::GlobalAveragePool, &inputs)
}

/// ONNX GlobalMaxPool: the MaxPool whose window is the whole plane (kernel = the spatial
/// extents, unit strides, no padding), one output per channel plane, kept as extent 1.
pub fn global_max_pool(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x_shape = cx.shape(operand(cx, node, 0)?);
    if x_shape.len() < 3 {
        return Err(
            format!("input of shape {x_shape:?}: GlobalMaxPool needs (N, C, spatial...)").into(),
        );
    }
    let spatial = x_shape.len() - 2;
    let attrs = PoolAttrs {
        kernel: x_shape[2..].to_vec(),
        strides: vec![1; spatial],
        dilations: vec![1; spatial],
        pads: vec![0; 2 * spatial],
        ceil_mode: false,
        count_include_pad: false,
    };
    let inputs = operands(cx, node, 1)?;
    cx.add_node(node, Op::MaxPool(attrs), &inputs)
}

/// ONNX ReduceMean: axes as an attribute before opset 18, as an optional operand from 18 on.
/// No axes means every axis, or nothing at all with `noop_with_empty_axes`.
pub fn reduce_mean(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let axes = if cx.opset < 18 {
        node.attrs.ints("axes")?.map(<[i64]>::to_vec)
    } else {
        const_operand(cx, node, 1, "the axes")?
            .map(int_values)
            .transpose()?
    };
    let keep_dims = node.attrs.flag_or("keepdims", true)?;
    let rank = cx.shape(x).len();
    let axes = match axes {
        Some(axes) if !axes.is_empty() => normalize_axes(&axes, rank)?,
        _ if node.attrs.flag_or("noop_with_empty_axes", false)? => {
            let out = node.output(0).ok_or("the result is unnamed")?;
            return Ok(cx.bind(out, x)?);
        }
        _ => (0..rank).collect(),
    };
    cx.add_node(node, Op::ReduceMean { axes, keep_dims }, &[x])
}
