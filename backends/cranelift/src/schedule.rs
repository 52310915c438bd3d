//! The schedule: which kernels run in which order, how every tensor is stored, and where in
//! the scratch buffer it lives.
//!
//! Storage follows the data: XNOR-popcount layers read and write packed bits, accumulators
//! are `i32`, everything else is `f32` in the IR's row-major layout. Where a consumer wants a
//! value stored otherwise, a conversion step is inserted once per value and storage. Buffers
//! whose lifetimes do not overlap share scratch memory.

use std::collections::{HashMap, HashSet};

use bnnc_ir::{ElemType, Graph, IntType, NodeId, Op, ValueDef, ValueId};
use bnnc_runtime::packing::words;

use crate::column_conv::ColumnConv;
use crate::stage::{accumulator_unit, Levels, OutputStage};
use crate::BackendError;

/// The pattern of the ops `emit::elementwise` computes element by element (each result
/// element from its operands' elements at the same broadcast index): one list for the
/// planner's chains ([`StepKind::Chain`]) and the emitter's dispatch.
macro_rules! elementwise_op {
    () => {
        ::bnnc_ir::Op::Binary(_)
            | ::bnnc_ir::Op::Relu
            | ::bnnc_ir::Op::Clip { .. }
            | ::bnnc_ir::Op::BatchNorm { .. }
            | ::bnnc_ir::Op::Quant(_)
            | ::bnnc_ir::Op::Trunc(_)
            | ::bnnc_ir::Op::BipolarQuant
            | ::bnnc_ir::Op::QuantizeLinear { .. }
            | ::bnnc_ir::Op::DequantizeLinear { .. }
            | ::bnnc_ir::Op::Sign
            | ::bnnc_ir::Op::Abs
            | ::bnnc_ir::Op::Round
            | ::bnnc_ir::Op::Compare(_)
    };
}
pub(crate) use elementwise_op;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Storage {
    /// `f32`, row-major in the IR's shape.
    F32,
    /// `i32`, row-major (integer accumulators).
    I32,
    /// Bipolar values as bits, channels-last ([`bnnc_runtime::packing`]).
    Bits,
    /// Low-bit integers (`value / scale` of their type) as this many bit planes,
    /// channels-last: per pixel, the words of plane 0, then of plane 1, and so on; the top
    /// plane of a signed type counts negatively (two's complement).
    Planes(u8),
}

/// Where a runtime tensor lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// The caller's input sample.
    Input,
    /// The caller's output sample.
    Output,
    /// A buffer in the scratch area.
    Scratch(usize),
}

/// What a step computes.
#[derive(Clone, Debug)]
pub(crate) enum StepKind {
    /// A node of the graph.
    Node(NodeId),
    /// A value converted from its operand's storage into its result's.
    Convert,
    /// A linear layer whose one user, a threshold, runs in its output stage: the step reads
    /// the layer's operands and writes the threshold's packed bits or level planes, or, with
    /// a `pool`, those of the MaxPool after the threshold.
    Fused {
        linear: NodeId,
        threshold: NodeId,
        pool: Option<NodeId>,
        /// The output stage chosen for the threshold: bits or levels (never `Acc`). The
        /// kernels run this one; nothing decides it again.
        stage: OutputStage,
    },
    /// Elementwise nodes of one shape, in order, whose results only later ones read, but for
    /// the last: one loop computes them all, element by element, and stores only the last
    /// one's result. The step reads `reads`, the operands computed at run time that no node
    /// of the chain computes (constants are embedded).
    Chain {
        nodes: Vec<NodeId>,
        reads: Vec<ValueId>,
    },
}

/// One kernel call: the places of its operands (`None` for constants, which kernels embed)
/// and of its results.
#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub kind: StepKind,
    /// The value a conversion converts (for [`StepKind::Convert`]).
    pub value: Option<ValueId>,
    pub operands: Vec<Option<(Place, Storage)>>,
    pub results: Vec<(Place, Storage)>,
    /// Scratch memory the step alone uses while it runs.
    pub workspace: Option<Place>,
}

impl Step {
    /// The places of the step function's pointer parameters, in order: its operands (`None`
    /// for constants), its results, then its workspace, if it has one.
    pub fn params(&self) -> impl Iterator<Item = Option<Place>> + '_ {
        self.operands
            .iter()
            .map(|o| o.map(|(p, _)| p))
            .chain(self.results.iter().map(|&(p, _)| Some(p)))
            .chain(self.workspace.map(Some))
    }
}

