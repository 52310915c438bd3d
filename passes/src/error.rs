//! The error of the passes crate.

use bnnc_ir::IrError;

/// Why a pass failed. A pass that cannot apply somewhere leaves that place as it is; an error
/// means the pipeline cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A pass produced a graph that does not verify: a bug in the pass.
    #[error("pass `{pass}` produced an invalid graph")]
    Verify {
        pass: &'static str,
        #[source]
        source: IrError,
    },
    /// A pass could not be applied (evaluation of a constant failed, a node is malformed).
    #[error("pass `{pass}`: {source}")]
    Ir {
        pass: &'static str,
        #[source]
        source: IrError,
    },
    /// A pass name that no pass has.
    #[error("unknown pass `{0}` (passes: {1})")]
    UnknownPass(String, String),
}

impl PassError {
    /// The IR error inside, for a pass that runs another step inside it (the pipeline then
    /// reports it under the outer pass's name).
    pub fn into_ir(self) -> IrError {
        match self {
            PassError::Verify { source, .. } | PassError::Ir { source, .. } => source,
            PassError::UnknownPass(name, _) => IrError::Graph {
                graph: String::new(),
                reason: format!("unknown pass `{name}`"),
            },
        }
    }
}
