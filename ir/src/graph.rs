//! The graph: values (tensors with one definition each) and nodes (ops over values),
//! kept in a petgraph `StableDiGraph` whose edges run from a value's producer to its users.

use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;

use crate::error::{IrError, Result};
use crate::infer::infer_output_types;
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::types::{ElemType, TensorType};

/// A value (tensor) of the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(u32);

impl ValueId {
    /// The value's index, dense from 0.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A node (op application) of the graph.
pub type NodeId = NodeIndex<u32>;

/// Where a value comes from.
#[derive(Clone, Debug)]
pub enum ValueDef {
    /// A graph input, given at run time.
    Input,
    /// A constant with its data.
    Const(Arc<Tensor>),
    /// Result `index` of a node.
    Node { node: NodeId, index: usize },
}

/// A value's name, type and definition.
#[derive(Clone, Debug)]
pub struct ValueData {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
}

/// An op applied to values.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Runs in the output stage of the layer that computes its first operand (directly, or
    /// through other fused nodes): a threshold, or a pool after it. The `fuse-output-stages`
    /// pass decides this once, for every backend; it changes no value.
    pub fused: bool,
}

/// A dataflow graph of quantized tensor ops with static shapes.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// The graph's name (the model's name in the text form).
    pub name: String,
    /// The element type the source model declares for each graph input, in input order
    /// (ONNX's names: `FLOAT`, `UINT8`, `INT64`...), when the frontend knows it: what a
    /// library's header documents beside the type its ABI takes. Not semantics: an input's
    /// [`TensorType`] says what it holds.
    pub declared_input_types: Vec<String>,
    values: Vec<ValueData>,
    nodes: StableDiGraph<Node, ValueId, u32>,
    inputs: Vec<ValueId>,
    outputs: Vec<ValueId>,
}

impl Graph {
    /// An empty graph.
    pub fn new(name: impl Into<String>) -> Self {
        Graph {
            name: name.into(),
            ..Default::default()
        }
    }

    fn push_value(&mut self, name: String, ty: TensorType, def: ValueDef) -> ValueId {
        let id = ValueId(u32::try_from(self.values.len()).expect("more than 2^32 values"));
        self.values.push(ValueData { name, ty, def });
        id
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.push_value(name.into(), ty, ValueDef::Input);
        self.inputs.push(id);
        id
    }

    /// Adds a constant. Its element type is `elem`, or `f32` / `i64` after its data when
    /// `None`; the data must fit the type (a `bipolar` constant holds only -1 and +1).
    pub fn add_const(
        &mut self,
        name: impl Into<String>,
        elem: Option<ElemType>,
        data: Tensor,
    ) -> Result<ValueId> {
        let name = name.into();
        let elem = match elem {
            Some(e) => {
                check_const_fits(&data, &e).map_err(|reason| IrError::Value {
                    value: name.clone(),
                    reason,
                })?;
                e
            }
            None => match data.data() {
                TensorData::F32(_) => ElemType::F32,
                TensorData::I64(_) => ElemType::I64,
            },
        };
        let ty = TensorType::new(elem, data.shape().to_vec());
        Ok(self.push_value(name, ty, ValueDef::Const(Arc::new(data))))
    }

