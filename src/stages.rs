//! The stages before a backend: import a model (from a file or from bytes), verify it, and run
//! the optimization pipeline.

use std::path::Path;

use anyhow::{Context, Result};
use bnnc_ir::Graph;
use bnnc_passes::{BitSerial, FirstLastPolicy, PassEvent, PipelineOptions};

/// Knobs for measuring bnnc's own choices against each other. The defaults are what users get.
#[derive(Clone, Debug, Default)]
pub struct Tuning {
    /// Which 1-4 bit layers become bit-serial.
    pub bit_serial: BitSerial,
    /// Whether Cranelift code uses only scalar popcounts.
    pub scalar_popcount: bool,
    /// The generated function whose Cranelift IR to print as it is compiled (a debugging aid).
    pub dump_clif: Option<String>,
}

/// Imports and verifies the model at `path`; its external data may lie beside it.
pub fn import(path: &Path) -> Result<Graph> {
    let graph = bnnc_frontend_onnx::load_model(path)
        .with_context(|| format!("cannot import {}", path.display()))?;
    verified(graph, &path.display().to_string())
}

/// Imports and verifies a model held in memory (`label` names it in errors). Such a model has
/// no folder, so a tensor with external data is an error.
pub fn import_bytes(bytes: &[u8], label: &str) -> Result<Graph> {
    let graph = bnnc_frontend_onnx::import_model(bytes, None)
        .with_context(|| format!("cannot import {label}"))?;
    verified(graph, label)
}

fn verified(graph: Graph, label: &str) -> Result<Graph> {
    bnnc_ir::verify::verify(&graph)
        .with_context(|| format!("{label}: the imported IR is malformed"))?;
    Ok(graph)
}

/// Runs the optimization pipeline on the model `label` names. What `first_last` changed goes
/// to standard error, since it can change accuracy; `observe` sees every pass.
pub fn optimize(
    label: &str,
    graph: Graph,
    first_last: FirstLastPolicy,
    tuning: &Tuning,
    observe: &mut dyn FnMut(PassEvent<'_>),
) -> Result<Graph> {
    let options = PipelineOptions {
        first_last,
        bit_serial: tuning.bit_serial,
    };
    bnnc_passes::run_pipeline_with(graph, &options, &mut |event| {
        if let PassEvent::After { pass, report, .. } = &event {
            if *pass == "first-last-precision" {
                for change in report
                    .changes
                    .iter()
                    .filter(|c| c.starts_with("--first-last"))
                {
                    eprintln!("note: {change}");
                }
            }
        }
        observe(event)
    })
    .with_context(|| format!("cannot optimize {label}"))
}
