//! `first-last-precision`: the first and last linear layers keep their own precision.
//!
//! Binary networks keep their first layer (an 8-bit image against binary or 8-bit weights)
//! and their last (an 8-bit classifier) wider than one bit. Such a layer stays what its types
//! say: integer operands sum as integers (the interpreter's integer-first layers, 8-bit by
//! binary being adds and subtracts), float operands as floats; nothing is binarized behind
//! the user's back. The pass reports each first and last layer's precision (`w8a1`: 8-bit
//! weights, 1-bit activations, the notation `bnnc inspect` uses) and applies the user's
//! policy ([`FirstLastPolicy`]) to the float ones, saying what it changed, since that can
//! change accuracy.

use std::collections::HashSet;

use bnnc_ir::{ElemType, Graph, IntType, IrError, Node, NodeId, Op, Scale, Tensor, ValueId};

use crate::report::PassReport;

/// What to do with float weights of a first or last layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FirstLastPolicy {
    /// Keep every layer as the model has it.
    #[default]
    Keep,
    /// Quantize f32 weights to 8 bits, symmetric per output channel (`max |w| / 127`).
    /// Float activations stay f32: their range is not known without calibration data.
    Int8,
}

impl FirstLastPolicy {
    /// The name users type (`--first-last keep`).
    pub fn name(self) -> &'static str {
        match self {
            FirstLastPolicy::Keep => "keep",
            FirstLastPolicy::Int8 => "int8",
        }
    }
}

/// A linear layer's arithmetic as `w<bits>a<bits>` (`f` for float32): `w1a1` is
/// XNOR-popcount, `w1a8` an 8-bit image against binary weights.
pub fn precision(weights: &ElemType, activations: &ElemType) -> String {
    let bits = |t: &ElemType| match t {
        ElemType::F32 => "f".to_string(),
        t => t.bits().to_string(),
    };
    format!("w{}a{}", bits(weights), bits(activations))
}

/// The linear layers computed from the graph input without another linear layer before
/// them (first), and those with none after them (last), in topological order.
fn first_and_last(graph: &Graph) -> Result<(Vec<NodeId>, Vec<NodeId>), IrError> {
    let order = graph.topo_order()?;
    // Values a linear layer computed, directly or through other ops.
    let mut after_linear: HashSet<ValueId> = HashSet::new();
    let mut first = Vec::new();
    for &n in &order {
        let node = graph.node(n);
        let upstream = node.inputs.iter().any(|v| after_linear.contains(v));
        if node.op.is_linear_layer() && !upstream {
            first.push(n);
        }
        if upstream || node.op.is_linear_layer() {
            after_linear.extend(node.outputs.iter().copied());
        }
    }
    let mut before_linear: HashSet<ValueId> = HashSet::new();
    let mut last = Vec::new();
    for &n in order.iter().rev() {
        let node = graph.node(n);
        let downstream = node.outputs.iter().any(|v| before_linear.contains(v));
        if node.op.is_linear_layer() && !downstream {
            last.push(n);
        }
        if downstream || node.op.is_linear_layer() {
            before_linear.extend(node.inputs.iter().copied());
        }
    }
    last.reverse();
    Ok((first, last))
}

/// Reports the precision of the first and last layers and applies `policy` to them.
pub fn first_last_precision(
    graph: &mut Graph,
    policy: FirstLastPolicy,
) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    let (first, last) = first_and_last(graph)?;
    let mut changed = false;
    let mut seen = HashSet::new();
    for (role, nodes) in [("first", &first), ("last", &last)] {
        for &n in nodes {
            let node = graph.node(n).clone();
            let (a, w) = (
                graph.value(node.inputs[0]).ty.elem.clone(),
                graph.value(node.inputs[1]).ty.elem.clone(),
            );
            let kind = if a == ElemType::F32 || w == ElemType::F32 {
                "float sums"
            } else {
                "integer sums"
            };
            report.note(format!(
                "{role} layer `{}` ({}): {}, {kind}",
                node.name,
                node.op.name(),
                precision(&w, &a)
            ));
            if policy == FirstLastPolicy::Int8 && w == ElemType::F32 && seen.insert(n) {
                if let Some(what) = quantize_weights(graph, n, &node)? {
                    report.note(format!(
                        "--first-last int8: {what} of `{}`; this can change accuracy",
                        node.name
                    ));
                    changed = true;
                }
            }
        }
    }
    if changed {
        graph.reinfer()?;
    }
    Ok(report)
}

/// Quantizes the constant f32 weights of `node` to 8 bits per output channel; says what it
/// did, or `None` when the weights are not constant.
fn quantize_weights(graph: &mut Graph, n: NodeId, node: &Node) -> Result<Option<String>, IrError> {
    let w = node.inputs[1];
    let Some(data) = graph.const_data(w).cloned() else {
        return Ok(None);
    };
    let shape = data.shape().to_vec();
    // The weights' output-channel axis.
    let axis = match &node.op {
        Op::Conv(_) => 0,
        Op::Gemm(g) => usize::from(!g.trans_b),
        _ => shape.len().saturating_sub(1),
    };
    let Some(&channels) = shape.get(axis) else {
        return Ok(None);
    };
    let inner: usize = shape[axis + 1..].iter().product();
    let values = data.to_f32_vec();
    let channel = |i: usize| (i / inner.max(1)) % channels;
    let mut largest = vec![0f32; channels];
    for (i, &v) in values.iter().enumerate() {
        largest[channel(i)] = largest[channel(i)].max(v.abs());
    }
    if largest.iter().any(|m| !m.is_finite()) {
        return Ok(None);
    }
    // An all-zero channel keeps scale 1 (its integers are all 0).
    let scales: Vec<f32> = largest
        .iter()
        .map(|&m| if m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let quantized: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[channel(i)];
            (v / s).round().clamp(-127.0, 127.0) * s
        })
        .collect();
    let elem = ElemType::Scaled(
        IntType::Signed(8),
        Scale::Channel {
            axis,
            values: scales.into(),
        },
    );
    let name = format!("{}.int8", graph.value(w).name);
    let q = graph.add_const(name, Some(elem), Tensor::f32(shape, quantized))?;
    graph.set_operand(n, 1, q);
    Ok(Some(format!(
        "quantized the f32 weights `{}` to 8 bits per output channel",
        graph.value(w).name
    )))
}
