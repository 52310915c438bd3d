//! Filetests, as Cranelift has them: each `.bnn` file under `tests/filetests/` is one test, a
//! small graph in the IR's text form with what must come out of it.
//!
//! ```text
//! ; test: pass fuse-scales
//! ; any other comment lines
//! graph case (%x: f32[1,4]) {
//!   ...
//! }
//! ; expected:
//! graph case (%x: f32[1,4]) {
//!   ...
//! }
//! ```
//!
//! - `; test: pass NAME` runs the pass of the pipeline named NAME (`bnnc_passes::PIPELINE`)
//!   once. The expected part is the IR after it, printed in full. The interpreter must also
//!   give the same bits before and after the pass on the deterministic inputs below.
//! - `; test: interp` runs the reference interpreter on deterministic inputs; the expected part
//!   is every output's values.
//! - `; test: native` compiles the graph with the Cranelift backend for this machine, loads it
//!   and runs it on the same inputs: its output must be the interpreter's bit for bit, and the
//!   expected part is the interpreter's output values. Its header also states the kernel of
//!   every step of the schedule, in order (`bnnc_cranelift::step_kernels`), on one line:
//!   `; kernels: bipolar_quant, xnor_conv+threshold+maxpool, xnor_conv, convert(i32->f32), ...`.
//! - `; test: fpga` plans the graph for an FPGA (`bnnc_dataflow`) and writes its Vitis HLS
//!   project and its Verilog design, with the deterministic input and the interpreter's output
//!   as the testbenches' vectors; `make csim` (g++ and the ap_int headers, as `tests/hls.rs`
//!   finds them) and `make lint sim` (Verilator's lint, Icarus Verilog) must give the
//!   interpreter's output bit for bit, host code included. The expected part is the
//!   interpreter's output values.
//!
//! `BLESS=1 cargo test --test filetests` writes what came out as the expected part of every
//! file, and a native file's `; kernels:` line (review the diff before committing it).
//! TESTING.md says how to add a file.
//!
//! The same binary also reads back every model of tests/data in the text form: imported,
//! and after every pass of the pipeline, `print_graph_full`, `parse_graph` and `print_graph`
//! must give the text `print_graph` gives of the graph itself (`roundtrip/...` tests).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bnnc_ir::interp;
use bnnc_ir::text::{parse_graph, print_graph, print_graph_full};
use bnnc_ir::{ElemType, Graph, Scale, Tensor, TensorData};
use bnnc_passes::{PassEvent, PipelineOptions, PIPELINE};
use libtest_mimic::{Arguments, Failed, Trial};

/// The line that separates a file's input from its expected output.
const EXPECTED_MARKER: &str = "; expected:";

/// The header line of a native test that states its steps' kernels.
const KERNELS_MARKER: &str = "; kernels:";

