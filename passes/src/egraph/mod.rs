//! Streamlining on an e-graph (egg): rewrites that turn float work between quantizers into
//! integer and bit work, chosen by a cost model.
//!
//! ```text
//! Graph --convert::import--> e-graph --rules (bounded Runner)--> e-graph
//!       --cost::BnnCost extraction, convert::to_graph--> Graph (verified)
//! ```
//! - [`language`]: the e-nodes (ops with typed attributes, constants, inputs, result
//!   projections);
//! - [`analysis`]: per class, the result types, the constant, the imported names;
//! - [`rules`]: targeted conditional rewrites, above all `fold-batchnorm-to-threshold`;
//! - [`cost`]: bit ops and integer thresholds cost less than float work;
//! - [`convert`]: graph to e-graph and back, keeping names.
//!
//! The runner is bounded by [`Limits`]; the bound that stopped it is in the report, never
//! hidden: a run that stopped early still gives a correct graph (every class holds only
//! equal terms), just a less rewritten one.
//!
//! Invariant: the result computes the same bits as the input under the interpreter, for every
//! input (every rule is an exact identity of the interpreter's f32 arithmetic; the one
//! exception is the sign of a zero output of a folded Quant, see
//! [`crate::threshold`]'s module docs).

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod language;
pub mod rule_log;
pub mod rules;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bnnc_ir::verify::verify;
use bnnc_ir::Graph;
use egg::{Runner, SimpleScheduler};

use crate::error::PassError;
pub use rules::Decline;

/// The pass's name in errors and reports.
pub const PASS: &str = "fold-batchnorm-to-threshold";

/// Bounds on the e-graph runner.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Most iterations (each searches every rule, then applies the matches).
    pub iterations: usize,
    /// Most e-nodes.
    pub nodes: usize,
    /// Most wall-clock time.
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            iterations: 30,
            nodes: 200_000,
            time: Duration::from_secs(5),
        }
    }
}

/// Why the runner stopped.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// No rule found anything new: every rewrite that applies was made.
    Saturated,
    /// The iteration bound was reached.
    IterationLimit(usize),
    /// The e-graph grew past the node bound (the number it had).
    NodeLimit(usize),
    /// The time bound was reached (the time taken).
    TimeLimit(Duration),
    /// egg stopped for another reason.
    Other(String),
}

impl StopReason {
    /// Whether a bound stopped the run before saturation.
    pub fn is_bound(&self) -> bool {
        !matches!(self, StopReason::Saturated)
    }
}

impl From<egg::StopReason> for StopReason {
    fn from(r: egg::StopReason) -> Self {
        match r {
            egg::StopReason::Saturated => StopReason::Saturated,
            egg::StopReason::IterationLimit(n) => StopReason::IterationLimit(n),
            egg::StopReason::NodeLimit(n) => StopReason::NodeLimit(n),
            egg::StopReason::TimeLimit(s) => {
                StopReason::TimeLimit(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            }
            egg::StopReason::Other(why) => StopReason::Other(why),
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Saturated => f.write_str("saturated"),
            StopReason::IterationLimit(n) => write!(f, "iteration limit reached ({n} iterations)"),
            StopReason::NodeLimit(n) => write!(f, "node limit reached ({n} e-nodes)"),
            StopReason::TimeLimit(t) => write!(f, "time limit reached ({:.3} s)", t.as_secs_f64()),
            StopReason::Other(why) => write!(f, "stopped: {why}"),
        }
    }
}

/// What a [`streamline`] run did.
#[derive(Clone, Debug)]
pub struct StreamlineReport {
    /// Why the runner stopped; a bound reached is reported here.
    pub stop: StopReason,
    pub iterations: usize,
    /// Size of the e-graph at the end.
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// Each rule that applied and how many times (equalities it added), by rule name.
    pub applied: BTreeMap<String, usize>,
    /// Where a rule matched but did not rewrite, and why.
    pub declined: Vec<Decline>,
    /// Classes of different types that were equated (a rule bug; the extraction still
    /// verifies or the pass fails).
    pub type_conflicts: Vec<String>,
}

impl StreamlineReport {
    /// How many times `rule` applied.
    pub fn count(&self, rule: &str) -> usize {
        self.applied.get(rule).copied().unwrap_or(0)
    }
}

impl fmt::Display for StreamlineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} after {} iterations ({} e-nodes, {} classes)",
            self.stop, self.iterations, self.egraph_nodes, self.egraph_classes
        )?;
        for (rule, n) in &self.applied {
            writeln!(f, "applied {rule} x{n}")?;
        }
        for d in &self.declined {
            writeln!(f, "declined {} at {}: {}", d.rule, d.at, d.reason)?;
        }
        for c in &self.type_conflicts {
            writeln!(f, "type conflict: {c}")?;
        }
        Ok(())
    }
}

/// Streamlines `graph`: runs the [`rules`] on an e-graph within `limits`, extracts the
/// cheapest graph under [`cost::BnnCost`], and verifies it.
///
/// Precondition: `graph` verifies. Guarantee: the result verifies, has the same inputs and
/// outputs (names, types, order), and computes the same bits as `graph` in the interpreter.
pub fn streamline(graph: &Graph, limits: &Limits) -> Result<(Graph, StreamlineReport), PassError> {
    let ir_err = |source| PassError::Ir { pass: PASS, source };
    verify(graph).map_err(ir_err)?;
    let (egraph, imported) = convert::import(graph).map_err(ir_err)?;
    let mut runner = Runner::default()
        .with_egraph(egraph)
        .with_scheduler(SimpleScheduler)
        .with_iter_limit(limits.iterations)
        .with_node_limit(limits.nodes)
        .with_time_limit(limits.time)
        .run(&rules::all_rules());
    runner.egraph.rebuild();
    let egraph = &runner.egraph;

    let mut applied = BTreeMap::new();
    for iteration in &runner.iterations {
        for (rule, n) in &iteration.applied {
            *applied.entry(rule.to_string()).or_insert(0) += n;
        }
    }
    let report = StreamlineReport {
        stop: runner.stop_reason.clone().map_or(
            StopReason::Other("the runner did not stop".into()),
            Into::into,
        ),
        iterations: runner.iterations.len(),
        egraph_nodes: egraph.total_number_of_nodes(),
        egraph_classes: egraph.number_of_classes(),
        applied,
        declined: egraph.analysis.log.declined().to_vec(),
        type_conflicts: egraph.analysis.type_conflicts.clone(),
    };
    let streamlined = imported.to_graph(egraph).map_err(ir_err)?;
    verify(&streamlined).map_err(|source| PassError::Verify { pass: PASS, source })?;
    Ok((streamlined, report))
}
