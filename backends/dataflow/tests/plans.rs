//! Every model in tests/data planned with the default options, and the plan simulated on
//! integers (`sim`) against the interpreter: the top's output values must be the
//! interpreter's values of the same tensor, bit for bit, on every sample of input.npy.

use std::path::{Path, PathBuf};

use bnnc_dataflow::plan::{Decode, Plan};
use bnnc_dataflow::sim::{simulate, Frame};
use bnnc_ir::{Graph, Tensor};

fn models() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data");
    let mut dirs = Vec::new();
    for group in ["models", "external"] {
        for entry in std::fs::read_dir(root.join(group)).unwrap() {
            let dir = entry.unwrap().path();
            if dir.join("model.onnx").exists() {
                dirs.push(dir);
            }
        }
    }
    dirs.sort();
    assert!(dirs.len() >= 15, "tests/data holds the bundled models");
    dirs
}

fn optimized(dir: &Path) -> Graph {
    let graph = bnnc_frontend_onnx::load_model(&dir.join("model.onnx")).unwrap();
    bnnc_passes::run_pipeline(graph, &mut |_| {}).unwrap()
}

fn samples(dir: &Path, graph: &Graph) -> Vec<Tensor> {
    let bytes = std::fs::read(dir.join("input.npy")).unwrap();
    let npy = npyz::NpyFile::new(&bytes[..]).unwrap();
    let data: Vec<f32> = npy.into_vec().unwrap();
    let shape = graph.value(graph.inputs()[0]).ty.shape.clone();
    let len: usize = shape.iter().product();
    data.chunks_exact(len)
        .map(|c| Tensor::f32(shape.clone(), c.to_vec()))
        .collect()
}

/// The interpreter's values of the plan's input and output tensors on `x`.
fn boundary_values(plan: &Plan, x: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let mut g = plan.graph.clone();
    g.set_outputs(vec![plan.input.value, plan.output.value]);
    let out = bnnc_ir::interp::run(&g, std::slice::from_ref(x)).unwrap();
    (out[0].to_f32_vec(), out[1].to_f32_vec())
}

fn check(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let graph = optimized(dir);
    let plan = bnnc_dataflow::plan(&graph, &name, &Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let (input, output) = (
        &plan.streams[plan.input.stream],
        &plan.streams[plan.output.stream],
    );
    let Decode::Scaled(scales) = &plan.input.decode else {
        panic!("{name}: the hardware input is not integers");
    };
    for (i, x) in samples(dir, &graph).iter().enumerate() {
        let (values_in, values_out) = boundary_values(&plan, x);
        let ints: Vec<i64> = (0..input.elements())
            .map(|s| {
                let j = s % input.channels;
                (values_in[input.flat_index(s)] / scales[j % scales.len()]).round() as i64
            })
            .collect();
        let frame = simulate(&plan, &ints).unwrap_or_else(|e| panic!("{name}: {e}"));
        for s in 0..output.elements() {
            let j = s % output.channels;
            let got = match &frame {
                Frame::Ints(v) => plan.output.decode.value(v[s], j),
                Frame::Floats(v) => v[s],
            };
            let want = values_out[output.flat_index(s)];
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{name}: sample {i}, output element {s}: plan {got}, interpreter {want}"
            );
        }
    }
}

#[test]
fn every_model_plans_and_simulates_exactly() {
    for dir in models() {
        check(&dir);
    }
}
