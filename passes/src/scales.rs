//! `fuse-scales`: consecutive multiplies, divides, adds and subtracts by constants collapse
//! into one affine map `x * s + t`, where that is exact.
//!
//! Most scales never reach this pass as ops. A weight or activation scale is part of its
//! value's type (a scaled integer), so it moves past linear layers by itself: the layer's
//! integer sum is scaled once (`bnnc_ir::interp`'s integer-first layers) and the scale joins
//! the threshold after it (`fold-batchnorm-to-threshold`), or the multiply after an XNOR
//! layer (`lower-xnor-popcount`). Chains of constant steps before a quantizer fold into its
//! thresholds. What is left are chains no quantizer follows: the float affine at a network's
//! output (a BatchNorm written as Sub, Div, Mul, Add) and the preprocessing of its input.
//!
//! Such a chain collapses only where one multiply and one add give every value the chain
//! gives, bit for bit: its operand is an integer (or scaled integer) of a known range, and
//! the collapsed map is evaluated against the chain on every integer of that range, in f32
//! as the interpreter computes. A chain on an f32 operand, or one the collapse would round
//! differently, stays, and the report says where it differs: passes change no value.

use bnnc_ir::{BinaryOp, ElemType, Graph, IrError, Node, NodeId, Op, Tensor, ValueId};

use crate::report::PassReport;
use crate::threshold::{channel_shape, per_channel};

/// The most `(channel, integer)` pairs the check evaluates.
const MAX_EVALUATIONS: usize = 1 << 22;

/// One constant step `x op c` (or `c - x`), with `c` per channel (length 1 or C).
#[derive(Clone, Debug)]
struct Step {
    op: BinaryOp,
    constant_first: bool,
    c: Vec<f32>,
}

impl Step {
    /// The step on `v` in channel `ch`, rounded to f32 as the interpreter's elementwise op.
    fn apply(&self, v: f32, ch: usize) -> f32 {
        let c = self.c[ch % self.c.len()];
        match (self.op, self.constant_first) {
            (BinaryOp::Add, _) => v + c,
            (BinaryOp::Mul, _) => v * c,
            (BinaryOp::Sub, false) => v - c,
            (BinaryOp::Sub, true) => c - v,
            (BinaryOp::Div, false) => v / c,
            _ => f32::NAN,
        }
    }

    /// The step as an exact affine map of the reals, composed after `(s, t)`.
    fn compose(&self, (s, t): (f64, f64), ch: usize) -> (f64, f64) {
        let c = f64::from(self.c[ch % self.c.len()]);
        match (self.op, self.constant_first) {
            (BinaryOp::Add, _) => (s, t + c),
            (BinaryOp::Mul, _) => (s * c, t * c),
            (BinaryOp::Sub, false) => (s, t - c),
            (BinaryOp::Sub, true) => (-s, c - t),
            _ => (s / c, t / c),
        }
    }
}

/// The constant step `n` makes on its operand, and that operand.
fn step_of(graph: &Graph, n: NodeId) -> Option<(Step, ValueId)> {
    let node = graph.node(n);
    let Op::Binary(op) = node.op else {
        return None;
    };
    let &[a, b] = node.inputs.as_slice() else {
        return None;
    };
    let constant_first = match (graph.const_data(a), graph.const_data(b)) {
        (None, Some(_)) => false,
        (Some(_), None) => true,
        _ => return None,
    };
    let (x, c) = if constant_first { (b, a) } else { (a, b) };
    let shape = &graph.value(node.outputs[0]).ty.shape;
    if graph.value(x).ty.shape != *shape
        || matches!(
            (op, constant_first),
            (BinaryOp::Div, true) | (BinaryOp::Pow, _)
        )
    {
        return None;
    }
    let c = per_channel(graph.const_data(c)?, shape, "constant").ok()?.0;
    Some((
        Step {
            op,
            constant_first,
            c,
        },
        x,
    ))
}

/// Collapses every chain of two or more constant steps where exact.
pub fn fuse_scales(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    for n in graph.topo_order()? {
        if !graph.contains_node(n) {
            continue;
        }
        let Some((first, x)) = step_of(graph, n) else {
            continue;
        };
        // Chains start at a step whose operand no step of the chain computed.
        if let Some(p) = graph.producer(x) {
            if step_of(graph, p).is_some() && graph.only_user(x) == Some(n) {
                continue;
            }
        }
        let mut nodes = vec![n];
        let mut steps = vec![first];
        let mut at = graph.node(n).outputs[0];
        while let Some(u) = graph.only_user(at) {
            match step_of(graph, u) {
                Some((step, operand)) if operand == at => {
                    nodes.push(u);
                    steps.push(step);
                    at = graph.node(u).outputs[0];
                }
                _ => break,
            }
        }
        if nodes.len() < 2 {
            continue;
        }
        let names: Vec<String> = nodes
            .iter()
            .map(|&m| format!("`{}`", graph.node(m).name))
            .collect();
        let names = names.join(", ");
        match collapse(graph, x, &steps, *nodes.last().expect("two or more"))? {
            Outcome::Collapsed => report.note(format!("collapsed {names} into one affine map")),
            Outcome::Kept(reason) => report.note(format!("kept {names}: {reason}")),
            Outcome::Minimal => {}
        }
    }
    if graph.remove_dead_nodes() > 0 {
        report.note("removed the steps the affine maps replaced");
    }
    Ok(report)
}

