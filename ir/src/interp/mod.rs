//! The reference interpreter: the definition of what a graph computes.
//!
//! Every op computes in float32 exactly as the QONNX 1.0.0 reference executor does (numpy
//! float32 for the custom ops, onnxruntime one node at a time for the standard ones): the same
//! operations in the same order, so that results agree bit for bit. A pass or backend that
//! disagrees with the interpreter is wrong.
//!
//! For standard ops "the same order" means onnxruntime's kernels (MLAS and Eigen on x86-64):
//! fused multiply-add chains and MLAS's special M = 1 kernels for Conv / Gemm / MatMul (the
//! `mac` module), MLAS's pooling kernels, Eigen's vectorized sums for ReduceMean. Measured
//! against onnxruntime 1.32 and the reference outputs of every bundled model, bit for bit,
//! except Softmax (MLAS's own `exp`: the last bit may differ).
//!
//! The one exception is a linear layer on scaled integers, whose accumulator is exact and whose
//! value is rounded once (`scaled`): that is what its Scaled type says, and onnxruntime's
//! float sums agree with it up to float rounding (bit for bit where scales are powers of two).
//!
//! Each kernel module holds one family of ops; [`eval`] checks operands with
//! [`crate::infer`] first, so the kernels may rely on consistent shapes.

mod elementwise;
mod head;
mod layout;
mod linear;
mod mac;

pub use linear::batchnorm_scale_shift;
pub use quant::quant_range;
pub use scaled::{integer_first, IntegerFirst};

/// How onnxruntime's MLAS orders the sums of float linear layers, for backends that must
/// round as the interpreter does.
mod pool;
mod quant;
mod scaled;
mod strided;
mod threshold;

use std::borrow::Cow;
use std::sync::Arc;

use crate::error::IrError;
use crate::graph::{Graph, NodeId, ValueDef, ValueId};
use crate::infer::infer_output_types;
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::types::{ElemType, Shape, TensorType};

/// Runs the graph on its inputs (one tensor per graph input, whose shape must equal the input
/// type's shape exactly). Returns one tensor per graph output.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    Session::new(graph)?.run(inputs)
}

/// How many samples a batch of shape `got` holds for a graph input of shape `expected`:
/// the input's first axis must be 1 and the rest agree (a batch of exactly the input's shape
/// is one sample). `None` when the batch does not fit.
pub fn batch_samples(expected: &[usize], got: &[usize]) -> Option<usize> {
    let fits =
        expected.first() == Some(&1) && got.len() == expected.len() && got[1..] == expected[1..];
    if got == expected {
        Some(1)
    } else {
        fits.then(|| got[0])
    }
}

/// The shape of a batch's output for a per-sample output shape: the sample count in place of
/// a first axis of 1, or before the per-sample shape when it has no such axis. (A run on
/// exactly the input's shape gives the per-sample shapes.)
pub fn batch_output_shape(per_sample: &[usize], samples: usize) -> Vec<usize> {
    let mut shape = per_sample.to_vec();
    match shape.first_mut() {
        Some(first) if *first == 1 => *first = samples,
        _ => shape.insert(0, samples),
    }
    shape
}

