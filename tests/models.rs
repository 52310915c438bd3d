//! End-to-end: every model folder under tests/data runs through `bnnc run` (the interpreter,
//! and native code from the Cranelift backend) and must give the reference executor's outputs: integers exactly, floats within 1e-4 of
//! their row's magnitude, the argmax of every row identical, and the same accuracy on the
//! held-out set.
//!
//! The folders are those of tests/data/models, external, variants and qkeras. A folder holds
//! model.onnx, input.npy and expected.npy, and optionally test_x.npy,
//! test_y.npy and test_expected.npy (the whole held-out split).

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::{Arguments, Failed, Trial};

/// Tolerance for float outputs, relative to the largest magnitude of their row: float32
/// rounding of the final affine layers. The rounding of a sum is relative to its terms, not
/// to its result, so a logit that cancels to near zero is held to the row's scale. (Layers on
/// scaled integers round once where onnxruntime rounds per product; see `bnnc_ir::interp`.)
const REL_TOL: f64 = 1e-4;

fn main() {
    let args = Arguments::from_args();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut trials = Vec::new();
    for set in ["models", "external", "variants", "qkeras"] {
        for dir in model_dirs(&data.join(set)) {
            let name = format!("{set}/{}", dir.file_name().unwrap().to_string_lossy());
            // Every model runs as imported (`--passes none`) and optimized (the default)
            // through the interpreter, and optimized as native code (`native`; with the
            // LLVM backend built in, also with its XNOR kernels: `native-llvm`).
            let variants: &[&'static str] = if cfg!(feature = "llvm") {
                &["none", "default", "native", "native-llvm"]
            } else {
                &["none", "default", "native"]
            };
            for &passes in variants {
                let d = dir.clone();
                trials.push(Trial::test(format!("{name}/{passes}/input"), move || {
                    check_run(&d, passes, "input.npy", "expected.npy", None)
                }));
                if dir.join("test_x.npy").exists() {
                    let d = dir.clone();
                    trials.push(Trial::test(
                        format!("{name}/{passes}/test_set"),
                        move || {
                            check_run(
                                &d,
                                passes,
                                "test_x.npy",
                                "test_expected.npy",
                                Some("test_y.npy"),
                            )
                        },
                    ));
                }
            }
        }
    }
    assert!(
        trials.len() >= 60,
        "expected the models of tests/data, found {} trials",
        trials.len()
    );
    libtest_mimic::run(&args, trials).exit();
}

fn model_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    dirs
}

/// An array read back from .npy: its shape, its values, and whether it holds integers.
struct Array {
    shape: Vec<u64>,
    values: Vec<f64>,
    integer: bool,
}

fn read_npy(path: &Path) -> Array {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    let npyz::DType::Plain(ty) = npy.dtype() else {
        panic!("{}: structured dtype", path.display())
    };
    match ty.type_char() {
        npyz::TypeChar::Float if ty.size_field() == 4 => Array {
            shape,
            values: npy
                .into_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect(),
            integer: false,
        },
        npyz::TypeChar::Int => Array {
            shape,
            values: npy
                .into_vec::<i64>()
                .unwrap()
                .into_iter()
                .map(|x| x as f64)
                .collect(),
            integer: true,
        },
        other => panic!("{}: unexpected dtype {other:?}", path.display()),
    }
}

fn check_run(
    dir: &Path,
    passes: &str,
    input: &str,
    expected: &str,
    labels: Option<&str>,
) -> Result<(), Failed> {
    let out_dir = tempfile::tempdir()?;
    let out = out_dir.path().join("out.npy");
    let status = Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .arg("run")
        .arg(dir.join("model.onnx"))
        .arg("--input")
        .arg(dir.join(input))
        .arg("--output")
        .arg(&out)
        .args(match passes {
            "native" => vec!["--backend", "native"],
            "native-llvm" => vec!["--backend", "native", "--codegen", "llvm"],
            p => vec!["--passes", p],
        })
        .output()?;
    if !status.status.success() {
        return Err(format!(
            "bnnc run failed: {}",
            String::from_utf8_lossy(&status.stderr)
        )
        .into());
    }
    let got = read_npy(&out);
    let want = read_npy(&dir.join(expected));
    compare(&got, &want)?;
    if let Some(labels) = labels {
        let labels = read_npy(&dir.join(labels));
        let (ours, reference) = (accuracy(&got, &labels), accuracy(&want, &labels));
        if ours != reference {
            return Err(format!("accuracy {ours} differs from the reference's {reference}").into());
        }
    }
    Ok(())
}

fn compare(got: &Array, want: &Array) -> Result<(), Failed> {
    if got.shape != want.shape {
        return Err(format!("shape {:?}, expected {:?}", got.shape, want.shape).into());
    }
    if got.integer != want.integer {
        return Err(format!("integer output {}, expected {}", got.integer, want.integer).into());
    }
    let width = want.shape.last().map_or(1, |&w| w as usize).max(1);
    let row_magnitude: Vec<f64> = want
        .values
        .chunks(width)
        .map(|row| row.iter().fold(0.0, |m: f64, v| m.max(v.abs())))
        .collect();
    for (i, (&g, &w)) in got.values.iter().zip(&want.values).enumerate() {
        let ok = if want.integer {
            g == w
        } else {
            (g - w).abs() <= REL_TOL * row_magnitude[i / width]
        };
        if !ok {
            return Err(format!("element {i}: got {g}, expected {w}").into());
        }
    }
    if got.shape.last().is_some_and(|&w| w > 1) {
        let (ga, wa) = (argmax_rows(got), argmax_rows(want));
        if let Some(row) = ga.iter().zip(&wa).position(|(a, b)| a != b) {
            return Err(format!(
                "row {row}: argmax {} differs from the reference's {}",
                ga[row], wa[row]
            )
            .into());
        }
    }
    Ok(())
}

/// The index of the largest value of each row (the last axis; the first on ties, as numpy).
fn argmax_rows(a: &Array) -> Vec<usize> {
    let width = a.shape.last().map_or(1, |&w| w as usize).max(1);
    a.values
        .chunks(width)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > row[best] { i } else { best })
        })
        .collect()
}

fn accuracy(outputs: &Array, labels: &Array) -> f64 {
    let predicted = argmax_rows(outputs);
    let correct = predicted
        .iter()
        .zip(&labels.values)
        .filter(|(&p, &l)| p == l as usize)
        .count();
    correct as f64 / labels.values.len() as f64
}
