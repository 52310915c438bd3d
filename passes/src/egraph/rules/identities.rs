//! Identities that hold bit for bit in f32, so that extraction can drop an op that computes
//! nothing.
//!
//! Each is an identity of IEEE arithmetic for every operand, NaN and both zeros included:
//! - `x * 1 = 1 * x = x` and `x / 1 = x`;
//! - `x + (-0) = (-0) + x = x`, but not `x + 0`: `-0 + 0 = +0`, and a sign of zero can reach an
//!   output (through a division, or as the output itself);
//! - `x - 0 = x` (`-0 - 0 = -0`);
//! - a reshape to the operand's own shape is the operand, and a reshape of a reshape is one
//!   reshape (row-major data never moves).
//!
//! The condition common to all: the result has exactly the operand's type (shape and element
//! type). A broadcast that grows the shape is not an identity, and `i11 * 1` is typed `f32`,
//! which a typed class cannot hold together with `i11`.

use bnnc_ir::{BinaryOp, Op};
use egg::Id;

use super::{union_if_same_type, ClassRule};
use crate::egraph::analysis::{constant, BnnEGraph};
use crate::egraph::language::BnnLang;

/// Whether class `c` is a constant whose every element has the bits of `value`.
fn is_splat(egraph: &BnnEGraph, c: Id, value: f32) -> bool {
    let bits = value.to_bits();
    constant(egraph, c)
        .and_then(|t| t.as_f32())
        .is_some_and(|v| !v.is_empty() && v.iter().all(|x| x.to_bits() == bits))
}

/// The operands `x` of the class's `op` nodes `x ∘ c` (and `c ∘ x` when `either_side`) where
/// `c` is the constant `unit`.
fn operands_of_unit(
    egraph: &BnnEGraph,
    class: Id,
    op: BinaryOp,
    unit: f32,
    either_side: bool,
) -> Vec<Id> {
    egraph[class]
        .nodes
        .iter()
        .filter_map(|n| match (n.as_op(), n) {
            (Some(Op::Binary(b)), BnnLang::Op(_, ch)) if *b == op && ch.len() == 2 => {
                if is_splat(egraph, ch[1], unit) {
                    Some(ch[0])
                } else if either_side && is_splat(egraph, ch[0], unit) {
                    Some(ch[1])
                } else {
                    None
                }
            }
            _ => None,
        })
        .filter(|&x| egraph.find(x) != egraph.find(class))
        .collect()
}

/// Unions `class` with each of `xs` whose type is the class's.
fn union_all(egraph: &mut BnnEGraph, class: Id, xs: Vec<Id>) -> bool {
    let mut changed = false;
    for x in xs {
        changed |= union_if_same_type(egraph, class, x);
    }
    changed
}

/// Whether one of `xs` has the class's type and is not the class already.
fn any_same_type(egraph: &BnnEGraph, class: Id, xs: &[Id]) -> bool {
    let here = &egraph[class].data.results;
    xs.iter()
        .any(|&x| egraph.find(x) != egraph.find(class) && &egraph[x].data.results == here)
}

macro_rules! unit_rule {
    ($(#[$doc:meta])* $rule:ident, $name:literal, $kind:literal, $op:expr, $unit:expr, $either:expr) => {
        $(#[$doc])*
        pub struct $rule;

        impl ClassRule for $rule {
            fn name(&self) -> &'static str {
                $name
            }

            fn op_kinds(&self) -> &'static [&'static str] {
                &[$kind]
            }

            fn applies(&self, egraph: &BnnEGraph, class: Id) -> bool {
                let xs = operands_of_unit(egraph, class, $op, $unit, $either);
                any_same_type(egraph, class, &xs)
            }

            fn apply(&self, egraph: &mut BnnEGraph, class: Id) -> bool {
                let xs = operands_of_unit(egraph, class, $op, $unit, $either);
                union_all(egraph, class, xs)
            }
        }
    };
}

