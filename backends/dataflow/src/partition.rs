//! The host/hardware split: which nodes run on the host before the hardware, which in
//! hardware, which on the host after.
//!
//! Hardware computes on integers: it starts at the first quantizer's integers and ends at the
//! last layer's. The host runs the float work around it, exactly as the interpreter does:
//! - before: every node that depends only on the graph input and is not a hardware node (the
//!   input's scaling, the first quantizer, a float first layer). What it passes to the
//!   hardware must be one integer tensor.
//! - after: the chain of host nodes that ends at the graph output, each reading one
//!   computed tensor (the output's scale and bias, a float last layer, Softmax, TopK).
//!
//! Hardware nodes are the linear layers of integers by integers, thresholds, max-pools on integers, and
//! elementwise nodes of two computed operands (a residual addition); everything between the
//! two host programs runs in hardware. (An average pool on integers is a float result: the
//! host computes it when it ends the network.)

use std::collections::HashSet;

use bnnc_ir::{ElemType, Graph, Node, NodeId, Op, ValueDef, ValueId};

use crate::PlanError;

/// The split of a graph.
#[derive(Clone, Debug)]
pub struct Partition {
    /// Host nodes before the hardware, in order.
    pub pre: Vec<NodeId>,
    /// Nodes in hardware, in order.
    pub hardware: Vec<NodeId>,
    /// Host nodes after the hardware, in order.
    pub post: Vec<NodeId>,
    /// The tensor the hardware takes (integers).
    pub input: ValueId,
    /// The tensor the hardware gives.
    pub output: ValueId,
}

/// Whether `n` must run in hardware.
fn is_hardware(graph: &Graph, n: NodeId) -> bool {
    let node = graph.node(n);
    let computed = |v: &&ValueId| !matches!(graph.value(**v).def, ValueDef::Const(_));
    let integer = |i: usize| {
        node.inputs
            .get(i)
            .is_some_and(|&v| graph.value(v).ty.elem != ElemType::F32)
    };
    let integer_operand = integer(0);
    // Sums the interpreter computes exactly: typed as integers, or of power-of-two scales.
    let exact_sums = || {
        graph.value(node.outputs[0]).ty.elem != ElemType::F32
            || float_sums_scale(graph, node).is_some()
    };
    match &node.op {
        // A layer of f32 weights, or of float sums, is a float layer, even on integers: the
        // host's.
        op if op.is_linear_layer() => integer_operand && integer(1) && exact_sums(),
        Op::Threshold(_) => true,
        Op::MaxPool(_) | Op::MinMaxPool { .. } => integer_operand,
        Op::Binary(_) => node.inputs.iter().filter(computed).count() > 1,
        _ => false,
    }
}

/// For a linear layer whose sums inference types f32 (they might pass 2^24 units): the
/// scales' product where both operands are integers times powers of two. The interpreter's
/// float sums are then the integer sums times it, exactly, as long as every partial sum stays
/// within 2^24 units (which the lowering checks on the weights); `None` otherwise, a float
/// layer.
pub(crate) fn float_sums_scale(graph: &Graph, node: &Node) -> Option<f32> {
    let scale = |i: usize| {
        let v = *node.inputs.get(i)?;
        graph.value(v).ty.elem.exact_scaled().map(|(_, s)| s)
    };
    Some(scale(0)? * scale(1)?)
}

