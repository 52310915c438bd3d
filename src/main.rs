//! `bnnc`: the command line of the binary neural network compiler.
//!
//! Exit codes: 0 success, 1 the model or an input was rejected (the message names the node, op
//! and reason), 2 bad command-line usage.

mod peak;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bnnc::native::LoadOptions;
use bnnc::stages::{import, optimize as optimize_with};
use bnnc::{fpga, inspect, native, npy, Tuning};
use bnnc_ir::Graph;
use bnnc_passes::{FirstLastPolicy, PassEvent};
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
    #[command(flatten)]
    tuning: TuningArgs,
}

/// Knobs for measuring bnnc's own choices against each other (each also read from its
/// environment variable). Library crates never read the environment: these reach them as
/// options.
#[derive(clap::Args, Clone, Debug)]
struct TuningArgs {
    /// Which 1-4 bit layers become bit-serial: those the measured cost model prefers
    /// (`auto`), `always`, or `never`.
    #[arg(long, global = true, value_enum, env = "BNNC_BIT_SERIAL", default_value_t = BitSerialArg::Auto)]
    bit_serial: BitSerialArg,
    /// XNOR-popcount kernels in Cranelift code: vector where the CPU has them (`vector`), or
    /// `scalar` everywhere.
    #[arg(long, global = true, value_enum, env = "BNNC_XNOR_POPCOUNT", default_value_t = Popcount::Vector)]
    xnor_popcount: Popcount,
    /// Print the Cranelift IR of this generated function as it is compiled (e.g.
    /// `bnnc_step4`; a debugging aid).
    #[arg(long, global = true, env = "BNNC_DUMP_CLIF", value_name = "FUNCTION")]
    dump_clif: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BitSerialArg {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Popcount {
    Vector,
    Scalar,
}

impl TuningArgs {
    fn tuning(self) -> Tuning {
        Tuning {
            bit_serial: match self.bit_serial {
                BitSerialArg::Auto => bnnc_passes::BitSerial::CostModel,
                BitSerialArg::Always => bnnc_passes::BitSerial::Always,
                BitSerialArg::Never => bnnc_passes::BitSerial::Never,
            },
            scalar_popcount: self.xnor_popcount == Popcount::Scalar,
            dump_clif: self.dump_clif,
        }
    }
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
        /// What to do with float first and last layers: `keep` them, or quantize their
        /// f32 weights to `int8` per output channel (reported, since it can change accuracy).
        #[arg(long, value_enum, default_value_t = FirstLast::Keep)]
        first_last: FirstLast,
        /// `hls` or `verilog`: the FPGA dataflow plan instead (per layer PE, SIMD, cycles,
        /// resources); `x86_64`, `aarch64`, `native` or a triple: the native schedule (per
        /// step its kernel, and its operands' and results' storage).
        #[arg(long)]
        target: Option<String>,
        #[command(flatten)]
        fpga: fpga::FpgaArgs,
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
        /// `interp`: the reference interpreter; `native`: compiled for this machine and run.
        #[arg(long, value_enum, default_value_t = Backend::Interp)]
        backend: Backend,
        /// With `--backend native`: which code generator compiles the XNOR and bit-serial
        /// kernels (`auto`: LLVM where bnnc was built with it).
        #[arg(long, value_enum, default_value_t = native::Codegen::Auto)]
        codegen: native::Codegen,
        /// What to do with float first and last layers: `keep` them, or quantize their
        /// f32 weights to `int8` per output channel (reported, since it can change accuracy).
        #[arg(long, value_enum, default_value_t = FirstLast::Keep)]
        first_last: FirstLast,
    },
    /// Compiles a model into a shared library (`libNAME.so` and `NAME.h`), an object, IR, or
    /// (`--target hls`) a Vitis HLS project.
    Build {
        /// The ONNX model.
        model: PathBuf,
        /// What to produce.
        #[arg(long, value_enum, default_value_t = Emit::So)]
        emit: Emit,
        /// `x86_64`, `aarch64` or a target triple (default: this machine); `hls` for a Vitis
        /// HLS project, `verilog` for a Verilog design (folders).
        #[arg(long)]
        target: Option<String>,
        /// The ISA level code may assume: native (default for this machine), generic,
        /// x86-64-v2, x86-64-v3, x86-64-v4.
        #[arg(long)]
        cpu: Option<String>,
        /// The model's name, prefix of the exported symbols (default: the file's stem).
        #[arg(long)]
        name: Option<String>,
        /// Where to write the result (default: `libNAME.so` or `NAME.o` here, `NAME_hls/` for
        /// `--target hls`; the IR goes to standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The element type of the library's input buffer: float32, or uint8, int8, uint16,
        /// int16, uint32, int32, uint64, int64 or bool, which `NAME_run` converts to float32
        /// as ONNX's Cast to float does (an integer input's range must hold the type's).
        #[arg(long, default_value = "float32", value_parser = parse_input_type)]
        input_type: bnnc_runtime::InputType,
        /// Which code generator compiles the XNOR convolutions (`llvm` needs bnnc built with
        /// `--features llvm`).
        #[arg(long, value_enum, default_value_t = native::Codegen::Auto)]
        codegen: native::Codegen,
        /// Print the IR before this pass (`all` for every pass); may be repeated.
        #[arg(long, value_name = "PASS")]
        print_before: Vec<String>,
        /// Print the IR after this pass (`all` for every pass); may be repeated.
        #[arg(long, value_name = "PASS")]
        print_after: Vec<String>,
        /// What to do with float first and last layers: `keep` them, or quantize their
        /// f32 weights to `int8` per output channel (reported, since it can change accuracy).
        #[arg(long, value_enum, default_value_t = FirstLast::Keep)]
        first_last: FirstLast,
        #[command(flatten)]
        fpga: fpga::FpgaArgs,
        #[command(flatten)]
        testbench: fpga::TestbenchArgs,
    },
    /// Times the compiled model on this machine: latency at batch 1 (median over runs) and
    /// throughput at a larger batch.
    Bench {
        /// The ONNX model (optional with `--peak`).
        #[arg(required_unless_present = "peak")]
        model: Option<PathBuf>,
        /// Also measure this machine's XNOR-popcount peak (Cranelift's loops and a
        /// hand-written AVX-512 reference); alone without a model.
        #[arg(long)]
        peak: bool,
        /// Samples per call for the throughput figure.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Threads sharing the throughput batch (latency is always one thread).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Timed runs for the latency median.
        #[arg(long, default_value_t = 200)]
        runs: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Which code generator compiles the XNOR and bit-serial kernels (`auto`: LLVM where
        /// bnnc was built with it).
        #[arg(long, value_enum, default_value_t = native::Codegen::Auto)]
        codegen: native::Codegen,
        /// What to do with float first and last layers: `keep` them, or quantize their
        /// f32 weights to `int8` per output channel (reported, since it can change accuracy).
        #[arg(long, value_enum, default_value_t = FirstLast::Keep)]
        first_last: FirstLast,
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

/// `--first-last`: what the pipeline does with float first and last layers.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum FirstLast {
    /// Keep every layer at the model's own precision.
    Keep,
    /// Quantize f32 weights of the first and last layers to 8 bits per output channel.
    Int8,
}

impl From<FirstLast> for FirstLastPolicy {
    fn from(f: FirstLast) -> Self {
        match f {
            FirstLast::Keep => FirstLastPolicy::Keep,
            FirstLast::Int8 => FirstLastPolicy::Int8,
        }
    }
}

/// Where `bnnc run` runs the model.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Backend {
    /// The reference interpreter.
    Interp,
    /// Native code for this machine (a shared library built on the fly).
    Native,
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
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`bnnc bench ... | head -1`) instead of failing to print. Rust ignores SIGPIPE by default.
    #[cfg(unix)]
    // SAFETY: restoring the default action of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match execute(cli.command, &cli.tuning.tuning()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn execute(command: Command, tuning: &Tuning) -> Result<()> {
    let optimize = |model: &Path,
                    graph: Graph,
                    first_last: FirstLast,
                    observe: &mut dyn FnMut(PassEvent<'_>)| {
        let label = model.display().to_string();
        optimize_with(&label, graph, first_last.into(), tuning, observe)
    };
    match command {
        Command::Inspect {
            model,
            ir,
            json,
            passes,
            first_last,
            target,
            fpga,
        } => {
            let imported = import(&model)?;
            let graph = match passes {
                Some(InspectPasses::None) => imported,
                Some(InspectPasses::Report) => {
                    let mut out = String::new();
                    optimize(&model, imported, first_last, &mut |event| {
                        report_pass(&mut out, event)
                    })?;
                    print!("{out}");
                    return Ok(());
                }
                Some(InspectPasses::Default) | None => {
                    optimize(&model, imported, first_last, &mut |_| {})?
                }
            };
            if let Some(target) = target.as_deref().filter(|t| is_fpga_target(t)) {
                fpga_target(target)?;
                let (_, report) = fpga::plan(&graph, &native::default_name(&model), &fpga)?;
                if json {
                    println!("{:#}", report.json());
                } else {
                    print!("{}", report.table());
                }
                return Ok(());
            }
            if let Some(target) = target {
                // A CPU: the native schedule (the same for every CPU target).
                if target != "native" && bnnc_cranelift::parse_target(&target).is_err() {
                    bail!(
                        "`--target {target}` takes `hls`, `verilog`, or a CPU: `x86_64`, `aarch64`, `native` or a target triple"
                    );
                }
                let plan = bnnc_cranelift::storage_plan(&graph)
                    .with_context(|| format!("cannot schedule {}", model.display()))?;
                if json {
                    println!("{:#}", inspect::storage_plan_json(&plan));
                } else {
                    print!("{}", inspect::storage_plan_table(&plan));
                }
                return Ok(());
            }
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
            backend,
            codegen,
            first_last,
        } => {
            let mut graph = import(&model)?;
            if passes == Pipeline::Default {
                graph = optimize(&model, graph, first_last, &mut |_| {})?;
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
            if backend == Backend::Native {
                return run_native(&model, &graph, &x, &output, codegen, tuning);
            }
            let mut results = bnnc_ir::interp::run_batch(&graph, &x)
                .with_context(|| format!("running {}", model.display()))?;
            let y = results.swap_remove(0);
            npy::write_tensor(&output, &y)
        }
        Command::Build {
            model,
            emit,
            target,
            cpu,
            name,
            output,
            input_type,
            codegen,
            print_before,
            print_after,
            first_last,
            fpga,
            testbench,
        } => {
            let started = std::time::Instant::now();
            for name in print_before.iter().chain(&print_after) {
                bnnc_passes::manager::check_pass_name(name)?;
            }
            let wants = |list: &[String], pass: &str| list.iter().any(|p| p == "all" || p == pass);
            let graph = import(&model)?;
            let graph = optimize(&model, graph, first_last, &mut |event| match event {
                PassEvent::Before { pass, graph } if wants(&print_before, pass) => {
                    eprint!("; IR before {pass}\n{}", bnnc_ir::text::print_graph(graph));
                }
                PassEvent::After { pass, graph, .. } if wants(&print_after, pass) => {
                    eprint!("; IR after {pass}\n{}", bnnc_ir::text::print_graph(graph));
                }
                _ => {}
            })?;
            if let Some(t) = target.as_deref().filter(|t| is_fpga_target(t)) {
                let backend = fpga_target(t)?;
                if input_type != bnnc_runtime::InputType::F32 {
                    bail!("--input-type is the input buffer of a CPU library; `--target {t}` takes its inputs as its testbench says");
                }
                let name = bnnc_runtime::abi::c_identifier(
                    &name.unwrap_or_else(|| native::default_name(&model)),
                );
                let (plan, report) = fpga::plan(&graph, &name, &fpga)?;
                let vectors = fpga::test_vectors(&graph, &testbench)?;
                let dir = output.unwrap_or_else(|| PathBuf::from(format!("{name}_{t}")));
                fpga::write_project(backend, &plan, &report, &vectors, &dir, &testbench)?;
                print!("{}", report.table());
                let (what, how) = match backend {
                    fpga::FpgaBackend::Hls => ("Vitis HLS project", "csim"),
                    fpga::FpgaBackend::Verilog => ("Verilog design", "sim"),
                };
                eprintln!(
                    "wrote {} ({what} of {} layers; `make -C {} {how}` to simulate) in {:.2} s",
                    dir.display(),
                    plan.layers.len(),
                    dir.display(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if emit != Emit::Ir {
                let target = target.unwrap_or_else(|| bnnc_cranelift::Triple::host().to_string());
                let name = name.unwrap_or_else(|| native::default_name(&model));
                let mut options = native::options(&target, cpu.as_deref(), name, tuning)?;
                options.input_type = input_type;
                let start = std::time::Instant::now();
                let mut shared = emit == Emit::So;
                if shared && !native::can_link(&options.triple) {
                    eprintln!(
                        "note: no linker for {} on this machine: writing the object file only",
                        options.triple
                    );
                    shared = false;
                }
                // One object file holds one code generator's code: `auto` then means
                // Cranelift alone (the LLVM kernels are a second object, linked into a .so).
                let codegen = match codegen {
                    native::Codegen::Auto if !shared => native::Codegen::Cranelift,
                    c => c,
                };
                let build = native::compile(&graph, &options, codegen)?;
                let out = output.unwrap_or_else(|| {
                    PathBuf::from(if shared {
                        format!("lib{}.so", options.name)
                    } else {
                        format!("{}.o", options.name)
                    })
                });
                let written = native::write(&build, &options, &out, shared)?;
                let tiles = match build.on_tiles {
                    0 => String::new(),
                    n => format!(" ({n} layers on AMX tiles)"),
                };
                eprintln!(
                    "wrote {} ({} for {}, {}{tiles}, {} KiB of scratch per call) in {:.2} s",
                    written
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" and "),
                    if shared { "shared library" } else { "object" },
                    options.triple,
                    codegen.describe(),
                    build.compiled.scratch_bytes.div_ceil(1024),
                    start.elapsed().as_secs_f64()
                );
                return Ok(());
            }
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
        Command::Bench {
            model,
            peak,
            batch,
            threads,
            runs,
            json,
            codegen,
            first_last,
        } => {
            if batch == 0 || threads == 0 || runs == 0 {
                bail!("--batch, --threads and --runs must be positive");
            }
            let peaks = if peak {
                peak::measure_all()?
            } else {
                Vec::new()
            };
            let peak_json: Vec<serde_json::Value> = peaks
                .iter()
                .map(|p| serde_json::json!({"loop": p.name, "binary_gmacs_per_s": p.gmacs}))
                .collect();
            let Some(model) = model else {
                if json {
                    println!("{}", serde_json::json!({ "peak": peak_json }));
                } else {
                    print_peaks(&peaks);
                }
                return Ok(());
            };
            let graph = optimize(&model, import(&model)?, first_last, &mut |_| {})?;
            let loaded = native::load(
                &graph,
                tuning,
                LoadOptions {
                    name: native::default_name(&model),
                    codegen,
                    profile: true,
                    dir: None,
                },
            )?;
            let report = native::bench(&loaded.model, batch, threads, runs)?;
            let latency_us = report.latency.as_secs_f64() * 1e6;
            let binary_macs = inspect::binary_macs(&graph);
            // Per step: its median time and, for binary layers, binary MACs per second.
            let step_ns = native::profile_steps(&loaded, runs)?;
            let layers: Vec<serde_json::Value> = loaded
                .steps
                .iter()
                .zip(&step_ns)
                .map(|(step, &ns)| {
                    let macs = step.node.map_or(0, |n| inspect::node_binary_macs(&graph, n));
                    serde_json::json!({
                        "step": step.label,
                        "us": ns / 1e3,
                        "binary_macs": macs,
                        "binary_gmacs_per_s": if macs > 0 && ns > 0.0 { macs as f64 / ns } else { 0.0 },
                    })
                })
                .collect();
            // Binary MACs per second at batch 1, in billions.
            let gmacs = binary_macs as f64 / report.latency.as_secs_f64() / 1e9;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "model": model.display().to_string(),
                        "latency_us": latency_us,
                        "throughput_per_s": report.throughput_per_s,
                        "batch": report.batch,
                        "threads": report.threads,
                        "binary_macs": binary_macs,
                        "binary_gmacs_per_s": gmacs,
                        "steps": layers,
                        "peak": peak_json,
                    })
                );
            } else {
                println!(
                    "{}: latency {latency_us:.1} us (batch 1, median of {runs}), throughput {:.0} samples/s (batch {}, {} thread(s)), {gmacs:.1} G binary MAC/s",
                    model.display(),
                    report.throughput_per_s,
                    report.batch,
                    report.threads
                );
                let best = peaks.iter().map(|p| p.gmacs).fold(0.0, f64::max);
                // The step column as wide as its longest label (fused chains name each op).
                let width = layers
                    .iter()
                    .filter_map(|l| l["step"].as_str())
                    .map(str::len)
                    .max()
                    .unwrap_or(0)
                    .max(48);
                println!(
                    "{:<width$} {:>9} {:>14} {:>10}",
                    "step (one sample, median)", "us", "G bin-MAC/s", "of peak"
                );
                for l in &layers {
                    let g = l["binary_gmacs_per_s"].as_f64().unwrap_or(0.0);
                    println!(
                        "{:<width$} {:>9.1} {:>14} {:>10}",
                        l["step"].as_str().unwrap_or(""),
                        l["us"].as_f64().unwrap_or(0.0),
                        if g > 0.0 {
                            format!("{g:.1}")
                        } else {
                            "-".into()
                        },
                        if g > 0.0 && best > 0.0 {
                            format!("{:.0}%", 100.0 * g / best)
                        } else {
                            "-".into()
                        }
                    );
                }
                print_peaks(&peaks);
            }
            Ok(())
        }
    }
}

/// `--input-type`'s value: a name of [`bnnc_runtime::InputType`].
fn parse_input_type(name: &str) -> Result<bnnc_runtime::InputType, String> {
    bnnc_runtime::InputType::from_name(name).ok_or_else(|| {
        let names: Vec<_> = bnnc_runtime::InputType::ALL
            .iter()
            .map(|t| t.name())
            .collect();
        format!("`{name}` is not an input type; one of {}", names.join(", "))
    })
}

/// Whether `--target` names an FPGA backend rather than a CPU.
fn is_fpga_target(target: &str) -> bool {
    matches!(target, "hls" | "verilog")
}

/// The FPGA backend `--target` names.
fn fpga_target(target: &str) -> Result<fpga::FpgaBackend> {
    match target {
        "hls" => Ok(fpga::FpgaBackend::Hls),
        "verilog" => Ok(fpga::FpgaBackend::Verilog),
        other => bail!("`--target {other}` here takes `hls` or `verilog`"),
    }
}

/// The popcount peaks, one line each.
fn print_peaks(peaks: &[peak::Peak]) {
    if !peaks.is_empty() {
        println!("XNOR-popcount peak on this machine (two 4 KiB arrays in L1, one thread):");
    }
    for p in peaks {
        println!("  {:<40} {:>8.1} G binary MAC/s", p.name, p.gmacs);
    }
}

/// `bnnc run --backend native`: the batch through a library compiled for this machine.
fn run_native(
    model: &Path,
    graph: &Graph,
    x: &bnnc_ir::Tensor,
    output: &Path,
    codegen: native::Codegen,
    tuning: &Tuning,
) -> Result<()> {
    // The batch must fit the input as the interpreter requires, not only its length.
    let expected = &graph.value(graph.inputs()[0]).ty.shape;
    let Some(samples) = bnnc_ir::interp::batch_samples(expected, x.shape()) else {
        bail!(
            "{}: a batch of shape {:?} does not fit the input's shape {expected:?}",
            model.display(),
            x.shape()
        );
    };
    let loaded = native::load(
        graph,
        tuning,
        LoadOptions {
            name: native::default_name(model),
            codegen,
            profile: false,
            dir: None,
        },
    )?;
    let m = &loaded.model;
    let input = x.to_f32_vec();
    let y = m
        .run_batch(&input)
        .with_context(|| format!("running {} natively", model.display()))?;
    let out_ty = &graph.value(graph.outputs()[0]).ty;
    // Shaped as the interpreter shapes a batch's output.
    let shape = if x.shape() == expected.as_slice() {
        out_ty.shape.clone()
    } else {
        bnnc_ir::interp::batch_output_shape(&out_ty.shape, samples)
    };
    let tensor = if out_ty.elem == bnnc_ir::ElemType::I64 {
        bnnc_ir::Tensor::i64(shape, y.iter().map(|&v| v as i64).collect())
    } else {
        bnnc_ir::Tensor::f32(shape, y)
    };
    npy::write_tensor(output, &tensor)
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
