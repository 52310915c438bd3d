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
    let (input, output) = (plan.input_stream(), plan.output_stream());
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

fn model(name: &str) -> (Graph, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/models");
    let dir = root.join(name);
    (optimized(&dir), dir)
}

fn with_folding(json: &str) -> bnnc_dataflow::Options {
    bnnc_dataflow::Options {
        folding: bnnc_dataflow::parse_folding(json).unwrap(),
        ..Default::default()
    }
}

fn mvau(plan: &Plan, layer: &str) -> (usize, usize, u64) {
    let l = plan
        .layer(layer)
        .unwrap_or_else(|| panic!("no layer {layer}"));
    let bnnc_dataflow::plan::LayerKind::Mvau(m) = &l.kind else {
        panic!("{layer} is not a matrix-vector unit");
    };
    (m.pe, m.simd, bnnc_dataflow::estimate::cost(plan, l).cycles)
}

#[test]
fn folding_constraints_name_the_layer() {
    let (tfc, _) = model("tfc_w1a1");
    let err = bnnc_dataflow::plan(&tfc, "tfc", &with_folding(r#"{"Gemm_0": {"PE": 7}}"#))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "layer 'Gemm_0': PE 7 does not divide MH 64 (its output channels)"
    );
    let err = bnnc_dataflow::plan(&tfc, "tfc", &with_folding(r#"{"Gemm_1": {"SIMD": 5}}"#))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "layer 'Gemm_1': SIMD 5 does not divide MW 64 (its inputs per output)"
    );
    let err = bnnc_dataflow::plan(&tfc, "tfc", &with_folding(r#"{"Gemm_9": {"PE": 1}}"#))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("folding: no layer 'Gemm_9' to fold (the layers are: Gemm_0, Gemm_1"),
        "{err}"
    );
    assert!(bnnc_dataflow::parse_folding(r#"{"Gemm_0": {"PE": 0}}"#).is_err());
    assert!(bnnc_dataflow::parse_folding(r#"{"Gemm_0": {"depth": 2}}"#).is_err());
    // A convolution's SIMD must divide its input channels: the window moves SIMD per beat.
    let (cnv, _) = model("cnv_w1a1");
    let err = bnnc_dataflow::plan(&cnv, "cnv", &with_folding(r#"{"Conv_1": {"SIMD": 9}}"#))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("layer 'Conv_1': SIMD 9 does not divide its input's 64 channels"),
        "{err}"
    );
}

#[test]
fn cycles_follow_the_folding() {
    let (tfc, _) = model("tfc_w1a1");
    let plan = bnnc_dataflow::plan(
        &tfc,
        "tfc",
        &with_folding(r#"{"Gemm_0": {"PE": 16, "SIMD": 49}, "Gemm_3": {"PE": 2, "SIMD": 8}}"#),
    )
    .unwrap();
    // pixels * (MH / PE) * (MW / SIMD)
    assert_eq!(mvau(&plan, "Gemm_0"), (16, 49, 64 / 16 * (784 / 49)));
    assert_eq!(mvau(&plan, "Gemm_3"), (2, 8, 10 / 2 * (64 / 8)));
    // The layers the file leaves out are folded to the slowest it sets, and no slower.
    let ii = bnnc_dataflow::report(&plan, bnnc_dataflow::Options::default().part, 10.0)
        .initiation_interval;
    assert_eq!(ii, 64);
    for layer in ["Gemm_1", "Gemm_2"] {
        let (pe, simd, cycles) = mvau(&plan, layer);
        assert!(cycles <= 64, "{layer}: {cycles} cycles");
        assert!(
            cycles * 2 > 64 || pe * simd == 1,
            "{layer} is faster than it must be: PE {pe} SIMD {simd}, {cycles} cycles"
        );
    }
    // A convolution: output pixels * NF * SF, its window generator included in the plan.
    let (cnv, _) = model("cnv_w1a1");
    let plan = bnnc_dataflow::plan(
        &cnv,
        "cnv",
        &with_folding(r#"{"Conv_1": {"PE": 16, "SIMD": 32}}"#),
    )
    .unwrap();
    assert_eq!(
        mvau(&plan, "Conv_1"),
        (16, 32, 28 * 28 * (64 / 16) * (9 * 64 / 32))
    );
    assert!(plan.layer("Conv_1.window").is_some());
}

#[test]
fn automatic_folding_meets_the_frame_rate() {
    let (cnv, _) = model("cnv_w1a1");
    for fps in [500.0, 3000.0, 10000.0] {
        let options = bnnc_dataflow::Options {
            fps: Some(fps),
            ..Default::default()
        };
        let plan = bnnc_dataflow::plan(&cnv, "cnv", &options).unwrap();
        let report = bnnc_dataflow::report(&plan, options.part, options.clock_ns);
        assert!(
            report.fps() >= fps,
            "{fps} fps asked, {} reached",
            report.fps()
        );
        // Each matrix-vector unit is the cheapest that meets the target: half its
        // parallelism would not.
        let target = (1e9 / 10.0 / fps) as u64;
        for layer in &plan.layers {
            if let bnnc_dataflow::plan::LayerKind::Mvau(m) = &layer.kind {
                let c = bnnc_dataflow::estimate::cost(&plan, layer).cycles;
                assert!(c <= target);
                assert!(
                    m.pe * m.simd == 1 || c * 2 > target,
                    "{}: {c} cycles for {target}",
                    layer.name
                );
            }
        }
    }
    // Faster needs more: the LUTs grow with the frame rate.
    let luts = |fps: f64| {
        let options = bnnc_dataflow::Options {
            fps: Some(fps),
            ..Default::default()
        };
        let plan = bnnc_dataflow::plan(&cnv, "cnv", &options).unwrap();
        bnnc_dataflow::report(&plan, options.part, 10.0).total.luts
    };
    assert!(luts(500.0) < luts(5000.0));
}

#[test]
fn a_written_folding_reads_back_to_the_same_plan() {
    let (cnv, _) = model("cnv_w1a1");
    let plan = bnnc_dataflow::plan(&cnv, "cnv", &Default::default()).unwrap();
    let written = bnnc_dataflow::folding_json(&plan).to_string();
    let again = bnnc_dataflow::plan(&cnv, "cnv", &with_folding(&written)).unwrap();
    let folds = |p: &Plan| {
        p.layers
            .iter()
            .filter_map(|l| match &l.kind {
                bnnc_dataflow::plan::LayerKind::Mvau(m) => Some((l.name.clone(), m.pe, m.simd)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(folds(&plan), folds(&again));
}

#[test]
fn the_default_folding_fits_the_part() {
    for name in ["cnv_w1a1", "lfc_w1a1", "tfc_w1a1", "bireal_small"] {
        let (graph, _) = model(name);
        let options = bnnc_dataflow::Options::default();
        let plan = bnnc_dataflow::plan(&graph, name, &options).unwrap();
        let report = bnnc_dataflow::report(&plan, options.part, options.clock_ns);
        assert!(report.fits(), "{name}:\n{}", report.table());
    }
}

#[test]
fn an_op_without_a_hardware_layer_is_an_error_naming_it() {
    use bnnc_ir::{ElemType, Op, QuantAttrs, RoundingMode, TensorType};
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 2, 2, 2]));
    let c = |g: &mut Graph, name: &str, v: f32| g.add_const(name, None, Tensor::scalar(v)).unwrap();
    let (s, z, b) = (
        c(&mut g, "s", 0.5),
        c(&mut g, "z", 0.0),
        c(&mut g, "b", 4.0),
    );
    let attrs = QuantAttrs {
        signed: true,
        narrow: false,
        rounding: RoundingMode::HalfEven,
    };
    let q = g
        .add_node("q", Op::Quant(attrs), &[x, s, z, b], vec!["q".into()])
        .unwrap()[0];
    let r = g
        .add_node(
            "r",
            Op::Reshape { shape: vec![1, 8] },
            &[q],
            vec!["r".into()],
        )
        .unwrap()[0];
    let w = g
        .add_const(
            "w",
            Some(ElemType::Int(bnnc_ir::IntType::Signed(2))),
            Tensor::f32(vec![8, 4], vec![1.0; 32]),
        )
        .unwrap();
    let a = g
        .add_node("mm0", Op::MatMul, &[r, w], vec!["a".into()])
        .unwrap()[0];
    let a = g
        .add_node(
            "r1",
            Op::Reshape {
                shape: vec![1, 1, 2, 2],
            },
            &[a],
            vec!["a4".into()],
        )
        .unwrap()[0];
    let t = g
        .add_node(
            "T_0",
            Op::Transpose {
                perm: vec![0, 1, 3, 2],
            },
            &[a],
            vec!["t".into()],
        )
        .unwrap()[0];
    let t = g
        .add_node(
            "r2",
            Op::Reshape { shape: vec![1, 4] },
            &[t],
            vec!["t2".into()],
        )
        .unwrap()[0];
    let w2 = g
        .add_const(
            "w2",
            Some(ElemType::Int(bnnc_ir::IntType::Signed(2))),
            Tensor::f32(vec![4, 3], vec![1.0; 12]),
        )
        .unwrap();
    let y = g
        .add_node("mm", Op::MatMul, &[t, w2], vec!["y".into()])
        .unwrap()[0];
    g.set_outputs(vec![y]);
    let err = bnnc_dataflow::plan(&g, "t", &Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "node 'T_0' (transpose): the dataflow plan has no hardware layer for this op"
    );
}

/// A grouped convolution becomes a dense layer of zeros outside its groups; where that would
/// multiply a small model's weights past the bound, the plan refuses it by name.
#[test]
fn a_grouped_layer_too_large_as_a_dense_one_is_refused() {
    use bnnc_ir::{ConvAttrs, ElemType, IntType, Op, QuantAttrs, RoundingMode, TensorType};
    let channels = 1024;
    let mut g = Graph::new("t");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, channels, 4, 4]));
    let c = |g: &mut Graph, name: &str, v: f32| g.add_const(name, None, Tensor::scalar(v)).unwrap();
    let (s, z, b) = (
        c(&mut g, "s", 0.5),
        c(&mut g, "z", 0.0),
        c(&mut g, "b", 2.0),
    );
    let attrs = QuantAttrs {
        signed: false,
        narrow: false,
        rounding: RoundingMode::HalfEven,
    };
    let q = g
        .add_node("q", Op::Quant(attrs), &[x, s, z, b], vec!["q".into()])
        .unwrap()[0];
    let w = g
        .add_const(
            "w",
            Some(ElemType::Int(IntType::Signed(2))),
            Tensor::f32(vec![channels, 1, 3, 3], vec![1.0; channels * 9]),
        )
        .unwrap();
    let conv = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        group: channels,
    };
    let y = g
        .add_node("dw", Op::Conv(conv), &[q, w], vec!["y".into()])
        .unwrap()[0];
    g.set_outputs(vec![y]);
    let err = bnnc_dataflow::plan(&g, "t", &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "node 'dw' (conv): 1024 groups as one dense layer would hold 9437184 weights"
        ),
        "{err}"
    );
}
