//! The chain below a quantizer: monotone steps by constants down to an integer accumulator.
//!
//! A step is an e-node of the class being walked: `x * c`, `c * x`, `x / c`, `x + c`,
//! `c + x`, `x - c`, `c - x` with `c` a constant that is one number or one per channel (axis
//! 1), a BatchNorm with constant parameters, or a reshape that keeps every element's batch and
//! channel (it moves no data and adds no step: `(1, 64)` to `(1, 64, 1)` and back in FINN's
//! streamlined graphs), or a Relu (non-decreasing, evaluated as the interpreter's `max(x, 0)`).
//! The walk stops at the first class with an integer type, the accumulator, unless that class
//! is itself a step of an integer further down (an exact affine map is typed as a scaled
//! integer), where it goes on to that one. Anything else in
//! between (a MaxPool, a residual add of two computed values) ends the walk without a fold;
//! other passes move such ops out of the way (`reorder-pooling` for a MaxPool).

use std::collections::HashSet;
use std::sync::Arc;

use bnnc_ir::{BinaryOp, Op, TensorType};
use egg::Id;

use super::accumulator::{accumulator, Accumulator};
use crate::egraph::analysis::{constant, value_type, BnnEGraph};
use crate::egraph::language::BnnLang;
use crate::threshold::{per_channel, ChainStep, PerChannel};

/// Longest chain walked (steps and reshapes).
const MAX_CHAIN: usize = 64;

/// A chain from an accumulator up to a quantizer's operand.
#[derive(Debug)]
pub struct Chain {
    /// The steps in the order they apply to the accumulator.
    pub steps: Vec<ChainStep>,
    pub acc: Accumulator,
    /// The imported node name of the BatchNorm nearest the accumulator, if the chain has one.
    pub batchnorm: Option<Arc<str>>,
}

/// Walks down from `top`, the quantizer's operand, to an accumulator.
pub fn walk(egraph: &BnnEGraph, top: Id) -> Result<Chain, String> {
    walk_from(egraph, egraph.find(top), HashSet::new(), Vec::new(), None)
}

/// The walk from class `at`, with the classes `visited` and the steps `down` (nearest the
/// quantizer first) so far.
fn walk_from(
    egraph: &BnnEGraph,
    mut at: Id,
    mut visited: HashSet<Id>,
    mut down: Vec<ChainStep>,
    mut batchnorm: Option<Arc<str>>,
) -> Result<Chain, String> {
    for _ in 0..MAX_CHAIN {
        visited.insert(at);
        let class = &egraph[at];
        let ty = class
            .data
            .ty()
            .ok_or_else(|| format!("{} has no type", class.data.describe(at)))?;
        let mut why_not = None;
        let mut next = None;
        for node in &class.nodes {
            match step_of(egraph, node, ty) {
                Ok((step, below)) if !visited.contains(&egraph.find(below)) => {
                    next = Some((step, egraph.find(below), node));
                    break;
                }
                // A way back up (x = x * 1 puts a cycle in the e-graph): try another node.
                Ok(_) => {}
                Err(reason) => {
                    why_not.get_or_insert(reason);
                }
            }
        }
        if let Some(acc) = accumulator(egraph, at) {
            let acc = acc?;
            // A scaled integer that is a step of an integer below (`x * 0.5 - 1` is typed
            // `i6*0.5`): the chain goes on down when it can, leaving no step behind.
            if let Some((step, below, _)) = next {
                let mut deeper = down.clone();
                deeper.extend(step);
                if let Ok(chain) = walk_from(egraph, below, visited, deeper, batchnorm.clone()) {
                    return Ok(chain);
                }
            }
            down.reverse();
            return Ok(Chain {
                steps: down,
                acc,
                batchnorm,
            });
        }
        let Some((step, below, node)) = next else {
            return Err(format!(
                "{} is {}",
                class.data.describe(at),
                why_not.unwrap_or_else(|| "only reached through a cycle".into())
            ));
        };
        if matches!(node.as_op(), Some(Op::BatchNorm { .. })) {
            batchnorm = class.data.node_name.clone().or(batchnorm);
        }
        down.extend(step);
        at = below;
    }
    Err(format!("the chain is longer than {MAX_CHAIN} steps"))
}

