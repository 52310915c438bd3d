//! Every model of tests/data built into a Vitis HLS project and proven by C simulation with
//! g++ (`make csim`): against the reference outputs (input.npy with expected.npy, as a user
//! runs it, and the whole test set where it runs in seconds), and against bnnc's own
//! interpreter, which the design must match bit for bit (largest difference 0).
//!
//! Needs g++ and the Apache-2.0 ap_int headers: `BNNC_AP_TYPES`, or `target/ap_types` where
//! `scripts/test` puts them.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::run;

/// Models whose designs simulate too slowly for their whole test set in CI (a csim of
/// CNV's 397 images takes minutes): input.npy only.
const SLOW: &[&str] = &["cnv_w1a1", "cnv_w2a2"];

/// Exports beyond the reference models that the dataflow plan takes: Keras convolutions
/// through QONNX (a float first layer on the host, a channels-last flatten), grouped and
/// depthwise convolutions, transposes around the layers, FINN's XNOR-popcount form.
const VARIANTS: &[&str] = &[
    "qkeras/conv_w4a4_qonnx",
    "qkeras/mlp_w4a4_qonnx",
    "variants/adaptive_avgpool_ts",
    "variants/binary_depthwise",
    "variants/finn_lowered_cnv",
    "variants/finn_lowered_tfc",
    "variants/conv_groups2",
    "variants/mobilenet_block_ts",
    "variants/nhwc_transposes",
];

fn main() {
    let args = Arguments::from_args();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut trials = Vec::new();
    for set in ["models", "external"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(data.join(set))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|d| d.join("model.onnx").exists())
            .collect();
        dirs.sort();
        for dir in dirs {
            let name = format!("hls/{set}/{}", dir.file_name().unwrap().to_string_lossy());
            trials.push(Trial::test(name, move || csim(&dir)));
        }
    }
    for &variant in VARIANTS {
        let dir = data.join(variant);
        trials.push(Trial::test(format!("hls/{variant}"), move || csim(&dir)));
    }
    libtest_mimic::run(&args, trials).exit();
}

/// The ap_int headers: `BNNC_AP_TYPES`, or `target/ap_types`.
fn ap_types() -> Result<PathBuf, Failed> {
    let dir = std::env::var_os("BNNC_AP_TYPES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ap_types"));
    if dir.join("ap_int.h").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "no ap_int.h in {}: run scripts/test (it fetches the Apache-2.0 headers), or set BNNC_AP_TYPES",
            dir.display()
        )
        .into())
    }
}

/// The floats of a .npy file (float32, or int64 indices).
fn floats(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let npyz::DType::Plain(ty) = npy.dtype() else {
        panic!("{}: structured dtype", path.display())
    };
    match ty.type_char() {
        npyz::TypeChar::Int => npy
            .into_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        _ => npy.into_vec::<f32>().unwrap(),
    }
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// Runs the project's simulation on vectors; checks "N passed, 0 failed" and returns the
/// largest difference it reports.
fn simulate(project: &Path, input: &Path, expected: &Path, samples: usize) -> Result<f64, Failed> {
    let out = run(Command::new(project.join("build/csim"))
        .arg(input)
        .arg(expected))?;
    if !out.contains(&format!("{samples} passed, 0 failed")) {
        return Err(format!("expected {samples} passed, 0 failed:\n{out}").into());
    }
    out.lines()
        .find_map(|l| l.strip_prefix("largest difference: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no largest difference in:\n{out}").into())
}

fn csim(dir: &Path) -> Result<(), Failed> {
    let ap = ap_types()?;
    let tmp = tempfile::tempdir()?;
    let project = tmp.path().join("project");
    let model = dir.join("model.onnx");
    let bnnc = env!("CARGO_BIN_EXE_bnnc");
    run(Command::new(bnnc)
        .args(["build", "--target", "hls", "-o"])
        .arg(&project)
        .arg(&model)
        .arg("--tb-input")
        .arg(dir.join("input.npy"))
        .arg("--tb-expected")
        .arg(dir.join("expected.npy"))
        .arg("--ap-types")
        .arg(&ap))?;
    // The user's command: the reference vectors.
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let out_len = output_len(&project, &name)?;
    let out = run(Command::new("make").arg("-C").arg(&project).arg("csim"))?;
    let samples = floats(&dir.join("expected.npy")).len() / out_len;
    if !out.contains(&format!("{samples} passed, 0 failed")) {
        return Err(format!("make csim:\n{out}").into());
    }
    // The whole test set against the reference, where it runs in seconds.
    let slow = SLOW.contains(&name.as_str());
    let (x_file, ref_file) = if dir.join("test_x.npy").exists() && !slow {
        ("test_x.npy", "test_expected.npy")
    } else {
        ("input.npy", "expected.npy")
    };
    let x = floats(&dir.join(x_file));
    let reference = floats(&dir.join(ref_file));
    let x_path = tmp.path().join("x.f32");
    write_f32(&x_path, &x);
    let n = reference.len() / out_len;
    let ref_path = tmp.path().join("reference.f32");
    write_f32(&ref_path, &reference);
    simulate(&project, &x_path, &ref_path, n)?;
    // Bit for bit against the interpreter on the same inputs.
    let interp = tmp.path().join("interp.npy");
    run(Command::new(bnnc)
        .arg("run")
        .arg(&model)
        .arg("--input")
        .arg(dir.join(x_file))
        .arg("--output")
        .arg(&interp))?;
    let interp_path = tmp.path().join("interp.f32");
    write_f32(&interp_path, &floats(&interp));
    let diff = simulate(&project, &x_path, &interp_path, n)?;
    if diff != 0.0 {
        return Err(format!(
            "the design differs from the interpreter by {diff} of a row's magnitude"
        )
        .into());
    }
    Ok(())
}

/// Floats of one output sample, from the generated host header.
fn output_len(project: &Path, name: &str) -> Result<usize, Failed> {
    let header = std::fs::read_to_string(project.join(format!("host/{name}_host.h")))?;
    let key = format!("{}_OUTPUT_LEN ", name.to_ascii_uppercase());
    header
        .lines()
        .find_map(|l| {
            l.strip_prefix("#define ")
                .and_then(|l| l.strip_prefix(&key))
        })
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {key} in the host header").into())
}