/// Runs a graph with one input on a batch whose first axis may differ from the graph input's.
///
/// If the shapes are equal this is one [`run`]. If the graph's first axis is 1, each sample (a
/// slice along axis 0) runs on its own and each output holds the samples' outputs in order,
/// shaped by [`batch_output_shape`] (as native code shapes them). Constant subgraphs (weight
/// quantizers) are computed once for the batch.
pub fn run_batch(graph: &Graph, input: &Tensor) -> Result<Vec<Tensor>, IrError> {
    let [value] = graph.inputs() else {
        return Err(IrError::Graph {
            graph: graph.name.clone(),
            reason: format!(
                "run_batch needs a graph with one input, this one has {}",
                graph.inputs().len()
            ),
        });
    };
    let data = graph.value(*value);
    let expected = &data.ty.shape;
    let got = input.shape();
    if got == expected.as_slice() {
        return run(graph, std::slice::from_ref(input));
    }
    if batch_samples(expected, got).is_none() {
        return Err(IrError::Value {
            value: data.name.clone(),
            reason: format!("a batch of shape {got:?} does not fit the input's shape {expected:?}"),
        });
    }
    let session = Session::new(graph)?;
    let sample_len = input.len() / got[0].max(1);
    let mut stacked: Vec<Option<Tensor>> = vec![None; graph.outputs().len()];
    for i in 0..got[0] {
        let sample =
            slice_sample(input, expected, i * sample_len, sample_len).ok_or_else(|| {
                IrError::Value {
                    value: data.name.clone(),
                    reason: format!(
                        "sample {i} of a batch of shape {got:?} does not fit {expected:?}"
                    ),
                }
            })?;
        let outputs = session.run(std::slice::from_ref(&sample))?;
        for (slot, out) in stacked.iter_mut().zip(outputs) {
            *slot = Some(match slot.take() {
                None => out,
                Some(acc) => {
                    append_along_first_axis(acc, out).map_err(|reason| IrError::Graph {
                        graph: graph.name.clone(),
                        reason,
                    })?
                }
            });
        }
    }
    // Outputs take the batch's shape (`batch_output_shape`): the samples' data in order,
    // as stacked. An empty batch gives empty outputs.
    let samples = got[0];
    let shaped = |t: Option<Tensor>, &v: &ValueId| {
        let shape = batch_output_shape(&graph.value(v).ty.shape, samples);
        match t {
            Some(t) => t.reshaped(shape),
            None => Tensor::try_f32(shape, Vec::new()),
        }
        .ok_or_else(|| IrError::Graph {
            graph: graph.name.clone(),
            reason: format!("internal: the outputs of {samples} samples do not stack"),
        })
    };
    stacked
        .into_iter()
        .zip(graph.outputs())
        .map(|(t, v)| shaped(t, v))
        .collect()
}

/// Evaluates one op on operands of the given types, as a graph's run does: linear ops of
/// scaled integers integer-first ([`integer_first`]), where their types call for it, into a
/// first result of shape `out0`; everything else as [`eval`]. Constant folding uses it, so
/// that a folded node holds the value the node computed.
pub fn eval_typed(
    op: &Op,
    operands: &[&Tensor],
    types: &[&TensorType],
    out0: Option<&[usize]>,
) -> Result<Vec<Tensor>, String> {
    match out0.and_then(|out| scaled::linear(op, operands, types, out)) {
        Some(result) => result.map(|t| vec![t]),
        None => eval(op, operands),
    }
}

