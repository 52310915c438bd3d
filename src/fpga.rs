//! FPGA designs (`bnnc build --target hls|verilog`, `bnnc inspect --target hls`, Python's
//! `bnnc.build_hls`): the dataflow plan, its report, and the project with its test vectors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bnnc_dataflow::{Options, Plan, Project, Report, TestVectors};
use bnnc_ir::{Graph, Tensor};
use clap::Args;

use crate::npy;

/// What sizes an FPGA design (shared by `build` and `inspect`).
#[derive(Args, Clone, Debug)]
pub struct FpgaArgs {
    /// FPGA part to size the design against (see `--part list`).
    #[arg(long, default_value = bnnc_dataflow::DEFAULT_PART)]
    pub part: String,
    /// Clock period of the design in nanoseconds.
    #[arg(long, default_value_t = 10.0)]
    pub clock_ns: f64,
    /// Frames per second to reach (default: as fast as fits the part).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Per-layer folding (JSON: {"Conv_1": {"PE": 4, "SIMD": 16}, ...}), as `bnnc build`
    /// writes it beside a project.
    #[arg(long, value_name = "FILE")]
    pub folding: Option<PathBuf>,
}

/// What only `build --target hls` takes.
#[derive(Args, Clone, Debug)]
pub struct TestbenchArgs {
    /// Test inputs for the testbench (.npy, first axis the batch); default: seeded random
    /// inputs.
    #[arg(long, value_name = "X.npy")]
    pub tb_input: Option<PathBuf>,
    /// The outputs expected of them (.npy); default: the interpreter's.
    #[arg(long, value_name = "Y.npy", requires = "tb_input")]
    pub tb_expected: Option<PathBuf>,
    /// Folder of the Apache-2.0 ap_int headers to copy into the project's csim/ (default:
    /// those of an installed hls4ml Python package, if any).
    #[arg(long, value_name = "DIR", env = "BNNC_AP_TYPES")]
    pub ap_types: Option<PathBuf>,
}

/// The options of the plan from the arguments.
fn options(args: &FpgaArgs) -> Result<Options> {
    if args.part == "list" {
        let parts: Vec<String> = bnnc_dataflow::PARTS
            .iter()
            .map(|p| {
                format!(
                    "{} ({}): {} LUT, {} FF, {} BRAM18, {} DSP",
                    p.name, p.board, p.luts, p.ffs, p.bram18, p.dsps
                )
            })
            .collect();
        bail!("known parts:\n  {}", parts.join("\n  "));
    }
    let part = bnnc_dataflow::part(&args.part).map_err(anyhow::Error::msg)?;
    let folding = match &args.folding {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            bnnc_dataflow::parse_folding(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Default::default(),
    };
    Ok(Options {
        clock_ns: args.clock_ns,
        fps: args.fps,
        folding,
        part,
    })
}

/// The plan of `graph`, the model `name`, and its report.
pub fn plan(graph: &Graph, name: &str, args: &FpgaArgs) -> Result<(Plan, Report)> {
    let options = options(args)?;
    let plan = bnnc_dataflow::plan(graph, name, &options)
        .with_context(|| format!("cannot plan {name} for an FPGA"))?;
    let report = bnnc_dataflow::report(&plan, options.part, options.clock_ns);
    Ok((plan, report))
}

/// Samples of the testbench when the user gives none.
const RANDOM_SAMPLES: usize = 8;

/// Seeded random inputs of `graph`'s input type: integers of an integer input's range,
/// floats in [-1, 1) otherwise.
fn random_inputs(graph: &Graph) -> Tensor {
    let ty = &graph.value(graph.inputs()[0]).ty;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let n = ty.numel();
    let data: Vec<f32> = (0..n * RANDOM_SAMPLES)
        .map(|_| match ty.elem.int_type() {
            Some(bnnc_ir::IntType::Bipolar) => {
                if next() & 1 == 1 {
                    1.0
                } else {
                    -1.0
                }
            }
            Some(t) => {
                let (lo, hi) = (t.min().max(-(1 << 20)), t.max().min(1 << 20));
                (lo + (next() % (hi - lo + 1) as u64) as i64) as f32
            }
            None => (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0,
        })
        .collect();
    let mut shape = ty.shape.clone();
    match shape.first_mut() {
        Some(first) if *first == 1 => *first = RANDOM_SAMPLES,
        _ => shape.insert(0, RANDOM_SAMPLES),
    }
    Tensor::f32(shape, data)
}

/// The testbench's vectors: the user's, or the interpreter's outputs on theirs or on random
/// inputs.
pub fn test_vectors(graph: &Graph, args: &TestbenchArgs) -> Result<TestVectors> {
    let (x, origin) = match &args.tb_input {
        Some(path) => (
            npy::read_tensor(path)?,
            format!("inputs from {}", path.display()),
        ),
        None => (
            random_inputs(graph),
            format!("{RANDOM_SAMPLES} seeded random inputs"),
        ),
    };
    let input_len = graph.value(graph.inputs()[0]).ty.numel();
    if input_len == 0 || x.len() % input_len != 0 || x.is_empty() {
        bail!(
            "the test inputs hold {} values, not whole samples of {input_len}",
            x.len()
        );
    }
    let (expected, origin) = match &args.tb_expected {
        Some(path) => (
            npy::read_tensor(path)?.to_f32_vec(),
            format!("{origin}, expected outputs from {}", path.display()),
        ),
        None => {
            let out = bnnc_ir::interp::run_batch(graph, &x)
                .context("computing the expected outputs with the interpreter")?;
            (
                out[0].to_f32_vec(),
                format!("{origin}, expected outputs from bnnc's interpreter"),
            )
        }
    };
    let samples = x.len() / input_len;
    let output_len = graph.value(graph.outputs()[0]).ty.numel();
    if expected.len() != samples * output_len {
        bail!(
            "{samples} test inputs but {} expected values (not {samples} samples of {output_len})",
            expected.len()
        );
    }
    Ok(TestVectors {
        inputs: x.to_f32_vec(),
        expected,
        origin,
    })
}

/// The ap_int headers to copy: the given folder, or an installed hls4ml's.
fn ap_types_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; s = u.find_spec('hls4ml'); print(s.submodule_search_locations[0] if s else '')",
        ])
        .output()
        .ok()?;
    let root = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(root.trim()).join("templates/vivado/ap_types");
    dir.join("ap_int.h").exists().then_some(dir)
}

