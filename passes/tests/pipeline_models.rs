//! The whole pipeline on every model of tests/data: no BatchNorm is left, and between two
//! quantized layers every value is an integer or a scaled integer (thresholds on integer
//! accumulators), except where a network computes in float by design.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bnnc_ir::{ElemType, Graph, Op, ValueDef, ValueId};
use bnnc_passes::run_pipeline;

/// Models whose float values between quantized layers are the network's own design: the
/// values (BatchNorms whose affine maps feed the real-valued shortcut, and the shortcut's
/// sums), and why.
const FLOAT_BY_DESIGN: &[(&str, &[&str], &str)] = &[(
    "bireal_small",
    &[
        "Add_0_out0",
        "Add_1_out0",
        "BatchNormalization_0_out0",
        "BatchNormalization_0_out0.scaled",
        "BatchNormalization_1_out0",
        "BatchNormalization_1_out0.scaled",
        "BatchNormalization_2_out0",
        "BatchNormalization_2_out0.scaled",
    ],
    "Bi-Real's shortcut is real-valued: the sums of BatchNorm outputs it carries have no \
     common integer scale",
)];

fn model_dirs() -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut dirs: Vec<PathBuf> = ["models", "external"]
        .iter()
        .filter_map(|set| std::fs::read_dir(data.join(set)).ok())
        .flat_map(|entries| entries.map(|e| e.unwrap().path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    dirs
}

fn optimized(dir: &Path) -> Graph {
    let graph = bnnc_frontend_onnx::load_model(&dir.join("model.onnx")).unwrap();
    run_pipeline(graph, &mut |_| {}).unwrap()
}

/// Values an op computes with an integer or scaled-integer type: quantized layers' outputs
/// and accumulators (not TopK's i64 indices, which end a network).
fn is_quantized(graph: &Graph, v: ValueId) -> bool {
    let elem = &graph.value(v).ty.elem;
    matches!(graph.value(v).def, ValueDef::Node { .. })
        && *elem != ElemType::F32
        && *elem != ElemType::I64
}

/// The f32 values computed from a quantized value that flow into another quantized value.
fn floats_between_quantized_layers(graph: &Graph) -> Vec<String> {
    let order = graph.topo_order().unwrap();
    // Forward: whether a quantized value lies upstream.
    let mut after_quantized: HashMap<ValueId, bool> = HashMap::new();
    for &n in &order {
        let node = graph.node(n);
        let upstream = node
            .inputs
            .iter()
            .any(|&v| is_quantized(graph, v) || after_quantized.get(&v).copied().unwrap_or(false));
        for &v in &node.outputs {
            after_quantized.insert(v, upstream);
        }
    }
    // Backward: whether a quantized value lies downstream.
    let mut before_quantized: HashMap<ValueId, bool> = HashMap::new();
    for &n in order.iter().rev() {
        let node = graph.node(n);
        let downstream = node
            .outputs
            .iter()
            .any(|&v| is_quantized(graph, v) || before_quantized.get(&v).copied().unwrap_or(false));
        for &v in &node.inputs {
            let e = before_quantized.entry(v).or_insert(false);
            *e |= downstream;
        }
    }
    let mut found: Vec<String> = graph
        .values()
        .filter(|(v, d)| {
            d.ty.elem == ElemType::F32
                && matches!(d.def, ValueDef::Node { .. })
                && after_quantized.get(v).copied().unwrap_or(false)
                && before_quantized.get(v).copied().unwrap_or(false)
        })
        .map(|(_, d)| d.name.to_string())
        .collect();
    found.sort();
    found
}

#[test]
fn no_batchnorm_and_no_float_between_quantized_layers() {
    let dirs = model_dirs();
    assert!(dirs.len() >= 14, "tests/data holds {} models", dirs.len());
    let mut failures = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let graph = optimized(&dir);
        let batchnorms = graph
            .node_ids()
            .filter(|&n| matches!(graph.node(n).op, Op::BatchNorm { .. }))
            .count();
        if batchnorms > 0 {
            failures.push(format!("{name}: {batchnorms} BatchNorms left"));
        }
        let floats = floats_between_quantized_layers(&graph);
        let by_design: &[&str] = FLOAT_BY_DESIGN
            .iter()
            .find(|(m, ..)| *m == name)
            .map_or(&[], |(_, values, _)| values);
        if floats != by_design {
            failures.push(format!(
                "{name}: f32 values between quantized layers: {floats:?}, by design: {by_design:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A chain of 20,000 Relu optimizes (it took 38 s when extraction settled one class per
/// sweep; `cargo bench --bench pipeline` times it: 0.2 s).
#[test]
fn a_long_chain_optimizes() {
    use bnnc_ir::{ElemType, Graph, Op, TensorType};
    let mut g = Graph::new("chain");
    let mut v = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 4]));
    for i in 0..20_000 {
        v = g
            .add_node(format!("relu{i}"), Op::Relu, &[v], vec![format!("r{i}")])
            .unwrap()[0];
    }
    g.set_outputs(vec![v]);
    let out = bnnc_passes::run_pipeline(g, &mut |_| {}).unwrap();
    assert_eq!(out.num_nodes(), 20_000);
}
