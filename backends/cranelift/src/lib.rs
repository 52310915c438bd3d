//! bnnc's CPU backend: a graph after the passes becomes a native object through Cranelift,
//! and a shared library through the system's C compiler driver, exporting the ABI of
//! [`bnnc_runtime::abi`].
//!
//! `schedule` decides how each tensor is stored (packed bits for XNOR-popcount layers,
//! `i32` accumulators, `f32` otherwise) and where it lives in one scratch buffer; `emit`
//! writes one function per step and the ABI functions around them; `describe` shows the
//! schedule's decisions to people and tests without compiling.

mod column_conv;
mod describe;
mod emit;
mod error;
mod first_layer;
mod groups;
mod header;
mod options;
mod peak;
mod provider;
mod schedule;
mod stage;
mod target;

use std::path::Path;
use std::process::Command;

use bnnc_ir::{ElemType, Graph, IntType};
use bnnc_runtime::abi::InputType;
use describe::step_info;
pub use describe::{step_kernels, storage_plan, StepInfo, StepPlan, StoragePlan};
pub use error::BackendError;
pub use groups::GroupWords;
pub use options::Options;
pub use peak::peak_object;
pub use provider::{
    CraneliftOnly, Int16ConvKernel, KernelLevels, KernelPool, KernelProvider, PlaneConvKernel,
    XnorConvKernel, XnorOutput,
};
pub use target::{is_host, parse_target, Cpu};
pub use target_lexicon::{Architecture, Triple};

/// A compiled model: the object file and its C header.
pub struct Compiled {
    pub object: Vec<u8>,
    pub header: String,
    /// Elements of one input sample (of `Options::input_type`).
    pub input_len: usize,
    /// f32 elements of one output sample.
    pub output_len: usize,
    /// Bytes of scratch memory one call allocates.
    pub scratch_bytes: usize,
    /// The steps in order.
    pub steps: Vec<StepInfo>,
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
    check_input_type(graph, options.input_type)?;
    let schedule = schedule::schedule(graph)?;
    let isa = target::isa(&options.triple, options.cpu)?;
    let input = &graph.value(graph.inputs()[0]).ty;
    let output = &graph.value(graph.outputs()[0]).ty;
    let spec = emit::ObjectSpec {
        name: &options.name,
        input_type: options.input_type,
        input_len: input.numel(),
        output_len: output.numel(),
        profile: options.profile,
        scalar_popcount: options.scalar_popcount,
        dump_clif: options.dump_clif.as_deref(),
    };
    // An empty output is a result like any other (the library writes nothing), but an
    // input sample must have elements: the ABI counts a batch's samples by its length.
    if spec.input_len == 0 {
        return Err(BackendError::Graph {
            graph: graph.name.clone(),
            reason: "an input of no elements has no native ABI (a batch is counted by its \
                     length in input samples)"
                .into(),
        });
    }
    let object = emit::emit_object(graph, &schedule, isa, &spec, provider)?;
    let steps = schedule.steps.iter().map(|s| step_info(graph, s)).collect();
    Ok(Compiled {
        steps,
        header: header::header(graph, &options.name, options.input_type),
        object,
        input_len: spec.input_len,
        output_len: spec.output_len,
        scratch_bytes: schedule.scratch_bytes,
    })
}

/// Whether every element of an `input_type` buffer, converted to float32, is a value the
/// graph's input may hold. Float32 buffers are always taken (their values are the caller's
/// business, as with the interpreter); integers must lie within an integer input's range,
/// since a kernel chosen for that range would compute something else outside it.
fn check_input_type(graph: &Graph, input_type: InputType) -> Result<(), BackendError> {
    // A graph without exactly one input is the schedule's to refuse.
    let (Some((lo, hi)), [input]) = (input_type.range(), graph.inputs()) else {
        return Ok(());
    };
    let value = graph.value(*input);
    let fits = match &value.ty.elem {
        ElemType::F32 => true,
        ElemType::Int(IntType::Bipolar) | ElemType::Scaled(..) => false,
        ElemType::Int(t) => i128::from(t.min()) <= lo && hi <= i128::from(t.max()),
    };
    if fits {
        return Ok(());
    }
    Err(BackendError::Graph {
        graph: graph.name.clone(),
        reason: format!(
            "input '{}' holds {} values; an input buffer of {input_type} ({lo}..={hi}) would \
             pass it others (choose a narrower --input-type, or float32)",
            value.name, value.ty.elem
        ),
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
