//! Extraction: the cheapest e-node of every class, in time linear in the e-graph.
//!
//! egg's `Extractor` iterates over every class until no cost changes; on a long chain each
//! sweep settles one more class, so a chain of n ops takes n sweeps of n classes (a 20,000-op
//! chain took 38 s). Here the classes are visited once in depth-first post-order, children
//! before parents, which settles every class of an acyclic e-graph in one sweep; a cycle
//! (`x = reshape(x)` after an identity rewrite) never offers a cheaper e-node, since an
//! e-node costs at least its operands, so a second sweep only confirms.

use std::collections::HashMap;

use egg::{CostFunction, Id, Language};

use super::analysis::BnnEGraph;
use super::cost::BnnCost;
use super::language::BnnLang;

/// The cheapest e-node of each class.
pub struct Choices {
    best: HashMap<Id, (f64, BnnLang)>,
}

impl Choices {
    /// The choices for `egraph` under `cost`.
    pub fn new(egraph: &BnnEGraph, mut cost: BnnCost<'_>) -> Choices {
        let order = post_order(egraph);
        let mut best: HashMap<Id, (f64, BnnLang)> = HashMap::with_capacity(order.len());
        for _sweep in 0..2 {
            let mut changed = false;
            for &class in &order {
                for node in &egraph[class].nodes {
                    let ready = node
                        .children()
                        .iter()
                        .all(|&c| best.contains_key(&egraph.find(c)));
                    if !ready {
                        continue;
                    }
                    let c = cost.cost(node, |child| best[&egraph.find(child)].0);
                    if best.get(&class).is_none_or(|(old, _)| c < *old) {
                        best.insert(class, (c, node.clone()));
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        Choices { best }
    }

    /// The cheapest e-node of `class` (canonical or not).
    ///
    /// Every class reachable from an extracted root has one: its e-nodes reach leaves.
    pub fn find_best_node(&self, egraph: &BnnEGraph, class: Id) -> &BnnLang {
        &self.best[&egraph.find(class)].1
    }
}

/// The canonical classes in depth-first post-order over their e-nodes' children.
fn post_order(egraph: &BnnEGraph) -> Vec<Id> {
    let mut order = Vec::with_capacity(egraph.number_of_classes());
    let mut seen: HashMap<Id, bool> = HashMap::with_capacity(egraph.number_of_classes());
    for start in egraph.classes().map(|c| c.id) {
        if seen.contains_key(&start) {
            continue;
        }
        // (class, next e-node, next child) frames, without recursion: chains are long.
        let mut stack: Vec<(Id, usize, usize)> = vec![(start, 0, 0)];
        seen.insert(start, false);
        while let Some(&mut (class, ref mut n, ref mut k)) = stack.last_mut() {
            let nodes = &egraph[class].nodes;
            let mut next = None;
            while *n < nodes.len() {
                let children = nodes[*n].children();
                if *k < children.len() {
                    let child = egraph.find(children[*k]);
                    *k += 1;
                    if !seen.contains_key(&child) {
                        next = Some(child);
                        break;
                    }
                } else {
                    *n += 1;
                    *k = 0;
                }
            }
            match next {
                Some(child) => {
                    seen.insert(child, false);
                    stack.push((child, 0, 0));
                }
                None => {
                    seen.insert(class, true);
                    order.push(class);
                    stack.pop();
                }
            }
        }
    }
    order
}