    /// Adds a node applying `op` to `inputs`, infers the types of its results and names them
    /// `output_names` (one per result of the op). Returns the results.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: &[ValueId],
        output_names: Vec<String>,
    ) -> Result<Vec<ValueId>> {
        let name = name.into();
        let node_err = |reason: String| IrError::Node {
            node: name.clone(),
            op: op.name(),
            reason,
        };
        if output_names.len() != op.num_outputs() {
            return Err(node_err(format!(
                "{} results named, the op has {}",
                output_names.len(),
                op.num_outputs()
            )));
        }
        if let Some(v) = inputs.iter().find(|v| v.index() >= self.values.len()) {
            return Err(node_err(format!(
                "operand {} is not a value of the graph",
                v.index()
            )));
        }
        let types = self.infer(&op, inputs).map_err(node_err)?;
        let node = self.nodes.add_node(Node {
            name,
            op,
            inputs: inputs.to_vec(),
            outputs: Vec::new(),
            fused: false,
        });
        let outputs: Vec<ValueId> = output_names
            .into_iter()
            .zip(types)
            .enumerate()
            .map(|(index, (n, ty))| self.push_value(n, ty, ValueDef::Node { node, index }))
            .collect();
        self.nodes[node].outputs = outputs.clone();
        for &v in inputs {
            if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
                self.nodes.add_edge(producer, node, v);
            }
        }
        Ok(outputs)
    }

    /// Infers the result types of `op` applied to `inputs`.
    pub fn infer(
        &self,
        op: &Op,
        inputs: &[ValueId],
    ) -> std::result::Result<Vec<TensorType>, String> {
        let types: Vec<&TensorType> = inputs.iter().map(|&v| &self.values[v.index()].ty).collect();
        let consts: Vec<Option<&Tensor>> = inputs.iter().map(|&v| self.const_data(v)).collect();
        infer_output_types(op, &types, &consts)
    }

    /// Infers every node's result types again, in topological order: after a rewrite
    /// changed the type of a value (a constant's), the values computed from it follow.
    pub fn reinfer(&mut self) -> Result<()> {
        for n in self.topo_order()? {
            let node = &self.nodes[n];
            let types = self
                .infer(&node.op, &node.inputs)
                .map_err(|reason| IrError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    reason,
                })?;
            for (v, ty) in node.outputs.clone().into_iter().zip(types) {
                self.values[v.index()].ty = ty;
            }
        }
        Ok(())
    }

    /// Declares the graph's outputs.
    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    /// The graph inputs, in order.
    pub fn inputs(&self) -> &[ValueId] {
        &self.inputs
    }

    /// The graph outputs, in order.
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }

    /// A value.
    pub fn value(&self, v: ValueId) -> &ValueData {
        &self.values[v.index()]
    }

    /// Every value, with its id.
    pub fn values(&self) -> impl Iterator<Item = (ValueId, &ValueData)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, d)| (ValueId(i as u32), d))
    }

    /// Number of values (ids are `0..num_values()`).
    pub fn num_values(&self) -> usize {
        self.values.len()
    }

    /// A node.
    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[n]
    }

    /// The node that uses value `v`, if it is the only one, uses it once, and `v` is not a
    /// graph output: where a rewrite may change `v` without anyone else seeing.
    pub fn only_user(&self, v: ValueId) -> Option<NodeId> {
        if self.outputs.contains(&v) {
            return None;
        }
        let producer = self.producer(v)?;
        let mut users: Vec<NodeId> = self
            .users(producer)
            .filter(|&u| self.nodes[u].inputs.contains(&v))
            .collect();
        users.dedup();
        match users[..] {
            [u] if self.nodes[u].inputs.iter().filter(|&&i| i == v).count() == 1 => Some(u),
            _ => None,
        }
    }

    /// Whether node `n` is (still) in the graph.
    pub fn contains_node(&self, n: NodeId) -> bool {
        self.nodes.contains_node(n)
    }

    /// Every node id, in the order the nodes were added.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.node_indices()
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.node_count()
    }

    /// The data of a constant value, `None` for any other value.
    pub fn const_data(&self, v: ValueId) -> Option<&Tensor> {
        match &self.values[v.index()].def {
            ValueDef::Const(t) => Some(t),
            _ => None,
        }
    }

    /// The node defining `v`, if a node does.
    pub fn producer(&self, v: ValueId) -> Option<NodeId> {
        match self.values[v.index()].def {
            ValueDef::Node { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The nodes that use the results of `n`.
    pub fn users(&self, n: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .edges_directed(n, Direction::Outgoing)
            .map(|e| e.target())
    }

    /// The nodes in an order where every node comes after the producers of its operands.
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        petgraph::algo::toposort(&self.nodes, None).map_err(|cycle| IrError::Graph {
            graph: self.name.clone(),
            reason: format!("cycle through node `{}`", self.nodes[cycle.node_id()].name),
        })
    }

    /// Marks node `n` as run in its layer's output stage, or not ([`Node::fused`]).
    pub fn set_fused(&mut self, n: NodeId, fused: bool) {
        self.nodes[n].fused = fused;
    }

    /// The layer whose output stage runs fused node `n`: the producer of its first operand,
    /// followed through other fused nodes. `None` for a node that is not fused.
    pub fn stage_layer(&self, n: NodeId) -> Option<NodeId> {
        let mut at = n;
        while self.nodes[at].fused {
            at = self.producer(*self.nodes[at].inputs.first()?)?;
        }
        (at != n).then_some(at)
    }

    /// Stores the nodes again in `order`, which holds every node once: the order
    /// [`Graph::node_ids`] follows from then on. Node ids change; values keep theirs.
    pub(crate) fn reorder_nodes(&mut self, order: &[NodeId]) {
        let mut nodes = StableDiGraph::with_capacity(order.len(), self.nodes.edge_count());
        let mut new_id = std::collections::HashMap::new();
        for &n in order {
            new_id.insert(n, nodes.add_node(self.nodes[n].clone()));
        }
        for v in &mut self.values {
            if let ValueDef::Node { node, .. } = &mut v.def {
                if let Some(&n) = new_id.get(node) {
                    *node = n;
                }
            }
        }
        for n in nodes.node_indices().collect::<Vec<_>>() {
            for v in nodes[n].inputs.clone() {
                if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
                    nodes.add_edge(producer, n, v);
                }
            }
        }
        self.nodes = nodes;
    }

    /// Renames a value (for example to keep an ONNX output's name on another value).
    pub fn rename_value(&mut self, v: ValueId, name: impl Into<String>) {
        self.values[v.index()].name = name.into();
    }

    /// Makes every use of `old` (node operands and graph outputs) a use of `new`. The types
    /// must agree: a pass replaces a value only by one computing the same thing.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) -> Result<()> {
        if self.values[old.index()].ty != self.values[new.index()].ty {
            return Err(IrError::Value {
                value: self.values[old.index()].name.clone(),
                reason: format!(
                    "replaced by `{}` of type {}, but is typed {}",
                    self.values[new.index()].name,
                    self.values[new.index()].ty,
                    self.values[old.index()].ty
                ),
            });
        }
        let users: Vec<NodeId> = self
            .nodes
            .node_indices()
            .filter(|&n| self.nodes[n].inputs.contains(&old))
            .collect();
        for n in users {
            for i in 0..self.nodes[n].inputs.len() {
                if self.nodes[n].inputs[i] == old {
                    self.set_operand(n, i, new);
                }
            }
        }
        for out in &mut self.outputs {
            if *out == old {
                *out = new;
            }
        }
        Ok(())
    }

    /// Puts `new` in the place of node `n`'s first result: its uses, and its name (so that
    /// graph outputs and printed IR keep the model's names); then removes `n`. The types
    /// must agree, as for [`Graph::replace_uses`].
    pub fn replace_node(&mut self, n: NodeId, new: ValueId) -> Result<()> {
        let old = self.nodes[n].outputs[0];
        self.replace_uses(old, new)?;
        let name = self.values[old.index()].name.clone();
        self.remove_node(n);
        self.rename_value(new, name);
        Ok(())
    }

    /// Makes operand `i` of node `n` the value `v`, keeping the dataflow edges in step. The
    /// caller keeps the node's result types right (or re-infers them).
    pub fn set_operand(&mut self, n: NodeId, i: usize, v: ValueId) {
        let old = self.nodes[n].inputs[i];
        if let Some(e) = self
            .nodes
            .edges_directed(n, Direction::Incoming)
            .find(|e| *e.weight() == old)
            .map(|e| e.id())
        {
            self.nodes.remove_edge(e);
        }
        self.nodes[n].inputs[i] = v;
        if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
            self.nodes.add_edge(producer, n, v);
        }
    }

    /// Removes a node. Its results stay as values, but any remaining use of them fails
    /// verification: remove a node only after replacing its uses.
    pub fn remove_node(&mut self, n: NodeId) {
        self.nodes.remove_node(n);
    }

    /// Removes every node none of whose results is used (transitively); returns how many.
    pub fn remove_dead_nodes(&mut self) -> usize {
        let mut removed = 0;
        loop {
            let dead: Vec<NodeId> = self
                .nodes
                .node_indices()
                .filter(|&n| {
                    self.nodes
                        .edges_directed(n, Direction::Outgoing)
                        .next()
                        .is_none()
                        && !self.nodes[n]
                            .outputs
                            .iter()
                            .any(|v| self.outputs.contains(v))
                })
                .collect();
            if dead.is_empty() {
                return removed;
            }
            removed += dead.len();
            for n in dead {
                self.nodes.remove_node(n);
            }
        }
    }

    /// Whether a value is used by a node or is a graph output.
    pub fn is_used(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
            || self
                .nodes
                .node_weights()
                .any(|node| node.inputs.contains(&v))
    }

    /// The edges of the petgraph view (producer, user, value), for checks and tools.
    pub fn edges(&self) -> impl Iterator<Item = (NodeId, NodeId, ValueId)> + '_ {
        (&self.nodes)
            .edge_references()
            .map(|e| (e.source(), e.target(), *e.weight()))
    }
}

/// Checks that every element of `data` is a value of `elem` (ignoring any scale's rounding).
pub(crate) fn check_const_fits(data: &Tensor, elem: &ElemType) -> std::result::Result<(), String> {
    let ElemType::Int(int) = elem else {
        // A scaled constant's integers are data / scale; f32 holds anything.
        return Ok(());
    };
    let values = data.to_f64_vec();
    match values.iter().find(|&&x| !int.contains(x)) {
        Some(bad) => Err(format!("holds {bad}, which is not a value of type {elem}")),
        None => Ok(()),
    }
}