/// Evaluates one op on concrete operands, typed by their data alone. The error is the reason.
pub fn eval(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, String> {
    let types: Vec<TensorType> = inputs
        .iter()
        .map(|t| {
            let elem = match t.data() {
                TensorData::F32(_) => ElemType::F32,
                TensorData::I64(_) => ElemType::I64,
            };
            TensorType::new(elem, t.shape().to_vec())
        })
        .collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let consts: Vec<Option<&Tensor>> = inputs.iter().map(|&t| Some(t)).collect();
    let shapes: Vec<Shape> = infer_output_types(op, &type_refs, &consts)?
        .into_iter()
        .map(|t| t.shape)
        .collect();
    compute(op, inputs, &shapes)
}

/// Dispatches to the kernel of `op`; `out` holds the result shapes inference gave.
fn compute(op: &Op, x: &[&Tensor], out: &[Shape]) -> Result<Vec<Tensor>, String> {
    let out0 = out.first().ok_or("inference gave no result")?;
    let one = |t: Result<Tensor, String>| t.map(|t| vec![t]);
    match op {
        Op::Quant(attrs) => one(quant::quant(attrs, x, out0)),
        Op::BipolarQuant => one(quant::bipolar_quant(x, out0)),
        Op::Trunc(attrs) => one(quant::trunc(attrs, x, out0)),
        Op::MultiThreshold(attrs) | Op::Threshold(attrs) => {
            one(threshold::multithreshold(attrs, x, out0))
        }
        Op::QuantizeLinear { axis, out: int } => one(quant::quantize_linear(*axis, *int, x, out0)),
        Op::DequantizeLinear { axis } => one(quant::dequantize_linear(*axis, x, out0)),
        Op::Clip { min, max } => one(elementwise::clip(*min, *max, x[0])),
        Op::Conv(attrs) => one(linear::conv(attrs, x, out0)),
        Op::Gemm(attrs) => one(linear::gemm(attrs, x, out0)),
        Op::MatMul => one(linear::matmul(x, out0)),
        Op::BatchNorm { epsilon } => one(linear::batchnorm(*epsilon, x)),
        Op::MaxPool(attrs) => one(pool::max_pool(attrs, x[0], out0)),
        Op::MinMaxPool { attrs, min } => one(pool::min_max_pool(attrs, min, x[0], out0)),
        Op::AveragePool(attrs) => one(pool::average_pool(attrs, x[0], out0)),
        Op::GlobalAveragePool => one(pool::global_average_pool(x[0], out0)),
        Op::ReduceMean { axes, .. } => one(pool::reduce_mean(axes, x[0], out0)),
        Op::Binary(b) => one(elementwise::binary(*b, x, out0)),
        Op::Relu => one(elementwise::relu(x[0])),
        Op::Sign => one(elementwise::sign(x[0])),
        Op::Abs => one(elementwise::map(x[0], f32::abs)),
        Op::Round => one(elementwise::map(x[0], f32::round_ties_even)),
        Op::Compare(c) => one(elementwise::compare(*c, x, out0)),
        Op::Reshape { .. } => one(layout::reshape(x[0], out0)),
        Op::Transpose { perm } => one(layout::transpose(perm, x[0], out0)),
        Op::Pad { pads, value } => one(layout::pad(pads, *value, x[0], out0)),
        Op::Concat { axis } => one(layout::concat(*axis, x, out0)),
        Op::Softmax { axis, coerce_2d } => one(head::softmax(*axis, *coerce_2d, x[0])),
        Op::TopK {
            k, axis, largest, ..
        } => head::top_k(*k, *axis, *largest, x[0]),
        Op::XnorMatMul => one(linear::xnor_matmul(x, out0)),
        Op::XnorConv(attrs) => one(linear::xnor_conv(attrs, x, out0)),
        Op::BitSerialMatMul { a_scale } => one(linear::bitserial_matmul(*a_scale, x, out0)),
        Op::BitSerialConv { attrs, a_scale } => {
            one(linear::bitserial_conv(attrs, *a_scale, x, out0))
        }
    }
}

// ---- operands and results, shared by the kernels ----

/// An operand's elements as f32: i64 operands (integer zero points, bit widths) are converted
/// as numpy's `astype(float32)` would.
fn floats(t: &Tensor) -> Cow<'_, [f32]> {
    match t.data() {
        TensorData::F32(v) => Cow::Borrowed(v),
        TensorData::I64(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
    }
}

/// The single element of a scalar-like operand (any shape with one element).
fn single(t: &Tensor, what: &str) -> Result<f32, String> {
    match floats(t)[..] {
        [v] => Ok(v),
        ref v => Err(format!("{what} has {} elements, expected 1", v.len())),
    }
}

/// A float result; the kernels compute `data` for `shape`, so a mismatch is a bug reported as
/// an error rather than a panic.
fn f32_result(shape: &[usize], data: Vec<f32>) -> Result<Tensor, String> {
    let len = data.len();
    Tensor::try_f32(shape.to_vec(), data)
        .ok_or_else(|| format!("internal: {len} elements computed for shape {shape:?}"))
}

/// The product of some extents (inference bounds every tensor, so it cannot overflow there).
fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

// ---- running a graph ----

/// A graph prepared for running: constants and everything computed from constants alone
/// (weight quantizers, folded shapes) are evaluated once, the rest runs per call.
struct Session<'g> {
    graph: &'g Graph,
    /// Values that do not depend on a graph input, by value index.
    fixed: Vec<Option<Arc<Tensor>>>,
    /// The nodes that depend on a graph input, in topological order.
    schedule: Vec<NodeId>,
    /// How many operand slots of scheduled nodes read each value, plus one per graph output
    /// slot: a value is freed when its count reaches 0.
    uses: Vec<usize>,
}

