//! The importer: a decoded `ModelProto` to a [`Graph`].
//!
//! Every ONNX name is bound either to a value of the graph or to a constant the importer holds
//! itself. Constants (initializers, `Constant` nodes, folded shape arithmetic) join the graph
//! only when a node uses them, so the shape computations that exporters write leave nothing
//! behind once folded.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use bnnc_ir::{ElemType, Graph, IrError, Op, Tensor, TensorData, TensorType, ValueId};

use crate::datatype::parse_finn_datatype;
use crate::error::FrontendError;
use crate::ops::{self, NodeError, OnnxNode};
use crate::proto::tensor_shape_proto::dimension;
use crate::proto::{
    type_proto, GraphProto, ModelProto, TensorAnnotation, TensorProto, ValueInfoProto,
};
use crate::tensor_data::{decode_tensor, DataType};

/// The versions of the standard (`ai.onnx`) opset the importer reads. From 21 to 25 the ops it
/// imports changed only by new element types (bfloat16, float8, int2/int4, which it rejects
/// where it meets them) and by QuantizeLinear's `precision` and DequantizeLinear's
/// `output_dtype` attributes, whose non-default values it rejects; everything else reads alike.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 7..=25;

/// The element type a constant of `t`'s data has when nothing more is known: `f32` or `i64`.
pub fn default_elem(t: &Tensor) -> ElemType {
    match t.data() {
        TensorData::F32(_) => ElemType::F32,
        TensorData::I64(_) => ElemType::I64,
    }
}

/// What an ONNX name stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A value of the graph (an input or a node's result).
    Value(ValueId),
    /// A constant the importer holds, added to the graph when first used.
    Const(ConstId),
}

/// Index of a constant held by the importer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConstId(usize);

/// A constant and where its data is.
#[derive(Debug)]
struct Constant {
    /// The name it gets in the graph.
    name: String,
    elem: ElemType,
    /// The ONNX type it was stored in, where it was read from the model (QuantizeLinear takes
    /// its output type from its zero point's).
    data_type: Option<DataType>,
    data: ConstData,
}

#[derive(Debug)]
enum ConstData {
    /// Not used by any node yet.
    Held(Tensor),
    /// Added to the graph as this value (which now owns the data).
    InGraph(ValueId),
}

/// The state of one import.
pub struct Importer<'a> {
    /// The graph being built.
    pub graph: Graph,
    /// The version of the standard opset.
    pub opset: i64,
    /// Where external data files are.
    pub base_dir: Option<&'a Path>,
    bindings: HashMap<String, Binding>,
    constants: Vec<Constant>,
    /// The results of FINN's `Im2Col` with the image and window they came from, so that a
    /// product of them becomes the convolution it lowered.
    pub(crate) windows: HashMap<ValueId, crate::ops::Windows>,
}

/// Imports `model`; `fallback_name` names the graph when the model does not.
pub fn import(
    model: &ModelProto,
    base_dir: Option<&Path>,
    fallback_name: &str,
) -> Result<Graph, FrontendError> {
    let opset = standard_opset(model)?;
    let graph_proto = model.graph.as_ref().ok_or(FrontendError::MissingGraph)?;
    let name = if graph_proto.name.is_empty() {
        fallback_name
    } else {
        &graph_proto.name
    };
    let datatypes = finn_datatypes(&graph_proto.quantization_annotation);

    let mut cx = Importer {
        graph: Graph::new(name),
        opset,
        base_dir,
        bindings: HashMap::new(),
        constants: Vec::new(),
        windows: HashMap::new(),
    };
    cx.bind_initializers(&graph_proto.initializer, &datatypes)?;
    cx.add_inputs(&graph_proto.input, &datatypes)?;
    check_integer_input_users(&cx.graph, graph_proto)?;
    for index in topological_order(graph_proto)? {
        let node = OnnxNode::new(&graph_proto.node[index], index);
        ops::import_node(&mut cx, &node).map_err(|e| e.at(&node))?;
    }
    cx.set_outputs(&graph_proto.output)?;
    Ok(cx.graph)
}

