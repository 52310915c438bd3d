//! `fold-batchnorm-to-threshold`: a quantizer over a monotone chain of constant steps on an
//! integer accumulator becomes integer thresholds on the accumulator.
//!
//! ```text
//! q = Quantizer(step_n(.. step_1(acc)))    ==>    q = Threshold(acc, T, directions)
//! ```
//! where the quantizer is a BipolarQuant, Sign, Quant, MultiThreshold or a QCDQ triple
//! (`quantizer.rs`), the steps are Mul/Div/Add/Sub by per-tensor or per-channel constants,
//! BatchNorm and Relu (`chain.rs`), and `acc` is an integer, or a scaled integer whose f32 values are
//! exactly `int * s` (`accumulator.rs`; the chain then starts with `Mul(s)`, so it sees the
//! value the interpreter holds). [`fold_chain`] finds the thresholds by evaluating the chain
//! as the interpreter does, so the result is exact on every accumulator value of the type's
//! range (`semantics.md`, "Folding BatchNorm").
//!
//! The new Threshold has the quantizer's result type, `out_scale * level + out_bias` with one
//! scale and bias for the tensor. Where the quantizer's output scale differs per channel the
//! fold is declined (with the reason): the Threshold op has one `out_scale`, and a per-channel
//! multiply after it would be typed `f32` rather than the quantizer's scaled type, which the
//! e-class cannot hold. The same holds for outputs that no affine map reproduces exactly.
//!
//! Thresholds are an f32 tensor `(C, n - 1)` of integers typed `Int(covering)`; on a scaled
//! accumulator they are in the value's units, `T * s`, typed `Scaled(covering, s)`, so that a
//! backend reads the integer thresholds off the type as it reads the accumulator's integers.
//! Directions `(C)` of ±1 typed `i2` are an operand only when some channel descends.

mod accumulator;
mod chain;
mod quantizer;

use std::sync::Arc;

use bnnc_ir::{ElemType, IntType, Op, Scale, Tensor, ThresholdAttrs};
use egg::Id;

use super::{union_if_same_type, ClassRule};
use crate::egraph::analysis::BnnEGraph;
use crate::egraph::language::{BnnLang, ConstRef};
use crate::threshold::{fold_chain, ChainQuantizer, ChainStep, PerChannel, ThresholdTable};
use accumulator::AccScale;
use chain::Chain;
use quantizer::{recognize, QUANTIZER_KINDS};

/// The rule's name.
pub const NAME: &str = "fold-batchnorm-to-threshold";

/// Integers beyond this are not all exact in f32, which thresholds are stored in.
const F32_EXACT: i64 = 1 << 24;

/// The rule (see the module docs).
pub struct FoldBatchnormToThreshold;

impl ClassRule for FoldBatchnormToThreshold {
    fn name(&self) -> &'static str {
        NAME
    }

    fn op_kinds(&self) -> &'static [&'static str] {
        QUANTIZER_KINDS
    }

    fn applies(&self, egraph: &BnnEGraph, class: Id) -> bool {
        !is_folded(egraph, class)
            && egraph[class]
                .nodes
                .iter()
                .any(|node| recognize(egraph, node).is_some_and(|q| is_computed(egraph, q.operand)))
    }

    fn apply(&self, egraph: &mut BnnEGraph, class: Id) -> bool {
        if is_folded(egraph, class) {
            return false;
        }
        let at = egraph[class].data.describe(class);
        let quantizer_name = egraph[class].data.node_name.clone();
        let nodes = egraph[class].nodes.clone();
        for node in &nodes {
            let Some(q) = recognize(egraph, node) else {
                continue;
            };
            // A weight quantizer, or one on a graph input: nothing to fold, nothing to say.
            if !is_computed(egraph, q.operand) {
                continue;
            }
            match q
                .quantizer
                .and_then(|quantizer| plan(egraph, class, q.operand, &quantizer))
            {
                Ok(plan) => {
                    let folded = build(egraph, class, plan, quantizer_name.as_deref());
                    if folded {
                        egraph.analysis.log.applied(NAME, &at);
                    }
                    return folded;
                }
                Err(reason) => egraph.analysis.log.decline(NAME, at.clone(), reason),
            }
        }
        false
    }
}

