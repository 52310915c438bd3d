//! ONNX frontend: QONNX, FINN and QCDQ models to bnnc IR.
//!
//! [`load_model`] reads a `.onnx` file (and its external data), [`import_model`] the bytes of
//! one. The importer reads the standard opsets 7 to 25 and the QONNX / FINN custom ops (domains
//! `qonnx.custom_op.general`, `onnx.brevitas`, `finn`, `finn.custom_op.general`), folds the
//! shape arithmetic exporters write (Shape, Gather, Concat, ... on constants) into constants,
//! resolves every shape statically (symbolic extents become 1: the batch), and applies
//! `finn_datatype` annotations to graph inputs and initializers.
//!
//! Names carry over: values keep their ONNX tensor names and nodes their ONNX node names
//! (`<op_type>_<index>` where a node has none).
//!
//! A model file is untrusted input: every size it declares is checked before anything is
//! allocated from it, external data may not leave the model's directory, and every failure is
//! a [`FrontendError`] that names the node or tensor concerned, never a panic.

mod attributes;
mod datatype;
mod error;
mod external_data;
mod import;
mod ops;
pub mod proto;
mod shape_fold;
mod tensor_data;

use std::path::Path;

use bnnc_ir::{Graph, Tensor};
use prost::Message;

pub use datatype::parse_finn_datatype;
pub use error::FrontendError;
pub use import::SUPPORTED_OPSETS;
pub use tensor_data::MAX_ELEMENTS;

/// Loads a model file; external data is resolved relative to the file's directory. The graph is
/// named after the ONNX graph, or after the file's stem when the graph has no name.
pub fn load_model(path: &Path) -> Result<Graph, FrontendError> {
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base_dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let stem = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy());
    import_with_name(&bytes, Some(base_dir), &stem)
}

/// Imports a model from bytes; `base_dir` is where external data files live (`None`: external
/// data is an error). A graph without a name is called `model`.
pub fn import_model(bytes: &[u8], base_dir: Option<&Path>) -> Result<Graph, FrontendError> {
    import_with_name(bytes, base_dir, "model")
}

/// Imports a decoded model (for tools that edit a model's protobuf before importing it).
pub fn import_proto(
    model: &proto::ModelProto,
    base_dir: Option<&Path>,
) -> Result<Graph, FrontendError> {
    import::import(model, base_dir, "model")
}

/// Decodes a serialized `TensorProto`, such as the `.pb` files of ONNX's test data.
pub fn decode_tensor_proto(bytes: &[u8]) -> Result<Tensor, FrontendError> {
    let proto = proto::TensorProto::decode(bytes)?;
    Ok(tensor_data::decode_tensor(&proto, &proto.name, None)?.tensor)
}

fn import_with_name(
    bytes: &[u8],
    base_dir: Option<&Path>,
    fallback_name: &str,
) -> Result<Graph, FrontendError> {
    let model = proto::ModelProto::decode(bytes)?;
    import::import(&model, base_dir, fallback_name)
}
