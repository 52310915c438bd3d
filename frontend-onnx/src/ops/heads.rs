//! Network heads: Softmax and TopK.

use bnnc_ir::Op;

use super::{const_operand, normalize_axis, operand, to_usize, NodeResult, OnnxNode};
use crate::import::Importer;
use crate::shape_fold::single_int;

/// ONNX Softmax. Before opset 13 the input is viewed as 2-D at `axis` (default 1); from 13 on
/// it is a plain softmax along `axis` (default -1).
pub fn softmax(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let coerce_2d = cx.opset < 13;
    let axis = node.attrs.int_or("axis", if coerce_2d { 1 } else { -1 })?;
    let axis = normalize_axis(axis, cx.shape(x).len())?;
    cx.add_node(node, Op::Softmax { axis, coerce_2d }, &[x])
}

/// ONNX TopK: values and indices. `k` is an attribute before opset 10 and a constant operand
/// from 10 on.
pub fn top_k(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let k = if cx.opset < 10 {
        node.attrs.int("k")?.ok_or("attribute `k` is missing")?
    } else {
        single_int(const_operand(cx, node, 1, "k")?.ok_or("k (operand 1) is missing")?)?
    };
    let k = to_usize(k, "k")?;
    let axis = normalize_axis(node.attrs.int_or("axis", -1)?, cx.shape(x).len())?;
    let largest = node.attrs.flag_or("largest", true)?;
    let sorted = node.attrs.flag_or("sorted", true)?;
    cx.add_node(
        node,
        Op::TopK {
            k,
            axis,
            largest,
            sorted,
        },
        &[x],
    )
}
