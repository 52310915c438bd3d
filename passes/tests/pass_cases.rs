//! Data-driven pass tests: every model `tests/cases/<pass>/<case>.onnx` runs through the
//! pipeline up to `<pass>`; the IR after it is a snapshot (`snapshots/pass_cases__<pass>__<case>.snap`),
//! and the interpreter must give bit-identical outputs before and after.
//!
//! Add a case by adding a model (see `tests/cases/make_cases.py`); accept its snapshot with
//! `cargo insta review` after reading it.

use std::path::{Path, PathBuf};

use bnnc_ir::{text::print_graph, Graph, Tensor};
use bnnc_passes::{run_pipeline, PassEvent};

fn cases() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut cases = Vec::new();
    for pass_dir in std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
    {
        let pass = pass_dir.file_name().unwrap().to_string_lossy().into_owned();
        for model in std::fs::read_dir(&pass_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
        {
            if model.extension().is_some_and(|e| e == "onnx") {
                cases.push((pass.clone(), model));
            }
        }
    }
    cases.sort();
    cases
}

/// The IR right after the first run of `pass` in the pipeline.
fn after_pass(graph: Graph, pass: &str) -> Graph {
    let mut captured = None;
    run_pipeline(graph, &mut |event| {
        if let PassEvent::After { pass: p, graph, .. } = event {
            if p == pass && captured.is_none() {
                captured = Some(graph.clone());
            }
        }
    })
    .unwrap_or_else(|e| panic!("pipeline failed: {e:#}"));
    captured.unwrap_or_else(|| panic!("no pass `{pass}` in the pipeline"))
}

/// A deterministic input in [-2, 2) with some exact zeros, where bipolar and sign differ.
fn input_for(graph: &Graph) -> Tensor {
    let ty = &graph.value(graph.inputs()[0]).ty;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data = (0..ty.numel())
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if i % 7 == 3 {
                0.0
            } else {
                (state >> 40) as f32 / (1u64 << 22) as f32 - 2.0
            }
        })
        .collect();
    Tensor::f32(ty.shape.clone(), data)
}

#[test]
fn pass_cases() {
    let cases = cases();
    assert!(!cases.is_empty(), "no cases in tests/cases");
    for (pass, path) in cases {
        let case = path.file_stem().unwrap().to_string_lossy().into_owned();
        let imported = bnnc_frontend_onnx::load_model(&path)
            .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        let x = input_for(&imported);
        let want = bnnc_ir::interp::run(&imported, std::slice::from_ref(&x)).unwrap();
        let optimized = after_pass(imported, &pass);
        let got = bnnc_ir::interp::run(&optimized, &[x]).unwrap();
        assert_eq!(got, want, "{pass}/{case}: the pass changed the outputs");
        insta::assert_snapshot!(format!("{pass}__{case}"), print_graph(&optimized));
    }
}
