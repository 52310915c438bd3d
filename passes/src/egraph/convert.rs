//! From a [`Graph`] to the e-graph and back.
//!
//! Into the e-graph: every value becomes a class (graph inputs and constants are leaves, a
//! node's result the class of its op e-node, or a `Result` projection for multi-result ops),
//! and the side tables here remember the names of the imported graph.
//!
//! Back: the extractor chose one e-node per class; [`Imported::to_graph`] builds the graph of
//! the classes the outputs reach, operands first. Names follow what is kept: a node that is
//! an imported node keeps its name, a value keeps the name of the imported value of its class
//! (a graph output's name first), and what a rule built is named after what it replaces (the
//! rule's name hint, e.g. `BatchNormalization_0.threshold`). Graph inputs and outputs keep
//! their names and order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bnnc_ir::{Graph, IrError, Op, Tensor, TensorType, ValueDef, ValueId};
use egg::{Id, Language};

use super::analysis::{BnnAnalysis, BnnEGraph};
use super::cost::BnnCost;
use super::extract::Choices;
use super::language::{BnnLang, ConstRef};

/// What is needed to build a graph back from the e-graph of an imported one.
pub struct Imported {
    /// The class of each graph output, in order.
    pub roots: Vec<Id>,
    graph_name: String,
    /// [`Graph::declared_input_types`].
    declared_input_types: Vec<String>,
    /// Name and type of each graph input.
    inputs: Vec<(String, TensorType)>,
    output_names: Vec<String>,
    /// Every imported value's class and name, in value order.
    values: Vec<(Id, String)>,
    /// Every imported node's e-node (as added), name, and operand value names.
    nodes: Vec<(BnnLang, ImportedNode)>,
}

/// Puts `graph` into a new e-graph.
pub fn import(graph: &Graph) -> Result<(BnnEGraph, Imported), IrError> {
    let inputs: Vec<(String, TensorType)> = graph
        .inputs()
        .iter()
        .map(|&v| (graph.value(v).name.clone(), graph.value(v).ty.clone()))
        .collect();
    let mut egraph = BnnEGraph::new(BnnAnalysis::new(
        inputs.iter().map(|(_, t)| t.clone()).collect(),
    ));
    let mut class_of: Vec<Option<Id>> = vec![None; graph.num_values()];
    let mut values = Vec::new();
    let mut nodes = Vec::new();

    for (i, &v) in graph.inputs().iter().enumerate() {
        class_of[v.index()] = Some(egraph.add(BnnLang::Input(i)));
    }
    for (v, data) in graph.values() {
        if let ValueDef::Const(t) = &data.def {
            let c = ConstRef::new(data.ty.elem.clone(), Arc::clone(t));
            class_of[v.index()] = Some(egraph.add(BnnLang::Const(c)));
        }
    }
    for n in graph.topo_order()? {
        let node = graph.node(n);
        let node_err = |reason: String| IrError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            reason,
        };
        let operands = node
            .inputs
            .iter()
            .map(|v| {
                class_of.get(v.index()).copied().flatten().ok_or_else(|| {
                    node_err(format!("operand `{}` is not defined", graph.value(*v).name))
                })
            })
            .collect::<Result<Vec<Id>, IrError>>()?;
        let enode = BnnLang::op(node.op.clone(), operands);
        let class = egraph.add(enode.clone());
        let operand_names = node
            .inputs
            .iter()
            .map(|&v| graph.value(v).name.clone())
            .collect();
        nodes.push((
            enode,
            ImportedNode {
                name: node.name.clone(),
                operand_names,
            },
        ));
        let results = if node.outputs.len() == 1 {
            vec![class]
        } else {
            (0..node.outputs.len())
                .map(|k| egraph.add(BnnLang::Result(k, [class])))
                .collect()
        };
        for (&out, result) in node.outputs.iter().zip(results) {
            class_of[out.index()] = Some(result);
            let data = &mut egraph[result].data;
            if data.ty() != Some(&graph.value(out).ty) {
                return Err(node_err(format!(
                    "result `{}` is typed {}, the e-graph infers {:?}",
                    graph.value(out).name,
                    graph.value(out).ty,
                    data.error.as_deref().unwrap_or("another type")
                )));
            }
            data.name_after(out.index(), &graph.value(out).name, Some(&node.name));
        }
    }
    for (v, data) in graph.values() {
        if let Some(class) = class_of[v.index()] {
            values.push((class, data.name.clone()));
            egraph[class].data.name_after(v.index(), &data.name, None);
        }
    }
    let roots = graph
        .outputs()
        .iter()
        .map(|v| {
            class_of
                .get(v.index())
                .copied()
                .flatten()
                .ok_or_else(|| IrError::Graph {
                    graph: graph.name.clone(),
                    reason: format!("output `{}` is not defined", graph.value(*v).name),
                })
        })
        .collect::<Result<Vec<Id>, IrError>>()?;
    egraph.rebuild();
    let imported = Imported {
        roots,
        graph_name: graph.name.clone(),
        declared_input_types: graph.declared_input_types.clone(),
        inputs,
        output_names: graph
            .outputs()
            .iter()
            .map(|&v| graph.value(v).name.clone())
            .collect(),
        values,
        nodes,
    };
    Ok((egraph, imported))
}