fn main() {
    let args = Arguments::from_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut trials = Vec::new();
    let files = bnn_files(&root.join("tests/filetests"));
    assert!(
        !files.is_empty(),
        "no .bnn file under tests/filetests: the harness would test nothing"
    );
    for file in files {
        let name = file
            .strip_prefix(root.join("tests/filetests"))
            .unwrap_or(&file)
            .display()
            .to_string();
        trials.push(Trial::test(name, move || run_file(&file)));
    }
    let data = root.join("tests/data");
    for set in ["models", "external", "variants", "qkeras", "onnx-node"] {
        for dir in model_dirs(&data.join(set)) {
            let name = format!(
                "roundtrip/{set}/{}",
                dir.file_name().unwrap().to_string_lossy()
            );
            trials.push(Trial::test(name, move || roundtrip_model(&dir)));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

/// Every `.bnn` file below `dir`, sorted.
fn bnn_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(bnn_files(&path));
        } else if path.extension().is_some_and(|e| e == "bnn") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn model_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    dirs
}

// ---- filetests ----

/// What a file asks for.
enum Directive {
    Pass(&'static bnnc_passes::Pass),
    Interp,
    Native,
    Fpga,
}

/// A filetest split into its parts.
struct FileTest {
    directive: Directive,
    /// Everything before the expected part, kept as written when blessing.
    input: String,
    /// The expected part, `None` before the file is first blessed.
    expected: Option<String>,
    /// The kernels the header's `; kernels:` line states, if it has one.
    kernels: Option<Vec<String>>,
}

fn parse_file(text: &str) -> Result<FileTest, String> {
    let (input, expected) = match text.split_once(&format!("\n{EXPECTED_MARKER}\n")) {
        Some((input, expected)) => (format!("{input}\n"), Some(expected.to_string())),
        None if text.ends_with('\n') => (text.to_string(), None),
        None => (format!("{text}\n"), None),
    };
    let line = input
        .lines()
        .find_map(|l| l.trim().strip_prefix("; test:"))
        .ok_or("no `; test: ...` line before the graph")?
        .trim();
    let directive = match line.split_whitespace().collect::<Vec<_>>()[..] {
        ["pass", name] => {
            Directive::Pass(PIPELINE.iter().find(|p| p.name == name).ok_or_else(|| {
                let names: Vec<&str> = PIPELINE.iter().map(|p| p.name).collect();
                format!("no pass `{name}` in the pipeline ({})", names.join(", "))
            })?)
        }
        ["interp"] => Directive::Interp,
        ["native"] => Directive::Native,
        ["fpga"] => Directive::Fpga,
        _ => {
            return Err(format!(
                "`; test: {line}`: expected `pass NAME`, `interp`, `native` or `fpga`"
            ))
        }
    };
    let kernels = input
        .lines()
        .find_map(|l| l.trim().strip_prefix(KERNELS_MARKER))
        .map(|list| list.split(',').map(|k| k.trim().to_string()).collect());
    if kernels.is_some() && !matches!(directive, Directive::Native) {
        return Err(format!("`{KERNELS_MARKER}` is for native tests only"));
    }
    Ok(FileTest {
        directive,
        input,
        expected,
        kernels,
    })
}

/// `input` with its `; kernels:` line stating `kernels`: the line replaced, or added after
/// the `; test:` line.
fn with_kernels_line(input: &str, kernels: &[String]) -> String {
    let line = format!("{KERNELS_MARKER} {}", kernels.join(", "));
    let mut lines: Vec<&str> = input.lines().collect();
    match lines
        .iter()
        .position(|l| l.trim().starts_with(KERNELS_MARKER))
    {
        Some(i) => lines[i] = &line,
        None => {
            let test = lines
                .iter()
                .position(|l| l.trim().starts_with("; test:"))
                .expect("parse_file found the `; test:` line");
            lines.insert(test + 1, &line);
        }
    }
    lines.join("\n") + "\n"
}

/// The input's graph: the text after the header's comment lines.
fn input_graph(input: &str) -> Result<Graph, String> {
    // Comment lines become blank lines, so the parser's line numbers are the file's.
    let text: String = input
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(';') {
                ""
            } else {
                l
            }
        })
        .fold(String::new(), |mut s, l| {
            s.push_str(l);
            s.push('\n');
            s
        });
    parse_graph(&text).map_err(|e| format!("the input graph: {e}"))
}

