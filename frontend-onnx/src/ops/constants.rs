//! Ops that only make constants: Constant itself, and the shape and index arithmetic exporters
//! write around Reshape (Shape, Size, Gather, Slice, Cast, ConstantOfShape, Equal, Where).
//!
//! Every value has a static shape, so `Shape` of anything is a constant, and these ops on
//! constants are computed here ([`crate::shape_fold`]). The IR has no such ops: on a value
//! computed at run time they are an error.

use bnnc_ir::{ElemType, Tensor, TensorData};

use super::{const_operand, normalize_axis, operand, NodeResult, OnnxNode};
use crate::import::{default_elem, Binding, Importer};
use crate::shape_fold::{self, folded_numel, int_values, slice_indices};
use crate::tensor_data::{decode_tensor, DataType};

/// The name of the node's (single) result.
fn result_name<'a>(node: &OnnxNode<'a>) -> NodeResult<&'a str> {
    Ok(node.output(0).ok_or("the result is unnamed")?)
}

/// Operand `i`'s data, which must be a constant (this op is not in the IR).
fn const_input<'c>(cx: &'c Importer, node: &OnnxNode, i: usize) -> NodeResult<&'c Tensor> {
    let b = operand(cx, node, i)?;
    cx.const_data(b).ok_or_else(|| {
        format!("{} of a value computed at run time is not supported (only constants and shapes are folded)", node.op_type)
            .into()
    })
}

/// Binds the node's result to a folded tensor of no particular ONNX type.
fn bind_folded(cx: &mut Importer, node: &OnnxNode, t: Tensor) -> NodeResult {
    let elem = default_elem(&t);
    let data_type = t.as_i64().map(|_| DataType::Int64);
    Ok(cx.bind_const(result_name(node)?, t, elem, data_type)?)
}

/// ONNX Constant: `value` (a tensor) or one of `value_float(s)` / `value_int(s)`.
pub fn constant(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let out = result_name(node)?;
    let attrs = &node.attrs;
    let (tensor, data_type) = if let Some(t) = attrs.tensor("value")? {
        let decoded = decode_tensor(t, out, cx.base_dir)?;
        (decoded.tensor, decoded.data_type)
    } else if let Some(v) = attrs.float("value_float")? {
        (Tensor::scalar(v), DataType::Float)
    } else if let Some(v) = attrs.floats("value_floats")? {
        (Tensor::f32(vec![v.len()], v.to_vec()), DataType::Float)
    } else if let Some(v) = attrs.int("value_int")? {
        (Tensor::i64(vec![], vec![v]), DataType::Int64)
    } else if let Some(v) = attrs.ints("value_ints")? {
        (Tensor::i64(vec![v.len()], v.to_vec()), DataType::Int64)
    } else {
        let given: Vec<&str> = attrs.names().collect();
        return Err(format!("no supported value attribute (has {given:?}; sparse and string constants are not supported)").into());
    };
    Ok(cx.bind_const(out, tensor, data_type.elem_type(), Some(data_type))?)
}

/// ONNX Shape (with opset 15's `start` / `end`): the static shape as an i64 constant.
pub fn shape(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let dims: Vec<i64> = cx.shape(x).iter().map(|&d| d as i64).collect();
    let rank = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
    let start = clamp(node.attrs.int_or("start", 0)?);
    let end = clamp(node.attrs.int_or("end", rank)?).max(start);
    let dims = dims[start..end].to_vec();
    bind_folded(cx, node, Tensor::i64(vec![dims.len()], dims))
}

/// ONNX Size: the number of elements as an i64 scalar.
pub fn size(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let numel = cx.shape(x).iter().product::<usize>();
    bind_folded(cx, node, Tensor::i64(vec![], vec![numel as i64]))
}

/// Binds the node's result to `t`, a rearrangement of `source`'s elements, which keeps
/// `source`'s element type.
fn bind_moved(cx: &mut Importer, node: &OnnxNode, source: Binding, t: Tensor) -> NodeResult {
    let (elem, data_type) = (cx.elem(source), cx.const_data_type(source));
    Ok(cx.bind_const(result_name(node)?, t, elem, data_type)?)
}