impl<'g> Session<'g> {
    fn new(graph: &'g Graph) -> Result<Self, IrError> {
        let order = graph.topo_order()?;
        let mut fixed: Vec<Option<Arc<Tensor>>> = graph
            .values()
            .map(|(_, data)| match &data.def {
                ValueDef::Const(t) => Some(Arc::clone(t)),
                _ => None,
            })
            .collect();
        let mut schedule = Vec::new();
        let mut uses = vec![0usize; graph.num_values()];
        for n in order {
            let node = graph.node(n);
            let constant = node
                .inputs
                .iter()
                .all(|v| fixed.get(v.index()).is_some_and(Option::is_some));
            if constant {
                let operands: Vec<&Tensor> = node
                    .inputs
                    .iter()
                    .filter_map(|v| fixed[v.index()].as_deref())
                    .collect();
                let results = evaluate(graph, n, &operands)?;
                for (&v, t) in node.outputs.iter().zip(results) {
                    fixed[v.index()] = Some(Arc::new(t));
                }
            } else {
                for v in &node.inputs {
                    uses[v.index()] += 1;
                }
                schedule.push(n);
            }
        }
        for v in graph.outputs() {
            if let Some(u) = uses.get_mut(v.index()) {
                *u += 1;
            }
        }
        Ok(Session {
            graph,
            fixed,
            schedule,
            uses,
        })
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
        let graph = self.graph;
        if inputs.len() != graph.inputs().len() {
            return Err(IrError::Graph {
                graph: graph.name.clone(),
                reason: format!(
                    "{} inputs given, the graph has {}",
                    inputs.len(),
                    graph.inputs().len()
                ),
            });
        }
        let mut live: Vec<Option<Arc<Tensor>>> = vec![None; graph.num_values()];
        for (&v, t) in graph.inputs().iter().zip(inputs) {
            let data = graph.value(v);
            if t.shape() != data.ty.shape.as_slice() {
                return Err(IrError::Value {
                    value: data.name.clone(),
                    reason: format!(
                        "given a tensor of shape {:?}, the input has shape {:?}",
                        t.shape(),
                        data.ty.shape
                    ),
                });
            }
            // An input typed as integers (uint8 pixels) must hold them: the passes rely on
            // the type, as on any other.
            if let crate::ElemType::Int(int) = data.ty.elem {
                if let Some(bad) = t
                    .to_f32_vec()
                    .into_iter()
                    .find(|&x| !int.contains(f64::from(x)))
                {
                    return Err(IrError::Value {
                        value: data.name.clone(),
                        reason: format!(
                            "the input holds {bad}, not a value of type {}",
                            data.ty.elem
                        ),
                    });
                }
            }
            live[v.index()] = Some(Arc::new(t.clone()));
        }
        let mut uses = self.uses.clone();
        for &n in &self.schedule {
            let node = graph.node(n);
            let results = {
                let operands = node
                    .inputs
                    .iter()
                    .map(|v| {
                        let t = live[v.index()]
                            .as_deref()
                            .or(self.fixed[v.index()].as_deref());
                        t.ok_or_else(|| {
                            node_error(
                                graph,
                                n,
                                format!("operand `{}` has no value", graph.value(*v).name),
                            )
                        })
                    })
                    .collect::<Result<Vec<&Tensor>, IrError>>()?;
                evaluate(graph, n, &operands)?
            };
            for v in &node.inputs {
                let u = &mut uses[v.index()];
                *u = u.saturating_sub(1);
                if *u == 0 {
                    live[v.index()] = None;
                }
            }
            for (&v, t) in node.outputs.iter().zip(results) {
                if uses[v.index()] > 0 {
                    live[v.index()] = Some(Arc::new(t));
                }
            }
        }
        graph
            .outputs()
            .iter()
            .map(|&v| {
                let t = live[v.index()]
                    .as_deref()
                    .or(self.fixed[v.index()].as_deref());
                t.cloned().ok_or_else(|| IrError::Value {
                    value: graph.value(v).name.clone(),
                    reason: "graph output has no value".into(),
                })
            })
            .collect()
    }
}

