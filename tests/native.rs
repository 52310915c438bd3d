//! Native code: `bnnc build` writes libraries, headers and objects that run the models (read
//! back through the runtime crate and from C), for every CPU level and for aarch64, and
//! rejects what it cannot build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{bnnc, data};

use bnnc_runtime::{InputType, Model};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_f32(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().unwrap())
}

/// The `--input-type` that takes an .npy file's elements as they are stored.
fn npy_input_type(path: &Path) -> InputType {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let npyz::DType::Plain(ty) = npy.dtype() else {
        panic!("{}: a structured array", path.display())
    };
    use npyz::TypeChar::{Bool, Float, Int, Uint};
    match (ty.type_char(), ty.size_field()) {
        (Float, 4) => InputType::F32,
        (Uint, 1) => InputType::U8,
        (Int, 1) => InputType::I8,
        (Uint, 2) => InputType::U16,
        (Int, 2) => InputType::I16,
        (Uint, 4) => InputType::U32,
        (Int, 4) => InputType::I32,
        (Uint, 8) => InputType::U64,
        (Int, 8) => InputType::I64,
        (Bool, 1) => InputType::Bool,
        _ => panic!("{}: dtype {ty} is no input type", path.display()),
    }
}

/// An .npy file's elements run through `model` as they are stored (the library built for
/// their type).
fn run_npy_as_stored(model: &Model, path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    macro_rules! run {
        ($t:ty) => {
            model.run_batch(&npy.into_vec::<$t>().unwrap()).unwrap()
        };
    }
    match model.input_type() {
        InputType::F32 => run!(f32),
        InputType::U8 => run!(u8),
        InputType::I8 => run!(i8),
        InputType::U16 => run!(u16),
        InputType::I16 => run!(i16),
        InputType::U32 => run!(u32),
        InputType::I32 => run!(i32),
        InputType::U64 => run!(u64),
        InputType::I64 => run!(i64),
        InputType::Bool => run!(bool),
    }
}

/// Builds `model` for this machine into `dir` and loads it.
fn build_and_load(dir: &Path, model: &str, name: &str, extra: &[&str]) -> Model {
    let lib = dir.join(format!("lib{name}.so"));
    let mut args = vec!["build", model, "--name", name, "-o", lib.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = bnnc(&args);
    assert!(out.status.success(), "bnnc build failed: {}", stderr(&out));
    Model::load(&lib, name).unwrap()
}

/// The reference outputs of a model folder's input.npy, within 1e-4 relative.
fn check_against_expected(model: &Model, folder: &str) {
    let (_, input) = read_f32(&data(&format!("{folder}/input.npy")));
    let (_, expected) = read_f32(&data(&format!("{folder}/expected.npy")));
    let got = model.run_batch(&input).unwrap();
    assert_eq!(got.len(), expected.len());
    for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "{folder}: element {i}: {g}, expected {w}"
        );
    }
}

#[test]
fn build_writes_a_library_and_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("models/tfc_w1a1/model.onnx");
    let m = build_and_load(dir.path(), model.to_str().unwrap(), "tfc", &[]);
    assert_eq!((m.input_len(), m.output_len()), (784, 10));
    check_against_expected(&m, "models/tfc_w1a1");
    let header = std::fs::read_to_string(dir.path().join("tfc.h")).unwrap();
    for decl in [
        "size_t tfc_input_len(void);",
        "size_t tfc_output_len(void);",
        "int32_t tfc_run(const float *input, size_t input_len, float *output, size_t output_len);",
        "1 x 1 x 28 x 28",
    ] {
        assert!(header.contains(decl), "missing `{decl}` in:\n{header}");
    }
}

#[test]
fn a_library_answers_only_to_its_model_name_and_checks_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("models/tfc_w1a1/model.onnx");
    let m = build_and_load(dir.path(), model.to_str().unwrap(), "tfc", &[]);
    let err = Model::load(&dir.path().join("libtfc.so"), "cnv").unwrap_err();
    assert!(err.to_string().contains("cnv_run"), "{err}");
    let mut out = vec![0f32; 10];
    assert!(m.run(&[0.0; 783], &mut out).is_err());
    assert!(m.run(&[0.0; 784], &mut out[..9]).is_err());
    assert!(m.run::<f32>(&[], &mut out).is_err());
}

