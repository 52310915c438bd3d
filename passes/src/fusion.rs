//! `fuse-output-stages`: which thresholds and pools run in their layer's output stage.
//!
//! A layer's accumulator that only a per-channel threshold reads need never be stored: the
//! threshold can run on each sum as it is made, and a max-pool whose windows tile the image
//! can take the thresholded values as they come. Whether that happens is decided here, once,
//! and recorded on the nodes ([`bnnc_ir::Node::fused`], `fused` in the IR text), so that
//! every backend builds the same stages: the Cranelift schedule, and the FPGA dataflow plan
//! whose layers are exactly these stages. A backend without a fused kernel for some stage
//! runs its parts one after the other; no backend fuses what is not marked here.
//!
//! The rule is structural and target-independent:
//! - the layer is a linear layer (`conv`, `gemm`, `matmul`, `xnor_*`, `bitserial_*`) with an
//!   integer (or scaled integer) result;
//! - its one user is a `threshold` on that result with constant thresholds (and directions),
//!   one row per channel of axis 1 or one row for all;
//! - the threshold's one user may be a `maxpool` or `minmaxpool` over two spatial axes whose
//!   windows tile the image: kernel = strides, no padding, no dilation.

use bnnc_ir::{Graph, IrError, NodeId, Op, ValueDef};

use crate::report::PassReport;

/// Marks the thresholds and pools that run fused, clearing any earlier marks.
pub fn fuse_output_stages(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    for n in graph.node_ids().collect::<Vec<_>>() {
        graph.set_fused(n, false);
    }
    for layer in graph.topo_order()? {
        let Some(threshold) = fusable_threshold(graph, layer) else {
            continue;
        };
        graph.set_fused(threshold, true);
        let pool = fusable_pool(graph, threshold);
        if let Some(p) = pool {
            graph.set_fused(p, true);
        }
        report.note(format!(
            "{}: {}{} in its output stage",
            graph.node(layer).name,
            graph.node(threshold).name,
            pool.map_or(String::new(), |p| format!(" and {}", graph.node(p).name)),
        ));
    }
    Ok(report)
}

/// The threshold that can run in `layer`'s output stage, if any.
fn fusable_threshold(graph: &Graph, layer: NodeId) -> Option<NodeId> {
    let node = graph.node(layer);
    let acc = *node.outputs.first()?;
    if !node.op.is_linear_layer() || graph.value(acc).ty.elem.int_type().is_none() {
        return None;
    }
    let user = graph.only_user(acc)?;
    let t = graph.node(user);
    let Op::Threshold(attrs) = &t.op else {
        return None;
    };
    let constant = t.inputs[1..]
        .iter()
        .all(|&v| matches!(graph.value(v).def, ValueDef::Const(_)));
    let channels = graph.value(acc).ty.shape.get(1).copied();
    let rows_fit = match graph.value(t.inputs[1]).ty.shape.as_slice() {
        [rows, _] => *rows == 1 || Some(*rows) == channels,
        _ => false,
    };
    (t.inputs[0] == acc && attrs.channel_axis == 1 && constant && rows_fit).then_some(user)
}

/// The pool that can run in the output stage after fused `threshold`, if any.
fn fusable_pool(graph: &Graph, threshold: NodeId) -> Option<NodeId> {
    let bits = graph.node(threshold).outputs[0];
    let user = graph.only_user(bits)?;
    let node = graph.node(user);
    let attrs = match &node.op {
        Op::MaxPool(attrs) | Op::MinMaxPool { attrs, .. } => attrs,
        _ => return None,
    };
    let tiles = attrs.kernel.len() == 2
        && attrs.kernel == attrs.strides
        && attrs.pads.iter().all(|&p| p == 0)
        && attrs.dilations.iter().all(|&d| d == 1);
    (tiles && node.inputs[0] == bits).then_some(user)
}