/// Splits `graph`, which must have one input and one output.
pub fn partition(graph: &Graph) -> Result<Partition, PlanError> {
    let graph_error = |reason: String| PlanError::Graph {
        graph: graph.name.clone(),
        reason,
    };
    let (&[input], &[output]) = (graph.inputs(), graph.outputs()) else {
        return Err(graph_error(format!(
            "a streaming design takes one input and gives one output; this graph has {} and {}",
            graph.inputs().len(),
            graph.outputs().len()
        )));
    };
    let order = graph.topo_order().map_err(|e| graph_error(e.to_string()))?;
    let operands = |n: NodeId| -> Vec<ValueId> {
        graph
            .node(n)
            .inputs
            .iter()
            .copied()
            .filter(|&v| !matches!(graph.value(v).def, ValueDef::Const(_)))
            .collect()
    };

    // Before: host nodes fed only by the input and each other.
    let mut host_values: HashSet<ValueId> = HashSet::from([input]);
    let mut pre = Vec::new();
    for &n in &order {
        if !is_hardware(graph, n) && operands(n).iter().all(|v| host_values.contains(v)) {
            pre.push(n);
            host_values.extend(graph.node(n).outputs.iter().copied());
        }
    }
    let pre_set: HashSet<NodeId> = pre.iter().copied().collect();

    // After: host nodes of one computed operand whose results only the output or other such
    // nodes read, walking back from the output.
    let mut users: std::collections::HashMap<ValueId, Vec<NodeId>> = Default::default();
    for &n in &order {
        for v in operands(n) {
            users.entry(v).or_default().push(n);
        }
    }
    let mut post_set: HashSet<NodeId> = HashSet::new();
    for &n in order.iter().rev() {
        if pre_set.contains(&n) || is_hardware(graph, n) || operands(n).len() != 1 {
            continue;
        }
        let only_post = graph.node(n).outputs.iter().all(|v| {
            users
                .get(v)
                .is_none_or(|us| us.iter().all(|u| post_set.contains(u)))
        });
        let reaches_output = graph.node(n).outputs.iter().any(|v| {
            *v == output
                || users
                    .get(v)
                    .is_some_and(|us| us.iter().any(|u| post_set.contains(u)))
        });
        if only_post && reaches_output {
            post_set.insert(n);
        }
    }
    let post: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|n| post_set.contains(n))
        .collect();
    let hardware: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|n| !pre_set.contains(n) && !post_set.contains(n))
        .collect();
    if hardware.is_empty() {
        return Err(graph_error(
            "no layer computes on integers: nothing to put in hardware".into(),
        ));
    }

    // The one tensor the host gives the hardware.
    let mut entering: Vec<ValueId> = hardware
        .iter()
        .chain(&post)
        .flat_map(|&n| operands(n))
        .filter(|v| host_values.contains(v))
        .collect();
    entering.sort();
    entering.dedup();
    let hw_input = match entering[..] {
        [v] => v,
        _ => {
            return Err(graph_error(format!(
                "the hardware must take one tensor from the host; here it takes {}",
                names(graph, &entering)
            )))
        }
    };
    if graph.value(hw_input).ty.elem == ElemType::F32 {
        let first = hardware
            .iter()
            .find(|&&n| graph.node(n).inputs.contains(&hw_input))
            .copied()
            .unwrap_or(hardware[0]);
        return Err(PlanError::node(
            graph.node(first),
            format!(
                "reads the f32 tensor '{}' from the host; hardware layers take integers (a quantizer first)",
                graph.value(hw_input).name
            ),
        ));
    }
    if post.iter().any(|&n| operands(n).contains(&hw_input)) {
        return Err(graph_error(format!(
            "the host's output code reads the input tensor '{}' itself",
            graph.value(hw_input).name
        )));
    }

    // The one tensor the hardware gives the host.
    let post_values: HashSet<ValueId> = post
        .iter()
        .flat_map(|&n| graph.node(n).outputs.iter().copied())
        .collect();
    let mut leaving: Vec<ValueId> = post
        .iter()
        .flat_map(|&n| operands(n))
        .filter(|v| !post_values.contains(v))
        .collect();
    leaving.sort();
    leaving.dedup();
    let hw_output = match (&post[..], &leaving[..]) {
        ([], _) => output,
        (_, [v]) => *v,
        _ => {
            return Err(graph_error(format!(
                "the hardware must give one tensor to the host; here it gives {}",
                names(graph, &leaving)
            )))
        }
    };
    if host_values.contains(&hw_output) {
        return Err(graph_error(
            "the output does not depend on any hardware layer".into(),
        ));
    }
    Ok(Partition {
        pre,
        hardware,
        post,
        input: hw_input,
        output: hw_output,
    })
}

fn names(graph: &Graph, values: &[ValueId]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    values
        .iter()
        .map(|&v| format!("'{}'", graph.value(v).name))
        .collect::<Vec<_>>()
        .join(", ")
}