/// Every CPU level x86-64 code may assume (and the vector and scalar popcount kernels
/// they select) gives the reference outputs. The named levels run the LLVM first layer on
/// `i16` lanes, `native` on byte dot products where the machine has VNNI.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_x86_64_cpu_level_gives_the_reference_outputs() {
    let dir = tempfile::tempdir().unwrap();
    for (i, cpu) in ["generic", "x86-64-v2", "x86-64-v3", "native"]
        .iter()
        .enumerate()
    {
        for folder in [
            "models/cnv_w1a1",
            "models/cnv_w2a2",
            "models/xnor_perchannel",
            // 8-bit activations: byte dot products (VNNI, pmaddubsw) or f32 by level.
            "external/zoo_kwsmlp_w3a3",
            // Thresholds counted by arithmetic (a vector floor), and a tf2onnx quantizer as
            // one elementwise chain of 17 nodes (a vector round).
            "variants/mobilenet_block_ts",
            "qkeras/conv_w4a4_tf2onnx",
        ] {
            let model = data(&format!("{folder}/model.onnx"));
            let name = format!("m{i}_{}", folder.replace('/', "_"));
            let m = build_and_load(dir.path(), model.to_str().unwrap(), &name, &["--cpu", cpu]);
            check_against_expected(&m, folder);
        }
    }
}

/// `--target aarch64` gives a relocatable aarch64 ELF object exporting the ABI, for every
/// model of tests/data.
#[test]
fn aarch64_objects_for_every_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut built = 0;
    for set in ["models", "external"] {
        for entry in std::fs::read_dir(data(set)).unwrap() {
            let folder = entry.unwrap().path();
            let model = folder.join("model.onnx");
            if !model.exists() {
                continue;
            }
            let obj = dir.path().join("m.o");
            let out = bnnc(&[
                "build",
                model.to_str().unwrap(),
                "--target",
                "aarch64",
                "--emit",
                "obj",
                "--name",
                "m",
                "-o",
                obj.to_str().unwrap(),
            ]);
            assert!(
                out.status.success(),
                "{}: {}",
                folder.display(),
                stderr(&out)
            );
            let bytes = std::fs::read(&obj).unwrap();
            assert_eq!(&bytes[..4], b"\x7fELF", "{}", folder.display());
            assert_eq!(bytes[4], 2, "64-bit");
            assert_eq!(u16::from_le_bytes([bytes[16], bytes[17]]), 1, "relocatable");
            assert_eq!(
                u16::from_le_bytes([bytes[18], bytes[19]]),
                183,
                "EM_AARCH64"
            );
            for symbol in ["m_input_len", "m_output_len", "m_run"] {
                assert!(
                    bytes
                        .windows(symbol.len() + 1)
                        .any(|w| &w[..symbol.len()] == symbol.as_bytes() && w[symbol.len()] == 0),
                    "{}: no symbol {symbol}",
                    folder.display()
                );
            }
            built += 1;
        }
    }
    assert!(built >= 14, "built {built} models");
}

