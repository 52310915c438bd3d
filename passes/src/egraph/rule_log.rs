//! What the rewrite rules write down while they run ([`RuleLog`]): the e-graph's analysis
//! holds it and the rules fill it, so it lives below both.

use super::language::BnnLang;

/// A place where a rule matched but did not rewrite, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decline {
    /// The rule's name.
    pub rule: &'static str,
    /// The value where it matched (the quantizer's result, for the fold), as named in the
    /// imported graph.
    pub at: String,
    pub reason: String,
}

/// What the rules write down while they run: declines, and names for what they build.
#[derive(Debug, Default)]
pub struct RuleLog {
    /// One decline per rule and place, the latest reason (the e-graph grows while the rules
    /// run, so an early reason may no longer be the one that holds at the end).
    declined: Vec<Decline>,
    /// Names for e-nodes a rule built (e.g. `BatchNormalization_0.threshold`), by the e-node
    /// as it was added; the conversion back to a graph canonicalizes them.
    pub name_hints: Vec<(BnnLang, String)>,
}

impl RuleLog {
    /// Records that `rule` declined at `at`, replacing an earlier reason for the same place.
    pub fn decline(&mut self, rule: &'static str, at: String, reason: String) {
        match self
            .declined
            .iter_mut()
            .find(|d| d.rule == rule && d.at == at)
        {
            Some(d) => d.reason = reason,
            None => self.declined.push(Decline { rule, at, reason }),
        }
    }

    /// Forgets the declines of `rule` at `at` (it applied there after all).
    pub fn applied(&mut self, rule: &'static str, at: &str) {
        self.declined.retain(|d| !(d.rule == rule && d.at == at));
    }

    /// Every decline, in the order first seen.
    pub fn declined(&self) -> &[Decline] {
        &self.declined
    }

    /// Names the e-node `node` (as it was added) for the conversion back to a graph.
    pub fn name(&mut self, node: BnnLang, name: String) {
        self.name_hints.push((node, name));
    }
}