/// Evaluates node `n` and checks its results against the graph's types.
fn evaluate(graph: &Graph, n: NodeId, operands: &[&Tensor]) -> Result<Vec<Tensor>, IrError> {
    let node = graph.node(n);
    let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
    let out0 = node
        .outputs
        .first()
        .map(|&v| graph.value(v).ty.shape.as_slice());
    let results = eval_typed(&node.op, operands, &types, out0)
        .map_err(|reason| node_error(graph, n, reason))?;
    if results.len() != node.outputs.len() {
        return Err(node_error(
            graph,
            n,
            format!(
                "{} results computed, the node has {}",
                results.len(),
                node.outputs.len()
            ),
        ));
    }
    for (i, (t, &v)) in results.iter().zip(&node.outputs).enumerate() {
        let ty = &graph.value(v).ty;
        let want = &ty.shape;
        // An integer type, scaled or not, promises finite levels, and the passes rely on it
        // (a threshold compares where a quantizer would carry NaN on): a NaN made by the
        // float layers before (0 / 0, say) must stop here, not flow on as a number it is not.
        if let (ElemType::Int(_) | ElemType::Scaled(..), TensorData::F32(data)) =
            (&ty.elem, t.data())
        {
            if let Some(bad) = data.iter().find(|x| !x.is_finite()) {
                return Err(node_error(
                    graph,
                    n,
                    format!(
                        "result {i} holds {bad}, which its type {} cannot hold",
                        ty.elem
                    ),
                ));
            }
        }
        if t.shape() != want.as_slice() {
            return Err(node_error(
                graph,
                n,
                format!(
                    "result {i} has shape {:?}, the graph types it {want:?}",
                    t.shape()
                ),
            ));
        }
    }
    Ok(results)
}

fn node_error(graph: &Graph, n: NodeId, reason: String) -> IrError {
    let node = graph.node(n);
    IrError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        reason,
    }
}

/// Sample `[start, start + len)` of a batch, shaped as the graph input (first axis 1).
fn slice_sample(batch: &Tensor, shape: &[usize], start: usize, len: usize) -> Option<Tensor> {
    let shape = shape.to_vec();
    let range = start..start.checked_add(len)?;
    match batch.data() {
        TensorData::F32(v) => Tensor::try_f32(shape, v.get(range)?.to_vec()),
        TensorData::I64(v) => Tensor::try_i64(shape, v.get(range)?.to_vec()),
    }
}

fn append_along_first_axis(acc: Tensor, next: Tensor) -> Result<Tensor, String> {
    let (mut shape, data) = acc.into_parts();
    if shape.is_empty()
        || shape[1..] != next.shape()[1.min(next.shape().len())..]
        || next.shape().is_empty()
    {
        return Err(format!(
            "cannot stack outputs of shapes {shape:?} and {:?} along axis 0",
            next.shape()
        ));
    }
    shape[0] += next.shape()[0];
    let (_, more) = next.into_parts();
    let joined = match (data, more) {
        (TensorData::F32(mut a), TensorData::F32(b)) => {
            a.extend(b);
            Tensor::try_f32(shape, a)
        }
        (TensorData::I64(mut a), TensorData::I64(b)) => {
            a.extend(b);
            Tensor::try_i64(shape, a)
        }
        _ => None,
    };
    joined.ok_or_else(|| "samples gave outputs of different kinds".to_string())
}

#[cfg(test)]
mod tests;