/// Copies the Apache-2.0 headers of `from` (not its hls_stream.h or hls_math.h, which are
/// not under that licence) into `to`.
fn copy_ap_types(from: &Path, to: &Path) -> Result<usize> {
    let mut copied = 0;
    for sub in ["", "etc"] {
        let dir = from.join(sub);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        std::fs::create_dir_all(to.join(sub))?;
        for entry in entries {
            let path = entry?.path();
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let header = file.starts_with("ap_") && file.ends_with(".h");
            if header {
                std::fs::copy(&path, to.join(sub).join(file.as_ref()))
                    .with_context(|| format!("cannot copy {}", path.display()))?;
                copied += 1;
            }
        }
    }
    if copied == 0 || !to.join("ap_int.h").exists() {
        bail!("{} holds no ap_int.h", from.display());
    }
    if from.join("LICENSE").exists() {
        std::fs::copy(from.join("LICENSE"), to.join("LICENSE"))?;
    }
    std::fs::write(
        to.join("NOTICE"),
        format!(
            "The ap_int and ap_fixed headers of Xilinx's HLS_arbitrary_Precision_Types,\nlicensed under the Apache License, Version 2.0\n(http://www.apache.org/licenses/LICENSE-2.0; see each file's header),\ncopied by bnnc from {}.\n",
            from.display()
        ),
    )?;
    Ok(copied)
}

/// Which FPGA backend writes the project.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpgaBackend {
    Hls,
    Verilog,
}

/// Writes the project of `plan` for `backend` into `dir`.
pub fn write_project(
    backend: FpgaBackend,
    plan: &Plan,
    report: &Report,
    vectors: &TestVectors,
    dir: &Path,
    tb: &TestbenchArgs,
) -> Result<()> {
    let project: Project = match backend {
        FpgaBackend::Hls => bnnc_hls::project(plan, report, vectors)?,
        FpgaBackend::Verilog => bnnc_verilog::project(plan, report, vectors)?,
    };
    // A project written here before: its generated folders go, so that no stale file (a
    // layer the new plan does not have) is built with the new ones.
    if dir.join("report.json").exists() {
        let mut folders: Vec<&str> = project
            .files
            .iter()
            .filter_map(|(path, _)| path.split_once('/').map(|(folder, _)| folder))
            .collect();
        folders.sort_unstable();
        folders.dedup();
        for folder in folders.into_iter().filter(|f| *f != "csim") {
            let path = dir.join(folder);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
    }
    for (path, contents) in &project.files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if backend == FpgaBackend::Hls {
        match ap_types_dir(tb.ap_types.as_deref()) {
            Some(from) => {
                copy_ap_types(&from, &dir.join("csim/ap_types"))?;
            }
            None => eprintln!(
                "note: no ap_int headers found (give --ap-types DIR, or pip install hls4ml): put them in {} before `make csim`",
                dir.join("csim/ap_types").display()
            ),
        }
    }
    Ok(())
}
