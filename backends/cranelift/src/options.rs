//! What a build is for: the options the command line chooses and passes down.

use bnnc_runtime::abi::InputType;
use target_lexicon::Triple;

use crate::target::Cpu;

/// What to build for.
#[derive(Clone, Debug)]
pub struct Options {
    pub triple: Triple,
    pub cpu: Cpu,
    /// The model's name: a C identifier, the prefix of the exported symbols.
    pub name: String,
    /// The element type of `NAME_run`'s input buffer (`bnnc build --input-type`): float32,
    /// or integers the library converts to float32 as ONNX's Cast to float does.
    pub input_type: InputType,
    /// Also export `int32_t NAME_profile(const float *input, float *output, uint64_t
    /// *step_ns)`, which runs one sample and adds each step's nanoseconds to `step_ns`
    /// (for `bnnc bench`; [`crate::Compiled::steps`] names the steps).
    pub profile: bool,
    /// Use the scalar XNOR-popcount kernels even where vector ones are faster (to measure
    /// them against each other).
    pub scalar_popcount: bool,
    /// Print this function's Cranelift IR as it is compiled (a debugging aid), e.g.
    /// `bnnc_step4`.
    pub dump_clif: Option<String>,
}