/// The step `node` makes (none for a layout-keeping reshape) and the class below it, or why it
/// is not a step. `ty` is the type of the node's class.
fn step_of(
    egraph: &BnnEGraph,
    node: &BnnLang,
    ty: &TensorType,
) -> Result<(Option<ChainStep>, Id), String> {
    let (op, ch) = match node {
        BnnLang::Op(key, ch) => (key.op(), ch),
        BnnLang::Input(_) => {
            return Err(format!("a graph input of type {}, not an integer", ty.elem))
        }
        BnnLang::Const(_) => return Err("a constant".into()),
        BnnLang::Result(..) => return Err("a result of a multi-result op".into()),
    };
    match (op, &ch[..]) {
        (Op::Binary(kind), &[a, b]) => binary_step(egraph, *kind, a, b, ty),
        (Op::BatchNorm { epsilon }, &[x, gamma, beta, mean, var]) => {
            // BatchNorm's parameters are indexed by axis 1 whatever the rank (inference
            // checks their shape is `[C]`), not broadcast like a binary op's operand.
            let param = |c: Id, what: &str| {
                constant(egraph, c)
                    .map(|t| PerChannel(t.to_f32_vec()))
                    .ok_or_else(|| format!("a batchnorm whose {what} is not a constant"))
            };
            let step = ChainStep::BatchNorm {
                gamma: param(gamma, "scale")?,
                beta: param(beta, "bias")?,
                mean: param(mean, "mean")?,
                var: param(var, "variance")?,
                epsilon: *epsilon,
            };
            Ok((Some(step), x))
        }
        (Op::Relu, &[x]) => Ok((Some(ChainStep::Relu), x)),
        (Op::Reshape { shape }, &[x]) => {
            let from = &value_type(egraph, x)
                .ok_or("a reshape of an untyped value")?
                .shape;
            if keeps_channel_layout(from, shape) {
                Ok((None, x))
            } else {
                Err(format!(
                    "a reshape from {from:?} to {shape:?}, which moves elements to other \
                     channels"
                ))
            }
        }
        (op, _) => Err(format!(
            "a {}, not a step by constants of a monotone chain",
            op.name()
        )),
    }
}

/// `a ∘ b` with one constant operand, as a step.
fn binary_step(
    egraph: &BnnEGraph,
    kind: BinaryOp,
    a: Id,
    b: Id,
    ty: &TensorType,
) -> Result<(Option<ChainStep>, Id), String> {
    let name = kind.name();
    let (x, c, constant_first) = match (constant(egraph, a), constant(egraph, b)) {
        (None, Some(c)) => (a, c, false),
        (Some(c), None) => (b, c, true),
        (None, None) => return Err(format!("an {name} of two computed values")),
        (Some(_), Some(_)) => return Err(format!("an {name} of two constants")),
    };
    let x_ty = value_type(egraph, x).ok_or_else(|| format!("an {name} of an untyped value"))?;
    if x_ty.shape != ty.shape {
        return Err(format!(
            "an {name} that broadcasts {:?} to {:?}",
            x_ty.shape, ty.shape
        ));
    }
    let c = per_channel(c, &x_ty.shape, "the constant")?;
    // IEEE addition and multiplication are commutative bit for bit, so `c * x` is `x * c`;
    // `c - x` is its own step, and `c / x` is not affine.
    let step = match (kind, constant_first) {
        (BinaryOp::Mul, _) => ChainStep::Mul(c),
        (BinaryOp::Add, _) => ChainStep::Add(c),
        (BinaryOp::Sub, false) => ChainStep::Sub(c),
        (BinaryOp::Sub, true) => ChainStep::SubFrom(c),
        (BinaryOp::Div, false) => ChainStep::Div(c),
        (BinaryOp::Div, true) => {
            return Err("a division of a constant by a value (not affine)".into())
        }
        (BinaryOp::Pow, _) => return Err("a pow (not affine)".into()),
        (BinaryOp::Min | BinaryOp::Max, _) => return Err(format!("a {name} (not affine)")),
    };
    Ok((Some(step), x))
}

/// Whether a reshape from `from` to `to` keeps every element's batch index and channel (axis
/// 1): both shapes have the same first two extents and the same number of elements after them.
fn keeps_channel_layout(from: &[usize], to: &[usize]) -> bool {
    let inner = |s: &[usize]| s[2..].iter().product::<usize>();
    from.len() >= 2 && to.len() >= 2 && from[..2] == to[..2] && inner(from) == inner(to)
}

#[cfg(test)]
mod tests {
    use super::keeps_channel_layout;

    #[test]
    fn channel_layout() {
        assert!(keeps_channel_layout(&[1, 64], &[1, 64, 1]));
        assert!(keeps_channel_layout(&[1, 64, 1], &[1, 64]));
        assert!(keeps_channel_layout(&[2, 8, 3, 4], &[2, 8, 12]));
        assert!(!keeps_channel_layout(&[1, 1, 28, 28], &[1, 784]));
        assert!(!keeps_channel_layout(&[1, 64], &[64, 1]));
    }
}