#[test]
fn a_cross_target_without_a_linker_gets_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("models/tfc_w1a1/model.onnx");
    // No PATH: no cross linker to be found.
    let out = Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .current_dir(dir.path())
        .env("PATH", "")
        .args(["build", model.to_str().unwrap(), "--target", "aarch64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("no linker"), "{}", stderr(&out));
    assert!(dir.path().join("tfc_w1a1.o").exists());
    assert!(dir.path().join("tfc_w1a1.h").exists());
}

#[test]
fn bad_targets_cpus_and_names_are_errors() {
    let model = data("models/tfc_w1a1/model.onnx");
    let model = model.to_str().unwrap();
    for (args, says) in [
        (
            vec!["--target", "riscv64gc-unknown-linux-gnu"],
            "not supported",
        ),
        (vec!["--target", "not a triple"], "not a target triple"),
        (vec!["--cpu", "x86-64-v9"], "unknown CPU"),
        (
            vec!["--target", "aarch64", "--cpu", "x86-64-v3"],
            "x86-64 level",
        ),
        (vec!["--name", "2 models"], "not a C identifier"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out_path = dir.path().join("lib.so");
        let mut all = vec!["build", model, "-o", out_path.to_str().unwrap()];
        all.extend(args.iter().copied());
        let out = bnnc(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"));
        assert!(!out_path.exists());
    }
}

#[test]
fn native_run_rejects_input_of_the_wrong_length() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("y.npy");
    let out = bnnc(&[
        "run",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--input",
        data("models/cnv_w1a1/input.npy").to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
        "--backend",
        "native",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not fit the input's shape [1, 1, 28, 28]"),
        "{}",
        stderr(&out)
    );
    assert!(!out_path.exists());
}

/// The C example: a program including the generated header, linked against the library.
#[test]
fn the_c_example_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("models/cnv_w1a1/model.onnx");
    build_and_load(dir.path(), model.to_str().unwrap(), "cnv_w1a1", &[]);
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/c/main.c");
    let exe = dir.path().join("main");
    let cc = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-std=c11"])
        .arg("-DMODEL_HEADER=\"cnv_w1a1.h\"")
        .arg("-DMODEL=cnv_w1a1")
        .arg("-I")
        .arg(dir.path())
        .arg("-o")
        .arg(&exe)
        .arg(&main)
        .arg("-L")
        .arg(dir.path())
        .arg("-lcnv_w1a1")
        .arg(format!("-Wl,-rpath,{}", dir.path().display()))
        .output()
        .expect("a C compiler (cc) is needed for this test");
    assert!(cc.status.success(), "{}", stderr(&cc));
    // One real CIFAR-10 sample as raw float32.
    let (_, input) = read_f32(&data("models/cnv_w1a1/input.npy"));
    let sample = dir.path().join("sample.f32");
    let bytes: Vec<u8> = input[..3072].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&sample, bytes).unwrap();
    let run = Command::new(&exe).arg(&sample).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}{}", stderr(&run));
    let (_, expected) = read_f32(&data("models/cnv_w1a1/expected.npy"));
    let argmax = (0..10).fold(0, |b, i| if expected[i] > expected[b] { i } else { b });
    assert!(stdout.contains(&format!("argmax: {argmax}")), "{stdout}");
    assert!(stdout.contains("rejected with code 1"), "{stdout}");
}

/// The aarch64 libraries of every model run (under qemu-aarch64) and give the reference
/// outputs. Needs `aarch64-linux-gnu-gcc` and `qemu-aarch64` (Debian: gcc-aarch64-linux-gnu,
/// libc6-dev-arm64-cross, qemu-user; `.ci/run` installs them).
#[test]
fn aarch64_libraries_give_the_reference_outputs_under_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::AarchDriver::build(dir.path());
    let mut ran = 0;
    // With the LLVM backend built in, its kernels (NEON) run too.
    let codegens: &[&str] = if cfg!(feature = "llvm") {
        &["cranelift", "llvm"]
    } else {
        &["cranelift"]
    };
    for &codegen in codegens {
        for set in ["models", "external", "variants", "qkeras"] {
            let mut folders: Vec<PathBuf> = std::fs::read_dir(data(set))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.join("model.onnx").exists())
                .collect();
            folders.sort();
            for folder in folders {
                let lib = dir.path().join("libm.so");
                // The input as stored (integer inputs built to take their own type), raw:
                // the data ends the .npy file.
                let input = folder.join("input.npy");
                let input_type = npy_input_type(&input);
                let out = bnnc(&[
                    "build",
                    folder.join("model.onnx").to_str().unwrap(),
                    "--target",
                    "aarch64",
                    "--name",
                    "m",
                    "--codegen",
                    codegen,
                    "--input-type",
                    input_type.name(),
                    "-o",
                    lib.to_str().unwrap(),
                ]);
                assert!(
                    out.status.success(),
                    "{}: {}",
                    folder.display(),
                    stderr(&out)
                );
                let bytes = std::fs::read(&input).unwrap();
                let elements = bnnc::npy::read_tensor(&input).unwrap().len();
                let raw = &bytes[bytes.len() - elements * input_type.bytes()..];
                let got = driver.run(&lib, "m", raw).unwrap_or_else(|e| {
                    panic!("{}: {e}", folder.display());
                });
                let expected = read_expected(&folder.join("expected.npy"));
                assert_eq!(got.len(), expected.len(), "{}", folder.display());
                for (i, (&g, &w)) in got.iter().zip(&expected).enumerate() {
                    let g = f64::from(g);
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs(),
                        "{}: element {i}: {g}, expected {w}",
                        folder.display()
                    );
                }
                // And the interpreter's numbers bit for bit, as on x86_64.
                let interp = interpreter_bits(&folder, dir.path());
                let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert!(
                    bits == interp,
                    "{} ({codegen}): aarch64 code differs from the interpreter",
                    folder.display()
                );
                ran += 1;
            }
        }
    }
    assert!(ran >= 30 * codegens.len(), "ran {ran} models");
}

