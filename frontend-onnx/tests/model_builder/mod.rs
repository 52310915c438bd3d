//! Small ONNX models built in memory with the crate's protobuf messages, so that tests need no
//! files (and no Python).

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bnnc_frontend_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use bnnc_frontend_onnx::proto::{
    type_proto, AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorAnnotation, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use bnnc_frontend_onnx::{import_model, FrontendError};
use bnnc_ir::Graph;
use prost::Message;

/// ONNX data type codes.
pub const FLOAT: i32 = 1;
pub const UINT8: i32 = 2;
pub const INT8: i32 = 3;
pub const INT64: i32 = 7;

/// A model under construction.
#[derive(Clone, Debug)]
pub struct ModelBuilder {
    model: ModelProto,
}

impl ModelBuilder {
    /// An empty model of standard opset `opset`.
    pub fn new(opset: i64) -> Self {
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                name: "test".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ModelBuilder { model }
    }

    fn graph(&mut self) -> &mut GraphProto {
        self.model.graph.get_or_insert_with(Default::default)
    }

    /// A float graph input; a negative extent is written as the symbol `N`.
    pub fn input(mut self, name: &str, dims: &[i64]) -> Self {
        let info = value_info(name, FLOAT, dims);
        self.graph().input.push(info);
        self
    }

    /// A graph input of ONNX element type `elem_type` (a `TensorProto.DataType` code).
    pub fn typed_input(mut self, name: &str, elem_type: i32, dims: &[i64]) -> Self {
        let info = value_info(name, elem_type, dims);
        self.graph().input.push(info);
        self
    }

    /// A graph output.
    pub fn output(mut self, name: &str) -> Self {
        self.graph().output.push(ValueInfoProto {
            name: name.into(),
            ..Default::default()
        });
        self
    }

    /// An initializer.
    pub fn initializer(mut self, tensor: TensorProto) -> Self {
        self.graph().initializer.push(tensor);
        self
    }

    /// A standard node.
    pub fn node(
        self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        self.domain_node("", op_type, inputs, outputs, attrs)
    }

    /// A node of `domain`, named after its first result.
    pub fn domain_node(
        mut self,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> Self {
        let name = format!("{op_type}_{}", outputs.first().copied().unwrap_or(""));
        self.graph().node.push(NodeProto {
            name,
            op_type: op_type.into(),
            domain: domain.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs,
            ..Default::default()
        });
        self
    }

    /// A `finn_datatype` annotation.
    pub fn annotate(mut self, tensor: &str, datatype: &str) -> Self {
        self.graph().quantization_annotation.push(TensorAnnotation {
            tensor_name: tensor.into(),
            quant_parameter_tensor_names: vec![StringStringEntryProto {
                key: "finn_datatype".into(),
                value: datatype.into(),
            }],
        });
        self
    }

    /// Changes the model directly.
    pub fn with(mut self, change: impl FnOnce(&mut ModelProto)) -> Self {
        change(&mut self.model);
        self
    }

    /// The encoded model.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }

    /// Imports the model from memory (no directory for external data).
    pub fn import(&self) -> Result<Graph, FrontendError> {
        import_model(&self.to_bytes(), None)
    }

    /// Imports the model, panicking with the error if it fails.
    pub fn import_ok(&self) -> Graph {
        self.import()
            .unwrap_or_else(|e| panic!("import failed: {e}"))
    }

    /// The import error's message, panicking if the import succeeds.
    pub fn import_err(&self) -> String {
        match self.import() {
            Ok(_) => panic!("the import succeeded"),
            Err(e) => e.to_string(),
        }
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d >= 0 {
                dimension::Value::DimValue(d)
            } else {
                dimension::Value::DimParam("N".into())
            }),
            denotation: String::new(),
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float tensor in `raw_data`.
pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 tensor in `int64_data`.
pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: INT64,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

/// An int8 or uint8 tensor in `int32_data`.
pub fn int8_tensor(name: &str, data_type: i32, dims: &[i64], data: &[i32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type,
        int32_data: data.to_vec(),
        ..Default::default()
    }
}

/// A float tensor kept in an external file.
pub fn external_tensor(
    name: &str,
    dims: &[i64],
    location: &str,
    offset: u64,
    length: u64,
) -> TensorProto {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
    };
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        data_location: 1,
        external_data: vec![
            entry("location", location.into()),
            entry("offset", offset.to_string()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ty as i32,
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i,
        ..attr(name, AttributeType::Int)
    }
}

/// An integer list attribute.
pub fn ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: ints.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

/// A float attribute.
pub fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f,
        ..attr(name, AttributeType::Float)
    }
}

/// A string attribute.
pub fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory whose name includes `label`.
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("bnnc-frontend-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("cannot create a temporary directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
