//! A BatchNorm that no quantizer follows (Bi-Real's real-valued shortcut) becomes the
//! per-channel affine map it is: `x * s + t`, two f32 operations, with `s` and `t` derived as
//! the interpreter derives them ([`batchnorm_scale_shift`]), so the values are the same bit
//! for bit. What remains is plain arithmetic that backends and later rewrites share with
//! every other scale and bias.

use bnnc_ir::interp::batchnorm_scale_shift;
use bnnc_ir::{BinaryOp, Graph, IrError, NodeId, Op, Tensor};

use crate::report::PassReport;
use crate::threshold::channel_shape;

/// Rewrites every BatchNorm with constant parameters into a Mul and an Add.
pub fn batchnorm_to_affine(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n).clone();
        let Op::BatchNorm { epsilon } = node.op else {
            continue;
        };
        let Some(params) = node.inputs[1..]
            .iter()
            .map(|&v| graph.const_data(v).map(Tensor::to_f32_vec))
            .collect::<Option<Vec<Vec<f32>>>>()
        else {
            continue;
        };
        let [gamma, beta, mean, var] = &params[..] else {
            continue;
        };
        let out = node.outputs[0];
        let rank = graph.value(out).ty.shape.len();
        let (scales, shifts): (Vec<f32>, Vec<f32>) = (0..gamma.len())
            .map(|c| batchnorm_scale_shift(gamma[c], beta[c], mean[c], var[c], epsilon))
            .unzip();
        let shape = channel_shape(gamma.len(), rank);
        let out_name = graph.value(out).name.clone();
        let s = graph.add_const(
            format!("{out_name}.scale"),
            None,
            Tensor::f32(shape.clone(), scales),
        )?;
        let t = graph.add_const(
            format!("{out_name}.shift"),
            None,
            Tensor::f32(shape, shifts),
        )?;
        let scaled = graph.add_node(
            format!("{}.scale", node.name),
            Op::Binary(BinaryOp::Mul),
            &[node.inputs[0], s],
            vec![format!("{out_name}.scaled")],
        )?[0];
        let shifted = graph.add_node(
            format!("{}.shift", node.name),
            Op::Binary(BinaryOp::Add),
            &[scaled, t],
            vec![format!("{out_name}.shifted")],
        )?[0];
        graph.replace_node(n, shifted)?;
        report.note(format!(
            "`{}` (batchnorm) feeds no quantizer: now its affine map, a mul and an add",
            node.name
        ));
    }
    Ok(())
}