/// ONNX Gather of constants.
pub fn gather(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = const_input(cx, node, 0)?;
    let indices = const_input(cx, node, 1)?;
    let axis = normalize_axis(node.attrs.int_or("axis", 0)?, data.shape().len())?;
    let gathered = shape_fold::gather(data, indices, axis)?;
    bind_moved(cx, node, operand(cx, node, 0)?, gathered)
}

/// ONNX Slice of a constant: `starts`, `ends`, `axes` are attributes before opset 10; from 10
/// on they are operands, with `steps`.
pub fn slice(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = const_input(cx, node, 0)?;
    let (starts, ends, axes, steps) = if cx.opset < 10 {
        let list = |name: &str| node.attrs.ints(name).map(|v| v.map(<[i64]>::to_vec));
        (
            list("starts")?.ok_or("attribute `starts` is missing")?,
            list("ends")?.ok_or("attribute `ends` is missing")?,
            list("axes")?,
            None,
        )
    } else {
        let list = |i: usize, what: &str| {
            const_operand(cx, node, i, what)?
                .map(int_values)
                .transpose()
                .map_err(super::NodeError::from)
        };
        (
            list(1, "the starts")?.ok_or("the starts (operand 1) are missing")?,
            list(2, "the ends")?.ok_or("the ends (operand 2) are missing")?,
            list(3, "the axes")?,
            list(4, "the steps")?,
        )
    };
    let count = starts.len();
    let axes = axes.unwrap_or_else(|| (0..count as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; count]);
    if ends.len() != count || axes.len() != count || steps.len() != count {
        return Err("starts, ends, axes and steps differ in length".into());
    }
    let rank = data.shape().len();
    let mut ranges = Vec::with_capacity(count);
    for k in 0..count {
        let axis = normalize_axis(axes[k], rank)?;
        if ranges.iter().any(|(a, _)| *a == axis) {
            return Err(format!("axis {axis} is sliced twice").into());
        }
        ranges.push((
            axis,
            slice_indices(data.shape()[axis], starts[k], ends[k], steps[k])?,
        ));
    }
    let sliced = shape_fold::slice(data, &ranges)?;
    bind_moved(cx, node, operand(cx, node, 0)?, sliced)
}

/// `t` converted to ONNX type `to` (truncating floats towards zero, wrapping integers into
/// narrow types as a C cast does), with f32 data for every type but int64.
fn cast_tensor(t: &Tensor, to: DataType) -> Tensor {
    let shape = t.shape().to_vec();
    let as_int = |x: f64| if x.is_nan() { 0 } else { x.trunc() as i64 };
    let values = t.to_f64_vec();
    let converted: Vec<f32> = match to {
        DataType::Int64 => return Tensor::i64(shape, values.into_iter().map(as_int).collect()),
        DataType::Float | DataType::Double => return Tensor::f32(shape, t.to_f32_vec()),
        DataType::Bool => values
            .iter()
            .map(|&x| f32::from(u8::from(x != 0.0)))
            .collect(),
        DataType::Int8 => values.iter().map(|&x| f32::from(as_int(x) as i8)).collect(),
        DataType::Uint8 => values.iter().map(|&x| f32::from(as_int(x) as u8)).collect(),
        DataType::Int16 => values
            .iter()
            .map(|&x| f32::from(as_int(x) as i16))
            .collect(),
        DataType::Uint16 => values
            .iter()
            .map(|&x| f32::from(as_int(x) as u16))
            .collect(),
        DataType::Int32 => values.iter().map(|&x| as_int(x) as i32 as f32).collect(),
    };
    Tensor::f32(shape, converted)
}