/// A model whose graph input is an integer or bool tensor, built with `--input-type` of its
/// input.npy's dtype, takes that buffer as it is stored and gives the interpreter's outputs
/// (which take the same numbers as float32) bit for bit; its header says the C type.
#[test]
fn integer_inputs_run_from_buffers_of_their_own_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut typed = 0;
    let mut folders: Vec<PathBuf> = std::fs::read_dir(data("variants"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("integer_input_")
        })
        .collect();
    folders.sort();
    for folder in &folders {
        let input = folder.join("input.npy");
        let input_type = npy_input_type(&input);
        let model = folder.join("model.onnx");
        let m = build_and_load(
            dir.path(),
            model.to_str().unwrap(),
            "m",
            &["--input-type", input_type.name()],
        );
        assert_eq!(m.input_type(), input_type);
        let got: Vec<u32> = run_npy_as_stored(&m, &input)
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(
            got,
            interpreter_bits(folder, dir.path()),
            "{}",
            folder.display()
        );
        let header = std::fs::read_to_string(dir.path().join("m.h")).unwrap();
        let decl = format!("int32_t m_run(const {} *input,", input_type.c_type());
        assert!(header.contains(&decl), "missing `{decl}` in:\n{header}");
        if input_type != InputType::F32 {
            typed += 1;
            // The header names the model's own type too.
            let declared = format!("({} in the model)", input_type.name().to_uppercase());
            assert!(
                header.contains(&declared),
                "missing `{declared}` in:\n{header}"
            );
            // A float32 buffer is refused by the runtime, naming both types.
            let err = m.run_batch(&vec![0f32; m.input_len()]).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("--input-type {input_type}")),
                "{err}"
            );
        }
    }
    assert!(
        typed >= 5,
        "{typed} models with integer inputs stored as such"
    );
}