/// What became of a chain.
enum Outcome {
    Collapsed,
    /// Not exact, or not checkable: why.
    Kept(String),
    /// Already no more ops than one affine map.
    Minimal,
}

/// Replaces the chain `steps` on `x`, ending at node `last`, by `x * s + t`, if exact.
fn collapse(
    graph: &mut Graph,
    x: ValueId,
    steps: &[Step],
    last: NodeId,
) -> Result<Outcome, IrError> {
    let ty = graph.value(x).ty.clone();
    let channels = if ty.shape.len() >= 2 { ty.shape[1] } else { 1 };
    let (s32, t32): (Vec<f32>, Vec<f32>) = (0..channels)
        .map(|ch| {
            let (s, t) = steps
                .iter()
                .fold((1.0, 0.0), |st, step| step.compose(st, ch));
            (s as f32, t as f32)
        })
        .unzip();
    // A multiply by 1 or an add of 0 everywhere is left out.
    let multiply = s32.iter().any(|&s| s != 1.0);
    let add = t32.iter().any(|&t| t != 0.0);
    if usize::from(multiply) + usize::from(add) >= steps.len() {
        return Ok(Outcome::Minimal);
    }
    let (int, scale) = match &ty.elem {
        ElemType::Int(t) => (*t, vec![1.0]),
        ElemType::Scaled(t, bnnc_ir::Scale::Tensor(s)) => (*t, vec![*s]),
        ElemType::Scaled(t, bnnc_ir::Scale::Channel { axis: 1, values }) => (*t, values.to_vec()),
        other => {
            return Ok(Outcome::Kept(format!(
                "its operand is {other}, of no known range: one affine map would round \
                 differently"
            )))
        }
    };
    let (lo, hi) = (int.min(), int.max());
    let count = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
    if count.saturating_mul(channels) > MAX_EVALUATIONS {
        return Ok(Outcome::Kept(format!(
            "its operand's range [{lo}, {hi}] is too wide to check every value"
        )));
    }
    for ch in 0..channels {
        for k in lo..=hi {
            // The operand's value: the integer times its scale, rounded once.
            let v = k as f32 * scale[ch % scale.len()];
            let want = steps.iter().fold(v, |v, step| step.apply(v, ch));
            let mut got = v;
            if multiply {
                got *= s32[ch];
            }
            if add {
                got += t32[ch];
            }
            if got.to_bits() != want.to_bits() {
                return Ok(Outcome::Kept(format!(
                    "x * {:?} + {:?} gives {got:?} where the steps give {want:?} (channel \
                     {ch}, integer {k})",
                    s32[ch], t32[ch]
                )));
            }
        }
    }
    let uniform = |v: &[f32]| v.iter().all(|&a| a.to_bits() == v[0].to_bits());
    let constant = |v: &[f32]| {
        if uniform(v) {
            Tensor::f32(Vec::new(), vec![v[0]])
        } else {
            Tensor::f32(channel_shape(v.len(), ty.shape.len()), v.to_vec())
        }
    };
    let out = graph.node(last).outputs[0];
    let name = graph.value(out).name.clone();
    let node: Node = graph.node(last).clone();
    let mut added = Vec::new();
    let mut at = x;
    for (wanted, values, op, what) in [
        (multiply, &s32, BinaryOp::Mul, "scale"),
        (add, &t32, BinaryOp::Add, "shift"),
    ] {
        if !wanted {
            continue;
        }
        let c = graph.add_const(format!("{name}.{what}"), None, constant(values))?;
        at = graph.add_node(
            format!("{}.{what}", node.name),
            Op::Binary(op),
            &[at, c],
            vec![format!("{name}.{what}d")],
        )?[0];
        added.push(at);
    }
    if graph.value(at).ty != graph.value(out).ty {
        let reason = format!(
            "the affine map is typed {}, the chain {}",
            graph.value(at).ty,
            graph.value(out).ty
        );
        for v in added.into_iter().rev() {
            graph.remove_node(graph.producer(v).expect("a node result"));
        }
        return Ok(Outcome::Kept(reason));
    }
    graph.replace_node(last, at)?;
    Ok(Outcome::Collapsed)
}