/// ONNX Cast: computed on a constant; on a run-time value only to float, where it changes
/// nothing (the IR computes in f32).
pub fn cast(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let code = node.attrs.int("to")?.ok_or("attribute `to` is missing")?;
    let to = i32::try_from(code)
        .ok()
        .and_then(DataType::from_code)
        .ok_or_else(|| {
            format!(
                "cast to {} is not supported",
                DataType::code_name(i32::try_from(code).unwrap_or(-1))
            )
        })?;
    let out = result_name(node)?;
    match cx.const_data(x) {
        Some(t) => {
            let converted = cast_tensor(t, to);
            Ok(cx.bind_const(out, converted, to.elem_type(), Some(to))?)
        }
        None if matches!(to, DataType::Float | DataType::Double)
            && cx.elem(x).int_type() != Some(bnnc_ir::IntType::Signed(64)) =>
        {
            Ok(cx.bind(out, x)?)
        }
        None => {
            Err(format!("Cast of a value computed at run time to {to:?} is not supported").into())
        }
    }
}

/// ONNX ConstantOfShape: a constant shape filled with `value` (default float 0).
pub fn constant_of_shape(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let shape = int_values(const_input(cx, node, 0)?)?
        .into_iter()
        .map(|d| super::to_usize(d, "an extent"))
        .collect::<Result<Vec<_>, _>>()?;
    folded_numel(&shape)?;
    let (value, data_type) = match node.attrs.tensor("value")? {
        Some(t) => {
            let decoded = decode_tensor(t, result_name(node)?, cx.base_dir)?;
            (decoded.tensor, decoded.data_type)
        }
        None => (Tensor::scalar(0.0), DataType::Float),
    };
    let filled = shape_fold::constant_of_shape(shape, &value)?;
    Ok(cx.bind_const(
        result_name(node)?,
        filled,
        data_type.elem_type(),
        Some(data_type),
    )?)
}

/// ONNX Equal: of constants, a bool (0 / 1) constant; of runtime values, a comparison.
pub fn equal(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let (a, b) = (operand(cx, node, 0)?, operand(cx, node, 1)?);
    if cx.const_data(a).is_none() || cx.const_data(b).is_none() {
        return super::elementwise::compare(cx, node, bnnc_ir::CompareOp::Equal);
    }
    let result = shape_fold::equal(const_input(cx, node, 0)?, const_input(cx, node, 1)?)?;
    Ok(cx.bind_const(
        result_name(node)?,
        result,
        ElemType::BINARY,
        Some(DataType::Bool),
    )?)
}

/// ONNX Where of constants.
pub fn where_select(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let (cond, x, y) = (
        const_input(cx, node, 0)?,
        const_input(cx, node, 1)?,
        const_input(cx, node, 2)?,
    );
    let chosen = shape_fold::where_select(cond, x, y)?;
    let (x, y) = (operand(cx, node, 1)?, operand(cx, node, 2)?);
    let elem = if cx.elem(x) == cx.elem(y) {
        cx.elem(x)
    } else {
        default_elem(&chosen)
    };
    let data_type = match chosen.data() {
        TensorData::I64(_) => Some(DataType::Int64),
        TensorData::F32(_) => None,
    };
    Ok(cx.bind_const(result_name(node)?, chosen, elem, data_type)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts() {
        let t = Tensor::f32(vec![3], vec![-1.5, 2.7, 300.0]);
        assert_eq!(
            cast_tensor(&t, DataType::Int64),
            Tensor::i64(vec![3], vec![-1, 2, 300])
        );
        assert_eq!(
            cast_tensor(&t, DataType::Uint8),
            Tensor::f32(vec![3], vec![255.0, 2.0, 44.0])
        );
        assert_eq!(
            cast_tensor(&t, DataType::Bool),
            Tensor::f32(vec![3], vec![1.0, 1.0, 1.0])
        );
        let i = Tensor::i64(vec![2], vec![7, -1]);
        assert_eq!(
            cast_tensor(&i, DataType::Float),
            Tensor::f32(vec![2], vec![7.0, -1.0])
        );
    }
}
