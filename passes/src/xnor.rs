//! `lower-xnor-popcount`: a Conv, Gemm or MatMul whose activations and weights are both
//! bipolar becomes an XNOR-popcount op (`xnor_conv`, `xnor_matmul`).
//!
//! The lowered ops compute the same integers (the bipolar dot product `K - 2 * popcount(a ^ w)`,
//! zero padding contributing 0), so the result type is unchanged. Weights must be constants
//! (run `cleanup` first so weight quantizers are folded into bipolar constants); the packing of
//! the bits into words is the backend's layout.

use bnnc_ir::{ElemType, Graph, IrError, NodeId, Op};

use crate::manager::PassReport;

/// Lowers every bipolar x bipolar linear layer.
pub fn lower_xnor_popcount(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n).clone();
        let bipolar = |i: usize| {
            node.inputs
                .get(i)
                .is_some_and(|&v| graph.value(v).ty.elem == ElemType::BIPOLAR)
        };
        if !(bipolar(0) && bipolar(1)) || graph.const_data(node.inputs[1]).is_none() {
            continue;
        }
        let (op, weight) = match &node.op {
            Op::Conv(attrs) if node.inputs.len() == 2 => {
                (Op::XnorConv(attrs.clone()), node.inputs[1])
            }
            Op::MatMul if graph.value(node.inputs[1]).ty.shape.len() == 2 => {
                (Op::XnorMatMul, node.inputs[1])
            }
            Op::Gemm(g) if node.inputs.len() == 2 && g.alpha == 1.0 && !g.trans_a => {
                let w = graph.value(node.inputs[1]).clone();
                let weight = if g.trans_b {
                    // XnorMatMul takes (K, M) weights: transpose Gemm's (M, K) once, here.
                    let data = graph.const_data(node.inputs[1]).expect("checked constant");
                    let transpose = Op::Transpose { perm: vec![1, 0] };
                    let t = bnnc_ir::interp::eval(&transpose, &[data])
                        .map_err(|reason| IrError::Node {
                            node: node.name.clone(),
                            op: node.op.name(),
                            reason,
                        })?
                        .swap_remove(0);
                    graph.add_const(format!("{}.kxm", w.name), Some(w.ty.elem.clone()), t)?
                } else {
                    node.inputs[1]
                };
                (Op::XnorMatMul, weight)
            }
            _ => continue,
        };
        let out = node.outputs[0];
        let name = graph.value(out).name.clone();
        let lowered =
            graph.add_node(node.name.clone(), op, &[node.inputs[0], weight], vec![name])?[0];
        graph.replace_uses(out, lowered)?;
        graph.remove_node(n);
        report.note(format!(
            "`{}` ({}) is now {}",
            node.name,
            node.op.name(),
            graph
                .node(graph.producer(lowered).expect("a node result"))
                .op
                .name()
        ));
    }
    Ok(report)
}