unit_rule!(
    /// `x * 1 = 1 * x = x`.
    MulByOne, "mul-by-one", "mul", BinaryOp::Mul, 1.0, true
);
unit_rule!(
    /// `x / 1 = x`.
    DivByOne, "div-by-one", "div", BinaryOp::Div, 1.0, false
);
unit_rule!(
    /// `x + (-0) = (-0) + x = x` (not `x + 0`, which turns `-0` into `+0`).
    AddNegativeZero, "add-negative-zero", "add", BinaryOp::Add, -0.0, true
);
unit_rule!(
    /// `x - 0 = x`.
    SubZero, "sub-zero", "sub", BinaryOp::Sub, 0.0, false
);

/// The operands of the class's reshape nodes.
fn reshape_operands(egraph: &BnnEGraph, class: Id) -> Vec<(Vec<usize>, Id)> {
    egraph[class]
        .nodes
        .iter()
        .filter_map(|n| match (n.as_op(), n) {
            (Some(Op::Reshape { shape }), BnnLang::Op(_, ch)) if ch.len() == 1 => {
                Some((shape.clone(), ch[0]))
            }
            _ => None,
        })
        .collect()
}

/// `reshape(x) = x` when the reshape keeps `x`'s type (its shape, and so any per-channel
/// scale).
pub struct ReshapeToSameShape;

impl ClassRule for ReshapeToSameShape {
    fn name(&self) -> &'static str {
        "reshape-to-same-shape"
    }

    fn op_kinds(&self) -> &'static [&'static str] {
        &["reshape"]
    }

    fn applies(&self, egraph: &BnnEGraph, class: Id) -> bool {
        let xs: Vec<Id> = reshape_operands(egraph, class)
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        any_same_type(egraph, class, &xs)
    }

    fn apply(&self, egraph: &mut BnnEGraph, class: Id) -> bool {
        let xs = reshape_operands(egraph, class)
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        union_all(egraph, class, xs)
    }
}

/// `reshape(reshape(x, s1), s2) = reshape(x, s2)`, when both have the same type (a reshape
/// through another shape may have dropped a per-channel scale that the direct one keeps).
pub struct ReshapeOfReshape;

impl ReshapeOfReshape {
    /// The direct reshapes `reshape(x, outer)` this class equals and does not hold yet, typed
    /// as the class is (a reshape through another shape may have dropped a per-channel scale
    /// that the direct one keeps: then the two are not one class).
    fn direct_forms(egraph: &BnnEGraph, class: Id) -> Vec<BnnLang> {
        let mut forms = Vec::new();
        for (outer, inner) in reshape_operands(egraph, class) {
            for (_, x) in reshape_operands(egraph, inner) {
                let op = Op::Reshape {
                    shape: outer.clone(),
                };
                let Some(x_ty) = egraph[x].data.ty() else {
                    continue;
                };
                let typed = bnnc_ir::infer::infer_output_types(&op, &[x_ty], &[None]);
                if typed.as_deref() != Ok(&egraph[class].data.results[..]) {
                    continue;
                }
                let direct = BnnLang::op(op, vec![egraph.find(x)]);
                let known = egraph.lookup(direct.clone()).map(|c| egraph.find(c));
                if known != Some(egraph.find(class)) && !forms.contains(&direct) {
                    forms.push(direct);
                }
            }
        }
        forms
    }
}

impl ClassRule for ReshapeOfReshape {
    fn name(&self) -> &'static str {
        "reshape-of-reshape"
    }

    fn op_kinds(&self) -> &'static [&'static str] {
        &["reshape"]
    }

    fn applies(&self, egraph: &BnnEGraph, class: Id) -> bool {
        !Self::direct_forms(egraph, class).is_empty()
    }

    fn apply(&self, egraph: &mut BnnEGraph, class: Id) -> bool {
        let mut changed = false;
        for direct in Self::direct_forms(egraph, class) {
            let id = egraph.add(direct);
            changed |= union_if_same_type(egraph, class, id);
        }
        changed
    }
}
