//! bnnc's dataflow plan: the optimized IR as a streaming design of hardware layers, shared
//! by the FPGA backends (HLS C++ and Verilog).
//!
//! [`plan()`] splits the graph into host code before, hardware, and host code after
//! ([`partition`]); lowers the hardware part to layers that pass frames along streams
//! ([`plan::Plan`]): window generators, matrix-vector units with their fused thresholds and
//! pools (as `fuse-output-stages` decided), pools, thresholds, elementwise arithmetic,
//! duplication; folds them ([`folding`]); and estimates their cycles and resources
//! ([`estimate`], [`report()`]). [`host`] writes the host code in C, and [`sim`] runs a plan on
//! integers, as hardware would.

pub mod error;
pub mod estimate;
pub mod folding;
pub mod host;
mod lower;
pub mod part;
pub mod partition;
pub mod plan;
pub mod project;
pub mod report;
pub mod sim;

pub use error::PlanError;
pub use folding::{folding_json, parse_folding, Fold, Folding, FoldingGoal};
pub use part::{part, Part, DEFAULT_PART, PARTS};
pub use plan::Plan;
pub use project::{Project, TestVectors};
pub use report::{report, Report};

use bnnc_ir::Graph;

/// What shapes a plan.
#[derive(Clone, Debug)]
pub struct Options {
    /// The design's clock period in nanoseconds.
    pub clock_ns: f64,
    /// Frames per second to reach; `None`: as fast as fits the part.
    pub fps: Option<f64>,
    /// Layers folded as given.
    pub folding: Folding,
    pub part: Part,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock_ns: 10.0,
            fps: None,
            folding: Folding::new(),
            part: part::part(DEFAULT_PART).expect("the default part is known"),
        }
    }
}

/// The dataflow plan of an optimized graph, named `name` (a C identifier).
pub fn plan(graph: &Graph, name: &str, options: &Options) -> Result<Plan, PlanError> {
    if !(options.clock_ns > 0.0 && options.clock_ns.is_finite()) {
        return Err(PlanError::Options(format!(
            "clock period {} ns",
            options.clock_ns
        )));
    }
    let split = partition::partition(graph)?;
    let lowered = lower::lower(graph, &split)?;
    let mut plan = Plan {
        graph: graph.clone(),
        name: name.to_string(),
        streams: lowered.streams,
        layers: lowered.layers,
        input: lowered.input,
        output: lowered.output,
        pre: host::HostProgram { nodes: split.pre },
        post: host::HostProgram { nodes: split.post },
    };
    let goal = match options.fps {
        Some(fps) if fps > 0.0 && fps.is_finite() => {
            FoldingGoal::Cycles(((1e9 / options.clock_ns) / fps).floor().max(1.0) as u64)
        }
        Some(fps) => return Err(PlanError::Options(format!("{fps} frames per second"))),
        None => FoldingGoal::FitPart(options.part),
    };
    folding::fold(&mut plan, &goal, &options.folding)?;
    Ok(plan)
}
