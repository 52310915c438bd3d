//! The error of the ONNX frontend: every variant names what went wrong and where.

use std::path::PathBuf;

use bnnc_ir::IrError;

/// Why a model could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The model file could not be read.
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not an ONNX `ModelProto` (truncated, garbage, another format).
    #[error("not an ONNX model")]
    Decode(#[from] prost::DecodeError),
    /// The model decodes but has no graph.
    #[error("the model has no graph")]
    MissingGraph,
    /// The graph declares no output.
    #[error("the graph has no outputs")]
    MissingOutputs,
    /// The model imports no opset of the standard (`ai.onnx`) domain.
    #[error("the model imports no `ai.onnx` opset")]
    MissingOpset,
    /// The model was written against an opset the importer does not read.
    #[error("opset {version} of domain `{domain}` is not supported (supported: {supported})")]
    UnsupportedOpset {
        domain: String,
        version: i64,
        supported: String,
    },
    /// A node cannot be imported: unsupported op, attribute or operand.
    #[error("node `{node}` ({op_type}): {reason}")]
    Node {
        node: String,
        op_type: String,
        reason: String,
    },
    /// A tensor (initializer or constant) cannot be decoded: data type, shape or data size.
    #[error("tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    /// A tensor's external data cannot be read or escapes the model's directory.
    #[error("tensor `{tensor}`: external data: {reason}")]
    ExternalData { tensor: String, reason: String },
    /// A graph input has a type the importer does not accept.
    #[error("graph input `{input}`: {reason}")]
    Input { input: String, reason: String },
    /// A graph output names no value of the graph.
    #[error("graph output `{output}`: {reason}")]
    Output { output: String, reason: String },
    /// A `finn_datatype` annotation cannot be applied.
    #[error("annotation of `{tensor}`: {reason}")]
    Annotation { tensor: String, reason: String },
    /// The IR rejected what the importer built (type inference failed, a constant does not fit
    /// its annotated type).
    #[error(transparent)]
    Ir(#[from] IrError),
}

impl FrontendError {
    /// A [`FrontendError::Tensor`] error.
    pub(crate) fn tensor(tensor: &str, reason: impl Into<String>) -> Self {
        FrontendError::Tensor {
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }

    /// A [`FrontendError::ExternalData`] error.
    pub(crate) fn external_data(tensor: &str, reason: impl Into<String>) -> Self {
        FrontendError::ExternalData {
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }
}
