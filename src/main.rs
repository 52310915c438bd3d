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
use bnnc_passes::PassEvent;
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
    /// Prints a per-layer table (op, shapes, element types, MACs, weight bits), the IR, JSON,
    /// or what each pass changed.
    Inspect {
        /// The ONNX model.
        model: PathBuf,
        /// Print the IR text instead of the table.
        #[arg(long)]
        ir: bool,
        /// Print one JSON object (`ops`, `layers`, `totals`) instead of the table.
        #[arg(long, conflicts_with = "ir")]
        json: bool,
        /// `none`: inspect the IR as imported; `default`: after the optimization pipeline (the
        /// default); bare `--passes` (or `report`): list what each pass changed.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "report")]
        passes: Option<InspectPasses>,
    },
    /// Runs a batch through the reference interpreter and writes the output as .npy.
    Run {
        /// The ONNX model.
        model: PathBuf,
        /// A .npy array whose first axis is the batch.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the output of the model (.npy).
        #[arg(long)]
        output: PathBuf,
        /// Which passes to run before interpreting.
        #[arg(long, value_enum, default_value_t = Pipeline::Default)]
        passes: Pipeline,
    },
    /// Compiles a model. Today it emits the optimized IR; native code comes with the backends.
    Build {
        /// The ONNX model.
        model: PathBuf,
        /// What to produce.
        #[arg(long, value_enum)]
        emit: Emit,
        /// Where to write the result (standard output when absent).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print the IR before this pass (`all` for every pass); may be repeated.
        #[arg(long, value_name = "PASS")]
        print_before: Vec<String>,
        /// Print the IR after this pass (`all` for every pass); may be repeated.
        #[arg(long, value_name = "PASS")]
        print_after: Vec<String>,
    },
}

/// The pass pipeline to apply.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Pipeline {
    /// The IR exactly as imported.
    None,
    /// The optimization pipeline.
    Default,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum InspectPasses {
    None,
    Default,
    Report,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Emit {
    /// The optimized IR as text.
    Ir,
    /// A relocatable object file.
    Obj,
    /// A shared library with its C header.
    So,
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
        Command::Inspect {
            model,
            ir,
            json,
            passes,
        } => {
            let imported = import(&model)?;
            let graph = match passes {
                Some(InspectPasses::None) => imported,
                Some(InspectPasses::Report) => {
                    let mut out = String::new();
                    optimize(&model, imported, &mut |event| report_pass(&mut out, event))?;
                    print!("{out}");
                    return Ok(());
                }
                Some(InspectPasses::Default) | None => optimize(&model, imported, &mut |_| {})?,
            };
            if json {
                println!("{:#}", inspect::json_report(&graph));
            } else if ir {
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
            let mut graph = import(&model)?;
            if passes == Pipeline::Default {
                graph = optimize(&model, graph, &mut |_| {})?;
            }
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
        Command::Build {
            model,
            emit,
            output,
            print_before,
            print_after,
        } => {
            if emit != Emit::Ir {
                bail!("native code generation (--emit obj, --emit so) is not implemented yet; --emit ir is");
            }
            for name in print_before.iter().chain(&print_after) {
                bnnc_passes::manager::check_pass_name(name)?;
            }
            let wants = |list: &[String], pass: &str| list.iter().any(|p| p == "all" || p == pass);
            let graph = import(&model)?;
            let graph = optimize(&model, graph, &mut |event| match event {
                PassEvent::Before { pass, graph } if wants(&print_before, pass) => {
                    eprint!("; IR before {pass}\n{}", bnnc_ir::text::print_graph(graph));
                }
                PassEvent::After { pass, graph, .. } if wants(&print_after, pass) => {
                    eprint!("; IR after {pass}\n{}", bnnc_ir::text::print_graph(graph));
                }
                _ => {}
            })?;
            let text = bnnc_ir::text::print_graph(&graph);
            match output {
                Some(path) => std::fs::write(&path, text)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
    }
}

/// Imports and verifies a model.
fn import(path: &Path) -> Result<Graph> {
    let graph = bnnc_frontend_onnx::load_model(path)
        .with_context(|| format!("cannot import {}", path.display()))?;
    bnnc_ir::verify::verify(&graph)
        .with_context(|| format!("{}: the imported IR is malformed", path.display()))?;
    Ok(graph)
}

/// Runs the optimization pipeline.
fn optimize(path: &Path, graph: Graph, observe: &mut dyn FnMut(PassEvent<'_>)) -> Result<Graph> {
    bnnc_passes::run_pipeline(graph, observe)
        .with_context(|| format!("cannot optimize {}", path.display()))
}

/// One pass's entry of `bnnc inspect --passes`: its changes and how the op counts moved.
fn report_pass(out: &mut String, event: PassEvent<'_>) {
    use std::fmt::Write;
    let PassEvent::After {
        pass,
        graph,
        report,
        ops_before,
    } = event
    else {
        return;
    };
    let ops_after = bnnc_passes::manager::op_counts(graph);
    let _ = writeln!(out, "{pass}:");
    if report.changes.is_empty() {
        let _ = writeln!(out, "  (no change)");
    }
    for change in &report.changes {
        let _ = writeln!(out, "  {change}");
    }
    let mut kinds: Vec<&str> = ops_before.keys().chain(ops_after.keys()).copied().collect();
    kinds.sort_unstable();
    kinds.dedup();
    let moved: Vec<String> = kinds
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (
                ops_before.get(k).copied().unwrap_or(0),
                ops_after.get(k).copied().unwrap_or(0),
            );
            (a != b).then(|| format!("{k} {a}->{b}"))
        })
        .collect();
    if !moved.is_empty() {
        let _ = writeln!(out, "  ops: {}", moved.join(", "));
    }
}
