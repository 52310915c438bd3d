//! Imports every reference model (made by the project, and published ones) and checks the
//! interface and a few element types the passes rely on.

use std::path::{Path, PathBuf};

use bnnc_frontend_onnx::load_model;
use bnnc_ir::{ElemType, Graph, IntType, Op, Shape};

/// Where the model folders are (`models/` and `external/`, each holding `<name>/model.onnx`).
const MODEL_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data");

/// Every `<root>/{models,external}/<name>/model.onnx`.
fn model_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for set in ["models", "external"] {
        let dir = Path::new(MODEL_ROOT).join(set);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let model = entry.unwrap().path().join("model.onnx");
            if model.is_file() {
                files.push(model);
            }
        }
    }
    files.sort();
    files
}

/// Imports `<set>/<name>/model.onnx`.
fn load(name: &str) -> Graph {
    let path = ["models", "external"]
        .iter()
        .map(|set| {
            Path::new(MODEL_ROOT)
                .join(set)
                .join(name)
                .join("model.onnx")
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no model `{name}` under {MODEL_ROOT}"));
    load_model(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shapes of the graph's inputs and outputs.
fn interface(g: &Graph) -> (Vec<Shape>, Vec<Shape>) {
    let shapes =
        |vs: &[bnnc_ir::ValueId]| vs.iter().map(|&v| g.value(v).ty.shape.clone()).collect();
    (shapes(g.inputs()), shapes(g.outputs()))
}

/// The nodes whose op satisfies `pred`, in order.
fn nodes_where(g: &Graph, pred: impl Fn(&Op) -> bool) -> Vec<&bnnc_ir::Node> {
    g.node_ids()
        .map(|n| g.node(n))
        .filter(|n| pred(&n.op))
        .collect()
}

#[test]
fn every_model_imports_and_verifies() {
    let files = model_files();
    assert!(
        files.len() >= 14,
        "found only {} models under {MODEL_ROOT}",
        files.len()
    );
    for path in files {
        let graph = load_model(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        bnnc_ir::verify::verify(&graph).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn interfaces() {
    let image = |c, hw| vec![1, c, hw, hw];
    let cases: [(&str, Shape, Shape); 14] = [
        ("bireal_small", image(1, 8), vec![1, 10]),
        ("cnv_w1a1", image(3, 32), vec![1, 10]),
        ("lfc_w1a1", image(1, 28), vec![1, 10]),
        ("tfc_w1a1", image(1, 28), vec![1, 10]),
        ("tfc_w1a1_qonnx_ts", image(1, 28), vec![1, 10]),
        ("tfc_w2a2_qcdq", image(1, 28), vec![1, 10]),
        ("xnor_perchannel", image(1, 8), vec![1, 10]),
        ("finn_tfc_w1a1_streamlined", image(1, 28), vec![1, 1]),
        ("zoo_jettagging", vec![1, 16], vec![1, 5]),
        ("zoo_kwsmlp_w3a3", vec![1, 1, 10, 49], vec![1, 12]),
        ("zoo_tfc_1w1a", image(1, 28), vec![1, 10]),
        ("zoo_tfc_1w2a", image(1, 28), vec![1, 10]),
        ("zoo_tfc_2w2a", image(1, 28), vec![1, 10]),
        ("zoo_unsw_nb15_mlp_w2a2", vec![1, 600], vec![1, 1]),
    ];
    for (name, input, output) in cases {
        assert_eq!(
            interface(&load(name)),
            (vec![input], vec![output]),
            "{name}"
        );
    }
}

#[test]
fn names_carry_over() {
    let g = load("cnv_w1a1");
    assert_eq!(g.name, "main_graph");
    assert_eq!(g.value(g.inputs()[0]).name, "global_in");
    assert_eq!(g.value(g.outputs()[0]).name, "global_out");
    assert!(g.node_ids().any(|n| g.node(n).name == "Conv_0"));
}

#[test]
fn cnv_first_conv_weights_are_bipolar() {
    let g = load("cnv_w1a1");
    let conv = nodes_where(&g, |op| matches!(op, Op::Conv(_)))[0];
    let w = &g.value(conv.inputs[1]).ty;
    assert_eq!(
        w.elem.int_type(),
        Some(IntType::Bipolar),
        "weights typed {w}"
    );
}

#[test]
fn annotated_inputs_and_initializers() {
    let g = load("zoo_unsw_nb15_mlp_w2a2");
    assert_eq!(g.value(g.inputs()[0]).ty.elem, ElemType::BIPOLAR);

    let g = load("finn_tfc_w1a1_streamlined");
    assert_eq!(
        g.value(g.inputs()[0]).ty.elem,
        ElemType::Int(IntType::Unsigned(8))
    );
    let matmul = nodes_where(&g, |op| matches!(op, Op::MatMul))[0];
    assert_eq!(g.value(matmul.inputs[1]).ty.elem, ElemType::BIPOLAR);
    let thresholds = nodes_where(&g, |op| matches!(op, Op::MultiThreshold(_)));
    assert_eq!(thresholds.len(), 4);
    assert_eq!(g.value(thresholds[0].outputs[0]).ty.elem, ElemType::BIPOLAR);
}

#[test]
fn qcdq_weights_are_two_bit_after_clip() {
    let g = load("tfc_w2a2_qcdq");
    let clips = nodes_where(&g, |op| matches!(op, Op::Clip { .. }));
    assert_eq!(clips.len(), 8);
    for clip in clips {
        let out = &g.value(clip.outputs[0]).ty;
        assert_eq!(
            out.elem.int_type(),
            Some(IntType::Signed(2)),
            "{} typed {out}",
            clip.name
        );
    }
}

#[test]
fn dynamic_reshape_is_folded() {
    let g = load("zoo_tfc_1w1a");
    let reshapes = nodes_where(&g, |op| matches!(op, Op::Reshape { .. }));
    assert_eq!(reshapes.len(), 1);
    assert_eq!(
        reshapes[0].op,
        Op::Reshape {
            shape: vec![1, 784]
        }
    );
    // Nothing of the Shape -> Gather -> Unsqueeze -> Concat chain is left.
    assert_eq!(
        g.values()
            .filter(|(_, v)| v.ty.elem == ElemType::I64)
            .count(),
        0
    );
}
