//! `bnnc`: the command line of the binary neural network compiler.
//!
//! Exit codes: 0 success, 1 the model or an input was rejected (the message names the node, op
//! and reason), 2 bad command-line usage.

mod inspect;
mod npy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bnnc_ir::Graph;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "bnnc",
    version,
    about = "A compiler for binary and low-bit neural networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a per-layer table (op, shapes, element types, MACs, weight bits), or the IR.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Print the IR text instead of the table.
        #[arg(long)]
        ir: bool,
        /// Which passes to run before inspecting.
        #[arg(long, value_enum, default_value_t = Passes::None)]
        passes: Passes,
    },
    /// Runs a batch through the reference interpreter and writes the outputs as .npy.
    Run {
        /// The ONNX model.
        model: PathBuf,
        /// A .npy array whose first axis is the batch.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the first output of the model (.npy).
        #[arg(long)]
        output: PathBuf,
        /// Which passes to run before interpreting.
        #[arg(long, value_enum, default_value_t = Passes::None)]
        passes: Passes,
    },
}

/// The pass pipeline to apply.
#[derive(Clone, Copy, ValueEnum)]
enum Passes {
    /// The IR exactly as imported.
    None,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(command: Command) -> Result<()> {
    match command {
        Command::Inspect { model, ir, passes } => {
            let graph = load(&model, passes)?;
            if ir {
                print!("{}", bnnc_ir::text::print_graph(&graph));
            } else {
                print!("{}", inspect::layer_table(&graph));
            }
            Ok(())
        }
        Command::Run {
            model,
            input,
            output,
            passes,
        } => {
            let graph = load(&model, passes)?;
            if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
                bail!(
                    "{}: `bnnc run` takes models with one input and one output; this one has {} and {}",
                    model.display(),
                    graph.inputs().len(),
                    graph.outputs().len()
                );
            }
            let x = npy::read_tensor(&input)?;
            let mut results = bnnc_ir::interp::run_batch(&graph, &x)
                .with_context(|| format!("running {}", model.display()))?;
            let y = results.swap_remove(0);
            npy::write_tensor(&output, &y)
        }
    }
}

/// Imports, verifies and (per `passes`) optimizes a model.
fn load(path: &Path, passes: Passes) -> Result<Graph> {
    let graph = bnnc_frontend_onnx::load_model(path)
        .with_context(|| format!("cannot import {}", path.display()))?;
    bnnc_ir::verify::verify(&graph)
        .with_context(|| format!("{}: the imported IR is malformed", path.display()))?;
    match passes {
        Passes::None => Ok(graph),
    }
}