/// Whether the class already holds a Threshold (the fold happened).
fn is_folded(egraph: &BnnEGraph, class: Id) -> bool {
    egraph[class]
        .nodes
        .iter()
        .any(|n| matches!(n.as_op(), Some(Op::Threshold(_))))
}

/// Whether some op computes the class (it is not only a constant or a graph input).
fn is_computed(egraph: &BnnEGraph, class: Id) -> bool {
    egraph[class]
        .nodes
        .iter()
        .any(|n| matches!(n, BnnLang::Op(..) | BnnLang::Result(..)))
}

/// Everything [`build`] adds, computed before anything is added.
struct Plan {
    acc: Id,
    attrs: ThresholdAttrs,
    /// `(C, n - 1)` thresholds in the accumulator's f32 units, and their type.
    thresholds: Tensor,
    thresholds_elem: ElemType,
    /// `(C)` of ±1, when some channel descends.
    directions: Option<Tensor>,
    /// The quantizer's shape, when it differs from the accumulator's (a reshape in the chain).
    reshape_to: Option<Vec<usize>>,
    /// Names of what is built start with this (the chain's BatchNorm, or the quantizer).
    name: Option<Arc<str>>,
}

/// The fold of quantizer `q` in `class`, or why there is none.
fn plan(
    egraph: &BnnEGraph,
    class: Id,
    operand: Id,
    quantizer: &ChainQuantizer,
) -> Result<Plan, String> {
    let out_ty = egraph[class]
        .data
        .ty()
        .ok_or("the quantizer has no single result type")?
        .clone();
    let x_ty = egraph[operand]
        .data
        .ty()
        .ok_or("the quantizer's operand has no type")?;
    if x_ty.shape.len() < 2 {
        return Err(format!(
            "the quantized value has shape {:?}: no channel axis",
            x_ty.shape
        ));
    }
    let channels = x_ty.shape[1];
    let Chain {
        steps,
        acc,
        batchnorm,
    } = chain::walk(egraph, operand)?;

    // The chain sees the accumulator's f32 value, `int * s`: `Mul(s)` first.
    let mut all_steps = Vec::with_capacity(steps.len() + 1);
    match &acc.scale {
        AccScale::One => {}
        AccScale::Tensor(s) => all_steps.push(ChainStep::Mul(PerChannel::scalar(*s))),
        AccScale::Channel(s) => all_steps.push(ChainStep::Mul(PerChannel(s.to_vec()))),
    }
    all_steps.extend(steps);
    let table =
        fold_chain(&all_steps, quantizer, acc.min, acc.max, channels).map_err(|e| e.to_string())?;

    let (out_scale, out_bias) =
        match table.output.affine() {
            Some((&[scale], &[bias])) => (scale, bias),
            Some(_) => {
                return Err(
                    "the quantizer's output scale or bias differs per channel (a Threshold has \
                 one out_scale and out_bias)"
                        .into(),
                )
            }
            None => return Err(
                "no out_scale * level + out_bias reproduces the quantizer's outputs exactly in \
                 f32"
                .into(),
            ),
        };
    let (thresholds, thresholds_elem, directions) = threshold_operands(&table, &acc.scale)?;
    let acc_shape = &egraph[acc.class]
        .data
        .ty()
        .ok_or("the accumulator has no type")?
        .shape;
    Ok(Plan {
        acc: acc.class,
        attrs: ThresholdAttrs {
            out_scale,
            out_bias,
            out_type: out_ty.elem.clone(),
            channel_axis: 1,
        },
        thresholds,
        thresholds_elem,
        directions,
        reshape_to: (*acc_shape != out_ty.shape).then(|| out_ty.shape.clone()),
        name: batchnorm,
    })
}

