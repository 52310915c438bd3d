//! The pass manager: runs named passes in order and verifies the IR after each.

use std::collections::BTreeMap;

use bnnc_ir::Graph;

use bnnc_ir::IrError;

use crate::error::PassError;
use crate::precision::FirstLastPolicy;
use crate::report::PassReport;

/// What a user chooses about the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineOptions {
    /// What `first-last-precision` does with float first and last layers.
    pub first_last: FirstLastPolicy,
    /// Which low-bit layers `lower-xnor-popcount` makes bit-serial.
    pub bit_serial: crate::bitserial::BitSerial,
}

/// A pass: a name users can type, what it guarantees, and the function.
pub struct Pass {
    /// The name in `--print-after` and reports, e.g. `fold-batchnorm-to-threshold`.
    pub name: &'static str,
    /// One line: what the pass does.
    pub summary: &'static str,
    run: fn(&mut Graph, &PipelineOptions) -> Result<PassReport, IrError>,
}

impl Pass {
    /// Runs the pass on `graph` (not verifying; [`run_pipeline`] does).
    pub fn run(
        &self,
        graph: &mut Graph,
        options: &PipelineOptions,
    ) -> Result<PassReport, PassError> {
        // The pass's name goes on its errors here, once.
        (self.run)(graph, options).map_err(|source| PassError::Ir {
            pass: self.name,
            source,
        })
    }
}

/// `cleanup`, which opens and closes the pipeline.
const CLEANUP: Pass = Pass {
    name: "cleanup",
    summary: "fold constants, remove identities and dead nodes, merge reshapes",
    run: |g, _| crate::cleanup::cleanup(g),
};

/// The default pipeline, in order: cleanup, moving max-pools onto bits, streamlining on the
/// e-graph, lowering to binary ops, cleanup, and the choice of fused output stages.
pub const PIPELINE: &[Pass] = &[
    CLEANUP,
    Pass {
        name: "first-last-precision",
        summary: "first and last linear layers keep their own precision; --first-last applies a policy to float ones",
        run: |g, options| crate::precision::first_last_precision(g, options.first_last),
    },
    Pass {
        name: "reorder-pooling",
        summary: "a MaxPool before a per-channel non-decreasing chain and quantizer pools the quantizer's bits instead",
        run: |g, _| crate::pooling::reorder_pooling(g),
    },
    Pass {
        name: "fold-batchnorm-to-threshold",
        summary: "monotone float chains between an integer accumulator and a quantizer become exact integer thresholds (on the e-graph)",
        run: |g, _| fold_batchnorm_to_threshold(g),
    },
    Pass {
        name: "fuse-scales",
        summary: "consecutive constant multiplies, divides, adds and subtracts collapse into one affine map where exact",
        run: |g, _| crate::scales::fuse_scales(g),
    },
    Pass {
        name: "fold-input-quantizer-to-threshold",
        summary: "a monotone float chain from a float value to a low-bit quantizer becomes exact float thresholds on the value",
        run: |g, _| crate::input_threshold::fold_input_quantizer_to_threshold(g),
    },
    Pass {
        name: "lower-xnor-popcount",
        summary: "bipolar x (scaled) bipolar Conv/Gemm/MatMul become XNOR-popcount ops (times their weight scale)",
        run: |g, options| crate::xnor::lower_xnor_popcount(g, options.bit_serial),
    },
    CLEANUP,
    Pass {
        name: "fuse-output-stages",
        summary: "a threshold that alone reads a layer's sums, and a tiling max-pool after it, run in the layer's output stage",
        run: |g, _| crate::fusion::fuse_output_stages(g),
    },
];

/// Streamlines on the e-graph; every rule applied or declined (and why) is in the report.
/// BatchNorms that fold into no threshold become their affine maps.
fn fold_batchnorm_to_threshold(graph: &mut Graph) -> Result<PassReport, IrError> {
    let (streamlined, report) = crate::egraph::streamline(graph, &crate::egraph::Limits::default())
        .map_err(PassError::into_ir)?;
    *graph = streamlined;
    let mut report = PassReport {
        changes: report.to_string().lines().map(String::from).collect(),
    };
    // What did not fold is a plain affine map.
    crate::batchnorm::batchnorm_to_affine(graph, &mut report)?;
    Ok(report)
}

/// Checks that `name` is a pass of the pipeline (or `all`), for command-line options.
pub fn check_pass_name(name: &str) -> Result<(), PassError> {
    if name == "all" || PIPELINE.iter().any(|p| p.name == name) {
        return Ok(());
    }
    let mut names: Vec<&str> = PIPELINE.iter().map(|p| p.name).collect();
    names.dedup();
    Err(PassError::UnknownPass(name.to_string(), names.join(", ")))
}

/// What the manager tells its caller while it runs.
pub enum PassEvent<'a> {
    /// A pass is about to run on `graph`.
    Before {
        pass: &'static str,
        graph: &'a Graph,
    },
    /// A pass ran and the result verified.
    After {
        pass: &'static str,
        graph: &'a Graph,
        report: &'a PassReport,
        ops_before: &'a BTreeMap<&'static str, usize>,
    },
}

/// Runs every pass of [`PIPELINE`] on `graph` with the default options (see
/// [`run_pipeline_with`]).
pub fn run_pipeline(
    graph: Graph,
    observe: &mut dyn FnMut(PassEvent<'_>),
) -> Result<Graph, PassError> {
    run_pipeline_with(graph, &PipelineOptions::default(), observe)
}

/// Runs every pass of [`PIPELINE`] on `graph`, verifying after each, and tells `observe`
/// before and after each pass (for `--print-before`/`--print-after` and reports).
pub fn run_pipeline_with(
    mut graph: Graph,
    options: &PipelineOptions,
    observe: &mut dyn FnMut(PassEvent<'_>),
) -> Result<Graph, PassError> {
    for pass in PIPELINE {
        observe(PassEvent::Before {
            pass: pass.name,
            graph: &graph,
        });
        let ops_before = op_counts(&graph);
        let report = pass.run(&mut graph, options)?;
        bnnc_ir::verify::verify(&graph).map_err(|source| PassError::Verify {
            pass: pass.name,
            source,
        })?;
        observe(PassEvent::After {
            pass: pass.name,
            graph: &graph,
            report: &report,
            ops_before: &ops_before,
        });
    }
    Ok(graph)
}

/// The number of nodes of each op kind, by the op's name in the IR text.
pub fn op_counts(graph: &Graph) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    for n in graph.node_ids() {
        *counts.entry(graph.node(n).op.name()).or_insert(0) += 1;
    }
    counts
}