fn run_file(path: &Path) -> Result<(), Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let test = parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let graph = input_graph(&test.input).map_err(|e| format!("{}: {e}", path.display()))?;
    // The kernels the schedule chose, for a native test.
    let kernels = match test.directive {
        Directive::Native => Some(
            bnnc_cranelift::step_kernels(&graph)
                .map_err(|e| format!("{}: cannot schedule natively: {e}", path.display()))?,
        ),
        _ => None,
    };
    let actual = match test.directive {
        Directive::Pass(pass) => run_pass(pass, graph)?,
        Directive::Interp => format_outputs(&graph, &interpret(&graph)?),
        Directive::Native => run_native(&graph)?,
        Directive::Fpga => run_fpga(&graph)?,
    };
    if std::env::var_os("BLESS").is_some_and(|v| v == "1") {
        let input = match &kernels {
            Some(kernels) => with_kernels_line(&test.input, kernels),
            None => test.input,
        };
        let blessed = format!("{input}{EXPECTED_MARKER}\n{actual}");
        if blessed != text {
            std::fs::write(path, blessed).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        return Ok(());
    }
    if let Some(kernels) = kernels {
        let Some(stated) = test.kernels else {
            return Err(format!(
                "{}: no `{KERNELS_MARKER}` line: run with BLESS=1 to write it",
                path.display()
            )
            .into());
        };
        if stated != kernels {
            return Err(format!(
                "{}: the schedule's kernels differ from the `{KERNELS_MARKER}` line\n\
                 stated:    {}\nscheduled: {}\n\
                 (BLESS=1 cargo test --test filetests writes the scheduled ones, if they are right)",
                path.display(),
                stated.join(", "),
                kernels.join(", "),
            )
            .into());
        }
    }
    let Some(expected) = test.expected else {
        return Err(format!(
            "{}: no `{EXPECTED_MARKER}` part: run with BLESS=1 to write it",
            path.display()
        )
        .into());
    };
    if expected != actual {
        return Err(format!(
            "{}: the output differs from the expected part{}\n--- expected\n{expected}--- actual\n{actual}\
             (BLESS=1 cargo test --test filetests writes the actual output, if it is right)",
            path.display(),
            first_difference(&expected, &actual),
        )
        .into());
    }
    Ok(())
}

/// ` at line N of the expected part: ...`, for the message.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut e = expected.lines();
    let mut a = actual.lines();
    for n in 1.. {
        match (e.next(), a.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => break,
            (x, y) => {
                return format!(
                    " at line {n} of the expected part:\n  expected: {}\n  actual:   {}",
                    x.unwrap_or("(nothing)"),
                    y.unwrap_or("(nothing)")
                )
            }
        }
    }
    String::new()
}

/// Runs one pass; the IR after it, printed in full. The interpreter's outputs must not change.
fn run_pass(pass: &bnnc_passes::Pass, mut graph: Graph) -> Result<String, Failed> {
    let before = interpret(&graph)?;
    pass.run(&mut graph, &PipelineOptions::default())
        .map_err(|e| format!("pass {}: {e}", pass.name))?;
    bnnc_ir::verify::verify(&graph)
        .map_err(|e| format!("the IR after {} does not verify: {e}", pass.name))?;
    let after = interpret(&graph)?;
    let (b, a) = (
        format_outputs(&graph, &before),
        format_outputs(&graph, &after),
    );
    if !same_bits(&before, &after) {
        return Err(format!(
            "pass {} changed what the graph computes:\nbefore:\n{b}after:\n{a}",
            pass.name
        )
        .into());
    }
    Ok(print_graph_full(&graph))
}

/// The graph's Vitis HLS project (`make csim`) and Verilog design (`make lint sim`),
/// simulated on the deterministic input, must give the interpreter's output bit for bit; the
/// outputs, as text.
fn run_fpga(graph: &Graph) -> Result<String, Failed> {
    let expected = interpret(graph)?;
    if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
        return Err("an fpga filetest needs one input and one output (the design's ports)".into());
    }
    let ap_types = std::env::var_os("BNNC_AP_TYPES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ap_types"));
    if !ap_types.join("ap_int.h").exists() {
        return Err(format!(
            "no ap_int.h in {}: run scripts/test (it fetches the Apache-2.0 headers), or set BNNC_AP_TYPES",
            ap_types.display()
        )
        .into());
    }
    let options = bnnc_dataflow::Options::default();
    let plan = bnnc_dataflow::plan(graph, &graph.name, &options)
        .map_err(|e| format!("cannot plan the graph: {e}"))?;
    let report = bnnc_dataflow::report(&plan, options.part, options.clock_ns);
    let vectors = bnnc_dataflow::TestVectors {
        inputs: deterministic_input(graph, 0).to_f32_vec(),
        expected: expected[0].to_f32_vec(),
        origin: "the filetest's deterministic input and the interpreter's output".into(),
    };
    let hls = bnnc_hls::project(&plan, &report, &vectors)
        .map_err(|e| format!("cannot write the HLS project: {e}"))?;
    simulate_project(
        &hls,
        &["csim".into(), format!("AP_TYPES={}", ap_types.display())],
    )?;
    let verilog = bnnc_verilog::project(&plan, &report, &vectors)
        .map_err(|e| format!("cannot write the Verilog design: {e}"))?;
    simulate_project(
        &verilog,
        &["lint".into(), "sim".into(), "SIM=iverilog".into()],
    )?;
    Ok(format_outputs(graph, &expected))
}

