//! bnnc's CPU backend: a graph after the passes becomes a native object through Cranelift,
//! and a shared library through the system's C compiler driver, exporting the ABI of
//! [`bnnc_runtime::abi`].
//!
//! [`schedule`] decides how each tensor is stored (packed bits for XNOR-popcount layers,
//! `i32` accumulators, `f32` otherwise) and where it lives in one scratch buffer; [`emit`]
//! writes one function per step and the ABI functions around them.

mod emit;
mod error;
mod header;
mod schedule;
mod target;

use std::path::Path;
use std::process::Command;

use bnnc_ir::Graph;
pub use error::BackendError;
pub use target::{is_host, parse_target, Cpu};
pub use target_lexicon::Triple;

/// What to build for.
#[derive(Clone, Debug)]
pub struct Options {
    pub triple: Triple,
    pub cpu: Cpu,
    /// The model's name: a C identifier, the prefix of the exported symbols.
    pub name: String,
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
}

/// Compiles an optimized graph.
pub fn compile(graph: &Graph, options: &Options) -> Result<Compiled, BackendError> {
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
    };
    if spec.input_len == 0 || spec.output_len == 0 {
        return Err(BackendError::Graph {
            graph: graph.name.clone(),
            reason: "an empty input or output has no native ABI".into(),
        });
    }
    let object = emit::emit_object(graph, &schedule, isa, &spec)?;
    Ok(Compiled {
        header: header::header(graph, &options.name),
        object,
        input_len: spec.input_len,
        output_len: spec.output_len,
        scratch_bytes: schedule.scratch_bytes,
    })
}

/// Links an object into a shared library with the system's `cc` (libc for malloc and free,
/// libm for expf).
pub fn link_shared_library(object: &Path, out: &Path) -> Result<(), BackendError> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(out)
        .arg(object)
        .arg("-lm")
        .status()
        .map_err(|e| BackendError::Link(format!("could not run '{cc}': {e}")))?;
    if !status.success() {
        return Err(BackendError::Link(format!("'{cc}' failed ({status})")));
    }
    Ok(())
}
