//! bnnc's CPU backend: a graph after the passes becomes a native object through Cranelift,
//! and a shared library through the system's C compiler driver, exporting the ABI of
//! [`bnnc_runtime::abi`].
//!
//! `schedule` decides how each tensor is stored (packed bits for XNOR-popcount layers,
//! `i32` accumulators, `f32` otherwise) and where it lives in one scratch buffer; `emit`
//! writes one function per step and the ABI functions around them.

mod emit;
mod error;
mod first_layer;
mod header;
mod options;
mod peak;
mod provider;
mod schedule;
mod stage;
mod target;

use std::path::Path;
use std::process::Command;

use bnnc_ir::{Graph, Op};
pub use error::BackendError;
pub use options::Options;
pub use peak::peak_object;
pub use provider::{
    CraneliftOnly, Int16ConvKernel, KernelLevels, KernelPool, KernelProvider, PlaneConvKernel,
    XnorConvKernel,
};
pub use target::{is_host, parse_target, Cpu};
pub use target_lexicon::{Architecture, Triple};

/// One step of a compiled model, for profiles.
#[derive(Clone, Debug)]
pub struct StepInfo {
    /// The node it computes (for a fused step, the linear layer's), or `None` for a
    /// conversion between storages.
    pub node: Option<bnnc_ir::NodeId>,
    /// What it is, e.g. `xnor_conv+threshold Conv_1` or `convert`.
    pub label: String,
}

/// A compiled model: the object file and its C header.
pub struct Compiled {
    pub object: Vec<u8>,
    pub header: String,
    /// f32 elements of one input sample.
    pub input_len: usize,
    /// f32 elements of one output sample.
    pub output_len: usize,
    /// Bytes of scratch memory one call allocates.
    pub scratch_bytes: usize,
    /// The steps in order.
    pub steps: Vec<StepInfo>,
}

/// One step of the native schedule, as `bnnc inspect --target CPU` shows it: the kernel it
/// runs and where its operands and results are stored.
#[derive(Clone, Debug)]
pub struct StepPlan {
    /// The step, as in profiles: `xnor_conv+threshold Conv_1`, `convert`.
    pub label: String,
    /// The kernel's choice, in words: `int16 lanes`, `exact integer sums`, ...
    pub kernel: &'static str,
    /// Per operand: `f32`, `i32` or `bits`, at `input`, `output` or `scratch+OFFSET`;
    /// `const` for constants the kernel embeds.
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
    let place = |(p, s): &(schedule::Place, schedule::Storage)| {
        let storage = match s {
            schedule::Storage::F32 => "f32".to_string(),
            schedule::Storage::I32 => "i32".to_string(),
            schedule::Storage::Bits => "bits".to_string(),
            schedule::Storage::Planes(n) => format!("{n} planes"),
        };
        match p {
            schedule::Place::Input => format!("{storage} input"),
            schedule::Place::Output => format!("{storage} output"),
            schedule::Place::Scratch(at) => format!("{storage} scratch+{at}"),
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

/// What a step's kernel does, in words.
fn kernel_choice(graph: &Graph, step: &schedule::Step) -> &'static str {
    let linear = match &step.kind {
        schedule::StepKind::Convert => return "storage conversion",
        schedule::StepKind::Fused { linear, .. } => *linear,
        schedule::StepKind::Node(n) => *n,
    };
    let node = graph.node(linear);
    let fused = matches!(step.kind, schedule::StepKind::Fused { .. });
    match &node.op {
        Op::Conv(attrs) if fused && first_layer::int16_applies(graph, node, attrs) => {
            "int16 lanes, thresholds in the output stage"
        }
        Op::XnorConv(_) | Op::XnorMatMul if fused => {
            "XNOR-popcount, thresholds in the output stage"
        }
        Op::XnorConv(_) | Op::XnorMatMul => "XNOR-popcount",
        Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } if fused => {
            "bit-serial plane popcounts, thresholds in the output stage"
        }
        Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => "bit-serial plane popcounts",
        Op::Conv(_) | Op::Gemm(_) | Op::MatMul => {
            let out = &graph.value(node.outputs[0]).ty.elem;
            if *out != bnnc_ir::ElemType::F32 {
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

/// The profile's description of a step.
fn step_info(graph: &Graph, step: &schedule::Step) -> StepInfo {
    match &step.kind {
        schedule::StepKind::Node(n) => StepInfo {
            node: Some(*n),
            label: format!("{} {}", graph.node(*n).op.name(), graph.node(*n).name),
        },
        schedule::StepKind::Fused {
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
        schedule::StepKind::Convert => StepInfo {
            node: None,
            label: "convert".into(),
        },
    }
}

/// Compiles an optimized graph.
pub fn compile(graph: &Graph, options: &Options) -> Result<Compiled, BackendError> {
    compile_with(graph, options, &mut CraneliftOnly)
}

/// Compiles an optimized graph, offering kernels to `provider`.
pub fn compile_with(
    graph: &Graph,
    options: &Options,
    provider: &mut dyn KernelProvider,
) -> Result<Compiled, BackendError> {
    if bnnc_runtime::abi::c_identifier(&options.name) != options.name {
        return Err(BackendError::Target(format!(
            "'{}' is not a C identifier",
            options.name
        )));
    }
    let schedule = schedule::schedule(graph)?;
    let isa = target::isa(&options.triple, options.cpu)?;
    let input = &graph.value(graph.inputs()[0]).ty;
    let output = &graph.value(graph.outputs()[0]).ty;
    let spec = emit::ObjectSpec {
        name: &options.name,
        input_len: input.numel(),
        output_len: output.numel(),
        profile: options.profile,
        scalar_popcount: options.scalar_popcount,
        dump_clif: options.dump_clif.as_deref(),
    };
    if spec.input_len == 0 || spec.output_len == 0 {
        return Err(BackendError::Graph {
            graph: graph.name.clone(),
            reason: "an empty input or output has no native ABI".into(),
        });
    }
    let object = emit::emit_object(graph, &schedule, isa, &spec, provider)?;
    let steps = schedule.steps.iter().map(|s| step_info(graph, s)).collect();
    Ok(Compiled {
        steps,
        header: header::header(graph, &options.name),
        object,
        input_len: spec.input_len,
        output_len: spec.output_len,
        scratch_bytes: schedule.scratch_bytes,
    })
}

/// Links objects into a shared library with the C compiler driver `cc` (libc for malloc and
/// free, libm for expf). Which driver is the caller's choice: library crates read no
/// environment.
pub fn link_shared_library_with(
    cc: &str,
    objects: &[&Path],
    out: &Path,
) -> Result<(), BackendError> {
    let status = Command::new(cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .args(objects)
        .arg("-lm")
        .status()
        .map_err(|e| BackendError::Link(format!("could not run '{cc}': {e}")))?;
    if !status.success() {
        return Err(BackendError::Link(format!("'{cc}' failed ({status})")));
    }
    Ok(())
}
