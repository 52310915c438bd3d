//! Elementwise ops: Relu, Sign, and the arithmetic Add / Sub / Mul / Div / Pow.

use bnnc_ir::{BinaryOp, Op, TensorData};

use super::{operands, NodeResult, OnnxNode};
use crate::import::{default_elem, Importer};
use crate::shape_fold::{int_arith, IntArith};

/// A one-operand op.
pub fn unary(cx: &mut Importer, node: &OnnxNode, op: Op) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    cx.add_node(node, op, &inputs)
}

/// Add, Sub, Mul, Div and Pow. Integer arithmetic on constants is shape computation and is
/// folded; anything on floats stays a node, even between constants (the passes fold those
/// knowing the IR's rounding).
pub fn arithmetic(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let (op, int_op) = match node.op_type {
        "Add" => (BinaryOp::Add, Some(IntArith::Add)),
        "Sub" => (BinaryOp::Sub, Some(IntArith::Sub)),
        "Mul" => (BinaryOp::Mul, Some(IntArith::Mul)),
        "Div" => (BinaryOp::Div, Some(IntArith::Div)),
        "Pow" => (BinaryOp::Pow, None),
        other => return Err(format!("internal error: `{other}` is not arithmetic").into()),
    };
    let inputs = operands(cx, node, 2)?;
    let int_consts = (cx.const_data(inputs[0]), cx.const_data(inputs[1]));
    if let (Some(int_op), (Some(a), Some(b))) = (int_op, int_consts) {
        if matches!(
            (a.data(), b.data()),
            (TensorData::I64(_), TensorData::I64(_))
        ) {
            let result = int_arith(int_op, a, b)?;
            let out = node.output(0).ok_or("the result is unnamed")?;
            let elem = default_elem(&result);
            return Ok(cx.bind_const(
                out,
                result,
                elem,
                Some(crate::tensor_data::DataType::Int64),
            )?);
        }
    }
    cx.add_node(node, Op::Binary(op), &inputs)
}
