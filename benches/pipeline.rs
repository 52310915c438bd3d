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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = pipeline
}
criterion_main!(benches);
