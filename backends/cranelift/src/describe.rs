//! The schedule described for people and tests, without compiling: each step's label (as
//! profiles show it), its kernel in words (`bnnc inspect --target CPU`) and by name (the
//! filetests' `; kernels:` line), and where its operands and results are stored.

use bnnc_ir::{Graph, NodeId, Op};

use crate::column_conv::{ColumnConv, ColumnSum};
use crate::schedule::{self, Place, Step, StepKind, Storage};
use crate::BackendError;

/// One step of a compiled model, for profiles.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// The node it computes (for a fused step, the linear layer's), or `None` for a
    /// conversion between storages.
    pub node: Option<NodeId>,
    /// What it is, e.g. `xnor_conv+threshold Conv_1` or `convert`.
    pub label: String,
}

/// One step of the native schedule, as `bnnc inspect --target CPU` shows it: the kernel it
/// runs and where its operands and results are stored.
#[derive(Clone, Debug)]
pub struct StepPlan {
    /// The step, as in profiles: `xnor_conv+threshold Conv_1`, `convert`.
    pub label: String,
    /// The kernel's choice, in words: `int16 lanes`, `exact integer sums`, ...
    pub kernel: &'static str,
    /// Per operand: `f32`, `i32`, `bits` or `N planes`, at `input`, `output` or
    /// `scratch+OFFSET`; `const` for constants the kernel embeds.
    pub operands: Vec<String>,
    /// Per result, as the operands.
    pub results: Vec<String>,
}

/// The storage plan of a graph: its steps and the scratch memory one call needs.
#[derive(Clone, Debug)]
pub struct StoragePlan {
    pub steps: Vec<StepPlan>,
    pub scratch_bytes: usize,
}

/// The schedule `compile` would follow for `graph`, without compiling it: the decisions
/// (storages, fused stages, the first layer on `i16` lanes) made visible.
pub fn storage_plan(graph: &Graph) -> Result<StoragePlan, BackendError> {
    let schedule = schedule::schedule(graph)?;
    let place = |(p, s): &(Place, Storage)| {
        let storage = storage_name(*s);
        match p {
            Place::Input => format!("{storage} input"),
            Place::Output => format!("{storage} output"),
            Place::Scratch(at) => format!("{storage} scratch+{at}"),
        }
    };
    let steps = schedule
        .steps
        .iter()
        .map(|step| StepPlan {
            label: step_info(graph, step).label,
            kernel: kernel_choice(graph, step),
            operands: step
                .operands
                .iter()
                .map(|o| o.as_ref().map_or_else(|| "const".into(), place))
                .collect(),
            results: step.results.iter().map(place).collect(),
        })
        .collect();
    Ok(StoragePlan {
        steps,
        scratch_bytes: schedule.scratch_bytes,
    })
}

/// The kernel each step of `graph`'s schedule runs, in order, by name: the op a step
/// computes, joined by those its output stage runs (`xnor_conv+threshold+maxpool`;
/// `int16_conv+threshold` for the first layer on `i16` lanes), or a conversion between
/// storages (`convert(f32->bits)`). Filetests state these (`; kernels:`), so that a change
/// of the schedule that moves a graph off a kernel is seen, not only a wrong number.
pub fn step_kernels(graph: &Graph) -> Result<Vec<String>, BackendError> {
    let schedule = schedule::schedule(graph)?;
    Ok(schedule
        .steps
        .iter()
        .map(|step| kernel_name(graph, step))
        .collect())
}

/// A step's kernel by name (see [`step_kernels`]).
fn kernel_name(graph: &Graph, step: &Step) -> String {
    let op = |n: NodeId| graph.node(n).op.name();
    match &step.kind {
        StepKind::Node(n) => op(*n).to_string(),
        StepKind::Chain { nodes, .. } => nodes.iter().map(|&n| op(n)).collect::<Vec<_>>().join("+"),
        StepKind::Fused {
            linear,
            threshold,
            pool,
            ..
        } => {
            // A fused Conv is the first layer on `i16` lanes: no other Conv is fused.
            let layer = match graph.node(*linear).op {
                Op::Conv(_) => "int16_conv",
                _ => op(*linear),
            };
            let pool = pool.map_or(String::new(), |p| format!("+{}", op(p)));
            format!("{layer}+{}{pool}", op(*threshold))
        }
        StepKind::Convert => {
            let from = step.operands[0].map_or(Storage::F32, |(_, s)| s);
            format!(
                "convert({}->{})",
                storage_name(from),
                storage_name(step.results[0].1)
            )
        }
    }
}

/// A storage as the plan and the kernel names write it.
fn storage_name(storage: Storage) -> String {
    match storage {
        Storage::F32 => "f32".into(),
        Storage::I32 => "i32".into(),
        Storage::Bits => "bits".into(),
        Storage::Planes(n) => format!("{n} planes"),
    }
}

