//! Where a chain starts: an integer accumulator whose f32 value is its integer times its scale,
//! rounded once.
//!
//! An `Int` value holds its integers exactly (inference types a value `Int` only then). A
//! `Scaled(int, s)` value holds `int * s`, and the thresholds compare that f32, so the fold is
//! exact when the f32 is `int * s` rounded once for an integer of the range: then the chain,
//! given `Mul(s)` as its first step, sees exactly the value the interpreter sees. A quantizer
//! computes its output so; a linear layer on scaled integers does too whatever the scales,
//! since the interpreter sums its integers exactly and scales once (`bnnc_ir::interp`'s
//! `scaled`), except where every scale is a power of two and it sums the floats, which is exact
//! only if its operands are; moving, selecting and clamping keep the form, and so do the
//! exact affine maps inference types as scaled integers (`(x + 1) / 2`). Sums of scaled
//! values (an Add of two computed values) do not: a scale like 0.1 rounds at every step.

use std::collections::HashMap;
use std::sync::Arc;

use bnnc_ir::{ElemType, Op, Scale};
use egg::{Id, Language};

use crate::egraph::analysis::{constant, value_type, BnnEGraph};
use crate::egraph::language::BnnLang;

/// How far [`exactly_scaled`] looks back through the graph.
const MAX_DEPTH: usize = 24;

/// The scale between an accumulator's integer and its f32 value.
#[derive(Clone, Debug, PartialEq)]
pub enum AccScale {
    /// The value is the integer.
    One,
    /// `value = int * s` exactly.
    Tensor(f32),
    /// `value = int * s[c]` exactly, per channel (axis 1).
    Channel(Arc<[f32]>),
}

impl AccScale {
    /// The scale of `channel`.
    pub fn of_channel(&self, channel: usize) -> f32 {
        match self {
            AccScale::One => 1.0,
            AccScale::Tensor(s) => *s,
            AccScale::Channel(v) => v.get(channel).copied().unwrap_or(f32::NAN),
        }
    }
}

/// An integer accumulator: its class, integer range and scale.
#[derive(Clone, Debug)]
pub struct Accumulator {
    pub class: Id,
    pub min: i64,
    pub max: i64,
    pub scale: AccScale,
}

/// The accumulator class `class` is, if its type is an integer type: `None` for an `f32`
/// class (the chain goes on below it), an error when it is a scaled integer whose f32 values
/// are not provably `int * scale`.
pub fn accumulator(egraph: &BnnEGraph, class: Id) -> Option<Result<Accumulator, String>> {
    let ty = value_type(egraph, class)?;
    let acc = |int: bnnc_ir::IntType, scale| Accumulator {
        class,
        min: int.min(),
        max: int.max(),
        scale,
    };
    let found = match &ty.elem {
        ElemType::F32 => return None,
        ElemType::Int(int) => Ok(acc(*int, AccScale::One)),
        ElemType::Scaled(int, scale) => {
            let scale = match scale {
                Scale::Tensor(s) => AccScale::Tensor(*s),
                Scale::Channel { axis: 1, values } => AccScale::Channel(Arc::clone(values)),
                Scale::Channel { axis, .. } => {
                    return Some(Err(format!(
                        "the accumulator {} is scaled along axis {axis}, not the channels",
                        egraph[class].data.describe(class)
                    )))
                }
            };
            if exactly_scaled(egraph, class) {
                Ok(acc(*int, scale))
            } else {
                Err(format!(
                    "the accumulator {} is typed {}: its f32 values are not integer times \
                     scale rounded once (a sum of scaled values on the way rounds at every \
                     step), so integer thresholds cannot reproduce it",
                    egraph[class].data.describe(class),
                    ty.elem
                ))
            }
        }
    };
    Some(found)
}

/// Whether `s` is plus or minus a power of two.
fn is_power_of_two(s: f32) -> bool {
    bnnc_ir::types::is_power_of_two(s.abs())
}

/// Whether every scale of the class's type is a power of two.
fn power_of_two_scales(elem: &ElemType) -> bool {
    match elem {
        ElemType::F32 => false,
        ElemType::Int(_) => true,
        ElemType::Scaled(_, Scale::Tensor(s)) => is_power_of_two(*s),
        ElemType::Scaled(_, Scale::Channel { values, .. }) => {
            values.iter().all(|&s| is_power_of_two(s))
        }
    }
}

