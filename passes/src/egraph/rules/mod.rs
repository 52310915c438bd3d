//! The rewrite rules: targeted ones only.
//!
//! Following Cranelift's e-graph mid-end, there is no general commutativity or associativity
//! rule (they blow up the e-graph and find little that a targeted rule does not): each rule
//! here matches one shape that the networks we compile contain, with a condition read from the
//! analysis, and adds a form the extractor prefers. No rule changes a float rounding anywhere:
//! every equality they add holds bit for bit in the interpreter.
//!
//! - [`fold_threshold`]: `fold-batchnorm-to-threshold`, the monotone chain between an integer
//!   accumulator and a quantizer becomes integer thresholds;
//! - [`identities`]: `x * 1`, `x / 1`, `x + (-0)`, `x - 0`, a reshape to the same shape, and a
//!   reshape of a reshape.
//!
//! Every rule looks at one e-class at a time ([`ClassRule`]): its chains have variable length,
//! which egg's patterns cannot express, and its conditions need the analysis anyway.

pub mod fold_threshold;
pub mod identities;

use std::sync::Arc;

use egg::{Applier, Id, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use super::analysis::{BnnAnalysis, BnnEGraph};
use super::language::{BnnDiscriminant, BnnLang};
pub use super::rule_log::{Decline, RuleLog};

/// The rules [`super::streamline`] runs, in the order egg applies them each iteration.
pub fn all_rules() -> Vec<Rewrite<BnnLang, BnnAnalysis>> {
    vec![
        class_rewrite(fold_threshold::FoldBatchnormToThreshold),
        class_rewrite(identities::MulByOne),
        class_rewrite(identities::DivByOne),
        class_rewrite(identities::AddNegativeZero),
        class_rewrite(identities::SubZero),
        class_rewrite(identities::ReshapeToSameShape),
        class_rewrite(identities::ReshapeOfReshape),
    ]
}

/// A rule that rewrites one e-class at a time.
///
/// `applies` runs in egg's search phase (read-only, every class of the rule's op kinds);
/// `apply` runs in the apply phase and adds e-nodes and unions. Both read the analysis, never
/// recompute what it knows.
pub trait ClassRule: Send + Sync + 'static {
    /// The rule's name, as users see it in reports.
    fn name(&self) -> &'static str;
    /// The ops (by their IR text name) whose classes the rule looks at.
    fn op_kinds(&self) -> &'static [&'static str];
    /// Whether `class` has something the rule may rewrite.
    fn applies(&self, egraph: &BnnEGraph, class: Id) -> bool;
    /// Rewrites `class`; true if the e-graph learned an equality.
    fn apply(&self, egraph: &mut BnnEGraph, class: Id) -> bool;
}

/// The egg rewrite running `rule` (its searcher and its applier are the same rule).
pub fn class_rewrite<R: ClassRule>(rule: R) -> Rewrite<BnnLang, BnnAnalysis> {
    let name = rule.name();
    let rule = ClassRewrite(Arc::new(rule));
    Rewrite::new(name, rule.clone(), rule)
        .unwrap_or_else(|e| unreachable!("a class rewrite binds no variables: {e}"))
}

struct ClassRewrite<R>(Arc<R>);

impl<R> Clone for ClassRewrite<R> {
    fn clone(&self) -> Self {
        ClassRewrite(Arc::clone(&self.0))
    }
}

impl<R: ClassRule> Searcher<BnnLang, BnnAnalysis> for ClassRewrite<R> {
    fn search_eclass_with_limit(
        &self,
        egraph: &BnnEGraph,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, BnnLang>> {
        (limit > 0 && self.0.applies(egraph, eclass)).then(|| SearchMatches {
            eclass,
            substs: vec![Subst::default()],
            ast: None,
        })
    }

    fn search_with_limit(
        &self,
        egraph: &BnnEGraph,
        limit: usize,
    ) -> Vec<SearchMatches<'_, BnnLang>> {
        // Only the classes holding one of the rule's ops, in id order so that runs are
        // reproducible whatever the hash sets' order.
        let mut classes: Vec<Id> = self
            .0
            .op_kinds()
            .iter()
            .filter_map(|kind| egraph.classes_for_op(&BnnDiscriminant::Op(kind)))
            .flatten()
            .collect();
        classes.sort_unstable();
        classes.dedup();
        classes
            .into_iter()
            .filter_map(|c| self.search_eclass_with_limit(egraph, c, 1))
            .take(limit)
            .collect()
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl<R: ClassRule> Applier<BnnLang, BnnAnalysis> for ClassRewrite<R> {
    fn apply_one(
        &self,
        egraph: &mut BnnEGraph,
        eclass: Id,
        _subst: &Subst,
        _searcher_ast: Option<&PatternAst<BnnLang>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        if self.0.apply(egraph, eclass) {
            vec![egraph.find(eclass)]
        } else {
            Vec::new()
        }
    }
}

/// Unions `a` and `b` if their analysis types are identical; a rule must never equate values
/// of different types (the extracted graph would not type-check). Returns whether the classes
/// were merged by this call.
pub fn union_if_same_type(egraph: &mut BnnEGraph, a: Id, b: Id) -> bool {
    let (ta, tb) = (&egraph[a].data.results, &egraph[b].data.results);
    if ta.is_empty() || ta != tb {
        return false;
    }
    egraph.union(a, b)
}
