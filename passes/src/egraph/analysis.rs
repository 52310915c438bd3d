//! The e-class analysis: what every rule's condition reads.
//!
//! Each class carries the types of its results (from [`bnnc_ir::infer::infer_output_types`],
//! the same inference the graph uses, so the extracted graph type-checks node by node), its
//! constant value if the class is a constant, and the names it had in the imported graph
//! (for reports and for naming what a rule builds).
//!
//! Two things the analysis deliberately does not do:
//! - fold constants: evaluating a float op here would decide its rounding outside the
//!   interpreter. The only constants are the graph's and those a rule builds on purpose.
//! - accept a merge of classes of different types: a rule that equates values of different
//!   types is wrong, and a typed graph cannot be extracted from such a class. The merge keeps
//!   the first class's data and records the conflict, which [`super::streamline`] reports.

use std::sync::Arc;

use bnnc_ir::infer::infer_output_types;
use bnnc_ir::{Tensor, TensorType};
use egg::{Analysis, DidMerge, EGraph, Id};

use super::language::{BnnLang, ConstRef};
use super::rule_log::RuleLog;

/// The e-graph of this module.
pub type BnnEGraph = EGraph<BnnLang, BnnAnalysis>;

/// The analysis: the graph's input types (the only facts a leaf cannot carry itself) and the
/// log the rules write their decisions to.
#[derive(Debug, Default)]
pub struct BnnAnalysis {
    input_types: Vec<TensorType>,
    /// What the rules did and declined, and how to name what they built.
    pub log: RuleLog,
    /// Merges of classes whose types differed (each a bug in a rule), in words.
    pub type_conflicts: Vec<String>,
}

impl BnnAnalysis {
    /// The analysis of a graph whose inputs have `input_types`.
    pub fn new(input_types: Vec<TensorType>) -> Self {
        BnnAnalysis {
            input_types,
            ..Default::default()
        }
    }
}

/// What is known about an e-class.
#[derive(Clone, Debug)]
pub struct ClassData {
    /// The types of the class's results: one for a value, one per result for the class of a
    /// multi-result op (whose values are `Result` projections). Empty when inference failed,
    /// which `error` explains.
    pub results: Vec<TensorType>,
    /// Why inference failed, if it did.
    pub error: Option<String>,
    /// The data, if the class is a constant.
    pub constant: Option<ConstRef>,
    /// The name of the value the class was in the imported graph (the first in value order,
    /// when several became one class).
    pub value_name: Option<Arc<str>>,
    /// The name of the imported node that computed that value.
    pub node_name: Option<Arc<str>>,
    /// The index of that value in the imported graph (`usize::MAX` for none).
    pub value_index: usize,
}

impl ClassData {
    /// Names the class after imported value number `index`, unless it has an earlier one.
    pub fn name_after(&mut self, index: usize, value: &str, node: Option<&str>) {
        if index < self.value_index {
            self.value_index = index;
            self.value_name = Some(value.into());
            self.node_name = node.map(Into::into);
        }
    }
}

impl ClassData {
    /// The type of the class's value, if it is one value.
    pub fn ty(&self) -> Option<&TensorType> {
        match &self.results[..] {
            [t] => Some(t),
            _ => None,
        }
    }

    /// The constant's data, if the class is a constant.
    pub fn tensor(&self) -> Option<&Arc<Tensor>> {
        self.constant.as_ref().map(ConstRef::tensor)
    }

    /// A short name for reports: the imported value's name, or `class N`.
    pub fn describe(&self, id: Id) -> String {
        match &self.value_name {
            Some(name) => format!("`{name}`"),
            None => format!("class {id}"),
        }
    }
}

impl Analysis<BnnLang> for BnnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut BnnEGraph, enode: &BnnLang, _id: Id) -> ClassData {
        let inferred: Result<Vec<TensorType>, String> = match enode {
            BnnLang::Input(i) => egraph
                .analysis
                .input_types
                .get(*i)
                .map(|t| vec![t.clone()])
                .ok_or_else(|| format!("graph input {i} does not exist")),
            BnnLang::Const(c) => Ok(vec![TensorType::new(
                c.elem().clone(),
                c.tensor().shape().to_vec(),
            )]),
            BnnLang::Op(key, children) => {
                let types: Option<Vec<&TensorType>> =
                    children.iter().map(|&c| egraph[c].data.ty()).collect();
                match types {
                    None => Err("an operand is not a single value".to_string()),
                    Some(types) => {
                        let consts: Vec<Option<&Tensor>> = children
                            .iter()
                            .map(|&c| egraph[c].data.tensor().map(|t| &**t))
                            .collect();
                        infer_output_types(key.op(), &types, &consts)
                    }
                }
            }
            BnnLang::Result(k, [tuple]) => egraph[*tuple]
                .data
                .results
                .get(*k)
                .map(|t| vec![t.clone()])
                .ok_or_else(|| format!("the op has no result {k}")),
        };
        let constant = match enode {
            BnnLang::Const(c) => Some(c.clone()),
            _ => None,
        };
        let (results, error) = match inferred {
            Ok(results) => (results, None),
            Err(e) => (Vec::new(), Some(format!("{enode}: {e}"))),
        };
        ClassData {
            results,
            error,
            constant,
            value_name: None,
            node_name: None,
            value_index: usize::MAX,
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let mut changed_a = false;
        let mut b_differs = false;
        if a.results != b.results {
            if a.results.is_empty() && b.error.is_none() {
                // `a` failed inference and `b` knows the type: take it.
                a.results = b.results.clone();
                a.error = None;
                changed_a = true;
            } else if !b.results.is_empty() {
                self.type_conflicts.push(format!(
                    "{} ({}) was equated with {} ({}); kept the first",
                    a.value_name.as_deref().unwrap_or("a class"),
                    list_types(&a.results),
                    b.value_name.as_deref().unwrap_or("a class"),
                    list_types(&b.results),
                ));
                b_differs = true;
            }
        }
        match (&a.constant, b.constant) {
            (None, Some(c)) => {
                a.constant = Some(c);
                changed_a = true;
            }
            (Some(x), Some(y)) if *x != y => {
                self.type_conflicts.push(format!(
                    "two different constants were equated ({})",
                    a.value_name.as_deref().unwrap_or("unnamed")
                ));
                b_differs = true;
            }
            (Some(_), None) => b_differs = true,
            _ => {}
        }
        // The earliest imported name names the merged class (reports read better when the
        // name is the one nearest the inputs, e.g. `x` rather than `x * 1`).
        if b.value_index < a.value_index {
            a.value_index = b.value_index;
            a.value_name = b.value_name;
            a.node_name = b.node_name;
            changed_a = true;
        } else if a.value_index != b.value_index {
            b_differs = true;
        }
        DidMerge(changed_a, b_differs)
    }
}

fn list_types(types: &[TensorType]) -> String {
    if types.is_empty() {
        return "untyped".into();
    }
    types
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The single type of class `id`, if it is one typed value.
pub fn value_type(egraph: &BnnEGraph, id: Id) -> Option<&TensorType> {
    egraph[id].data.ty()
}

/// The constant data of class `id`, if it is a constant.
pub fn constant(egraph: &BnnEGraph, id: Id) -> Option<&Arc<Tensor>> {
    egraph[id].data.tensor()
}