/// An integer input buffer must not pass values outside an integer graph input's range, nor
/// integers into bipolar or scaled inputs; float32 is always taken, and a float input takes
/// any type.
#[test]
fn input_types_outside_the_inputs_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libm.so");
    let build = |model: &str, input_type: &str| {
        bnnc(&[
            "build",
            data(model).to_str().unwrap(),
            "--name",
            "m",
            "--input-type",
            input_type,
            "-o",
            lib.to_str().unwrap(),
        ])
    };
    for (model, refused) in [
        ("variants/integer_input_uint8/model.onnx", "int8"),
        ("variants/integer_input_uint8/model.onnx", "uint16"),
        ("variants/integer_input_int8_dq/model.onnx", "uint8"),
    ] {
        let out = build(model, refused);
        assert!(
            !out.status.success(),
            "{model} built with --input-type {refused}"
        );
        let err = stderr(&out);
        assert!(
            err.contains("input 'x' holds") && err.contains(refused),
            "{model}, {refused}: {err}"
        );
    }
    for (model, taken) in [
        ("variants/integer_input_uint8/model.onnx", "bool"),
        ("variants/integer_input_uint8/model.onnx", "float32"),
        ("variants/integer_input_int64/model.onnx", "uint8"),
        ("models/tfc_w1a1/model.onnx", "float32"),
    ] {
        let out = build(model, taken);
        assert!(out.status.success(), "{model}, {taken}: {}", stderr(&out));
    }
    let out = build("models/tfc_w1a1/model.onnx", "float64");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an input type"),
        "{}",
        stderr(&out)
    );
    // An FPGA design has no input buffer of a C type to choose.
    let out = bnnc(&[
        "build",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--target",
        "hls",
        "--input-type",
        "uint8",
        "-o",
        dir.path().join("hls").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--input-type"), "{}", stderr(&out));
}

/// The bits of the interpreter's outputs on a folder's input.npy, as native code returns
/// them (f32; TopK's int64 indices as f32).
fn interpreter_bits(folder: &Path, scratch: &Path) -> Vec<u32> {
    let out = scratch.join("interp.npy");
    let done = bnnc(&[
        "run",
        folder.join("model.onnx").to_str().unwrap(),
        "--input",
        folder.join("input.npy").to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(
        done.status.success(),
        "{}: {}",
        folder.display(),
        stderr(&done)
    );
    // Exact both ways: f32 values and small indices survive the trip through f64.
    read_expected(&out)
        .into_iter()
        .map(|v| (v as f32).to_bits())
        .collect()
}

/// expected.npy as f64, whether it holds float32 or int64 (TopK indices).
fn read_expected(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    match npy.dtype() {
        npyz::DType::Plain(t) if t.type_char() == npyz::TypeChar::Int => npy
            .into_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        _ => npy
            .into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    }
}

/// The pass snapshot cases that have no native kernel, and the error they must give (none
/// now: average_pool_stays runs since AveragePool has a kernel).
const CASES_WITHOUT_KERNELS: &[(&str, &str)] = &[];

/// Every small model of the pass snapshot cases (passes/tests/cases) runs natively (with
/// the LLVM kernels too, when built with them) with the interpreter's outputs, bit for bit: the kernels each pass leads to (bit-serial planes of
/// signed and unsigned integers, XNOR layers times a scale, thresholds moved onto integers,
/// split biases) against the semantics.
#[test]
fn every_pass_case_runs_natively_as_interpreted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("passes/tests/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .flat_map(|d| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let label = case.strip_prefix(&root).unwrap().display().to_string();
        let graph = bnnc_frontend_onnx::load_model(case).unwrap();
        let graph = bnnc_passes::run_pipeline(graph, &mut |_| {}).unwrap();
        let ty = &graph.value(graph.inputs()[0]).ty;
        // Values in [-2, 2) with exact zeros and ties of the quantizers' steps.
        let input: Vec<f32> = (0..ty.numel())
            .map(|j| ((j * 37 + i * 11) % 64) as f32 / 16.0 - 2.0)
            .collect();
        let x = bnnc_ir::Tensor::f32(ty.shape.clone(), input.clone());
        let want = bnnc_ir::interp::run(&graph, &[x]).unwrap()[0].to_f32_vec();
        let codegens: &[&str] = if cfg!(feature = "llvm") {
            &["cranelift", "llvm"]
        } else {
            &["cranelift"]
        };
        for codegen in codegens {
            let name = format!("case{i}_{codegen}");
            let lib = dir.path().join(format!("lib{name}.so"));
            let path = case.to_str().unwrap();
            let args = ["build", path, "--name", &name, "-o", lib.to_str().unwrap()];
            let out = bnnc(&[&args[..], &["--codegen", codegen]].concat());
            let expected_error = CASES_WITHOUT_KERNELS.iter().find(|(c, _)| *c == label);
            match (out.status.success(), expected_error) {
                (true, None) => {
                    let got = Model::load(&lib, &name).unwrap().run_batch(&input).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    if bits(&got) != bits(&want) {
                        failures.push(format!(
                            "{label} ({codegen}): native {got:?}, interpreter {want:?}"
                        ));
                    }
                }
                (false, Some((_, error))) if stderr(&out).contains(error) => {}
                (ok, _) => failures.push(format!(
                    "{label} ({codegen}): build ok = {ok}: {}",
                    stderr(&out)
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The runtime's activation bits and the compiler's weight bits share one layout (the
/// compiler packs with the runtime's functions): a matrix column packs to the words of the
/// same run, so `popcount(a ^ w)` lines them up.
#[test]
fn activation_and_weight_bit_layouts_agree() {
    let values: Vec<f32> = (0..70)
        .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
        .collect();
    let runtime = bnnc_runtime::packing::pack_bipolar(values.iter().copied());
    // A (70, 1) matrix packs its one column of 70 rows.
    let column = bnnc_ir::Tensor::f32(vec![70, 1], values);
    let compiler = bnnc_ir::packing::pack_matrix_weights(&column).unwrap();
    let compiler: Vec<u64> = compiler.to_i64_vec().iter().map(|&w| w as u64).collect();
    assert_eq!(runtime, compiler);
}

/// Issue 12, finding 4: a MultiThreshold declared UINT1 but biased by -1 (levels -1 and 0)
/// into a 3x3 convolution of 4-bit weights with 16 channels: native code, bit-serial, gave
/// exactly the negation of the interpreter. The levels now decide the type (i2), and both
/// agree bit for bit.
#[test]
fn contradicting_threshold_annotations_compile_to_the_interpreters_integers() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("regressions/uint1_biased_into_bitserial_conv.onnx");
    let input = data("regressions/uint1_biased_into_bitserial_conv_input.npy");
    let run = |backend: &str| {
        let y = dir.path().join(format!("{backend}.npy"));
        let out = Command::new(env!("CARGO_BIN_EXE_bnnc"))
            .args([
                "run",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ])
            .args(["--output", y.to_str().unwrap(), "--backend", backend])
            .env("BNNC_BIT_SERIAL", "always")
            .output()
            .unwrap();
        assert!(out.status.success(), "{backend}: {}", stderr(&out));
        read_f32(&y)
    };
    let (interp, native) = (run("interp"), run("native"));
    assert_eq!(interp.0, native.0);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&interp.1), bits(&native.1));
    assert!(interp.1.iter().any(|&v| v != 0.0));
}

/// Native code computes the interpreter's numbers exactly, floats included: every float sum
/// follows the interpreter's order (MLAS's and Eigen's for convolutions, pooling and means),
/// so every model folder's outputs agree bit for bit, not only within the reference's
/// tolerance.
#[test]
fn native_outputs_equal_the_interpreters_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let mut folders = Vec::new();
    for set in ["models", "external", "variants", "qkeras"] {
        for entry in std::fs::read_dir(data(set)).unwrap() {
            let path = entry.unwrap().path();
            if path.join("model.onnx").exists() {
                folders.push(path);
            }
        }
    }
    folders.sort();
    assert!(folders.len() >= 18, "{} model folders", folders.len());
    let mut differ = Vec::new();
    for folder in &folders {
        let model = folder.join("model.onnx");
        let input = folder.join("input.npy");
        let run = |backend: &[&str]| {
            let out = dir.path().join("out.npy");
            let mut args = vec![
                "run",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                out.to_str().unwrap(),
                "--backend",
            ];
            args.extend_from_slice(backend);
            let done = bnnc(&args);
            assert!(
                done.status.success(),
                "{}: {}",
                folder.display(),
                stderr(&done)
            );
            std::fs::read(&out).unwrap()
        };
        // The same .npy bytes: shape, dtype and every bit of every value, with either code
        // generator.
        let interp = run(&["interp"]);
        let codegens: &[&str] = if cfg!(feature = "llvm") {
            &["cranelift", "llvm"]
        } else {
            &["cranelift"]
        };
        for codegen in codegens {
            if run(&["native", "--codegen", codegen]) != interp {
                differ.push(format!("{} ({codegen})", folder.display()));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "native outputs differ from the interpreter's: {differ:?}"
    );
}

/// QONNX `Trunc`, v1 (a shift by the bit widths' difference) and v2 (a shift by the scales'
/// ratio, clamped to the output range), in native code as in the interpreter, bit for bit.
#[test]
fn trunc_runs_natively_as_interpreted() {
    use bnnc_ir::op::{RoundingMode, TruncAttrs};
    use bnnc_ir::{ElemType, Graph, Op, Tensor, TensorType};

    let values: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) * 2.37).collect();
    for (v2, rounding) in [(false, RoundingMode::Floor), (true, RoundingMode::HalfEven)] {
        let mut g = Graph::new("trunc");
        let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 256]));
        let mut scalar = |name: &str, v: f32| g.add_const(name, None, Tensor::scalar(v)).unwrap();
        let mut operands = vec![
            x,
            scalar("scale", 0.5),
            scalar("zero_point", 0.0),
            scalar("in_bits", 9.0),
            scalar("out_bits", 4.0),
        ];
        if v2 {
            operands.push(scalar("out_scale", 8.0));
        }
        let attrs = TruncAttrs {
            rounding,
            signed: true,
            narrow: false,
            v2,
        };
        let y = g
            .add_node("trunc", Op::Trunc(attrs), &operands, vec!["y".into()])
            .unwrap()[0];
        g.set_outputs(vec![y]);
        let input = Tensor::f32(vec![1, 256], values.clone());
        let want = bnnc_ir::interp::run(&g, &[input]).unwrap()[0].to_f32_vec();
        let loaded = bnnc::native::load(
            &g,
            &bnnc::Tuning::default(),
            bnnc::native::LoadOptions {
                name: "trunc".into(),
                codegen: bnnc::native::Codegen::Cranelift,
                profile: false,
                dir: None,
            },
        )
        .unwrap();
        let got = loaded.model.run_batch(&values).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want), "Trunc v2={v2}");
    }
}

