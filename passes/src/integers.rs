//! A linear layer replaced by its integers times a scale, with the thresholds on its value
//! moved onto the integers: what the XNOR-popcount and bit-serial lowerings share.

use bnnc_ir::integer_threshold::integer_threshold;
use bnnc_ir::{BinaryOp, ElemType, Graph, IntType, IrError, NodeId, Op, Tensor, ValueId};

use crate::report::PassReport;

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
    /// The scale of output channel `c`.
    pub(crate) fn of_channel(&self, c: usize) -> f32 {
        self.values[c % self.values.len()]
    }

    pub(crate) fn constant(&self, graph: &mut Graph, name: &str) -> Result<ValueId, IrError> {
        let t = Tensor::f32(self.shape.clone(), self.values.clone());
        graph.add_const(format!("{name}.weight_scale"), None, t)
    }
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
