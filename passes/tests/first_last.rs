//! `first-last-precision` with a policy: `--first-last int8` quantizes the f32 weights of a
//! float first layer per output channel and says so; `keep` changes nothing.

use std::path::Path;

use bnnc_ir::{ElemType, Graph, IntType, Op, Scale, Tensor};
use bnnc_passes::{run_pipeline_with, FirstLastPolicy, PassEvent, PipelineOptions};

fn case() -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases/first-last-precision/float_first_layer.onnx");
    bnnc_frontend_onnx::load_model(&path).unwrap()
}

/// The optimized graph and the report of `first-last-precision`.
fn optimize(policy: FirstLastPolicy) -> (Graph, Vec<String>) {
    let mut changes = Vec::new();
    let options = PipelineOptions {
        first_last: policy,
        ..Default::default()
    };
    let graph = run_pipeline_with(case(), &options, &mut |event| {
        if let PassEvent::After { pass, report, .. } = event {
            if pass == "first-last-precision" {
                changes = report.changes.clone();
            }
        }
    })
    .unwrap();
    (graph, changes)
}

fn first_layer_weights(graph: &Graph) -> (ElemType, Vec<f32>) {
    let n = graph
        .node_ids()
        .find(|&n| graph.node(n).name == "fc0")
        .expect("the first layer");
    let w = graph.node(n).inputs[1];
    assert!(matches!(graph.node(n).op, Op::Gemm(_)));
    let data = graph.const_data(w).unwrap().to_f32_vec();
    (graph.value(w).ty.elem.clone(), data)
}

#[test]
fn keep_reports_and_changes_nothing() {
    let (graph, changes) = optimize(FirstLastPolicy::Keep);
    assert_eq!(
        changes,
        [
            "first layer `fc0` (gemm): wfaf, float sums",
            "last layer `fc1` (gemm): w1a1, integer sums",
        ]
    );
    assert_eq!(first_layer_weights(&graph).0, ElemType::F32);
}

#[test]
fn int8_quantizes_float_weights_per_channel() {
    let (_, original) = first_layer_weights(&optimize(FirstLastPolicy::Keep).0);
    let (graph, changes) = optimize(FirstLastPolicy::Int8);
    assert!(
        changes.iter().any(
            |c| c.starts_with("--first-last int8: quantized the f32 weights `w0`")
                && c.ends_with("this can change accuracy")
        ),
        "{changes:?}"
    );
    let (elem, quantized) = first_layer_weights(&graph);
    let ElemType::Scaled(IntType::Signed(8), Scale::Channel { axis: 0, values }) = elem else {
        panic!("weights typed {elem}");
    };
    // Each of the 4 rows of 6: its largest magnitude is 127 steps, every weight within half a
    // step of the original, and every value an integer of at most 127 times the row's scale.
    for (row, &s) in values.iter().enumerate() {
        let w = &original[row * 6..row * 6 + 6];
        let q = &quantized[row * 6..row * 6 + 6];
        let largest = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_eq!(s, largest / 127.0);
        for (&a, &b) in w.iter().zip(q) {
            let k = (b / s).round();
            assert!(k.abs() <= 127.0 && k * s == b && (a - b).abs() <= s / 2.0 * 1.0001);
        }
    }
    // The quantized network still runs.
    let x = Tensor::f32(vec![1, 6], vec![0.5, -1.0, 0.25, 2.0, -0.75, 1.5]);
    assert!(bnnc_ir::interp::run(&graph, &[x]).is_ok());
}