/// The version of the standard opset, checked against [`SUPPORTED_OPSETS`].
fn standard_opset(model: &ModelProto) -> Result<i64, FrontendError> {
    let import = model
        .opset_import
        .iter()
        .find(|o| ops::is_standard_domain(&o.domain))
        .ok_or(FrontendError::MissingOpset)?;
    if !SUPPORTED_OPSETS.contains(&import.version) {
        return Err(FrontendError::UnsupportedOpset {
            domain: if import.domain.is_empty() {
                "ai.onnx".into()
            } else {
                import.domain.clone()
            },
            version: import.version,
            supported: format!("{} to {}", SUPPORTED_OPSETS.start(), SUPPORTED_OPSETS.end()),
        });
    }
    Ok(import.version)
}

/// The `finn_datatype` annotation of every annotated tensor.
fn finn_datatypes(annotations: &[TensorAnnotation]) -> HashMap<&str, &str> {
    annotations
        .iter()
        .flat_map(|a| {
            a.quant_parameter_tensor_names
                .iter()
                .filter(|e| e.key == "finn_datatype")
                .map(|e| (a.tensor_name.as_str(), e.value.as_str()))
        })
        .collect()
}

/// The element type a `finn_datatype` annotation gives a graph input or initializer; `None` for
/// `FLOAT32` and the other float names, which add nothing to what the data says.
fn annotated_type(tensor: &str, datatype: &str) -> Result<Option<ElemType>, FrontendError> {
    let elem = parse_finn_datatype(datatype).map_err(|reason| FrontendError::Annotation {
        tensor: tensor.into(),
        reason,
    })?;
    Ok((elem != ElemType::F32).then_some(elem))
}

/// The type of a graph input: float elements, or the annotated type; extents from
/// `dim_value`, and 1 where the extent is symbolic or unknown (the batch: the interpreter runs
/// larger batches one sample at a time).
fn input_type(
    input: &ValueInfoProto,
    annotated: Option<ElemType>,
) -> Result<TensorType, FrontendError> {
    let err = |reason: String| FrontendError::Input {
        input: input.name.clone(),
        reason,
    };
    let Some(type_proto::Value::TensorType(tensor)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(err("is not a tensor".into()));
    };
    // The IR computes in f32. Integers it holds exactly (bool, 8 and 16 bits) keep their
    // range; wider ones become their float32 rounding, which is what their only users, Cast
    // to float and DequantizeLinear, compute first (see `check_integer_input_users`).
    const UINT32: i32 = 12;
    const UINT64: i32 = 13;
    let elem = match DataType::from_code(tensor.elem_type) {
        Some(DataType::Float | DataType::Int32 | DataType::Int64) => ElemType::F32,
        Some(
            t @ (DataType::Uint8
            | DataType::Int8
            | DataType::Uint16
            | DataType::Int16
            | DataType::Bool),
        ) => t.elem_type(),
        None if matches!(tensor.elem_type, UINT32 | UINT64) => ElemType::F32,
        _ => {
            return Err(err(format!(
                "has element type {}; bnnc reads float, integer and bool inputs",
                DataType::code_name(tensor.elem_type)
            )))
        }
    };
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| err("has no shape (unknown rank)".into()))?;
    // A symbolic or unknown extent is the batch: 1 here, and the interpreter runs larger
    // batches sample by sample.
    let dims: Vec<i64> = shape
        .dim
        .iter()
        .map(|d| match d.value {
            Some(dimension::Value::DimValue(v)) if v <= 0 => Err(err(format!(
                "has extent {v}: empty tensors are not supported"
            ))),
            Some(dimension::Value::DimValue(v)) => Ok(v),
            _ => Ok(1),
        })
        .collect::<Result<_, _>>()?;
    let (shape, _) = crate::tensor_data::checked_shape(&dims).map_err(err)?;
    Ok(TensorType::new(annotated.unwrap_or(elem), shape))
}