/// The kernels of a graph in order, and the scratch memory they need.
#[derive(Debug)]
pub(crate) struct Schedule {
    pub steps: Vec<Step>,
    pub scratch_bytes: usize,
}

/// Bytes of a tensor of `shape` stored as `storage`.
pub(crate) fn storage_bytes(shape: &[usize], storage: Storage) -> usize {
    match storage {
        Storage::F32 | Storage::I32 => shape.iter().product::<usize>() * 4,
        Storage::Bits => storage_bytes(shape, Storage::Planes(1)),
        Storage::Planes(planes) => {
            let (outer, channels, pixels) = bit_geometry(shape);
            outer * pixels * usize::from(planes) * words(channels) * 8
        }
    }
}

/// The most nodes of one elementwise chain: enough for a quantizer of many nodes, few enough
/// that a long line of nodes (an untrusted model's) compiles as many loops of bounded size.
const CHAIN_NODES: usize = 64;

/// The most planes a value is stored in: the bit-serial kernels' widest activations.
const MAX_PLANES: usize = 4;

/// The planes of a low-bit integer value (not bipolar), if few enough to store so.
pub(crate) fn planes_of(graph: &Graph, v: ValueId) -> Option<u8> {
    let (planes, _) = graph.value(v).ty.elem.int_type()?.planes()?;
    (planes <= MAX_PLANES).then_some(planes as u8)
}

/// A tensor as packed bits: `(batch, channels, pixels)`, the channel axis being axis 1 (the
/// last axis of a matrix).
pub(crate) fn bit_geometry(shape: &[usize]) -> (usize, usize, usize) {
    match shape {
        [] => (1, 1, 1),
        [k] => (1, *k, 1),
        [n, c, rest @ ..] => (*n, *c, rest.iter().product()),
    }
}

fn is_bipolar(graph: &Graph, v: ValueId) -> bool {
    graph.value(v).ty.elem == ElemType::Int(IntType::Bipolar)
}

fn is_integer(graph: &Graph, v: ValueId) -> bool {
    matches!(graph.value(v).ty.elem, ElemType::Int(t) if t.bits() <= 31)
}

/// Plans `graph`: one input and one output, as the ABI has.
pub(crate) fn schedule(graph: &Graph) -> Result<Schedule, BackendError> {
    let graph_error = |reason: String| BackendError::Graph {
        graph: graph.name.clone(),
        reason,
    };
    if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
        return Err(graph_error(format!(
            "the native ABI takes one input and one output; this graph has {} and {}",
            graph.inputs().len(),
            graph.outputs().len()
        )));
    }
    let order = graph.topo_order().map_err(|e| graph_error(e.to_string()))?;
    let users = users_of(graph, &order);

    let mut planner = Planner {
        graph,
        users: &users,
        steps: Vec::new(),
        buffers: Vec::new(),
        placed: HashMap::new(),
        fused: HashSet::new(),
        chains: HashMap::new(),
    };
    planner.plan_chains(&order);
    planner.placed.insert(
        (graph.inputs()[0], Storage::F32),
        (Location::Input, Storage::F32),
    );
    for &n in &order {
        if !planner.fused.contains(&n) {
            planner.node(n)?;
        }
    }
    // The result goes to the caller's output as f32.
    let out = graph.outputs()[0];
    let from = planner.operand(out, Storage::F32)?;
    planner.steps.push(PlannedStep {
        kind: StepKind::Convert,
        value: Some(out),
        operands: vec![from],
        results: vec![(Location::Output, Storage::F32)],
        workspace: None,
    });
    Ok(planner.finish())
}

fn users_of(graph: &Graph, order: &[NodeId]) -> HashMap<ValueId, Vec<NodeId>> {
    let mut users: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for &n in order {
        for &v in &graph.node(n).inputs {
            users.entry(v).or_default().push(n);
        }
    }
    users
}

/// A place before buffers have offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Input,
    Output,
    Buffer(usize),
}

struct PlannedStep {
    kind: StepKind,
    value: Option<ValueId>,
    operands: Vec<Option<(Location, Storage)>>,
    results: Vec<(Location, Storage)>,
    workspace: Option<Location>,
}

struct Buffer {
    bytes: usize,
    first: usize,
    last: usize,
}

