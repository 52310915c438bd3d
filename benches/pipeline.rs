//! How long the front half of `bnnc build` takes: importing a model and running the pass
//! pipeline. The goal: the whole pipeline on CNV well under a second.
//!
//! `cargo bench --bench pipeline`; figures are in target/criterion.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};

fn model(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/models")
        .join(name)
        .join("model.onnx")
}

fn pipeline(c: &mut Criterion) {
    for name in ["cnv_w1a1", "lfc_w1a1", "tfc_w1a1"] {
        let path = model(name);
        let imported = bnnc_frontend_onnx::load_model(&path).expect("the bundled model imports");
        c.bench_function(&format!("{name}/import"), |b| {
            b.iter(|| bnnc_frontend_onnx::load_model(&path).expect("imports"))
        });
        c.bench_function(&format!("{name}/passes"), |b| {
            b.iter(|| bnnc_passes::run_pipeline(imported.clone(), &mut |_| {}).expect("optimizes"))
        });
    }
}

/// A chain of n Relu: the pipeline's time must grow linearly with n (issue 12: 20,000 took
/// 38 s when extraction was quadratic).
fn chains(c: &mut Criterion) {
    use bnnc_ir::{ElemType, Graph, Op, TensorType};
    for n in [2_000usize, 20_000] {
        let mut g = Graph::new("chain");
        let mut v = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 4]));
        for i in 0..n {
            v = g
                .add_node(format!("relu{i}"), Op::Relu, &[v], vec![format!("r{i}")])
                .expect("a relu types")[0];
        }
        g.set_outputs(vec![v]);
        c.bench_function(&format!("relu_chain_{n}/passes"), |b| {
            b.iter(|| bnnc_passes::run_pipeline(g.clone(), &mut |_| {}).expect("optimizes"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = pipeline, chains
}
criterion_main!(benches);
