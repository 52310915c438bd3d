//! `reorder-pooling`: a MaxPool on an accumulator, followed by a per-channel monotone chain and
//! a quantizer, moves past the quantizer and pools the quantizer's output (bits) instead.
//!
//! ```text
//! q = Quantizer(step_n(.. step_1(MaxPool(acc))))  ==>  q = MaxPool(Quantizer(step_n(.. step_1(acc))))
//! ```
//! For a map `t` that is non-decreasing on a channel, `t(max_i x_i) = max_i t(x_i)`; for a
//! non-increasing one, `t(max_i x_i) = min_i t(x_i)` (`semantics.md`, "Pooling reorder"). The
//! steps act on each element with constants of its channel, so they commute with a spatial
//! window. A pool whose channels all rise stays a MaxPool (OR on bits); one with falling
//! channels becomes a `minmaxpool` that takes their minimum (AND on bits). An AveragePool
//! never moves (an average of quantized values is not the quantized average).
//!
//! Precondition: the graph verifies. The pool's operand is an integer or scaled integer
//! (finite, never NaN: the interpreter's MaxPool skips NaN, which a chain could create); every
//! window holds at least one input element (padding acts as -inf, which must never be a
//! window's maximum); the chain's steps are Mul/Div/Add/Sub by constants that are scalars or
//! vary only along axis 1, BatchNorm with constant parameters, or Relu; the quantizer is a
//! BipolarQuant, Sign, Quant or MultiThreshold (on axis 1) with such constants, whose output
//! step (scale, or out_scale) is positive on every channel, so that values rise with levels;
//! each value between pool and quantizer has the next op as its only use.
//!
//! Guarantee: the result verifies and computes the same outputs in the interpreter. Every
//! channel's chain is proven non-decreasing from the signs of its factors
//! ([`ChannelChain::monotonicity`]), none of them zero: with finite constants and a finite
//! operand no step then computes NaN, and IEEE rounding keeps the order. The one difference is
//! the sign of a zero output of a Quant, which gives -0 or +0 for the same level depending on
//! the value it rounded (see [`crate::threshold`]'s module docs); values compare equal.

use bnnc_ir::{BinaryOp, ElemType, Graph, IrError, NodeId, Op, PoolAttrs, ValueId};

use crate::report::PassReport;
use crate::threshold::{
    per_channel, ChainQuantizer, ChainStep, ChannelChain, Monotonicity, PerChannel,
};

/// Moves every MaxPool it can past the monotone chain and quantizer that follow it.
pub fn reorder_pooling(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    for pool in graph.topo_order()? {
        let node = graph.node(pool);
        let Op::MaxPool(attrs) = &node.op else {
            continue;
        };
        let name = node.name.clone();
        match plan(graph, pool, attrs) {
            Ok(plan) => {
                move_pool(graph, pool, &plan)?;
                let falling = plan.min.iter().filter(|&&m| m).count();
                report.note(format!(
                    "moved maxpool `{name}` past {} to pool the output of `{}`{}",
                    plan.describe_chain(graph),
                    graph.node(plan.quantizer).name,
                    if falling > 0 {
                        format!(", by the minimum on its {falling} falling channels")
                    } else {
                        String::new()
                    }
                ));
            }
            Err(Skip::Silent) => {}
            Err(Skip::Because(reason)) => {
                report.note(format!("kept maxpool `{name}` in place: {reason}"));
            }
        }
    }
    if graph.remove_dead_nodes() > 0 {
        report.note("removed the nodes the moves replaced");
    }
    Ok(report)
}

/// Why a pool does not move: a reason users should read, or nothing to say (no quantizer
/// follows the pool at all).
enum Skip {
    Silent,
    Because(String),
}

impl From<String> for Skip {
    fn from(reason: String) -> Self {
        Skip::Because(reason)
    }
}

/// The chain nodes (from the pool down), the quantizer a pool moves past, and the channels
/// whose chain falls (pooled by their minimum after the move).
struct Plan {
    chain: Vec<NodeId>,
    quantizer: NodeId,
    min: Vec<bool>,
}

impl Plan {
    fn describe_chain(&self, graph: &Graph) -> String {
        if self.chain.is_empty() {
            return "nothing".into();
        }
        let names: Vec<String> = self
            .chain
            .iter()
            .map(|&n| format!("`{}`", graph.node(n).name))
            .collect();
        names.join(", ")
    }
}