/// What a step's kernel does, in words.
fn kernel_choice(graph: &Graph, step: &Step) -> &'static str {
    let linear = match &step.kind {
        StepKind::Convert => return "storage conversion",
        StepKind::Chain { .. } => return "elementwise, one loop for the chain",
        StepKind::Fused { linear, .. } => *linear,
        StepKind::Node(n) => *n,
    };
    let node = graph.node(linear);
    let fused = matches!(step.kind, StepKind::Fused { .. });
    match &node.op {
        // A fused Conv is the first layer on `i16` lanes: no other Conv is fused.
        Op::Conv(_) if fused => "int16 lanes, thresholds in the output stage",
        Op::XnorConv(_) | Op::XnorMatMul if fused => {
            "XNOR-popcount, thresholds in the output stage"
        }
        Op::XnorConv(_) | Op::XnorMatMul => "XNOR-popcount",
        Op::BitSerialConv { .. } if on_lookups(graph, step) => {
            "bit-serial table lookups (byte shuffles: SSSE3, NEON), thresholds in the output stage"
        }
        Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } if fused => {
            "bit-serial plane popcounts, thresholds in the output stage"
        }
        Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => "bit-serial plane popcounts",
        Op::Conv(attrs) => {
            match ColumnConv::scheduled(graph, node, attrs, step.workspace.is_some()) {
                Some(plan) => match plan.sum {
                    ColumnSum::Exact => "exact integer sums, four columns to a vector",
                    ColumnSum::Integers(_) => "integer sums scaled once, four columns to a vector",
                    ColumnSum::Fma => {
                        "fused multiply-adds in MLAS's order, four columns to a vector"
                    }
                },
                None if graph.value(node.outputs[0]).ty.elem != bnnc_ir::ElemType::F32 => {
                    "exact integer sums"
                }
                None => "float sums in MLAS's order",
            }
        }
        Op::Gemm(_) | Op::MatMul => {
            let out = &graph.value(node.outputs[0]).ty.elem;
            if crate::emit::on_byte_dots(graph, node) {
                "exact integer sums on byte dot products (VNNI; SSSE3 for 7-bit weights)"
            } else if *out != bnnc_ir::ElemType::F32 {
                "exact integer sums"
            } else {
                "float sums in MLAS's order"
            }
        }
        Op::Threshold(_) | Op::MultiThreshold(_) => "threshold comparisons",
        Op::MaxPool(_) | Op::MinMaxPool { .. } => "max/min (OR/AND on bits)",
        Op::AveragePool(_) | Op::GlobalAveragePool | Op::ReduceMean { .. } => {
            "sums in onnxruntime's order"
        }
        _ => "elementwise or data movement",
    }
}

/// Whether fused step `step` is a bit-serial convolution on table lookups where the target
/// shuffles bytes (SSSE3, aarch64).
fn on_lookups(graph: &Graph, step: &Step) -> bool {
    let StepKind::Fused {
        linear,
        threshold,
        pool,
        stage,
    } = &step.kind
    else {
        return false;
    };
    let t = graph.node(*threshold);
    let pool = pool.map(|p| crate::stage::BitPool::after(graph, t, graph.node(p)));
    crate::emit::on_lookups(graph, graph.node(*linear), stage, pool)
}

/// The profile's description of a step.
pub(crate) fn step_info(graph: &Graph, step: &Step) -> StepInfo {
    match &step.kind {
        StepKind::Node(n) => StepInfo {
            node: Some(*n),
            label: format!("{} {}", graph.node(*n).op.name(), graph.node(*n).name),
        },
        StepKind::Fused {
            linear,
            threshold,
            pool,
            ..
        } => StepInfo {
            node: Some(*linear),
            label: format!(
                "{}+{}{} {}",
                graph.node(*linear).op.name(),
                graph.node(*threshold).op.name(),
                if pool.is_some() { "+maxpool" } else { "" },
                graph.node(*linear).name
            ),
        },
        StepKind::Chain { nodes, .. } => {
            let op = |n: &NodeId| graph.node(*n).op.name();
            // A long chain (a quantizer of a dozen nodes) is named by its ends.
            let ops = match nodes.as_slice() {
                [first, .., last] if nodes.len() > 4 => {
                    format!("{}+..+{} ({} ops)", op(first), op(last), nodes.len())
                }
                _ => nodes.iter().map(op).collect::<Vec<_>>().join("+"),
            };
            StepInfo {
                node: Some(nodes[0]),
                label: format!("{ops} {}", graph.node(nodes[0]).name),
            }
        }
        StepKind::Convert => StepInfo {
            node: None,
            label: "convert".into(),
        },
    }
}
