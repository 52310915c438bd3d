//! The error of the IR crate: every variant names what it concerns.

/// An error in building, verifying or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum IrError {
    /// A node cannot be built or run: its op does not accept its operands or attributes.
    #[error("node `{node}` ({op}): {reason}")]
    Node {
        /// The node's name (the ONNX node name where it came from a model).
        node: String,
        /// The op's name, as in the IR text.
        op: &'static str,
        reason: String,
    },
    /// A value is wrong (a constant that does not fit its type, an input of the wrong shape).
    #[error("value `{value}`: {reason}")]
    Value { value: String, reason: String },
    /// The graph as a whole is wrong (a cycle, an output never defined).
    #[error("graph `{graph}`: {reason}")]
    Graph { graph: String, reason: String },
}

/// Result with [`IrError`].
pub type Result<T, E = IrError> = std::result::Result<T, E>;