/// The chain and quantizer after `pool`, if the pool may move past them.
fn plan(graph: &Graph, pool: NodeId, attrs: &PoolAttrs) -> Result<Plan, Skip> {
    let node = graph.node(pool);
    let (x, y) = (node.inputs[0], node.outputs[0]);
    let x_ty = &graph.value(x).ty;
    let y_shape = graph.value(y).ty.shape.clone();
    if y_shape.len() < 3 {
        return Err(Skip::Silent);
    }
    let channels = y_shape[1];
    let mut chain = Vec::new();
    let mut steps = Vec::new();
    let mut at = y;
    let (quantizer, q) = loop {
        let user = graph.only_user(at).ok_or(Skip::Silent)?;
        let n = graph.node(user);
        if let Some(q) = quantizer_of(graph, user, &y_shape)? {
            break (user, q);
        }
        let step = step_of(graph, user, at, &y_shape).map_err(|reason| match chain.is_empty() {
            true => Skip::Silent,
            false => Skip::Because(reason),
        })?;
        steps.push(step);
        chain.push(user);
        at = n.outputs[0];
    };
    if x_ty.elem == ElemType::F32 {
        return Err(Skip::Because(
            "its operand is f32, which may hold NaN (MaxPool skips NaN, a chain may create it)"
                .into(),
        ));
    }
    if !every_window_has_input(attrs, &x_ty.shape, &y_shape) {
        return Err(Skip::Because(
            "a window lies in the padding only (its -inf maximum is not a quantized value)".into(),
        ));
    }
    let mut min = Vec::with_capacity(channels);
    for c in 0..channels {
        let chain = ChannelChain::new(&steps, &q, c, channels).map_err(|e| e.to_string())?;
        // The monotonicity is the level's; the pool compares values, which fall as the
        // level rises where the quantizer's output step is negative (a negative scale or
        // out_scale). Such a pool stays on the accumulator. (The chain's constants are
        // checked finite, so the step is a number.)
        if chain.output_step() <= 0.0 {
            return Err(format!(
                "channel {c}'s quantizer has a negative output step ({}): its values fall as \
                 its levels rise",
                chain.output_step()
            )
            .into());
        }
        match chain.monotonicity() {
            Monotonicity::NonDecreasing => min.push(false),
            Monotonicity::NonIncreasing => min.push(true),
            Monotonicity::Constant => {
                return Err(format!(
                    "channel {c} has a zero factor (gamma or multiplier), which can meet an \
                     infinity and make NaN"
                )
                .into())
            }
        }
    }
    Ok(Plan {
        chain,
        quantizer,
        min,
    })
}

/// A constant operand of `n`, as per-channel values for a tensor of `shape`.
fn const_param(graph: &Graph, n: NodeId, i: usize, shape: &[usize]) -> Result<PerChannel, String> {
    let node = graph.node(n);
    let t = node
        .inputs
        .get(i)
        .and_then(|&v| graph.const_data(v))
        .ok_or_else(|| format!("operand {i} of `{}` is not a constant", node.name))?;
    per_channel(t, shape, &format!("operand {i} of `{}`", node.name))
}

/// The step node `n` makes on its operand `v` (of shape `shape`, as its result).
fn step_of(graph: &Graph, n: NodeId, v: ValueId, shape: &[usize]) -> Result<ChainStep, String> {
    let node = graph.node(n);
    if graph.value(node.outputs[0]).ty.shape != shape {
        return Err(format!("`{}` changes the shape", node.name));
    }
    match (&node.op, &node.inputs[..]) {
        (Op::Binary(kind), &[a, b]) => {
            let constant_first = b == v;
            let c = const_param(graph, n, if constant_first { 0 } else { 1 }, shape)?;
            Ok(match (kind, constant_first) {
                (BinaryOp::Mul, _) => ChainStep::Mul(c),
                (BinaryOp::Add, _) => ChainStep::Add(c),
                (BinaryOp::Sub, false) => ChainStep::Sub(c),
                (BinaryOp::Sub, true) => ChainStep::SubFrom(c),
                (BinaryOp::Div, false) if a == v => ChainStep::Div(c),
                _ => return Err(format!("`{}` is not a monotone step", node.name)),
            })
        }
        (Op::BatchNorm { epsilon }, &[_, ..]) => {
            // BatchNorm's parameters are `[C]`, indexed by axis 1.
            let param = |i: usize| {
                node.inputs
                    .get(i)
                    .and_then(|&p| graph.const_data(p))
                    .map(|t| PerChannel(t.to_f32_vec()))
                    .ok_or_else(|| format!("a parameter of `{}` is not a constant", node.name))
            };
            Ok(ChainStep::BatchNorm {
                gamma: param(1)?,
                beta: param(2)?,
                mean: param(3)?,
                var: param(4)?,
                epsilon: *epsilon,
            })
        }
        (Op::Relu, [_]) => Ok(ChainStep::Relu),
        (op, _) => Err(format!(
            "`{}` is a {}, not a per-channel step",
            node.name,
            op.name()
        )),
    }
}