/// Writes `project` into a temporary folder and runs `make` on `targets` there: it must
/// succeed, lint clean, pass its one sample and differ from the expected output by nothing.
fn simulate_project(project: &bnnc_dataflow::Project, targets: &[String]) -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    for (path, contents) in &project.files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("files lie in the project"))?;
        std::fs::write(path, contents)?;
    }
    let out = std::process::Command::new("make")
        .arg("-C")
        .arg(dir.path())
        .args(targets)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lint_warned = text.contains("%Warning") || text.contains("%Error");
    if !out.status.success()
        || lint_warned
        || !text.contains("1 passed, 0 failed")
        || !text.contains("largest difference: 0 of")
    {
        return Err(format!(
            "make {} differs from the interpreter:\n{text}",
            targets.join(" ")
        )
        .into());
    }
    Ok(())
}

/// The graph compiled for this machine must give the interpreter's outputs bit for bit, with
/// Cranelift and, in a bnnc built with `--features llvm`, with the LLVM kernels too; the
/// outputs, as text.
fn run_native(graph: &Graph) -> Result<String, Failed> {
    let expected = interpret(graph)?;
    if graph.inputs().len() != 1 || graph.outputs().len() != 1 {
        return Err("a native filetest needs one input and one output (the library's ABI)".into());
    }
    let mut codegens = vec![bnnc::native::Codegen::Cranelift];
    if cfg!(feature = "llvm") {
        codegens.push(bnnc::native::Codegen::Llvm);
    }
    for codegen in codegens {
        check_native(graph, codegen, &expected[0].to_f32_vec())
            .map_err(|e| format!("{}: {e}", codegen.describe()))?;
    }
    Ok(format_outputs(graph, &expected))
}

/// The graph compiled by `codegen` gives `want`'s bits.
fn check_native(graph: &Graph, codegen: bnnc::native::Codegen, want: &[f32]) -> Result<(), String> {
    let loaded = bnnc::native::load(
        graph,
        &bnnc::Tuning::default(),
        bnnc::native::LoadOptions {
            name: "filetest".into(),
            codegen,
            profile: false,
            dir: None,
        },
    )
    .map_err(|e| format!("cannot compile natively: {e:#}"))?;
    let input = deterministic_input(graph, 0);
    let mut output = vec![0f32; loaded.model.output_len()];
    loaded
        .model
        .run(input.as_f32().expect("inputs are f32"), &mut output)
        .map_err(|e| format!("the native run failed: {e}"))?;
    if want.len() != output.len() {
        return Err(format!(
            "native code gives {} values, the interpreter {}",
            output.len(),
            want.len()
        ));
    }
    if let Some(i) = (0..want.len()).find(|&i| want[i].to_bits() != output[i].to_bits()) {
        return Err(format!(
            "native element {i} is {:?}, the interpreter's {:?}\nnative:      {output:?}\ninterpreter: {want:?}",
            output[i], want[i]
        ));
    }
    Ok(())
}

/// Runs the interpreter on [`deterministic_input`]s.
fn interpret(graph: &Graph) -> Result<Vec<Tensor>, Failed> {
    let inputs: Vec<Tensor> = (0..graph.inputs().len())
        .map(|i| deterministic_input(graph, i))
        .collect();
    interp::run(graph, &inputs).map_err(|e| format!("the interpreter failed: {e}").into())
}

