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

use bnnc_ir::{
    packing, BinaryOp, ElemType, Graph, IntType, IrError, Node, NodeId, Op, Scale, Tensor, ValueId,
};

use crate::manager::PassReport;
use crate::threshold::channel_shape;
use bnnc_ir::integer_threshold::integer_threshold;

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

/// An integer op that computes a layer's integers, and the scale that makes them its value.
pub(crate) struct Integers<'a> {
    pub(crate) op: Op,
    pub(crate) operands: &'a [ValueId],
    /// The integers' name is the layer's result's, with this suffix.
    pub(crate) suffix: &'a str,
    pub(crate) scales: &'a WeightScale,
}

/// Replaces linear node `n` by `integers` times their scale, which has the layer's value and
/// type (a scaled integer is its integer times its scale, rounded once), and moves the
/// thresholds on that value onto the integers. Reports `what` it became; changes nothing
/// (and says nothing) if inference types the product otherwise.
pub(crate) fn replace_by_integers(
    graph: &mut Graph,
    n: NodeId,
    integers: Integers<'_>,
    what: &str,
    report: &mut PassReport,
) -> Result<(), IrError> {
    let node = graph.node(n).clone();
    let out = node.outputs[0];
    let name = graph.value(out).name.clone();
    let acc = graph.add_node(
        node.name.clone(),
        integers.op,
        integers.operands,
        vec![format!("{name}.{}", integers.suffix)],
    )?[0];
    let scale = integers.scales.constant(graph, &name)?;
    let scaled = graph.add_node(
        format!("{}.scale", node.name),
        Op::Binary(BinaryOp::Mul),
        &[acc, scale],
        vec![format!("{name}.scaled")],
    )?[0];
    if graph.value(scaled).ty != graph.value(out).ty {
        graph.remove_node(graph.producer(scaled).expect("a node result"));
        graph.remove_node(graph.producer(acc).expect("a node result"));
        return Ok(());
    }
    graph.replace_node(n, scaled)?;
    report.note(format!("`{}` ({}) {what}", node.name, node.op.name()));
    let moved = thresholds_onto_integers(graph, scaled, acc, integers.scales)?;
    if moved > 0 {
        report.note(format!(
            "{moved} threshold(s) after `{}` compare its integers",
            node.name
        ));
    }
    Ok(())
}

/// A layer's scale after its integers: one, or one per output channel.
pub(crate) struct WeightScale {
    pub(crate) values: Vec<f32>,
    /// The shape of the multiplier: `[]`, or the channels against the result (`(M, 1, 1)`
    /// for a convolution's `(N, M, H, W)`, `(N)` for a matrix product's last axis).
    pub(crate) shape: Vec<usize>,
}

impl WeightScale {
    fn of_channel(&self, c: usize) -> f32 {
        self.values[c % self.values.len()]
    }

    pub(crate) fn constant(&self, graph: &mut Graph, name: &str) -> Result<ValueId, IrError> {
        let t = Tensor::f32(self.shape.clone(), self.values.clone());
        graph.add_const(format!("{name}.weight_scale"), None, t)
    }
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
        // A grouped convolution stays a Conv: its ±1 products run on the exact integer
        // kernels (no XNOR kernel takes groups).
        Op::Conv(attrs) if node.inputs.len() == 2 && attrs.group == 1 => (
            Op::XnorConv(attrs.clone()),
            0,
            channel_shape(w.shape[0], out_rank),
        ),
        Op::MatMul if w.shape.len() == 2 => (Op::XnorMatMul, 1, vec![w.shape[1]]),
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

/// Rewrites each Threshold on `scaled = acc * scale` (constant thresholds, channels on
/// axis 1) into one on `acc`, with the integer thresholds that give every integer of `acc`'s
/// range the same level. Returns how many moved.
fn thresholds_onto_integers(
    graph: &mut Graph,
    scaled: ValueId,
    acc: ValueId,
    scales: &WeightScale,
) -> Result<usize, IrError> {
    let Some(int) = graph.value(acc).ty.elem.int_type() else {
        return Ok(0);
    };
    let (lo, hi) = (int.min(), int.max());
    let channels = graph.value(acc).ty.shape.get(1).copied().unwrap_or(1);
    let users: Vec<NodeId> = graph
        .node_ids()
        .filter(|&u| graph.node(u).inputs.first() == Some(&scaled))
        .collect();
    let mut moved = 0;
    for u in users {
        let node = graph.node(u).clone();
        let Op::Threshold(attrs) = &node.op else {
            continue;
        };
        if attrs.channel_axis != 1 {
            continue;
        }
        let Some(table) = graph.const_data(node.inputs[1]).cloned() else {
            continue;
        };
        let directions = match node.inputs.get(2) {
            Some(&d) => match graph.const_data(d) {
                Some(t) => t.to_f32_vec(),
                None => continue,
            },
            None => vec![1.0; channels],
        };
        let &[rows, n] = table.shape() else {
            continue;
        };
        if (rows != 1 && rows != channels) || directions.len() != channels {
            continue;
        }
        let values = table.to_f32_vec();
        let mut thresholds = Vec::with_capacity(channels * n);
        let mut descending = Vec::with_capacity(channels);
        for (c, &direction) in directions.iter().enumerate() {
            let s = scales.of_channel(c);
            let value_descending = direction < 0.0;
            let int_descending = value_descending != (s < 0.0);
            let row = if rows == 1 { 0 } else { c };
            for &t in &values[row * n..(row + 1) * n] {
                let reached = |k: i64| {
                    let v = k as f32 * s;
                    if value_descending {
                        v <= t
                    } else {
                        v >= t
                    }
                };
                thresholds.push(integer_threshold(reached, lo, hi, int_descending));
            }
            descending.push(int_descending);
        }
        let (tmin, tmax) = thresholds
            .iter()
            .fold((i64::MAX, i64::MIN), |(a, b), &t| (a.min(t), b.max(t)));
        let elem = if thresholds.is_empty() {
            ElemType::BINARY
        } else {
            ElemType::Int(IntType::covering(tmin, tmax))
        };
        let t_values = thresholds.iter().map(|&t| t as f32).collect();
        let base = graph.value(node.inputs[1]).name.clone();
        let t = graph.add_const(
            format!("{base}.integers"),
            Some(elem),
            Tensor::f32(vec![channels, n], t_values),
        )?;
        let mut operands = vec![acc, t];
        if descending.iter().any(|&d| d) {
            let signs = descending
                .iter()
                .map(|&d| if d { -1.0 } else { 1.0 })
                .collect();
            operands.push(graph.add_const(
                format!("{base}.integer_directions"),
                Some(ElemType::Int(IntType::Signed(2))),
                Tensor::f32(vec![channels], signs),
            )?);
        }
        let old = node.outputs[0];
        let name = graph.value(old).name.clone();
        let new = graph.add_node(node.name.clone(), node.op.clone(), &operands, vec![name])?[0];
        graph.replace_uses(old, new)?;
        graph.remove_node(u);
        moved += 1;
    }
    Ok(moved)
}