impl Imported {
    /// Builds the graph of the e-nodes the cost model prefers, from the classes the outputs
    /// reach. `egraph` is this import's e-graph after the rewrites (rebuilt).
    pub fn to_graph(&self, egraph: &BnnEGraph) -> Result<Graph, IrError> {
        let extractor = Choices::new(egraph, BnnCost::new(egraph));
        let mut builder = Builder::new(self, egraph, &extractor);
        for &root in &self.roots {
            builder.build_class(root)?;
        }
        let mut outputs = Vec::with_capacity(self.roots.len());
        for (&root, name) in self.roots.iter().zip(&self.output_names) {
            let v = builder.value_of(root, Some(name))?;
            outputs.push(builder.named_output(v, name)?);
        }
        builder.graph.set_outputs(outputs);
        Ok(builder.graph)
    }
}

/// An imported node's names.
#[derive(Clone, Debug)]
struct ImportedNode {
    name: String,
    /// The names of its operands: a constant operand keeps its name in the built graph, even
    /// where equal constants became one class.
    operand_names: Vec<String>,
}

/// Builds a graph from the extractor's choices.
struct Builder<'a, 'x> {
    egraph: &'a BnnEGraph,
    extractor: &'x Choices,
    graph: Graph,
    /// The value of each built class (constants aside).
    values: HashMap<Id, ValueId>,
    /// The values of constant classes, by class and name: equal constants share a class, but
    /// each keeps the name its user gave it.
    consts: HashMap<(Id, String), ValueId>,
    /// The results of each built multi-result class.
    tuples: HashMap<Id, Vec<ValueId>>,
    /// The name a class's value takes: a graph output's, else its first imported value's.
    class_names: HashMap<Id, String>,
    /// Imported nodes by their e-node, canonical in `egraph`.
    node_names: HashMap<BnnLang, ImportedNode>,
    /// Names the rules gave what they built, by canonical e-node.
    hints: HashMap<BnnLang, String>,
    used_names: HashSet<String>,
}

impl<'a, 'x> Builder<'a, 'x> {
    fn new(imported: &Imported, egraph: &'a BnnEGraph, extractor: &'x Choices) -> Self {
        let canonical = |n: &BnnLang| n.clone().map_children(|c| egraph.find(c));
        let mut class_names = HashMap::new();
        for (&root, name) in imported.roots.iter().zip(&imported.output_names) {
            class_names
                .entry(egraph.find(root))
                .or_insert_with(|| name.clone());
        }
        for (class, name) in &imported.values {
            class_names
                .entry(egraph.find(*class))
                .or_insert_with(|| name.clone());
        }
        let mut node_names = HashMap::new();
        for (node, names) in &imported.nodes {
            node_names
                .entry(canonical(node))
                .or_insert_with(|| names.clone());
        }
        let mut hints = HashMap::new();
        for (node, name) in &egraph.analysis.log.name_hints {
            hints.entry(canonical(node)).or_insert_with(|| name.clone());
        }
        let mut builder = Builder {
            egraph,
            extractor,
            graph: Graph::new(imported.graph_name.clone()),
            values: HashMap::new(),
            consts: HashMap::new(),
            tuples: HashMap::new(),
            class_names,
            node_names,
            hints,
            used_names: HashSet::new(),
        };
        builder
            .graph
            .declared_input_types
            .clone_from(&imported.declared_input_types);
        for (i, (name, ty)) in imported.inputs.iter().enumerate() {
            let name = builder.unique(name);
            let v = builder.graph.add_input(name, ty.clone());
            if let Some(class) = egraph.lookup(BnnLang::Input(i)) {
                builder.values.entry(egraph.find(class)).or_insert(v);
            }
        }
        builder
    }

    /// `name`, or `name.1`, `name.2`, .. if a value already has it.
    fn unique(&mut self, name: &str) -> String {
        let mut candidate = name.to_string();
        let mut k = 0;
        while self.used_names.contains(&candidate) {
            k += 1;
            candidate = format!("{name}.{k}");
        }
        self.used_names.insert(candidate.clone());
        candidate
    }

    /// The value of `class`; a constant class is added as a constant named `name` (the
    /// user's name for it), or after the class.
    fn value_of(&mut self, class: Id, name: Option<&str>) -> Result<ValueId, IrError> {
        let class = self.egraph.find(class);
        if let BnnLang::Const(c) = self.extractor.find_best_node(self.egraph, class) {
            return self.const_value(class, c, name);
        }
        self.values
            .get(&class)
            .copied()
            .ok_or_else(|| IrError::Graph {
                graph: self.graph.name.clone(),
                reason: format!("class {class} was not built (a cycle in the extraction)"),
            })
    }