/// Input `k`'s values: values of its element type, spread by a multiplicative hash so that
/// neighbours differ. Float inputs lie on a grid of 1/16 in [-2, 2), so that exact zeros and
/// quantizer ties occur.
fn deterministic_input(graph: &Graph, k: usize) -> Tensor {
    let ty = &graph.value(graph.inputs()[k]).ty;
    let hash =
        |i: usize| ((i as u64 + 1 + 1000 * k as u64).wrapping_mul(2_654_435_761) >> 7) as i64;
    let of_int = |t: bnnc_ir::IntType, i: usize| -> f32 {
        let span = (t.max() - t.min()).min(1 << 20) + 1;
        let v = t.min() + hash(i).rem_euclid(span);
        // Bipolar's range holds a 0 the type does not.
        if t == bnnc_ir::IntType::Bipolar && v == 0 {
            1.0
        } else {
            v as f32
        }
    };
    let data = (0..ty.numel())
        .map(|i| match &ty.elem {
            ElemType::F32 => (hash(i).rem_euclid(64) - 32) as f32 / 16.0,
            ElemType::Int(t) => of_int(*t, i),
            ElemType::Scaled(t, Scale::Tensor(s)) => of_int(*t, i) * s,
            ElemType::Scaled(t, Scale::Channel { axis, values }) => {
                let inner: usize = ty.shape[axis + 1..].iter().product();
                of_int(*t, i) * values[(i / inner) % values.len()]
            }
        })
        .collect();
    Tensor::f32(ty.shape.clone(), data)
}

/// `%name: [shape] = [v, ...]`, one line per output (i64 outputs as integers).
fn format_outputs(graph: &Graph, outputs: &[Tensor]) -> String {
    let mut s = String::new();
    for (&v, t) in graph.outputs().iter().zip(outputs) {
        let value = graph.value(v);
        let items: Vec<String> = match t.data() {
            TensorData::F32(x) => x.iter().map(|x| format!("{x:?}")).collect(),
            TensorData::I64(x) => x.iter().map(|x| x.to_string()).collect(),
        };
        writeln!(
            s,
            "%{}: {:?} = [{}]",
            value.name,
            t.shape(),
            items.join(", ")
        )
        .unwrap();
    }
    s
}

/// Whether two runs gave the same bits (every NaN alike).
fn same_bits(a: &[Tensor], b: &[Tensor]) -> bool {
    let bits = |t: &Tensor| -> Vec<u64> {
        match t.data() {
            TensorData::F32(x) => x
                .iter()
                .map(|x| {
                    if x.is_nan() {
                        u64::MAX
                    } else {
                        x.to_bits().into()
                    }
                })
                .collect(),
            TensorData::I64(x) => x.iter().map(|&x| x as u64).collect(),
        }
    };
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.shape() == b.shape() && bits(a) == bits(b))
}

// ---- the text form on every model ----

/// The model imported, and after every pass: printed in full, parsed, and printed again, the
/// same text as printing the graph itself.
fn roundtrip_model(dir: &Path) -> Result<(), Failed> {
    let graph = match bnnc::stages::import(&dir.join("model.onnx")) {
        Ok(graph) => graph,
        // ONNX node tests of ops bnnc does not import are tests/conformance.rs's business
        // (it lists them); every other model must import.
        Err(_) if dir.components().any(|c| c.as_os_str() == "onnx-node") => return Ok(()),
        Err(e) => return Err(format!("{}: {e:#}", dir.display()).into()),
    };
    let mut checked = vec![check_roundtrip("imported", &graph)];
    let _ = bnnc_passes::run_pipeline(graph, &mut |event| {
        if let PassEvent::After { pass, graph, .. } = event {
            checked.push(check_roundtrip(pass, graph));
        }
    });
    checked.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(())
}

fn check_roundtrip(stage: &str, graph: &Graph) -> Result<(), String> {
    let full = print_graph_full(graph);
    let parsed = parse_graph(&full).map_err(|e| format!("{stage}: {e}"))?;
    let (want, got) = (print_graph(graph), print_graph(&parsed));
    if want != got {
        return Err(format!(
            "{stage}: the graph read back prints differently{}",
            first_difference(&want, &got)
        ));
    }
    Ok(())
}
