//! Result types (shape and element type) of every op.
//!
//! Inference checks everything the interpreter relies on (operand counts, ranks, shapes,
//! attribute lengths), so a graph that type-checks never makes the interpreter index out of
//! bounds. Model files are untrusted: every size is computed with checked arithmetic and no
//! tensor may exceed [`MAX_ELEMENTS`] elements.
//!
//! Element types are conservative: a result gets an integer or scaled type only when every
//! value the interpreter can produce is such an integer; otherwise it is `f32`.
//!
//! Each module infers one family of ops, as in [`crate::interp`]; this one dispatches on the op
//! and holds what several families share.

mod elementwise;
mod head;
mod layout;
mod linear;
mod pool;
mod quant;
mod threshold;

use crate::op::Op;
use crate::tensor::Tensor;
use crate::types::{checked_numel, ElemType, Scale, TensorType};

/// The largest number of elements a tensor may have (2^26: 256 MiB of f32), so that no
/// model file can make a command allocate without bound. The largest tensor of the networks
/// bnnc is for (a first layer's activations, a classifier's weights) is a hundred times
/// smaller.
pub const MAX_ELEMENTS: usize = 1 << 26;

/// The most elements all the tensors of a graph may hold together (2^28: 1 GiB of f32).
pub const MAX_GRAPH_ELEMENTS: usize = 1 << 28;

/// Integer accumulators larger than this are not exact in float32, which the interpreter
/// computes in; beyond it an accumulator is typed `f32`.
const F32_EXACT_LIMIT: i128 = 1 << 24;

/// The types of the results of `op` applied to operands of types `inputs`, whose constant
/// data, where an operand is a constant, is in `consts`. The error is the reason, without the
/// node's name (the caller adds it).
pub fn infer_output_types(
    op: &Op,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<Vec<TensorType>, String> {
    if consts.len() != inputs.len() {
        return Err(format!(
            "{} operand types but {} constant slots",
            inputs.len(),
            consts.len()
        ));
    }
    let results = infer(op, inputs, consts)?;
    for t in &results {
        check_size(&t.shape)?;
    }
    Ok(results)
}

/// Dispatches to the inference of `op`'s family.
fn infer(
    op: &Op,
    inputs: &[&TensorType],
    consts: &[Option<&Tensor>],
) -> Result<Vec<TensorType>, String> {
    let one = |t: Result<TensorType, String>| t.map(|t| vec![t]);
    match op {
        Op::Quant(attrs) => one(quant::quant(attrs, inputs, consts)),
        Op::BipolarQuant => one(quant::bipolar_quant(inputs, consts)),
        Op::Trunc(attrs) => one(quant::trunc(attrs, inputs)),
        Op::MultiThreshold(attrs) => one(threshold::multithreshold(attrs, inputs)),
        Op::Threshold(attrs) => one(threshold::threshold(attrs, inputs, consts)),
        Op::QuantizeLinear { axis, out } => one(quant::quantize_linear(*axis, *out, inputs)),
        Op::DequantizeLinear { axis } => one(quant::dequantize_linear(*axis, inputs, consts)),
        Op::Clip { min, max } => one(elementwise::clip(*min, *max, inputs)),
        Op::Conv(attrs) => one(linear::conv(attrs, inputs)),
        Op::Gemm(attrs) => one(linear::gemm(attrs, inputs)),
        Op::MatMul => one(linear::matmul(inputs)),
        Op::BatchNorm { .. } => one(linear::batchnorm(inputs)),
        Op::MaxPool(attrs) => one(pool::max_pool(attrs, inputs)),
        Op::MinMaxPool { attrs, min } => one(pool::min_max_pool(attrs, min, inputs)),
        Op::AveragePool(attrs) => one(pool::average_pool(attrs, inputs)),
        Op::GlobalAveragePool => one(pool::global_average_pool(inputs)),
        Op::ReduceMean { axes, keep_dims } => one(pool::reduce_mean(axes, *keep_dims, inputs)),
        Op::Binary(b) => one(elementwise::binary(*b, inputs, consts)),
        Op::Relu => one(elementwise::relu(inputs)),
        Op::Sign => one(elementwise::sign(inputs)),
        Op::Abs => one(elementwise::abs(inputs)),
        Op::Round => one(elementwise::round(inputs)),
        Op::Compare(_) => one(elementwise::compare(inputs)),
        Op::Reshape { shape } => one(layout::reshape(shape, inputs)),
        Op::Transpose { perm } => one(layout::transpose(perm, inputs)),
        Op::Pad { pads, value } => one(layout::pad(pads, *value, inputs)),
        Op::Concat { axis } => one(layout::concat(*axis, inputs)),
        Op::Softmax { axis, .. } => one(head::softmax(*axis, inputs)),
        Op::TopK { k, axis, .. } => head::top_k(*k, *axis, inputs),
        Op::XnorMatMul => one(linear::xnor_matmul(inputs)),
        Op::XnorConv(attrs) => one(linear::xnor_conv(attrs, inputs)),
        Op::BitSerialMatMul { a_scale } => one(linear::bitserial_matmul(*a_scale, inputs)),
        Op::BitSerialConv { attrs, a_scale } => {
            one(linear::bitserial_conv(attrs, *a_scale, inputs))
        }
    }
}

// ---- operands ----

fn arity(inputs: &[&TensorType], min: usize, max: usize) -> Result<(), String> {
    let n = inputs.len();
    if (min..=max).contains(&n) {
        return Ok(());
    }
    Err(match (min, max) {
        _ if min == max => format!("expects {min} operands, got {n}"),
        (_, usize::MAX) => format!("expects at least {min} operands, got {n}"),
        _ => format!("expects {min} to {max} operands, got {n}"),
    })
}

fn check_size(shape: &[usize]) -> Result<(), String> {
    match checked_numel(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!(
            "a result of shape {shape:?} would hold more than {MAX_ELEMENTS} elements, bnnc's limit for one tensor"
        )),
    }
}

// ---- shapes ----

// ---- element types ----

/// `elem` after a layout change that moves axis `a` to `map(a)` (or drops / alters it: `None`).
/// Only per-channel scales depend on axes.
fn map_channel_axis(elem: &ElemType, map: impl Fn(usize) -> Option<usize>) -> ElemType {
    match elem {
        ElemType::Scaled(t, Scale::Channel { axis, values }) => match map(*axis) {
            Some(axis) => ElemType::Scaled(
                *t,
                Scale::Channel {
                    axis,
                    values: values.clone(),
                },
            ),
            None => ElemType::F32,
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
