//! The models of tests/data built into Verilog and proven with open tools: `make lint`
//! (Verilator `--lint-only -Wall`, clean), `make sim` with the reference vectors (random stalls
//! on both streams; every output checked; then the cycles per frame, which must be within 10%
//! of the plan's estimate), and the same outputs compared with the interpreter's, which they
//! must match bit for bit. Icarus Verilog simulates the MLPs and xnor_perchannel; Verilator
//! the CNVs and Bi-Real (its residual path is f32 arithmetic), which Icarus takes minutes
//! over. One small design also goes through `make synth` (Yosys).
//!
//! Needs cc, make, iverilog, verilator and yosys (`scripts/test` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::run;

/// The models and the simulator each runs under.
const MODELS: &[(&str, &str)] = &[
    ("models/tfc_w1a1", "iverilog"),
    ("models/tfc_w1a1_qonnx_ts", "iverilog"),
    ("models/tfc_w2a2_qcdq", "iverilog"),
    ("models/lfc_w1a1", "iverilog"),
    ("models/xnor_perchannel", "iverilog"),
    ("models/cnv_w1a1", "verilator"),
    ("models/cnv_w2a2", "verilator"),
    ("models/bireal_small", "verilator"),
    ("external/finn_tfc_w1a1_streamlined", "iverilog"),
    ("external/zoo_tfc_1w1a", "iverilog"),
    ("external/zoo_tfc_1w2a", "iverilog"),
    ("external/zoo_tfc_2w2a", "iverilog"),
    ("external/zoo_kwsmlp_w3a3", "iverilog"),
    ("external/zoo_unsw_nb15_mlp_w2a2", "iverilog"),
    ("external/zoo_jettagging", "iverilog"),
    ("qkeras/conv_w4a4_qonnx", "iverilog"),
    ("qkeras/mlp_w4a4_qonnx", "iverilog"),
    ("variants/binary_depthwise", "iverilog"),
    ("variants/conv_groups2", "iverilog"),
    ("variants/finn_lowered_cnv", "iverilog"),
    ("variants/finn_lowered_tfc", "iverilog"),
    ("variants/mobilenet_block_ts", "iverilog"),
    ("variants/nhwc_transposes", "iverilog"),
    ("variants/adaptive_avgpool_ts", "iverilog"),
];

fn main() {
    let args = Arguments::from_args();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut trials: Vec<Trial> = MODELS
        .iter()
        .map(|&(model, sim)| {
            let dir = data.join(model);
            Trial::test(format!("verilog/{model}"), move || simulate(&dir, sim))
        })
        .collect();
    let tfc = data.join("models/tfc_w1a1");
    trials.push(Trial::test("verilog/synth/tfc_w1a1", move || synth(&tfc)));
    libtest_mimic::run(&args, trials).exit();
}

fn build(dir: &Path, project: &Path, extra: &[&str]) -> Result<String, String> {
    run(Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .args(["build", "--target", "verilog", "-o"])
        .arg(project)
        .arg(dir.join("model.onnx"))
        .arg("--tb-input")
        .arg(dir.join("input.npy"))
        .arg("--tb-expected")
        .arg(dir.join("expected.npy"))
        .args(extra))
}

/// Samples in a .npy file's first axis.
fn samples(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    npy.shape()[0] as usize
}

fn simulate(dir: &Path, sim: &str) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let project: PathBuf = tmp.path().join("project");
    build(dir, &project, &[])?;
    let lint = run(Command::new("make").arg("-C").arg(&project).arg("lint"))?;
    if lint.contains("%Warning") || lint.contains("%Error") {
        return Err(format!("make lint:\n{lint}").into());
    }
    let out = run(Command::new("make")
        .arg("-C")
        .arg(&project)
        .arg("sim")
        .arg(format!("SIM={sim}")))?;
    let n = samples(&dir.join("input.npy"));
    if !out.contains(&format!("{n} passed, 0 failed")) {
        return Err(format!("make sim:\n{out}").into());
    }
    // Cycles per frame: measured within 10% of the estimate.
    let line = out
        .lines()
        .find(|l| l.starts_with("cycles per frame:"))
        .ok_or_else(|| format!("no cycles per frame in:\n{out}"))?;
    let figures: Vec<f64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    let [measured, estimated] = figures[..] else {
        return Err(format!("cannot read {line:?}").into());
    };
    if (measured - estimated).abs() > 0.1 * estimated {
        return Err(format!("{line}: more than 10% apart").into());
    }
    // The same outputs against the interpreter: exactly.
    let interp = tmp.path().join("interp.npy");
    run(Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .arg("run")
        .arg(dir.join("model.onnx"))
        .arg("--input")
        .arg(dir.join("input.npy"))
        .arg("--output")
        .arg(&interp))?;
    let bytes = std::fs::read(&interp)?;
    let npy = npyz::NpyFile::new(&bytes[..])?;
    let values: Vec<f32> = match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Int => npy
            .into_vec::<i64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => npy.into_vec::<f32>()?,
    };
    let f32s: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(project.join("interp.f32"), f32s)?;
    let check = run(Command::new(project.join("build/check"))
        .current_dir(&project)
        .args(["tb/output.hex", "interp.f32"]))?;
    if !check.contains("largest difference: 0 of") {
        return Err(format!("against the interpreter:\n{check}").into());
    }
    Ok(())
}

fn synth(dir: &Path) -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let project = tmp.path().join("project");
    build(dir, &project, &["--fps", "100000"])?;
    let out = run(Command::new("make").arg("-C").arg(&project).arg("synth"))?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("report/synth.json"))?)?;
    if json["modules"].as_object().is_none_or(|m| m.is_empty()) {
        return Err("report/synth.json has no modules".into());
    }
    let total = out
        .lines()
        .find(|l| l.starts_with("design "))
        .ok_or_else(|| format!("no total in:\n{out}"))?;
    let luts: u64 = total
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot read {total:?}"))?;
    if luts == 0 {
        return Err(format!("no LUTs: {total}").into());
    }
    Ok(())
}
