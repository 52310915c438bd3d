//! `cleanup`: constant folding, removal of identities and dead nodes, merging of reshapes.
//!
//! Every rewrite here is exact: a folded constant is what the interpreter would compute at run
//! time, `x * 1` and `x / 1` are `x` bit for bit, and a reshape of a reshape is one reshape.
//! (`x + 0` is left alone: it turns -0 into +0.)

use bnnc_ir::{BinaryOp, Graph, IrError, NodeId, Op, Tensor, ValueId};

use crate::manager::PassReport;

/// Runs the cleanup rewrites until none applies.
pub fn cleanup(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    loop {
        let before = report.changes.len();
        fold_constants(graph, &mut report)?;
        remove_identities(graph, &mut report)?;
        merge_reshapes(graph, &mut report)?;
        let dead = graph.remove_dead_nodes();
        if dead > 0 {
            report.note(format!("removed {dead} unused nodes"));
        }
        if report.changes.len() == before {
            return Ok(report);
        }
    }
}

/// Nodes whose operands are all constants become constants (weight quantizers become
/// quantized constants: `bipolar_quant(w)` is a `bipolar` tensor).
fn fold_constants(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let order = graph.topo_order()?;
    let mut folded = 0;
    for n in order {
        let node = graph.node(n).clone();
        let Some(operands) = node
            .inputs
            .iter()
            .map(|&v| graph.const_data(v).cloned())
            .collect::<Option<Vec<Tensor>>>()
        else {
            continue;
        };
        let refs: Vec<&Tensor> = operands.iter().collect();
        let results = bnnc_ir::interp::eval(&node.op, &refs).map_err(|reason| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason,
        })?;
        for (&out, data) in node.outputs.iter().zip(results) {
            let value = graph.value(out).clone();
            let c = graph.add_const(value.name.clone(), Some(value.ty.elem.clone()), data)?;
            graph.replace_uses(out, c)?;
        }
        graph.remove_node(n);
        folded += 1;
    }
    if folded > 0 {
        report.note(format!("folded {folded} nodes of constants into constants"));
    }
    Ok(())
}

/// `x * 1`, `x / 1` and reshapes to the same shape are `x`.
fn remove_identities(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n);
        let x = node.inputs[0];
        let identity = match &node.op {
            Op::Binary(BinaryOp::Mul | BinaryOp::Div) => is_scalar_one(graph, node.inputs[1]),
            Op::Reshape { shape } => graph.value(x).ty.shape == *shape,
            _ => false,
        };
        let out = node.outputs[0];
        // The result keeps its type only when `x` has it (a Mul by 1 of an integer is f32).
        if identity && graph.value(x).ty == graph.value(out).ty {
            let name = node.name.clone();
            graph.replace_uses(out, x)?;
            graph.remove_node(n);
            report.note(format!("removed identity `{name}`"));
        }
    }
    Ok(())
}

fn is_scalar_one(graph: &Graph, v: ValueId) -> bool {
    graph
        .const_data(v)
        .is_some_and(|t| t.len() == 1 && t.to_f64_vec()[0] == 1.0)
}

/// `reshape(reshape(x))` is one reshape of `x`.
fn merge_reshapes(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n);
        let Op::Reshape { .. } = node.op else {
            continue;
        };
        let Some(producer) = graph.producer(node.inputs[0]) else {
            continue;
        };
        if !matches!(graph.node(producer).op, Op::Reshape { .. }) {
            continue;
        }
        let inner_input = graph.node(producer).inputs[0];
        let name = node.name.clone();
        graph.set_operand(n, 0, inner_input);
        report.note(format!("merged the reshape before `{name}` into it"));
    }
    Ok(())
}
