//! `lower-xnor-popcount`: a Conv, Gemm or MatMul whose activations are bipolar and whose
//! weights are bipolar, or bipolar times a scale (XNOR-Net's alpha, one per tensor or per
//! output channel), becomes an XNOR-popcount op (`xnor_conv`, `xnor_matmul`).
//!
//! The lowered ops compute the same integers (the bipolar dot product `K - 2 * popcount(a ^ w)`,
//! zero padding contributing 0). A weight scale becomes a multiply after the integers: the
//! layer's value is its integer sum times the scale rounded once, and so is the multiply's
//! (`bnnc_ir::interp`'s integer-first layers), so the value and its type are unchanged. A
//! Threshold reading that value then reads the integers instead, with integer thresholds
//! found by search on the multiply's f32 values (a negative scale turns a channel's direction
//! around), so binary layers keep their fused integer output stage.
//!
//! Low-bit (1 to 4 bit) matrix products and convolutions lower to `bitserial_matmul` and
//! `bitserial_conv` where a cost model prefers them ([`crate::bitserial`]).
//!
//! Weights must be constants (run `cleanup` first so weight quantizers are folded into
//! bipolar constants); the lowered ops hold their signs packed into 64-bit words along the
//! reduction axis ([`bnnc_ir::packing`]), as backends read them.

use bnnc_ir::{packing, ElemType, Graph, IntType, IrError, Node, NodeId, Op, Scale, Tensor};

use crate::integers::{replace_by_integers, Integers, WeightScale};
use crate::report::PassReport;
use crate::threshold::channel_shape;

/// Lowers every bipolar x (scaled) bipolar linear layer.
pub fn lower_xnor_popcount(
    graph: &mut Graph,
    bit_serial: crate::bitserial::BitSerial,
) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        // A threshold moved onto the integers of an earlier layer is gone.
        if !graph.contains_node(n) {
            continue;
        }
        let node = graph.node(n).clone();
        let Some(plan) = plan(graph, &node)? else {
            continue;
        };
        let out = node.outputs[0];
        let name = graph.value(out).name.clone();
        let weight = graph.add_const(
            format!("{}.packed", graph.value(node.inputs[1]).name),
            Some(ElemType::I64),
            plan.packed,
        )?;
        let lowered_op = plan.op.name();
        let operands = [node.inputs[0], weight];
        let Some(scales) = plan.scales else {
            let acc = graph.add_node(node.name.clone(), plan.op, &operands, vec![name])?[0];
            graph.replace_node(n, acc)?;
            report.note(format!(
                "`{}` ({}) is now {lowered_op}",
                node.name,
                node.op.name()
            ));
            continue;
        };
        let what = format!("is now {lowered_op} times its weight scale");
        let integers = Integers {
            op: plan.op,
            operands: &operands,
            suffix: "popcount",
            scales: &scales,
        };
        replace_by_integers(graph, n, integers, &what, &mut report)?;
    }
    crate::bitserial::lower_bit_serial(graph, bit_serial, &mut report)?;
    // Multiplies only thresholds read are gone with them.
    graph.remove_dead_nodes();
    Ok(report)
}

/// A layer to lower: the XNOR op, the ±1 weights in its layout when they are not the
/// layer's own (and the suffix of their name), and the weight scale.
struct Plan {
    op: Op,
    /// The weights' signs packed into words ([`packing`]).
    packed: Tensor,
    scales: Option<WeightScale>,
}

/// What lowering `node` takes, or `None` when it is not a bipolar x (scaled) bipolar layer.
fn plan(graph: &Graph, node: &Node) -> Result<Option<Plan>, IrError> {
    let ty = |i: usize| node.inputs.get(i).map(|&v| &graph.value(v).ty);
    let (Some(x), Some(w)) = (ty(0), ty(1)) else {
        return Ok(None);
    };
    let Some(w_data) = graph.const_data(node.inputs[1]) else {
        return Ok(None);
    };
    if x.elem != ElemType::BIPOLAR {
        return Ok(None);
    }
    let out_rank = graph.value(node.outputs[0]).ty.shape.len();
    // The op, the weights' output-channel axis, and the multiplier's shape per channel.
    let (op, w_axis, channel_shape) = match &node.op {
        // Any group: each filter's words pack its group's channels. Grouped layers lower
        // whatever their shape: even a depthwise one, whose filters read a whole word per
        // tap for one channel's bit, runs ten times faster on the XNOR kernel than on the
        // exact integer one it replaces (Cranelift, `bnnc bench`, threshold steps counted:
        // 3x3 over 128 channels of 16x16, padded, 691 against 64 us; in 4 groups, 719
        // against 65 us; BENCHMARKS.md).
        Op::Conv(attrs) if node.inputs.len() == 2 => (
            Op::XnorConv(attrs.clone()),
            0,
            channel_shape(w.shape[0], out_rank),
        ),
        // Rows of K: the kernels read a matrix (a batched MatMul keeps its integer sums).
        Op::MatMul if w.shape.len() == 2 && x.shape.len() == 2 => {
            (Op::XnorMatMul, 1, vec![w.shape[1]])
        }
        Op::Gemm(g) if node.inputs.len() == 2 && g.alpha == 1.0 && !g.trans_a => {
            let axis = usize::from(!g.trans_b);
            (Op::XnorMatMul, axis, vec![w.shape[axis]])
        }
        _ => return Ok(None),
    };
    let scales = match &w.elem {
        ElemType::Int(IntType::Bipolar) => None,
        ElemType::Scaled(IntType::Bipolar, Scale::Tensor(s)) => Some(WeightScale {
            values: vec![*s],
            shape: Vec::new(),
        }),
        ElemType::Scaled(IntType::Bipolar, Scale::Channel { axis, values }) if *axis == w_axis => {
            Some(WeightScale {
                values: values.to_vec(),
                shape: channel_shape,
            })
        }
        _ => return Ok(None),
    };
    // The signs: each weight over its channel's scale is exactly ±1.
    let inner: usize = w.shape[w_axis + 1..].iter().product();
    let values = w_data.to_f32_vec();
    let signs: Option<Vec<f32>> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales
                .as_ref()
                .map_or(1.0, |s| s.of_channel((i / inner.max(1)) % w.shape[w_axis]));
            let q = v / s;
            (q == 1.0 || q == -1.0).then_some(q)
        })
        .collect();
    let Some(signs) = signs else {
        return Ok(None);
    };
    let mut signs = Tensor::f32(w.shape.clone(), signs);
    if matches!(&node.op, Op::Gemm(g) if g.trans_b) {
        // Gemm's (M, K) weights as the (K, M) of a matrix product.
        let transpose = Op::Transpose { perm: vec![1, 0] };
        signs = bnnc_ir::interp::eval(&transpose, &[&signs])
            .map_err(|reason| IrError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                reason,
            })?
            .swap_remove(0);
    }
    let packed = match op {
        Op::XnorConv(_) => packing::pack_conv_weights(&signs),
        _ => packing::pack_matrix_weights(&signs),
    };
    let Some(packed) = packed else {
        return Ok(None);
    };
    Ok(Some(Plan { op, packed, scales }))
}
