//! Errors of the dataflow plan.

use thiserror::Error;

/// Why a graph has no dataflow plan, or a folding is not valid.
#[derive(Debug, Error)]
pub enum PlanError {
    /// A node the plan cannot map to hardware (or not with these operands).
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        node: String,
        op: &'static str,
        reason: String,
    },
    /// The graph as a whole does not fit a streaming design.
    #[error("graph '{graph}': {reason}")]
    Graph { graph: String, reason: String },
    /// A layer's folding breaks a constraint.
    #[error("layer '{layer}': {reason}")]
    Folding { layer: String, reason: String },
    /// A folding file or option that cannot be read.
    #[error("folding: {0}")]
    Options(String),
}

impl PlanError {
    pub(crate) fn node(node: &bnnc_ir::Node, reason: impl Into<String>) -> PlanError {
        PlanError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason: reason.into(),
        }
    }
}
