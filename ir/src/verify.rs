//! The verifier: the invariants every graph holds after every transformation.
//!
//! - every operand of a node is a value of the graph, defined by a graph input, a constant or
//!   a live node, and the petgraph edges say the same;
//! - the graph is acyclic;
//! - each node's results have exactly the types inference gives for its operands;
//! - constants hold as many elements as their shape and only values of their type;
//! - every graph input is an input value and every graph output is defined.

use std::collections::HashSet;

use crate::error::{IrError, Result};
use crate::graph::{check_const_fits, Graph, ValueDef, ValueId};

/// Checks every invariant of `graph`; the error names the first node or value that breaks one.
pub fn verify(graph: &Graph) -> Result<()> {
    let graph_err = |reason: String| IrError::Graph {
        graph: graph.name.clone(),
        reason,
    };
    let value_name = |v: ValueId| graph.value(v).name.clone();
    let is_value = |v: ValueId| v.index() < graph.num_values();

    for (v, data) in graph.values() {
        match &data.def {
            ValueDef::Input => {
                if !graph.inputs().contains(&v) {
                    return Err(IrError::Value {
                        value: data.name.clone(),
                        reason: "defined as an input but not a graph input".into(),
                    });
                }
            }
            ValueDef::Const(t) => {
                if t.shape() != data.ty.shape.as_slice() {
                    return Err(IrError::Value {
                        value: data.name.clone(),
                        reason: format!("constant of shape {:?} typed {}", t.shape(), data.ty),
                    });
                }
                check_const_fits(t, &data.ty.elem).map_err(|reason| IrError::Value {
                    value: data.name.clone(),
                    reason,
                })?;
            }
            ValueDef::Node { .. } => {}
        }
    }

    // Values defined by live nodes; operands must come from here, a constant or an input.
    let mut defined: HashSet<ValueId> = HashSet::new();
    let mut expected_edges = 0usize;
    for n in graph.node_ids() {
        let node = graph.node(n);
        let node_err = |reason: String| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason,
        };
        if node.outputs.len() != node.op.num_outputs() {
            return Err(node_err(format!(
                "has {} results, the op has {}",
                node.outputs.len(),
                node.op.num_outputs()
            )));
        }
        for (index, &out) in node.outputs.iter().enumerate() {
            if !is_value(out) {
                return Err(node_err(format!(
                    "result {index} is not a value of the graph"
                )));
            }
            match graph.value(out).def {
                ValueDef::Node { node: d, index: i } if d == n && i == index => {}
                _ => {
                    return Err(node_err(format!(
                        "result `{}` does not name this node as its definition",
                        value_name(out)
                    )))
                }
            }
            defined.insert(out);
        }
    }
    for n in graph.node_ids() {
        let node = graph.node(n);
        let node_err = |reason: String| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason,
        };
        for (i, &v) in node.inputs.iter().enumerate() {
            if !is_value(v) {
                return Err(node_err(format!("operand {i} is not a value of the graph")));
            }
            match graph.value(v).def {
                ValueDef::Node { .. } => {
                    if !defined.contains(&v) {
                        return Err(node_err(format!(
                            "operand `{}` is defined by a node no longer in the graph",
                            value_name(v)
                        )));
                    }
                    expected_edges += 1;
                }
                ValueDef::Input | ValueDef::Const(_) => {}
            }
        }
    }
    let edges = graph
        .edges()
        .filter(|&(from, to, v)| {
            graph.node(to).inputs.contains(&v) && graph.node(from).outputs.contains(&v)
        })
        .count();
    if edges != expected_edges || graph.edges().count() != expected_edges {
        return Err(graph_err(format!(
            "{} dataflow edges, the operands call for {expected_edges}",
            graph.edges().count()
        )));
    }

    for n in graph.node_ids() {
        check_fused(graph, n)?;
    }
    // All the tensors together stay within bounds (each one does, by inference).
    let total = graph.values().try_fold(0usize, |sum, (_, v)| {
        crate::types::checked_numel(&v.ty.shape).and_then(|n| sum.checked_add(n))
    });
    if total.is_none_or(|t| t > crate::infer::MAX_GRAPH_ELEMENTS) {
        return Err(graph_err(format!(
            "its tensors would hold more than {} elements together, bnnc's limit for a graph",
            crate::infer::MAX_GRAPH_ELEMENTS
        )));
    }

    let order = graph.topo_order()?;
    for n in order {
        let node = graph.node(n);
        let node_err = |reason: String| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason,
        };
        let types = graph.infer(&node.op, &node.inputs).map_err(node_err)?;
        for (&out, ty) in node.outputs.iter().zip(&types) {
            let have = &graph.value(out).ty;
            if have != ty {
                return Err(node_err(format!(
                    "result `{}` is typed {have}, its operands give {ty}",
                    value_name(out)
                )));
            }
        }
    }

    for &v in graph.inputs() {
        if !is_value(v) || !matches!(graph.value(v).def, ValueDef::Input) {
            return Err(graph_err("a graph input is not an input value".into()));
        }
    }
    for &v in graph.outputs() {
        if !is_value(v) {
            return Err(graph_err(
                "a graph output is not a value of the graph".into(),
            ));
        }
        if matches!(graph.value(v).def, ValueDef::Node { .. }) && !defined.contains(&v) {
            return Err(graph_err(format!(
                "output `{}` is defined by a node no longer in the graph",
                value_name(v)
            )));
        }
    }
    if graph.outputs().is_empty() {
        return Err(graph_err("the graph has no output".into()));
    }
    Ok(())
}

/// A fused node ([`crate::Node::fused`]) reads, as its first operand, a value that only it
/// uses, computed by a linear layer or by another fused node: the output stage it joins.
fn check_fused(graph: &Graph, n: crate::NodeId) -> Result<()> {
    let node = graph.node(n);
    if !node.fused {
        return Ok(());
    }
    let node_err = |reason: &str| {
        Err(IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason: reason.to_string(),
        })
    };
    if !matches!(
        node.op,
        crate::Op::Threshold(_) | crate::Op::MaxPool(_) | crate::Op::MinMaxPool { .. }
    ) {
        return node_err("is fused, but only thresholds and pools run in an output stage");
    }
    let Some(producer) = node.inputs.first().and_then(|&v| graph.producer(v)) else {
        return node_err("is fused, but its first operand is not computed by a node");
    };
    let stage = graph.node(producer);
    if !(stage.fused || stage.op.is_linear_layer()) {
        return node_err(
            "is fused, but its first operand comes from neither a layer nor a fused node",
        );
    }
    if graph.only_user(node.inputs[0]) != Some(n) {
        return node_err("is fused, but its first operand has other users");
    }
    Ok(())
}
