//! The command line: its output on good models, and its errors and exit codes on bad ones.

mod common;
use common::{bnnc, data};

/// Runs `bnnc inspect` on a malformed model and returns its error message, checking that it
/// failed cleanly (exit code 1, no panic).
fn rejected(model: &str) -> String {
    let out = bnnc(&["inspect", data(model).to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{model}: expected exit 1, stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{model}: panicked: {stderr}");
    stderr
}

#[test]
fn unsupported_op_names_node_and_op() {
    let err = rejected("invalid/unsupported_op.onnx");
    assert!(
        err.contains("mystery_einsum") && err.contains("Einsum"),
        "{err}"
    );
}

#[test]
fn shape_conflict_names_node_and_op() {
    let err = rejected("invalid/shape_conflict.onnx");
    assert!(err.contains("bad_gemm") && err.contains("gemm"), "{err}");
}

#[test]
fn external_data_outside_model_directory_is_refused() {
    let err = rejected("invalid/external_escape.onnx");
    assert!(err.contains("tensor `w`"), "{err}");
    assert!(err.contains("outside") || err.contains("escape"), "{err}");
}

#[test]
fn wrong_operand_count_names_node() {
    let err = rejected("invalid/bipolarquant_arity.onnx");
    assert!(err.contains("lonely_bq"), "{err}");
}

#[test]
fn garbage_file_is_an_error() {
    let err = rejected("invalid/garbage.onnx");
    assert!(err.contains("garbage.onnx"), "{err}");
}

#[test]
fn missing_file_is_an_error() {
    let err = rejected("invalid/no_such_model.onnx");
    assert!(err.contains("no_such_model.onnx"), "{err}");
}

#[test]
fn bad_usage_exits_2() {
    let out = bnnc(&["inspect"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inspect_shows_binary_layers() {
    let out = bnnc(&[
        "inspect",
        data("models/cnv_w1a1/model.onnx").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    // The second conv multiplies bipolar activations by bipolar weights: 64*64*3*3 weight bits.
    let conv1 = table
        .lines()
        .find(|l| l.starts_with("Conv_1 "))
        .unwrap_or_else(|| panic!("no Conv_1 row:\n{table}"));
    assert!(conv1.contains("bipolar"), "{conv1}");
    assert!(conv1.contains("36_864"), "{conv1}");
    assert!(
        table.lines().last().unwrap().starts_with("total:"),
        "{table}"
    );
}

#[test]
fn inspect_ir_prints_the_text_form() {
    let model = data("models/tfc_w1a1/model.onnx");
    let ir = |extra: &[&str]| {
        let mut args = vec!["inspect", "--ir", model.to_str().unwrap()];
        args.extend(extra);
        let out = bnnc(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let imported = ir(&["--passes", "none"]);
    assert!(imported.starts_with("graph "), "{imported}");
    assert!(imported.contains("= bipolar_quant "), "{imported}");
    assert!(imported.contains("= gemm "), "{imported}");
    let optimized = ir(&[]);
    assert!(optimized.contains("= xnor_matmul "), "{optimized}");
    assert!(!optimized.contains("= gemm "), "{optimized}");
}

#[test]
fn run_rejects_input_of_the_wrong_shape() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("y.npy");
    // tfc takes 1x28x28 images; CNV's inputs are 3x32x32.
    let out = bnnc(&[
        "run",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--input",
        data("models/cnv_w1a1/input.npy").to_str().unwrap(),
        "--output",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("global_in"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn inspect_json_counts_ops_and_layers() {
    let model = data("models/cnv_w1a1/model.onnx");
    let parse = |args: &[&str]| -> serde_json::Value {
        let out = bnnc(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    };
    let imported = parse(&[
        "inspect",
        model.to_str().unwrap(),
        "--json",
        "--passes",
        "none",
    ]);
    assert_eq!(imported["ops"]["conv"], 6, "{imported}");
    assert_eq!(imported["ops"]["batchnorm"], 8, "{imported}");
    let optimized = parse(&["inspect", model.to_str().unwrap(), "--json"]);
    assert_eq!(optimized["ops"]["xnor_conv"], 5, "{optimized}");
    assert_eq!(optimized["ops"]["xnor_matmul"], 3, "{optimized}");
    let layers = optimized["layers"].as_array().unwrap();
    let conv1 = layers
        .iter()
        .find(|l| l["node"] == "Conv_1")
        .expect("Conv_1 is a layer");
    assert_eq!(conv1["op"], "xnor_conv");
    assert_eq!(conv1["weight_type"], "bipolar");
    assert_eq!(conv1["precision"], "w1a1");
    let conv0 = layers
        .iter()
        .find(|l| l["node"] == "Conv_0")
        .expect("Conv_0 is a layer");
    // The first layer keeps its 8-bit input against binary weights.
    assert_eq!(conv0["precision"], "w1a8");
    assert_eq!(conv1["output_shape"], serde_json::json!([1, 64, 28, 28]));
    assert_eq!(conv1["macs"], 28_901_376);
    assert_eq!(optimized["totals"]["macs"], imported["totals"]["macs"]);
}

#[test]
fn inspect_passes_lists_changes() {
    let out = bnnc(&[
        "inspect",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--passes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("lower-xnor-popcount:"), "{text}");
    assert!(
        text.contains("`Gemm_1` (gemm) is now xnor_matmul"),
        "{text}"
    );
}

#[test]
fn build_emits_ir_and_prints_after_a_pass() {
    let out = bnnc(&[
        "build",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--emit",
        "ir",
        "--print-after",
        "lower-xnor-popcount",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ir = String::from_utf8(out.stdout).unwrap();
    assert!(ir.contains("= xnor_matmul "), "{ir}");
    let printed = String::from_utf8(out.stderr).unwrap();
    assert!(
        printed.starts_with("; IR after lower-xnor-popcount\ngraph "),
        "{printed}"
    );
}

#[test]
fn build_rejects_unknown_pass() {
    let model = data("models/tfc_w1a1/model.onnx");
    let out = bnnc(&[
        "build",
        model.to_str().unwrap(),
        "--emit",
        "ir",
        "--print-after",
        "no-such-pass",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pass `no-such-pass`"));
}

#[test]
fn run_refuses_an_npy_header_larger_than_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("huge.npy");
    let mut header =
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 784), }".to_vec();
    header.resize(117, b' '); // 10 preamble bytes + 118 = a multiple of 64
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header);
    bytes.extend([0u8; 16]);
    std::fs::write(&input, bytes).unwrap();
    let out = bnnc(&[
        "run",
        data("models/tfc_w1a1/model.onnx").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("y.npy").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more data than the file holds"), "{err}");
}

#[test]
fn first_last_int8_says_what_it_changed() {
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("passes/tests/cases/first-last-precision/float_first_layer.onnx");
    let case = case.to_str().unwrap();
    let keep = bnnc(&["build", case, "--emit", "ir"]);
    assert!(keep.status.success());
    assert!(!String::from_utf8_lossy(&keep.stderr).contains("--first-last"));
    assert!(String::from_utf8_lossy(&keep.stdout).contains("%w0: f32[4,6]"));
    let int8 = bnnc(&["build", case, "--emit", "ir", "--first-last", "int8"]);
    assert!(int8.status.success());
    let stderr = String::from_utf8_lossy(&int8.stderr);
    assert!(
        stderr.contains("note: --first-last int8: quantized the f32 weights `w0`")
            && stderr.contains("this can change accuracy"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&int8.stdout).contains("%w0.int8: i8*[4]@0[4,6]"));
    let bad = bnnc(&["build", case, "--emit", "ir", "--first-last", "int4"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn inspect_target_hls_prints_the_plan() {
    let model = data("models/tfc_w1a1/model.onnx");
    let model = model.to_str().unwrap();
    let out = bnnc(&["inspect", model, "--target", "hls", "--fps", "100000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for line in [
        "Gemm_0 ",
        "Gemm_3 ",
        "part xc7z020clg400-1",
        "initiation interval",
    ] {
        assert!(table.contains(line), "no {line:?} in:\n{table}");
    }
    let out = bnnc(&[
        "inspect",
        model,
        "--target",
        "hls",
        "--json",
        "--part",
        "xczu3eg-sbva484-1-e",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["part"]["name"], "xczu3eg-sbva484-1-e");
    assert_eq!(json["layers"][0]["layer"], "Gemm_0");
    assert!(json["fps"].as_f64().unwrap() > 0.0);
}

#[test]
fn fpga_options_are_checked() {
    let model = data("models/tfc_w1a1/model.onnx");
    let model = model.to_str().unwrap();
    let err = |args: &[&str]| {
        let out = bnnc(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        err(&["inspect", model, "--target", "hls", "--part", "xc9nope"])
            .contains("unknown part 'xc9nope'")
    );
    assert!(
        err(&["inspect", model, "--target", "hls", "--part", "list"])
            .contains("xc7z020clg400-1 (Pynq-Z1")
    );
    assert!(err(&["inspect", model, "--target", "vhdl"])
        .contains("`--target vhdl` takes `hls`, `verilog`, or a CPU"));
    let dir = tempfile::tempdir().unwrap();
    let folding = dir.path().join("folding.json");
    std::fs::write(&folding, r#"{"Gemm_0": {"PE": 5}}"#).unwrap();
    let e = err(&[
        "inspect",
        model,
        "--target",
        "hls",
        "--folding",
        folding.to_str().unwrap(),
    ]);
    assert!(
        e.contains("layer 'Gemm_0': PE 5 does not divide MH 64"),
        "{e}"
    );
}

#[test]
fn build_target_hls_writes_a_project() {
    let model = data("models/tfc_w1a1/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("tfc");
    let out = bnnc(&[
        "build",
        model.to_str().unwrap(),
        "--target",
        "hls",
        "-o",
        out_dir.to_str().unwrap(),
        "--ap-types",
        dir.path().join("none").to_str().unwrap(),
    ]);
    // Missing ap_int headers are the user's to add: the project is still written.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no ap_int.h"));
    for file in [
        "src/tfc_w1a1_top.cpp",
        "src/tfc_w1a1_top.h",
        "src/bnnc_hls.h",
        "host/tfc_w1a1_host.c",
        "host/tfc_w1a1_host.h",
        "host/bnnc_host_ops.h",
        "tb/tfc_w1a1_tb.cpp",
        "tb/input.f32",
        "tb/expected.f32",
        "csim/hls_stream.h",
        "Makefile",
        "run_hls.tcl",
        "hls_config.cfg",
        "README.md",
        "folding.json",
        "report.json",
    ] {
        assert!(out_dir.join(file).exists(), "no {file}");
    }
    let top = std::fs::read_to_string(out_dir.join("src/tfc_w1a1_top.cpp")).unwrap();
    for pragma in [
        "INTERFACE axis port=in",
        "INTERFACE axis port=out",
        "DATAFLOW",
        "STREAM variable=",
        "PIPELINE II=1",
    ] {
        assert!(top.contains(pragma), "no {pragma} in the top");
    }
    // Seeded random test vectors by default: 8 samples of 784 floats.
    assert_eq!(
        std::fs::metadata(out_dir.join("tb/input.f32"))
            .unwrap()
            .len(),
        8 * 784 * 4
    );
    // The written folding builds the same plan again.
    let folding = out_dir.join("folding.json");
    let again = bnnc(&[
        "inspect",
        model.to_str().unwrap(),
        "--target",
        "hls",
        "--folding",
        folding.to_str().unwrap(),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// A float32 .npy of `shape` with zeros.
fn zeros_npy(path: &std::path::Path, shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (header.len() + 11) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + shape.iter().product::<usize>() * 4, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Native code used to take any input whose length was whole samples ((1, 28, 28) for a
/// (1, 1, 28, 28) input) where the interpreter rejects it: both reject it now.
#[test]
fn native_run_rejects_a_shape_the_interpreter_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    let model = data("models/tfc_w1a1/model.onnx");
    let run = |backend: &str| {
        bnnc(&[
            "run",
            model.to_str().unwrap(),
            "--input",
            x.to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
            "--backend",
            backend,
        ])
    };
    zeros_npy(&x, &[1, 28, 28]);
    for backend in ["interp", "native"] {
        let out = run(backend);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{backend}: {err}");
        assert!(
            err.contains("does not fit the input's shape [1, 1, 28, 28]"),
            "{backend}: {err}"
        );
        assert!(!y.exists());
    }
    // A batch of two gives (2, 10) from both.
    zeros_npy(&x, &[2, 1, 28, 28]);
    for backend in ["interp", "native"] {
        let out = run(backend);
        assert!(
            out.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let header = std::fs::read(&y).unwrap();
        let header = String::from_utf8_lossy(&header[..80]).replace(' ', "");
        assert!(
            header.contains("(2,10,)") || header.contains("(2,10)"),
            "{backend}: {header}"
        );
    }
}

/// `inspect --target CPU` shows the native schedule: the first layer on i16 lanes, XNOR
/// layers with their thresholds fused, and bits between them.
#[test]
fn inspect_shows_the_native_storage_plan() {
    let model = data("models/cnv_w1a1/model.onnx");
    let out = bnnc(&["inspect", model.to_str().unwrap(), "--target", "x86_64"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("conv+threshold Conv_0") && table.contains("int16 lanes"),
        "{table}"
    );
    assert!(
        table.contains("xnor_conv+threshold+maxpool Conv_1"),
        "{table}"
    );
    assert!(table.contains("-> bits scratch+"), "{table}");
    let out = bnnc(&[
        "inspect",
        model.to_str().unwrap(),
        "--target",
        "native",
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    // The input's Mul, Sub and Quant run as one chain, as do the output's Sub, Div, Mul and
    // Add, reading the last layer's integers as they are stored; each layer is one step with
    // its threshold (and pool); one conversion, to the caller's output.
    assert_eq!(steps.len(), 12);
    assert!(plan["scratch_bytes"].as_u64().unwrap() > 0);
    let bad = bnnc(&["inspect", model.to_str().unwrap(), "--target", "riscv64"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// README's first command, `cargo run --release -- build ...`, runs the command line: the
/// root package names `bnnc` its default binary. (The workspace's default members also hold
/// the fuzz targets' binaries, and without it `cargo run` asks which one to run.)
#[test]
fn cargo_run_at_the_root_runs_the_command_line() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let root = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "bnnc")
        .expect("the root package");
    assert_eq!(root["default_run"], "bnnc");
}