struct Planner<'g> {
    graph: &'g Graph,
    users: &'g HashMap<ValueId, Vec<NodeId>>,
    steps: Vec<PlannedStep>,
    buffers: Vec<Buffer>,
    /// Where each (value, storage) pair has been materialized.
    placed: HashMap<(ValueId, Storage), (Location, Storage)>,
    /// Thresholds already computed by the output stage of their layer, and elementwise nodes
    /// computed by a chain.
    fused: HashSet<NodeId>,
    /// The elementwise chains, by their last node (see [`StepKind::Chain`]).
    chains: HashMap<NodeId, Vec<NodeId>>,
}

impl Planner<'_> {
    fn new_buffer(&mut self, bytes: usize) -> Location {
        let step = self.steps.len();
        self.buffers.push(Buffer {
            bytes,
            first: step,
            last: step,
        });
        Location::Buffer(self.buffers.len() - 1)
    }

    /// Marks a location as read by the step about to be pushed.
    fn touch(&mut self, loc: Location) {
        if let Location::Buffer(b) = loc {
            let step = self.steps.len();
            self.buffers[b].last = self.buffers[b].last.max(step);
        }
    }

    /// The value in the wanted storage, converting (once) if it is stored otherwise.
    fn operand(
        &mut self,
        v: ValueId,
        want: Storage,
    ) -> Result<Option<(Location, Storage)>, BackendError> {
        if matches!(self.graph.value(v).def, ValueDef::Const(_)) {
            return Ok(None);
        }
        if let Some(&placed) = self.placed.get(&(v, want)) {
            self.touch(placed.0);
            return Ok(Some(placed));
        }
        let planes = planes_of(self.graph, v).map(Storage::Planes);
        let have = [
            Some(Storage::F32),
            Some(Storage::I32),
            Some(Storage::Bits),
            planes,
        ]
        .into_iter()
        .flatten()
        .find_map(|s| self.placed.get(&(v, s)).copied())
        .ok_or_else(|| BackendError::Graph {
            graph: self.graph.name.clone(),
            reason: format!(
                "value '{}' is used before it is computed",
                self.graph.value(v).name
            ),
        })?;
        self.touch(have.0);
        let shape = self.graph.value(v).ty.shape.clone();
        let loc = self.new_buffer(storage_bytes(&shape, want));
        self.steps.push(PlannedStep {
            kind: StepKind::Convert,
            value: Some(v),
            operands: vec![Some(have)],
            results: vec![(loc, want)],
            workspace: None,
        });
        self.placed.insert((v, want), (loc, want));
        self.touch(loc);
        Ok(Some((loc, want)))
    }

    /// Whether every use of `v` can read packed bits.
    fn wants_bits(&self, v: ValueId) -> bool {
        if !is_bipolar(self.graph, v) || self.graph.outputs().contains(&v) {
            return false;
        }
        let Some(users) = self.users.get(&v) else {
            return false;
        };
        users.iter().all(|&u| {
            let node = self.graph.node(u);
            match &node.op {
                Op::XnorConv(_) => node.inputs[0] == v,
                Op::XnorMatMul => node.inputs[0] == v && self.graph.value(v).ty.shape.len() == 2,
                Op::MaxPool(_) | Op::MinMaxPool { .. } => self.wants_bits(node.outputs[0]),
                Op::Reshape { .. } => {
                    bits_reshape_is_free(self.graph, v, node.outputs[0])
                        && self.wants_bits(node.outputs[0])
                }
                _ => false,
            }
        })
    }

    /// Whether every use of `v` can read bit planes: the activations of bit-serial layers.
    fn wants_planes(&self, v: ValueId) -> bool {
        if planes_of(self.graph, v).is_none() || self.graph.outputs().contains(&v) {
            return false;
        }
        let Some(users) = self.users.get(&v) else {
            return false;
        };
        users.iter().all(|&u| {
            let node = self.graph.node(u);
            match &node.op {
                Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => {
                    node.inputs[0] == v && bit_serial_planes(self.graph, node).is_some()
                }
                Op::Reshape { .. } => {
                    bits_reshape_is_free(self.graph, v, node.outputs[0])
                        && self.wants_planes(node.outputs[0])
                }
                _ => false,
            }
        })
    }

    /// The fused threshold (and MaxPool after it) that a bit-serial layer `n` runs in its
    /// output stage, and that stage: bits for a bipolar output, the planes of the levels for
    /// a low-bit integer one (see [`Levels`]). A pool is taken where the levels grow with
    /// the count, so that the largest count is the largest level.
    fn fusable_planes_stage(&self, n: NodeId) -> Option<(NodeId, Option<NodeId>, OutputStage)> {
        let node = self.graph.node(n);
        bit_serial_planes(self.graph, node)?;
        let t = self.fused_after(n)?;
        let out = self.graph.node(t).outputs[0];
        let unit = accumulator_unit(&self.graph.value(node.outputs[0]).ty.elem);
        // The kernels take each pooled pixel's whole window: a ceil-mode pool's partial
        // windows at the edge run as their own step.
        let pool = self.fused_after(t).filter(|&p| {
            let pool = self.graph.node(p);
            let (conv, pooled) = (self.graph.value(out), self.graph.value(pool.outputs[0]));
            let whole =
                |axis: usize, window: usize| pooled.ty.shape[axis] * window <= conv.ty.shape[axis];
            matches!(&pool.op, Op::MaxPool(a) if whole(2, a.kernel[0]) && whole(3, a.kernel[1]))
                && matches!(node.op, Op::BitSerialConv { .. })
        });
        if is_bipolar(self.graph, out) {
            let stage = OutputStage::bits(self.graph, self.graph.node(t), unit).ok()?;
            let pool = pool.filter(|&p| self.wants_bits(self.graph.node(p).outputs[0]));
            let last = pool.map_or(out, |p| self.graph.node(p).outputs[0]);
            return self.wants_bits(last).then_some((t, pool, stage));
        }
        let levels = Levels::of(self.graph, self.graph.node(t), unit).ok()??;
        // Planes are written even for a consumer that wants f32: one conversion of the
        // small result costs less than a threshold step on i32 sums.
        let pool = pool.filter(|&p| {
            levels.alpha >= 0 && planes_of(self.graph, self.graph.node(p).outputs[0]).is_some()
        });
        let last = pool.map_or(out, |p| self.graph.node(p).outputs[0]);
        planes_of(self.graph, last).map(|_| (t, pool, OutputStage::Levels(levels)))
    }

    /// The node that `fuse-output-stages` put in the output stage after `n`, if any.
    fn fused_after(&self, n: NodeId) -> Option<NodeId> {
        let out = *self.graph.node(n).outputs.first()?;
        let user = self.graph.only_user(out)?;
        self.graph.node(user).fused.then_some(user)
    }

    /// The fused threshold after layer `n` that a fused kernel of ours runs, and its output
    /// stage: XNOR layers (one threshold per channel, writing bits) and the first layer on
    /// `i16` lanes (bits, or the planes of a multi-threshold's levels). Other fused stages
    /// run as their own steps, one after the other.
    fn fusable_threshold(&self, n: NodeId) -> Result<Option<(NodeId, OutputStage)>, BackendError> {
        let node = self.graph.node(n);
        let int16 = match &node.op {
            Op::XnorConv(_) | Op::XnorMatMul => false,
            Op::Conv(attrs) if crate::first_layer::int16_applies(self.graph, node, attrs) => true,
            _ => return Ok(None),
        };
        let Some(t) = self.fused_after(n) else {
            return Ok(None);
        };
        let threshold = self.graph.node(t);
        let out = threshold.outputs[0];
        let unit = accumulator_unit(&self.graph.value(node.outputs[0]).ty.elem);
        let one_threshold = matches!(
            self.graph.value(threshold.inputs[1]).ty.shape.as_slice(),
            [_, 1]
        );
        if one_threshold && self.wants_bits(out) {
            // `fuse-output-stages` marks only constant thresholds per channel of axis 1,
            // whose bounds always build: an error here is a broken invariant, reported
            // rather than run unfused.
            return Ok(Some((t, OutputStage::bits(self.graph, threshold, unit)?)));
        }
        if !(int16 && planes_of(self.graph, out).is_some() && self.wants_planes(out)) {
            return Ok(None);
        }
        let levels = Levels::of(self.graph, threshold, unit).ok().flatten();
        Ok(levels.map(|l| (t, OutputStage::Levels(l))))
    }

    /// The fused MaxPool after fused threshold `t` that the XNOR output stage runs: each
    /// output pixel's bits are ORed into its one pooled pixel; the positions past the last
    /// whole window are not computed at all. (A `minmaxpool` runs as its own step.)
    fn fusable_pool(&self, t: NodeId) -> Option<NodeId> {
        let pool = self.fused_after(t)?;
        let node = self.graph.node(pool);
        (matches!(node.op, Op::MaxPool(_)) && self.wants_bits(node.outputs[0])).then_some(pool)
    }

    fn node(&mut self, n: NodeId) -> Result<(), BackendError> {
        let node = self.graph.node(n);
        let fused = match node.op {
            Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => self.fusable_planes_stage(n),
            Op::XnorConv(_) => self
                .fusable_threshold(n)?
                .map(|(t, stage)| (t, self.fusable_pool(t), stage)),
            _ => self
                .fusable_threshold(n)?
                .map(|(t, stage)| (t, None, stage)),
        };
        if let Some((t, pool, stage)) = fused {
            let out_storage = match &stage {
                OutputStage::Levels(levels) => Storage::Planes(levels.planes as u8),
                _ => Storage::Bits,
            };
            let inputs: Vec<Storage> = match node.op {
                Op::Conv(_) => vec![Storage::F32; node.inputs.len()],
                Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => {
                    let a = bit_serial_planes(self.graph, node).expect("checked by the stage");
                    vec![Storage::Planes(a), Storage::F32]
                }
                _ => vec![Storage::Bits; node.inputs.len()],
            };
            let mut operands = Vec::with_capacity(inputs.len());
            for (&v, &s) in node.inputs.iter().zip(&inputs) {
                operands.push(self.operand(v, s)?);
            }
            let last = pool.unwrap_or(t);
            let out = self.graph.node(last).outputs[0];
            let shape = self.graph.value(out).ty.shape.clone();
            let loc = self.new_buffer(storage_bytes(&shape, out_storage));
            self.placed.insert((out, out_storage), (loc, out_storage));
            self.steps.push(PlannedStep {
                kind: StepKind::Fused {
                    linear: n,
                    threshold: t,
                    pool,
                    stage,
                },
                value: None,
                operands,
                results: vec![(loc, out_storage)],
                workspace: None,
            });
            self.fused.insert(t);
            self.fused.extend(pool);
            return Ok(());
        }
        if let Some(nodes) = self.chains.remove(&n) {
            let inside: HashSet<ValueId> = nodes
                .iter()
                .map(|&m| self.graph.node(m).outputs[0])
                .collect();
            let mut reads: Vec<ValueId> = Vec::new();
            for &m in &nodes {
                for &v in &self.graph.node(m).inputs {
                    let constant = matches!(self.graph.value(v).def, ValueDef::Const(_));
                    if !constant && !inside.contains(&v) && !reads.contains(&v) {
                        reads.push(v);
                    }
                }
            }
            // An accumulator is read as it is stored, each element converted in the loop.
            let mut operands = Vec::with_capacity(reads.len());
            for &v in &reads {
                let ints = self.placed.contains_key(&(v, Storage::I32))
                    && !self.placed.contains_key(&(v, Storage::F32));
                let storage = if ints { Storage::I32 } else { Storage::F32 };
                operands.push(self.operand(v, storage)?);
            }
            let out = node.outputs[0];
            let shape = self.graph.value(out).ty.shape.clone();
            let loc = self.new_buffer(storage_bytes(&shape, Storage::F32));
            self.placed.insert((out, Storage::F32), (loc, Storage::F32));
            self.steps.push(PlannedStep {
                kind: StepKind::Chain { nodes, reads },
                value: None,
                operands,
                results: vec![(loc, Storage::F32)],
                workspace: None,
            });
            return Ok(());
        }
        let first_input = node.inputs.first().copied();
        let input_storage = |p: &Self, v: ValueId| {
            let planes = planes_of(p.graph, v).map(Storage::Planes);
            [
                Some(Storage::Bits),
                planes,
                Some(Storage::I32),
                Some(Storage::F32),
            ]
            .into_iter()
            .flatten()
            .find(|&s| p.placed.contains_key(&(v, s)))
        };
        // The storage each operand is read in, and each result written in.
        let (operands, results): (Vec<Storage>, Vec<Storage>) = match &node.op {
            Op::XnorConv(_) | Op::XnorMatMul => {
                (vec![Storage::Bits, Storage::Bits], vec![Storage::I32])
            }
            Op::BitSerialMatMul { .. } | Op::BitSerialConv { .. } => {
                let a = match bit_serial_planes(self.graph, node) {
                    Some(p) => Storage::Planes(p),
                    None => {
                        return Err(BackendError::unsupported(
                            node,
                            "the native bit-serial kernels read 1-4 bit planes of a 2-D \
                             matrix or an (N, C, spatial...) image",
                        ))
                    }
                };
                (vec![a, Storage::F32], vec![Storage::I32])
            }
            Op::Threshold(_) | Op::MultiThreshold(_) => {
                let acc = match first_input.and_then(|v| input_storage(self, v)) {
                    Some(Storage::I32) => Storage::I32,
                    _ => Storage::F32,
                };
                let out = if self.wants_bits(node.outputs[0]) {
                    Storage::Bits
                } else if self.wants_planes(node.outputs[0]) {
                    Storage::Planes(planes_of(self.graph, node.outputs[0]).expect("wanted"))
                } else {
                    Storage::F32
                };
                let mut ops = vec![acc];
                ops.resize(node.inputs.len(), Storage::F32);
                (ops, vec![out])
            }
            Op::BipolarQuant => {
                let out = if self.wants_bits(node.outputs[0]) {
                    Storage::Bits
                } else {
                    Storage::F32
                };
                (vec![Storage::F32; node.inputs.len()], vec![out])
            }
            Op::MaxPool(_) | Op::MinMaxPool { .. } => {
                let s = match first_input.and_then(|v| input_storage(self, v)) {
                    Some(Storage::Bits) if self.wants_bits(node.outputs[0]) => Storage::Bits,
                    _ => Storage::F32,
                };
                (vec![s], vec![s])
            }
            Op::Reshape { .. } => {
                // A reshape is a view: the result shares the operand's buffer.
                let v = node.inputs[0];
                let out = node.outputs[0];
                let s = match input_storage(self, v) {
                    Some(s @ (Storage::Bits | Storage::Planes(_)))
                        if bits_reshape_is_free(self.graph, v, out) =>
                    {
                        s
                    }
                    Some(Storage::I32) => Storage::I32,
                    _ => Storage::F32,
                };
                if let Some(placed) = self.operand(v, s)? {
                    self.placed.insert((out, s), placed);
                }
                return Ok(());
            }
            _ => (
                vec![Storage::F32; node.inputs.len()],
                vec![Storage::F32; node.outputs.len()],
            ),
        };
        let mut planned_operands = Vec::with_capacity(operands.len());
        for (&v, &s) in node.inputs.iter().zip(&operands) {
            planned_operands.push(self.operand(v, s)?);
        }
        let mut planned_results = Vec::with_capacity(results.len());
        for (&v, &s) in node.outputs.iter().zip(&results) {
            if is_integer(self.graph, v) && s == Storage::I32 || s != Storage::I32 {
                let shape = self.graph.value(v).ty.shape.clone();
                let loc = self.new_buffer(storage_bytes(&shape, s));
                self.placed.insert((v, s), (loc, s));
                planned_results.push((loc, s));
            } else {
                return Err(BackendError::unsupported(
                    node,
                    format!(
                        "the accumulator type {} does not fit 31 bits",
                        self.graph.value(v).ty.elem
                    ),
                ));
            }
        }
        // A convolution that stages its input gets a workspace of its own.
        let workspace = match &node.op {
            Op::Conv(attrs) => ColumnConv::scheduled(self.graph, node, attrs, true)
                .and_then(|plan| plan.workspace_bytes())
                .map(|bytes| self.new_buffer(bytes)),
            _ => None,
        };
        self.steps.push(PlannedStep {
            kind: StepKind::Node(n),
            value: None,
            operands: planned_operands,
            results: planned_results,
            workspace,
        });
        Ok(())
    }

    /// Whether `m` can be a node of an elementwise chain: an elementwise op of one result
    /// whose operands but the first are constants, or, for arithmetic and comparisons, any
    /// value. (A BipolarQuant writing bits packs them: not a float chain's node.)
    fn chains_with(&self, m: NodeId) -> bool {
        let node = self.graph.node(m);
        let constant = |v: &ValueId| matches!(self.graph.value(*v).def, ValueDef::Const(_));
        let op = matches!(node.op, elementwise_op!())
            && !(matches!(node.op, Op::BipolarQuant) && self.wants_bits(node.outputs[0]));
        let any_operands = matches!(node.op, Op::Binary(_) | Op::Compare(_));
        op && (any_operands || node.inputs.iter().skip(1).all(constant)) && node.outputs.len() == 1
    }

    /// Finds the elementwise chains (see [`StepKind::Chain`]) of two nodes or more. Each
    /// grows back from its last node: a node joins when the chain reads its result, no one
    /// else does, and the result has the chain's shape; up to [`CHAIN_NODES`] nodes.
    fn plan_chains(&mut self, order: &[NodeId]) {
        let position: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let mut taken: HashSet<NodeId> = HashSet::new();
        for &last in order.iter().rev() {
            if taken.contains(&last) || !self.chains_with(last) {
                continue;
            }
            let shape = &self.graph.value(self.graph.node(last).outputs[0]).ty.shape;
            let mut members: HashSet<NodeId> = HashSet::from([last]);
            // Each joining node's operands are looked at; one whose users are not all in
            // the chain yet is looked at again when the last of them joins.
            let mut joined = vec![last];
            while let Some(m) = joined.pop() {
                for &v in &self.graph.node(m).inputs {
                    let Some(p) = self.graph.producer(v) else {
                        continue;
                    };
                    let joins = members.len() < CHAIN_NODES
                        && !members.contains(&p)
                        && !taken.contains(&p)
                        && self.chains_with(p)
                        && self.graph.value(v).ty.shape == *shape
                        && !self.graph.outputs().contains(&v)
                        && self.users[&v].iter().all(|u| members.contains(u));
                    if joins {
                        members.insert(p);
                        joined.push(p);
                    }
                }
            }
            if members.len() < 2 {
                continue;
            }
            let mut nodes: Vec<NodeId> = members.into_iter().collect();
            nodes.sort_by_key(|n| position[n]);
            taken.extend(nodes.iter().copied());
            self.fused
                .extend(nodes.iter().copied().filter(|&m| m != last));
            self.chains.insert(last, nodes);
        }
    }

    /// Gives every buffer an offset, reusing memory of buffers no longer live (first fit).
    fn finish(self) -> Schedule {
        const ALIGN: usize = 64;
        let mut offsets = vec![0usize; self.buffers.len()];
        let mut scratch = 0usize;
        for (i, buf) in self.buffers.iter().enumerate() {
            let mut busy: Vec<(usize, usize)> = self.buffers[..i]
                .iter()
                .enumerate()
                .filter(|(_, other)| other.first <= buf.last && buf.first <= other.last)
                .map(|(j, other)| (offsets[j], offsets[j] + other.bytes))
                .collect();
            busy.sort_unstable();
            let mut at = 0usize;
            for (start, end) in busy {
                if at + buf.bytes <= start {
                    break;
                }
                at = at.max(end.next_multiple_of(ALIGN));
            }
            offsets[i] = at;
            scratch = scratch.max(at + buf.bytes);
        }
        let place = |(loc, s): (Location, Storage)| {
            (
                match loc {
                    Location::Input => Place::Input,
                    Location::Output => Place::Output,
                    Location::Buffer(b) => Place::Scratch(offsets[b]),
                },
                s,
            )
        };
        let steps = self
            .steps
            .into_iter()
            .map(|s| Step {
                kind: s.kind,
                value: s.value,
                operands: s.operands.into_iter().map(|o| o.map(place)).collect(),
                results: s.results.into_iter().map(place).collect(),
                workspace: s.workspace.map(|w| place((w, Storage::F32)).0),
            })
            .collect();
        Schedule {
            steps,
            scratch_bytes: scratch.next_multiple_of(ALIGN),
        }
    }
}

/// The planes a bit-serial layer reads its activations in: those of their type, for a
/// 2-D matrix product or a convolution of any number of spatial axes.
fn bit_serial_planes(graph: &Graph, node: &bnnc_ir::Node) -> Option<u8> {
    let rank = graph.value(node.inputs[0]).ty.shape.len();
    match node.op {
        Op::BitSerialConv { .. } if rank >= 3 => planes_of(graph, node.inputs[0]),
        Op::BitSerialMatMul { .. } if rank == 2 => planes_of(graph, node.inputs[0]),
        _ => None,
    }
}

/// Whether reshaping packed bits from `from` to `to` leaves the words as they are: both are
/// one pixel of the same channels per batch index.
fn bits_reshape_is_free(graph: &Graph, from: ValueId, to: ValueId) -> bool {
    let (a, b) = (
        bit_geometry(&graph.value(from).ty.shape),
        bit_geometry(&graph.value(to).ty.shape),
    );
    a == b && a.2 == 1
}