/// A batch split over threads gives the same outputs as one call: samples are independent and
/// the ABI is reentrant.
#[test]
fn a_batch_split_over_threads_gives_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let model = data("models/tfc_w1a1/model.onnx");
    let m = build_and_load(dir.path(), model.to_str().unwrap(), "tfc", &[]);
    let (_, input) = read_f32(&data("models/tfc_w1a1/test_x.npy"));
    let one = m.run_batch(&input).unwrap();
    for threads in [1, 2, 3, 8, 1000] {
        let mut out = vec![0f32; one.len()];
        m.run_parallel(&input, &mut out, threads).unwrap();
        assert_eq!(out, one, "{threads} threads");
    }
    let mut short = vec![0f32; one.len() - 1];
    assert!(m.run_parallel(&input, &mut short, 4).is_err());
}

/// The LLVM kernels take grouped and depthwise XNOR and bit-serial convolutions, padded or
/// not (XNOR ones fused or not, bit-serial ones fused): the native filetests run these
/// graphs through both code generators against the interpreter; this checks that the
/// grouped steps are the LLVM kernels' rather than left to Cranelift.
#[cfg(feature = "llvm")]
#[test]
fn llvm_kernels_take_grouped_convolutions() {
    use bnnc_cranelift::{KernelProvider, PlaneConvKernel, XnorConvKernel};

    /// The LLVM kernels, and the groups of each kernel they took.
    struct Taken {
        llvm: bnnc_llvm::LlvmKernels,
        xnor: Vec<usize>,
        planes: Vec<usize>,
    }
    impl KernelProvider for Taken {
        fn xnor_conv(&mut self, k: &XnorConvKernel) -> bool {
            let taken = self.llvm.xnor_conv(k);
            if taken {
                self.xnor.push(k.groups);
            }
            taken
        }
        fn plane_conv(&mut self, k: &PlaneConvKernel) -> bool {
            let taken = self.llvm.plane_conv(k);
            if taken {
                self.planes.push(k.groups);
            }
            taken
        }
    }
    // (filetest, groups of the XNOR kernels taken, of the bit-serial ones)
    let cases: [(&str, &[usize], &[usize]); 2] = [
        // Every layer: the padded depthwise one (its threshold fused), the unpadded one (its
        // threshold and pool fused) and the pointwise one (its sums).
        ("depthwise_xnor_conv.bnn", &[16, 16, 1], &[]),
        // Both layers, their multi-thresholds fused: the padded depthwise one and the 1x1
        // one in two groups.
        ("grouped_bitserial_conv.bnn", &[], &[72, 2]),
    ];
    for (file, xnor, planes) in cases {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/filetests/native")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        // The graph: from its `graph` line to its closing brace.
        let start = text.find("\ngraph ").expect("a graph") + 1;
        let end = start + text[start..].find("\n}\n").expect("a closing brace") + 3;
        let graph = bnnc_ir::text::parse_graph(&text[start..end]).unwrap();
        let host = bnnc_cranelift::Triple::host().to_string();
        let options =
            bnnc::native::options(&host, None, "grouped".into(), &bnnc::Tuning::default()).unwrap();
        let mut taken = Taken {
            llvm: bnnc_llvm::LlvmKernels::new(&host, "native").unwrap(),
            xnor: Vec::new(),
            planes: Vec::new(),
        };
        bnnc_cranelift::compile_with(&graph, &options, &mut taken).unwrap();
        assert_eq!(
            (&taken.xnor[..], &taken.planes[..]),
            (xnor, planes),
            "{file}"
        );
        taken.llvm.finish().unwrap();
    }
}