/// Integer and bool graph inputs may feed only ops whose ONNX semantics on them are what bnnc
/// computes in float32: Cast to float (of any), and DequantizeLinear (of integers of up to 32
/// bits, as ONNX allows), both of which convert to float32 first. Integer arithmetic
/// (wrapping sums, truncating division) is not f32 arithmetic, so any other user is refused by
/// name rather than computed differently.
fn check_integer_input_users(graph: &Graph, proto: &GraphProto) -> Result<(), FrontendError> {
    const FLOAT: i64 = 1;
    for &v in graph.inputs() {
        let value = graph.value(v);
        // Inputs the file declares as integers (a float input annotated with a FINN datatype
        // holds float numbers, whichever integers they are).
        let declared = proto
            .input
            .iter()
            .find(|i| i.name == value.name)
            .and_then(|i| {
                let type_proto::Value::TensorType(t) = i.r#type.as_ref()?.value.as_ref()?;
                Some(t.elem_type)
            });
        let Some(code) = declared.filter(|&c| c != 1) else {
            continue;
        };
        let dequantizable = matches!(
            DataType::from_code(code),
            Some(
                DataType::Uint8
                    | DataType::Int8
                    | DataType::Uint16
                    | DataType::Int16
                    | DataType::Int32
            )
        );
        for node in &proto.node {
            let Some(operand) = node.input.iter().position(|i| *i == value.name) else {
                continue;
            };
            let to_float = node
                .attribute
                .iter()
                .any(|a| a.name == "to" && a.i == FLOAT);
            let exact = match node.op_type.as_str() {
                "Cast" => to_float,
                "DequantizeLinear" => operand == 0 && dequantizable,
                _ => false,
            };
            if !exact {
                return Err(FrontendError::Input {
                    input: value.name.clone(),
                    reason: format!(
                        "is {} and feeds {}{}: bnnc takes integer inputs only into Cast to \
                         float or DequantizeLinear, and bool inputs only into Cast to float \
                         (it computes in float32, not in wrapping integer arithmetic)",
                        DataType::code_name(code),
                        node.op_type,
                        if node.name.is_empty() {
                            String::new()
                        } else {
                            format!(" '{}'", node.name)
                        }
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The nodes in an order where each comes after the producers of its operands: the file's
/// order where that already is one (ONNX requires it, not every exporter obeys).
fn topological_order(graph: &GraphProto) -> Result<Vec<usize>, FrontendError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(out.as_str(), i).is_some() {
                let node = OnnxNode::new(node, i);
                return Err(node.error(format!("result `{out}` is defined twice")));
            }
        }
    }
    let mut waiting_on = vec![0usize; graph.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); graph.node.len()];
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            if let Some(&p) = producer.get(input.as_str()) {
                waiting_on[i] += 1;
                users[p].push(i);
            }
        }
    }
    // Always take the earliest ready node, so that a sorted file keeps its order.
    let mut ready: BTreeSet<usize> = (0..graph.node.len())
        .filter(|&i| waiting_on[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(graph.node.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            waiting_on[u] -= 1;
            if waiting_on[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if let Some(stuck) = (0..graph.node.len()).find(|&i| waiting_on[i] > 0) {
        let node = OnnxNode::new(&graph.node[stuck], stuck);
        return Err(node.error("is part of a cycle".into()));
    }
    Ok(order)
}

impl Importer<'_> {
    /// Binds every initializer as a constant, typed by its `finn_datatype` annotation where it
    /// has one and by its ONNX data type otherwise.
    fn bind_initializers(
        &mut self,
        initializers: &[TensorProto],
        datatypes: &HashMap<&str, &str>,
    ) -> Result<(), FrontendError> {
        for init in initializers {
            let decoded = decode_tensor(init, &init.name, self.base_dir)?;
            let annotated = match datatypes.get(init.name.as_str()) {
                Some(datatype) => annotated_type(&init.name, datatype)?,
                None => None,
            };
            let elem = annotated.unwrap_or_else(|| decoded.data_type.elem_type());
            self.bind_const(&init.name, decoded.tensor, elem, Some(decoded.data_type))
                .map_err(|reason| FrontendError::tensor(&init.name, reason))?;
        }
        Ok(())
    }

    /// Adds the graph inputs that are not initializers.
    fn add_inputs(
        &mut self,
        inputs: &[ValueInfoProto],
        datatypes: &HashMap<&str, &str>,
    ) -> Result<(), FrontendError> {
        for input in inputs {
            // IR versions before 4 listed every initializer among the inputs too: those are
            // constants with a default value, not inputs.
            if self.bindings.contains_key(&input.name) {
                continue;
            }
            let annotated = match datatypes.get(input.name.as_str()) {
                Some(datatype) => annotated_type(&input.name, datatype)?,
                None => None,
            };
            let ty = input_type(input, annotated)?;
            let v = self.graph.add_input(input.name.clone(), ty);
            // `input_type` took only tensors.
            if let Some(type_proto::Value::TensorType(t)) =
                input.r#type.as_ref().and_then(|t| t.value.as_ref())
            {
                let declared = DataType::code_name(t.elem_type).to_string();
                self.graph.declared_input_types.push(declared);
            }
            self.bind(&input.name, Binding::Value(v))
                .map_err(|reason| FrontendError::Input {
                    input: input.name.clone(),
                    reason,
                })?;
        }
        Ok(())
    }

    /// Declares the graph's outputs.
    fn set_outputs(&mut self, outputs: &[ValueInfoProto]) -> Result<(), FrontendError> {
        if outputs.is_empty() {
            return Err(FrontendError::MissingOutputs);
        }
        let mut values = Vec::with_capacity(outputs.len());
        for output in outputs {
            let v = self.output_value(&output.name, &values)?;
            values.push(v);
        }
        self.graph.set_outputs(values);
        Ok(())
    }

    /// Binds the ONNX name `name`; each name is defined once.
    pub fn bind(&mut self, name: &str, binding: Binding) -> Result<(), String> {
        if name.is_empty() {
            return Ok(());
        }
        if self.bindings.insert(name.to_owned(), binding).is_some() {
            return Err(format!("`{name}` is defined twice"));
        }
        Ok(())
    }

    /// Binds `name` to a new constant.
    pub fn bind_const(
        &mut self,
        name: &str,
        data: Tensor,
        elem: ElemType,
        data_type: Option<DataType>,
    ) -> Result<(), String> {
        let id = self.new_const(name, data, elem, data_type);
        self.bind(name, Binding::Const(id))
    }

    /// A new constant of type `elem` named `name` (an operand the importer adds).
    pub fn constant(&mut self, name: &str, data: Tensor, elem: ElemType) -> Binding {
        Binding::Const(self.new_const(name, data, elem, None))
    }

    /// A new f32 scalar constant named `name` (an operand the importer adds).
    pub fn scalar(&mut self, name: &str, value: f32) -> Binding {
        Binding::Const(self.new_const(name, Tensor::scalar(value), ElemType::F32, None))
    }

    /// A new constant, named `name` in the graph.
    fn new_const(
        &mut self,
        name: &str,
        data: Tensor,
        elem: ElemType,
        data_type: Option<DataType>,
    ) -> ConstId {
        self.constants.push(Constant {
            name: name.to_owned(),
            elem,
            data_type,
            data: ConstData::Held(data),
        });
        ConstId(self.constants.len() - 1)
    }

    /// What `name` is bound to.
    pub fn lookup(&self, name: &str) -> Option<Binding> {
        self.bindings.get(name).copied()
    }

    /// The data of a constant binding; `None` for a runtime value.
    pub fn const_data(&self, b: Binding) -> Option<&Tensor> {
        match b {
            Binding::Value(_) => None,
            Binding::Const(id) => match &self.constants[id.0].data {
                ConstData::Held(t) => Some(t),
                ConstData::InGraph(v) => self.graph.const_data(*v),
            },
        }
    }

    /// The ONNX data type a constant was stored in, where it was read from the model.
    pub fn const_data_type(&self, b: Binding) -> Option<DataType> {
        match b {
            Binding::Value(_) => None,
            Binding::Const(id) => self.constants[id.0].data_type,
        }
    }

    /// The static shape of a binding.
    pub fn shape(&self, b: Binding) -> &[usize] {
        match b {
            Binding::Value(v) => &self.graph.value(v).ty.shape,
            Binding::Const(_) => self.const_data(b).map_or(&[], Tensor::shape),
        }
    }

    /// The element type of a binding.
    pub fn elem(&self, b: Binding) -> ElemType {
        match b {
            Binding::Value(v) => self.graph.value(v).ty.elem.clone(),
            Binding::Const(id) => self.constants[id.0].elem.clone(),
        }
    }

    /// The graph value of a binding, adding a held constant to the graph on first use.
    pub fn value(&mut self, b: Binding) -> Result<ValueId, IrError> {
        let id = match b {
            Binding::Value(v) => return Ok(v),
            Binding::Const(id) => id,
        };
        let constant = &mut self.constants[id.0];
        let data = match &mut constant.data {
            ConstData::InGraph(v) => return Ok(*v),
            ConstData::Held(t) => std::mem::replace(t, Tensor::i64(vec![0], Vec::new())),
        };
        let v = self
            .graph
            .add_const(constant.name.clone(), Some(constant.elem.clone()), data)?;
        self.constants[id.0].data = ConstData::InGraph(v);
        Ok(v)
    }

    /// Adds `op` applied to `operands` as the node `node`, and binds its results to the node's
    /// ONNX result names (results the node leaves unnamed get names of their own).
    pub fn add_node(
        &mut self,
        node: &OnnxNode,
        op: Op,
        operands: &[Binding],
    ) -> Result<(), NodeError> {
        let count = op.num_outputs();
        if let Some(extra) = node.outputs.iter().skip(count).find(|o| !o.is_empty()) {
            return Err(NodeError::from(format!(
                "result `{extra}` is not supported (the op has {count} results)"
            )));
        }
        let names: Vec<String> = (0..count)
            .map(|i| match node.output(i) {
                Some(name) => name.to_owned(),
                None => format!("{}_unused{i}", node.name),
            })
            .collect();
        let inputs = operands
            .iter()
            .map(|&b| self.value(b))
            .collect::<Result<Vec<_>, _>>()?;
        let results = self
            .graph
            .add_node(node.name.clone(), op, &inputs, names)
            .map_err(|e| match e {
                // Report the node under its ONNX op type, like every other node error.
                IrError::Node { reason, .. } => NodeError::Reason(reason),
                other => NodeError::from(other),
            })?;
        for (i, v) in results.into_iter().enumerate() {
            if let Some(name) = node.output(i) {
                self.bind(name, Binding::Value(v))?;
            }
        }
        Ok(())
    }

    /// Adds `op` on `operands` as one step of an ONNX node the importer writes as several IR
    /// nodes (named `NODE.STEP`); returns the step's result.
    pub fn add_step(
        &mut self,
        node: &OnnxNode,
        step: &str,
        op: Op,
        operands: &[Binding],
    ) -> Result<Binding, NodeError> {
        let inputs = operands
            .iter()
            .map(|&b| self.value(b))
            .collect::<Result<Vec<_>, _>>()?;
        let name = format!("{}.{step}", node.name);
        let results = self
            .graph
            .add_node(name.clone(), op, &inputs, vec![name])
            .map_err(|e| match e {
                IrError::Node { reason, .. } => NodeError::Reason(reason),
                other => NodeError::from(other),
            })?;
        Ok(Binding::Value(results[0]))
    }

    /// The graph value of the ONNX output `name` (`earlier` are the outputs before it). A node
    /// result that reached the output through an alias (Identity, Dropout) takes the output's
    /// name, so the graph's outputs keep their ONNX names.
    fn output_value(&mut self, name: &str, earlier: &[ValueId]) -> Result<ValueId, FrontendError> {
        let err = |reason: String| FrontendError::Output {
            output: name.to_owned(),
            reason,
        };
        let binding = self
            .lookup(name)
            .ok_or_else(|| err("is not defined by any node, input or initializer".into()))?;
        let v = self.value(binding)?;
        let is_node_result = self.graph.producer(v).is_some();
        if is_node_result && self.graph.value(v).name != name && !earlier.contains(&v) {
            self.graph.rename_value(v, name);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::NodeProto;

    fn node(inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: "Relu".into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sorts_nodes_stably() {
        let graph = GraphProto {
            node: vec![
                node(&["b"], &["c"]),
                node(&["x"], &["a"]),
                node(&["a"], &["b"]),
                node(&["x"], &["d"]),
            ],
            ..Default::default()
        };
        assert_eq!(topological_order(&graph).unwrap(), vec![1, 2, 0, 3]);
    }

    #[test]
    fn reports_cycles_and_redefinitions() {
        let graph = GraphProto {
            node: vec![node(&["b"], &["a"]), node(&["a"], &["b"])],
            ..Default::default()
        };
        assert!(topological_order(&graph)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        let graph = GraphProto {
            node: vec![node(&["x"], &["a"]), node(&["x"], &["a"])],
            ..Default::default()
        };
        assert!(topological_order(&graph)
            .unwrap_err()
            .to_string()
            .contains("defined twice"));
    }
}
