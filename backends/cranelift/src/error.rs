//! Errors of the CPU backend.

use thiserror::Error;

/// Why a graph could not be compiled to native code.
#[derive(Debug, Error)]
pub enum BackendError {
    /// A node the backend has no kernel for (or not with these operands).
    #[error("node '{node}' ({op}): {reason}")]
    Unsupported {
        node: String,
        op: &'static str,
        reason: String,
    },
    /// The graph as a whole does not fit the ABI (e.g. several inputs).
    #[error("graph '{graph}': {reason}")]
    Graph { graph: String, reason: String },
    /// The target triple or CPU is unknown or not supported by Cranelift.
    #[error("target: {0}")]
    Target(String),
    /// Cranelift rejected the generated code (a bug in bnnc).
    #[error("code generation of '{function}' failed: {reason}")]
    Codegen { function: String, reason: String },
    /// Writing the object or linking the shared library failed.
    #[error("link: {0}")]
    Link(String),
}

impl BackendError {
    pub(crate) fn unsupported(node: &bnnc_ir::Node, reason: impl Into<String>) -> BackendError {
        BackendError::Unsupported {
            node: node.name.clone(),
            op: node.op.name(),
            reason: reason.into(),
        }
    }
}