/// The quantizer node `n` is, if it is one: `Ok(None)` for another op.
fn quantizer_of(
    graph: &Graph,
    n: NodeId,
    shape: &[usize],
) -> Result<Option<ChainQuantizer>, String> {
    let node = graph.node(n);
    let param = |i: usize| const_param(graph, n, i, shape);
    Ok(Some(match &node.op {
        Op::BipolarQuant => ChainQuantizer::Bipolar { scale: param(1)? },
        Op::Sign => ChainQuantizer::Sign,
        Op::Quant(attrs) => {
            let bits = match param(3)?.0[..] {
                [b] if b.fract() == 0.0 && (1.0..=16.0).contains(&b) => b as u8,
                ref b => return Err(format!("bit width {b:?} is not one integer in 1..=16")),
            };
            ChainQuantizer::Quant {
                scale: param(1)?,
                zero_point: param(2)?,
                bits,
                signed: attrs.signed,
                narrow: attrs.narrow,
                rounding: attrs.rounding,
            }
        }
        Op::MultiThreshold(attrs) if attrs.channel_axis == 1 => {
            let t = node
                .inputs
                .get(1)
                .and_then(|&v| graph.const_data(v))
                .ok_or_else(|| format!("the thresholds of `{}` are not constant", node.name))?;
            let &[_, k] = t.shape() else {
                return Err(format!("thresholds of shape {:?}", t.shape()));
            };
            let values = t.to_f32_vec();
            ChainQuantizer::MultiThreshold {
                thresholds: if k == 0 {
                    vec![Vec::new()]
                } else {
                    values.chunks(k).map(<[f32]>::to_vec).collect()
                },
                out_scale: attrs.out_scale,
                out_bias: attrs.out_bias,
            }
        }
        _ => return Ok(None),
    }))
}

/// Whether every window of the pool covers at least one input element on every axis.
fn every_window_has_input(attrs: &PoolAttrs, in_shape: &[usize], out_shape: &[usize]) -> bool {
    let spatial = attrs.kernel.len();
    (0..spatial).all(|d| {
        let (extent, pad_begin) = (in_shape[d + 2], attrs.pads[d]);
        (0..out_shape[d + 2]).all(|o| {
            (0..attrs.kernel[d]).any(|t| {
                let p = o * attrs.strides[d] + t * attrs.dilations[d];
                p.checked_sub(pad_begin).is_some_and(|c| c < extent)
            })
        })
    })
}

/// Rebuilds the chain and quantizer on the pool's operand and pools the quantizer's result.
fn move_pool(graph: &mut Graph, pool: NodeId, plan: &Plan) -> Result<(), IrError> {
    let pool_node = graph.node(pool).clone();
    let mut at = pool_node.inputs[0];
    let mut from = pool_node.outputs[0];
    for &n in plan.chain.iter().chain([&plan.quantizer]) {
        let node = graph.node(n).clone();
        let inputs: Vec<ValueId> = node
            .inputs
            .iter()
            .map(|&i| if i == from { at } else { i })
            .collect();
        // The new value takes the name; the old one is dead once the pool has moved.
        let old = node.outputs[0];
        let out_name = graph.value(old).name.clone();
        graph.rename_value(old, format!("{out_name}.before_reorder"));
        at = graph.add_node(node.name.clone(), node.op.clone(), &inputs, vec![out_name])?[0];
        from = old;
    }
    // The pooled bits take the quantizer's result name, which its users refer to.
    let q_out = graph.node(plan.quantizer).outputs[0];
    let q_name = graph.value(at).name.clone();
    graph.rename_value(at, format!("{q_name}.unpooled"));
    let op = match pool_node.op {
        Op::MaxPool(attrs) if plan.min.contains(&true) => Op::MinMaxPool {
            attrs,
            min: plan.min.clone(),
        },
        op => op,
    };
    let pooled = graph.add_node(pool_node.name, op, &[at], vec![q_name])?[0];
    graph.replace_uses(q_out, pooled)
}
