//! Elementwise ops: Relu, Sign, Abs, Round, Neg, the arithmetic Add / Sub / Mul / Div / Pow,
//! Min and Max, and the comparisons and Not on runtime values (ONNX's bools are `binary`
//! values, 0 and 1, which Cast to float leaves as they are).

use bnnc_ir::{BinaryOp, CompareOp, ElemType, Op, TensorData};

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

/// Neg: `x * -1`, which is `-x` exactly in IEEE arithmetic (signed zeros and NaN included).
pub fn neg(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    let minus_one = cx.scalar(&format!("{}.minus_one", node.name), -1.0);
    cx.add_node(node, Op::Binary(BinaryOp::Mul), &[inputs[0], minus_one])
}

/// Min and Max of one or more operands, with broadcasting, folded left to right.
pub fn min_max(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let op = match node.op_type {
        "Min" => BinaryOp::Min,
        "Max" => BinaryOp::Max,
        other => return Err(format!("internal error: `{other}` is not Min or Max").into()),
    };
    let count = node.inputs.len();
    if count == 0 {
        return Err("has no operands".into());
    }
    let inputs = operands(cx, node, count)?;
    if count == 1 {
        let out = node.output(0).ok_or("the result is unnamed")?;
        return Ok(cx.bind(out, inputs[0])?);
    }
    let mut acc = inputs[0];
    for (i, &next) in inputs[1..count - 1].iter().enumerate() {
        acc = cx.add_step(
            node,
            &format!("{}{}", op.name(), i),
            Op::Binary(op),
            &[acc, next],
        )?;
    }
    cx.add_node(node, Op::Binary(op), &[acc, inputs[count - 1]])
}

/// Less, LessOrEqual, Greater, GreaterOrEqual and Equal of runtime values: 1 where the
/// comparison holds, else 0.
pub fn compare(cx: &mut Importer, node: &OnnxNode, op: CompareOp) -> NodeResult {
    let inputs = operands(cx, node, 2)?;
    cx.add_node(node, Op::Compare(op), &inputs)
}

/// Not of a bool (a `binary` value): `x == 0`.
pub fn not(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    let elem = cx.elem(inputs[0]);
    if elem != ElemType::BINARY {
        return Err(format!("Not of a {elem} value (it takes the result of a comparison)").into());
    }
    let zero = cx.scalar(&format!("{}.zero", node.name), 0.0);
    cx.add_node(node, Op::Compare(CompareOp::Equal), &[inputs[0], zero])
}