/// The thresholds in the accumulator's f32 units, their type, and the directions.
///
/// A threshold `T` on the integer is `T * s` on the value `int * s` (both rounded once, see
/// [`accumulator`]): rounding keeps the order, so `acc >= T` holds exactly when the values
/// compare so, as long as `T - 1` and `T` stay apart. A negative `s` turns the order around,
/// so the channel's direction flips.
fn threshold_operands(
    table: &ThresholdTable,
    scale: &AccScale,
) -> Result<(Tensor, ElemType, Option<Tensor>), String> {
    let (channels, n) = (table.channels, table.levels - 1);
    let (lo, hi) = table
        .thresholds
        .iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    if let Some(&t) = table
        .thresholds
        .iter()
        .find(|&&t| t.abs() > F32_EXACT && (t as f32) as i64 != t)
    {
        return Err(format!("threshold {t} is not exact in f32"));
    }
    let mut values = Vec::with_capacity(table.thresholds.len());
    let mut descending = Vec::with_capacity(channels);
    for c in 0..channels {
        let s = scale.of_channel(c);
        for &t in table.row(c) {
            // `acc >= T` is `acc * s >= T * s` in f32 only while `(T - 1) * s` rounds below
            // `T * s` (true below 2^23 units, checked rather than assumed).
            if (t - 1) as f32 * s == t as f32 * s {
                return Err(format!(
                    "threshold {t} and {} round to the same value times the scale {s}",
                    t - 1
                ));
            }
            values.push(t as f32 * s);
        }
        descending.push(table.descending[c] != (s < 0.0));
    }
    let thresholds = Tensor::try_f32(vec![channels, n], values)
        .ok_or("internal: threshold table of the wrong size")?;
    let int = if table.thresholds.is_empty() {
        IntType::Binary
    } else {
        IntType::covering(lo, hi)
    };
    let elem = match scale {
        AccScale::One => ElemType::Int(int),
        AccScale::Tensor(s) => ElemType::Scaled(int, Scale::Tensor(*s)),
        AccScale::Channel(s) => ElemType::Scaled(
            int,
            Scale::Channel {
                axis: 0,
                values: Arc::clone(s),
            },
        ),
    };
    let directions = if descending.iter().any(|&d| d) {
        let signs = descending
            .iter()
            .map(|&d| if d { -1.0 } else { 1.0 })
            .collect();
        Some(
            Tensor::try_f32(vec![channels], signs)
                .ok_or("internal: directions of the wrong size")?,
        )
    } else {
        None
    };
    Ok((thresholds, elem, directions))
}

/// Adds the plan's constants and Threshold (and reshape) and unions it with `class`.
fn build(egraph: &mut BnnEGraph, class: Id, plan: Plan, quantizer_name: Option<&str>) -> bool {
    let base = plan
        .name
        .as_deref()
        .or(quantizer_name)
        .unwrap_or("threshold")
        .to_string();
    let add_named = |egraph: &mut BnnEGraph, node: BnnLang, name: String| {
        egraph.analysis.log.name(node.clone(), name);
        egraph.add(node)
    };
    let thresholds = BnnLang::Const(ConstRef::new(
        plan.thresholds_elem,
        Arc::new(plan.thresholds),
    ));
    let mut operands = vec![
        egraph.find(plan.acc),
        add_named(egraph, thresholds, format!("{base}.thresholds")),
    ];
    if let Some(d) = plan.directions {
        let d = BnnLang::Const(ConstRef::new(
            ElemType::Int(IntType::Signed(2)),
            Arc::new(d),
        ));
        operands.push(add_named(egraph, d, format!("{base}.directions")));
    }
    let threshold = BnnLang::op(Op::Threshold(plan.attrs), operands);
    let mut result = add_named(egraph, threshold, format!("{base}.threshold"));
    if let Some(shape) = plan.reshape_to {
        let reshape = BnnLang::op(Op::Reshape { shape }, vec![result]);
        result = add_named(egraph, reshape, format!("{base}.threshold.reshape"));
    }
    if union_if_same_type(egraph, class, result) {
        return true;
    }
    let reason = format!(
        "the threshold is typed {}, the quantizer {}",
        list(&egraph[result].data.results),
        list(&egraph[class].data.results)
    );
    let at = egraph[class].data.describe(class);
    egraph.analysis.log.decline(NAME, at, reason);
    false
}

fn list(types: &[bnnc_ir::TensorType]) -> String {
    let names: Vec<String> = types.iter().map(ToString::to_string).collect();
    if names.is_empty() {
        "untyped".into()
    } else {
        names.join(", ")
    }
}
