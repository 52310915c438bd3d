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

use crate::BackendError;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Storage {
    /// `f32`, row-major in the IR's shape.
    F32,
    /// `i32`, row-major (integer accumulators).
    I32,
    /// Bipolar values as bits, channels-last ([`bnnc_runtime::packing`]).
    Bits,
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
    /// An XNOR-popcount layer whose one user, a threshold, runs in its output stage: the
    /// step reads the layer's operands and writes the threshold's packed bits, or, with a
    /// `pool`, the bits of the MaxPool after the threshold (OR into the pooled pixel).
    Fused {
        linear: NodeId,
        threshold: NodeId,
        pool: Option<NodeId>,
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
        Storage::Bits => {
            let (outer, channels, pixels) = bit_geometry(shape);
            outer * pixels * words(channels) * 8
        }
    }
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
    };
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
    /// Thresholds already computed by the output stage of their layer.
    fused: HashSet<NodeId>,
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
        let have = [Storage::F32, Storage::I32, Storage::Bits]
            .into_iter()
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
                Op::XnorConv(attrs) => node.inputs[0] == v && attrs.group == 1,
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

    /// The node that `fuse-output-stages` put in the output stage after `n`, if any.
    fn fused_after(&self, n: NodeId) -> Option<NodeId> {
        let out = *self.graph.node(n).outputs.first()?;
        let user = self.graph.only_user(out)?;
        self.graph.node(user).fused.then_some(user)
    }

    /// The fused threshold after layer `n` that a fused kernel of ours runs: XNOR layers and
    /// the first layer on `i16` lanes, one threshold per channel, writing bits. Other fused
    /// stages run as their own steps, one after the other.
    fn fusable_threshold(&self, n: NodeId) -> Option<NodeId> {
        let node = self.graph.node(n);
        let has_kernel = match &node.op {
            Op::XnorConv(_) | Op::XnorMatMul => true,
            Op::Conv(attrs) => crate::emit::linear::int16_applies(self.graph, node, attrs),
            _ => false,
        };
        let t = self.fused_after(n).filter(|_| has_kernel)?;
        let one_threshold = matches!(
            self.graph
                .value(self.graph.node(t).inputs[1])
                .ty
                .shape
                .as_slice(),
            [_, 1]
        );
        (one_threshold && self.wants_bits(self.graph.node(t).outputs[0])).then_some(t)
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
        if let Some(t) = self.fusable_threshold(n) {
            let mut operands = Vec::with_capacity(2);
            let input = match node.op {
                Op::Conv(_) => Storage::F32,
                _ => Storage::Bits,
            };
            for &v in &node.inputs {
                operands.push(self.operand(v, input)?);
            }
            let pool = match node.op {
                Op::XnorConv(_) => self.fusable_pool(t),
                _ => None,
            };
            let last = pool.unwrap_or(t);
            let out = self.graph.node(last).outputs[0];
            let shape = self.graph.value(out).ty.shape.clone();
            let loc = self.new_buffer(storage_bytes(&shape, Storage::Bits));
            self.placed
                .insert((out, Storage::Bits), (loc, Storage::Bits));
            self.steps.push(PlannedStep {
                kind: StepKind::Fused {
                    linear: n,
                    threshold: t,
                    pool,
                },
                value: None,
                operands,
                results: vec![(loc, Storage::Bits)],
            });
            self.fused.insert(t);
            self.fused.extend(pool);
            return Ok(());
        }
        let first_input = node.inputs.first().copied();
        let input_storage = |p: &Self, v: ValueId| {
            [Storage::Bits, Storage::I32, Storage::F32]
                .into_iter()
                .find(|&s| p.placed.contains_key(&(v, s)))
        };
        // The storage each operand is read in, and each result written in.
        let (operands, results): (Vec<Storage>, Vec<Storage>) = match &node.op {
            Op::XnorConv(_) | Op::XnorMatMul => {
                (vec![Storage::Bits, Storage::Bits], vec![Storage::I32])
            }
            Op::BitSerialMatMul { .. } | Op::BitSerialConv { .. } => {
                (vec![Storage::F32, Storage::F32], vec![Storage::I32])
            }
            Op::Threshold(_) | Op::MultiThreshold(_) => {
                let acc = match first_input.and_then(|v| input_storage(self, v)) {
                    Some(Storage::I32) => Storage::I32,
                    _ => Storage::F32,
                };
                let out = if self.wants_bits(node.outputs[0]) {
                    Storage::Bits
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
                    Some(Storage::Bits) if bits_reshape_is_free(self.graph, v, out) => {
                        Storage::Bits
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
        self.steps.push(PlannedStep {
            kind: StepKind::Node(n),
            value: None,
            operands: planned_operands,
            results: planned_results,
        });
        Ok(())
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
            })
            .collect();
        Schedule {
            steps,
            scratch_bytes: scratch.next_multiple_of(ALIGN),
        }
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