/// Whether the interpreter's f32 values of `class` are exactly its integers times its scale.
/// Some e-node of the class must show it; any one suffices, as all compute the same value.
pub fn exactly_scaled(egraph: &BnnEGraph, class: Id) -> bool {
    ExactScaled {
        egraph,
        known: HashMap::new(),
    }
    .check(class, MAX_DEPTH)
}

/// [`exactly_scaled`] with a memo, which also stops cycles (a class being checked counts as
/// not exact until shown otherwise by another node).
struct ExactScaled<'a> {
    egraph: &'a BnnEGraph,
    known: HashMap<Id, bool>,
}

impl ExactScaled<'_> {
    fn check(&mut self, class: Id, depth: usize) -> bool {
        let egraph = self.egraph;
        let class = egraph.find(class);
        if let Some(&known) = self.known.get(&class) {
            return known;
        }
        let Some(ty) = value_type(egraph, class) else {
            return false;
        };
        if matches!(ty.elem, ElemType::Int(_)) {
            return true;
        }
        if depth == 0 {
            return false;
        }
        self.known.insert(class, false);
        let exact = egraph[class].nodes.iter().any(|node| match node {
            BnnLang::Const(_) => constant(egraph, class).is_some_and(|t| match &ty.elem {
                ElemType::Scaled(_, scale) => const_is_exact(t, &ty.shape, scale),
                _ => false,
            }),
            BnnLang::Input(_) => false,
            BnnLang::Result(_, [tuple]) => egraph[*tuple].nodes.iter().any(|n| {
                matches!(n.as_op(), Some(Op::TopK { .. })) && self.all(n.children(), depth)
            }),
            BnnLang::Op(key, ch) => match key.op() {
                // `q * s`, one rounding (inference types them Scaled only with a zero point
                // of zero).
                Op::Quant(_) | Op::BipolarQuant | Op::DequantizeLinear { .. } => true,
                // `level * out_scale`, one rounding.
                Op::Threshold(t) | Op::MultiThreshold(t) => t.out_bias == 0.0,
                // Integer-first: the exact sum scaled once. With powers of two the float sums
                // are exact below 2^24 units (inference's bound for a Scaled accumulator) when
                // their operands are.
                Op::Gemm(_) | Op::MatMul | Op::Conv(_) => {
                    !power_of_two_scales(&ty.elem) || self.all(ch, depth)
                }
                // `x + k * s`, `x * 2^e`, ...: inference types them scaled only when exact
                // (a power-of-two scale, a constant that is a multiple or a power of two).
                Op::Binary(_) => ch
                    .iter()
                    .filter(|&&c| constant(egraph, c).is_none())
                    .all(|&c| self.check(c, depth - 1)),
                // Moving, selecting or clamping exact values at multiples of the scale.
                Op::MaxPool(_)
                | Op::MinMaxPool { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Pad { .. }
                | Op::Relu
                | Op::Clip { .. }
                | Op::Concat { .. } => self.all(ch, depth),
                _ => false,
            },
        });
        self.known.insert(class, exact);
        exact
    }

    fn all(&mut self, classes: &[Id], depth: usize) -> bool {
        classes.iter().all(|&c| self.check(c, depth - 1))
    }
}

/// Whether every element of a constant is an integer times its scale.
fn const_is_exact(t: &bnnc_ir::Tensor, shape: &[usize], scale: &Scale) -> bool {
    let values = t.to_f32_vec();
    let inner = |axis: usize| {
        shape
            .get(axis + 1..)
            .map_or(1, |s| s.iter().product::<usize>())
    };
    values.iter().enumerate().all(|(i, &v)| {
        let s = match scale {
            Scale::Tensor(s) => *s,
            Scale::Channel { axis, values } => {
                let c = shape.get(*axis).copied().unwrap_or(1).max(1);
                values
                    .get((i / inner(*axis).max(1)) % c)
                    .copied()
                    .unwrap_or(f32::NAN)
            }
        };
        // The integer nearest `v / s`, scaled back with one rounding, must give `v`.
        (v / s).round() * s == v
    })
}

#[cfg(test)]
mod tests {
    use super::is_power_of_two;

    #[test]
    fn powers_of_two() {
        assert!(is_power_of_two(1.0) && is_power_of_two(0.0078125) && is_power_of_two(-4.0));
        assert!(!is_power_of_two(0.1) && !is_power_of_two(0.0) && !is_power_of_two(3.0));
        assert!(!is_power_of_two(f32::INFINITY) && !is_power_of_two(f32::NAN));
    }
}