    fn const_value(
        &mut self,
        class: Id,
        c: &ConstRef,
        name: Option<&str>,
    ) -> Result<ValueId, IrError> {
        let hint = self.hints.get(&BnnLang::Const(c.clone()));
        let name = name
            .map(str::to_string)
            .or_else(|| self.class_names.get(&class).cloned())
            .or_else(|| hint.cloned())
            .unwrap_or_else(|| "const".into());
        if let Some(&v) = self.consts.get(&(class, name.clone())) {
            return Ok(v);
        }
        let unique = self.unique(&name);
        let v = self
            .graph
            .add_const(unique, Some(c.elem().clone()), Tensor::clone(c.tensor()))?;
        self.consts.insert((class, name), v);
        Ok(v)
    }

    /// `v` as a graph output named `name`. A value computed here already has the output's
    /// name (class names prefer it). An output that became a graph input, or the value of an
    /// earlier output, gets a same-shape reshape (the identity) carrying its name, so that the
    /// graph's interface does not change.
    fn named_output(&mut self, v: ValueId, name: &str) -> Result<ValueId, IrError> {
        if self.graph.value(v).name == name {
            return Ok(v);
        }
        let shape = self.graph.value(v).ty.shape.clone();
        let name = self.unique(name);
        let out = self.graph.add_node(
            format!("{name}.identity"),
            Op::Reshape { shape },
            &[v],
            vec![name],
        )?;
        Ok(out[0])
    }

    /// Whether `class` needs no building (it is built, or a constant, added where used).
    fn is_built(&self, class: Id) -> bool {
        let class = self.egraph.find(class);
        self.values.contains_key(&class)
            || self.tuples.contains_key(&class)
            || matches!(
                self.extractor.find_best_node(self.egraph, class),
                BnnLang::Const(_)
            )
    }

    /// Builds `root` and every class it needs, operands first (without recursion, so deep
    /// graphs cannot overflow the stack).
    fn build_class(&mut self, root: Id) -> Result<(), IrError> {
        let mut stack = vec![(self.egraph.find(root), false)];
        let mut expanding = HashSet::new();
        while let Some((class, children_done)) = stack.pop() {
            if self.is_built(class) {
                continue;
            }
            let node = self.extractor.find_best_node(self.egraph, class);
            if children_done {
                self.build_node(class, node)?;
                continue;
            }
            if !expanding.insert(class) {
                return Err(IrError::Graph {
                    graph: self.graph.name.clone(),
                    reason: format!("the extracted term has a cycle through class {class}"),
                });
            }
            stack.push((class, true));
            for &child in node.children().iter().rev() {
                let child = self.egraph.find(child);
                if !self.is_built(child) {
                    stack.push((child, false));
                }
            }
        }
        Ok(())
    }

    /// Adds the value (or values) of `class`, computed by `node`, whose operands are built.
    fn build_node(&mut self, class: Id, node: &BnnLang) -> Result<(), IrError> {
        let canonical = node.clone().map_children(|c| self.egraph.find(c));
        let hint = self.hints.get(&canonical).cloned();
        let class_name = self.class_names.get(&class).cloned();
        match node {
            BnnLang::Input(i) => Err(IrError::Graph {
                graph: self.graph.name.clone(),
                reason: format!("graph input {i} has no value"),
            }),
            BnnLang::Const(c) => self.const_value(class, c, None).map(|_| ()),
            BnnLang::Result(k, [tuple]) => {
                let results = self.tuples.get(&self.egraph.find(*tuple));
                let v = results
                    .and_then(|r| r.get(*k))
                    .copied()
                    .ok_or_else(|| IrError::Graph {
                        graph: self.graph.name.clone(),
                        reason: format!("result {k} of class {tuple} was not built"),
                    })?;
                self.values.insert(class, v);
                Ok(())
            }
            BnnLang::Op(key, children) => {
                let op = key.op().clone();
                let imported = self.node_names.get(&canonical).cloned();
                let operands = children
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        let name = imported.as_ref().and_then(|n| n.operand_names.get(i));
                        self.value_of(c, name.map(String::as_str))
                    })
                    .collect::<Result<Vec<ValueId>, IrError>>()?;
                let node_name = imported.map(|n| n.name).or(hint).unwrap_or_else(|| {
                    format!("{}.{}", class_name.as_deref().unwrap_or("new"), op.name())
                });
                let output_names: Vec<String> = if op.num_outputs() == 1 {
                    let name = class_name.unwrap_or_else(|| format!("{node_name}_out0"));
                    vec![self.unique(&name)]
                } else {
                    (0..op.num_outputs())
                        .map(|k| {
                            let projection = BnnLang::Result(k, [class]);
                            let name = self
                                .egraph
                                .lookup(projection)
                                .and_then(|c| self.class_names.get(&self.egraph.find(c)).cloned())
                                .unwrap_or_else(|| format!("{node_name}_out{k}"));
                            self.unique(&name)
                        })
                        .collect()
                };
                let outputs = self
                    .graph
                    .add_node(node_name, op, &operands, output_names)?;
                if outputs.len() == 1 {
                    self.values.insert(class, outputs[0]);
                } else {
                    self.tuples.insert(class, outputs);
                }
                Ok(())
            }
        }
    }
}
