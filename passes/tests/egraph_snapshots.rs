//! `streamline` on small graphs built in code: the text form after it (one insta snapshot per
//! case, with the run's report), and the same output bits as before on inputs that reach every
//! accumulator value the layer can produce.

use std::time::Duration;

use bnnc_ir::interp::run;
use bnnc_ir::text::print_graph;
use bnnc_ir::verify::verify;
use bnnc_ir::{
    BinaryOp, ElemType, GemmAttrs, Graph, Op, QuantAttrs, RoundingMode, Tensor, TensorType, ValueId,
};
use bnnc_passes::egraph::{streamline, Limits, StopReason, StreamlineReport};

/// Streamlines `graph`, checks that it verifies and computes the same bits on every input,
/// and snapshots its text with the report.
fn check(name: &str, graph: &Graph, inputs: &[Tensor]) -> (Graph, StreamlineReport) {
    verify(graph).unwrap_or_else(|e| panic!("{name}: the test graph is wrong: {e}"));
    let (streamlined, report) =
        streamline(graph, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    verify(&streamlined).unwrap();
    assert_eq!(report.stop, StopReason::Saturated, "{name}: {report}");
    for x in inputs {
        let want = run(graph, std::slice::from_ref(x)).unwrap();
        let got = run(&streamlined, std::slice::from_ref(x)).unwrap();
        for (k, (w, g)) in want.iter().zip(&got).enumerate() {
            let integer = graph.value(graph.outputs()[k]).ty.elem != ElemType::F32;
            assert!(
                same_values(w, g, integer),
                "{name}: output {k} differs on input {:?}: {:?} vs {:?}",
                x.to_f32_vec(),
                w.to_f32_vec(),
                g.to_f32_vec()
            );
        }
    }
    insta::assert_snapshot!(name, format!("{}\n{report}", print_graph(&streamlined)));
    (streamlined, report)
}

/// Whether two outputs agree: bit for bit for f32 outputs; as numbers for (scaled) integer
/// outputs, where -0 and +0 are the same integer (a folded Quant gives +0 for a level whose
/// value the Quant gave as -0: see `bnnc_passes::threshold`'s docs on the sign of zero).
fn same_values(want: &Tensor, got: &Tensor, integer: bool) -> bool {
    let (w, g) = (want.to_f32_vec(), got.to_f32_vec());
    want.shape() == got.shape()
        && w.iter().zip(&g).all(|(a, b)| {
            if integer {
                a == b
            } else {
                a.to_bits() == b.to_bits()
            }
        })
}

/// Every ±1 vector of length `k`, as `(1, k)` inputs: a bipolar layer over them reaches every
/// value of its accumulator.
fn all_sign_patterns(k: usize) -> Vec<Tensor> {
    (0..1u32 << k)
        .map(|bits| {
            let x = (0..k)
                .map(|i| if bits >> i & 1 == 1 { 0.75 } else { -0.5 })
                .collect();
            Tensor::f32(vec![1, k], x)
        })
        .collect()
}

fn f32s(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::f32(shape.to_vec(), data.to_vec())
}

/// A graph builder that names values after their nodes.
struct Builder {
    g: Graph,
    n: usize,
}

impl Builder {
    fn new(input: TensorType) -> (Self, ValueId) {
        let mut g = Graph::new("case");
        let x = g.add_input("x", input);
        (Builder { g, n: 0 }, x)
    }

    fn constant(&mut self, name: &str, elem: Option<ElemType>, t: Tensor) -> ValueId {
        self.g.add_const(name, elem, t).unwrap()
    }

    fn node(&mut self, name: &str, op: Op, inputs: &[ValueId]) -> ValueId {
        self.n += 1;
        self.g
            .add_node(name, op, inputs, vec![format!("{name}_out")])
            .unwrap()[0]
    }

    fn finish(mut self, out: ValueId) -> Graph {
        self.g.set_outputs(vec![out]);
        self.g
    }

    /// `x (1, 8) -> BipolarQuant -> Gemm with 3 bipolar rows`: an i4 accumulator.
    fn bipolar_gemm(&mut self, x: ValueId) -> ValueId {
        let one = self.constant("one", None, f32s(&[1], &[1.0]));
        let a = self.node("BipolarQuant_in", Op::BipolarQuant, &[x, one]);
        #[rustfmt::skip]
        let w = f32s(&[3, 8], &[
            1.0, -1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0,
            -1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0,
            1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0,
        ]);
        let w = self.constant("W", Some(ElemType::BIPOLAR), w);
        self.node(
            "Gemm_0",
            Op::Gemm(GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            }),
            &[a, w],
        )
    }

    fn batchnorm(
        &mut self,
        x: ValueId,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
    ) -> ValueId {
        let c = gamma.len();
        let p: Vec<ValueId> = [
            ("gamma", gamma),
            ("beta", beta),
            ("mean", mean),
            ("var", var),
        ]
        .iter()
        .map(|(n, v)| self.constant(n, None, f32s(&[c], v)))
        .collect();
        self.node(
            "BatchNormalization_0",
            Op::BatchNorm { epsilon: 1e-5 },
            &[x, p[0], p[1], p[2], p[3]],
        )
    }

    fn bipolar_quant(&mut self, x: ValueId) -> ValueId {
        let one = self.constant("one", None, f32s(&[1], &[1.0]));
        self.node("BipolarQuant_out", Op::BipolarQuant, &[x, one])
    }
}

fn f32_input(shape: &[usize]) -> TensorType {
    TensorType::new(ElemType::F32, shape.to_vec())
}

/// Bipolar Gemm (K = 8, 3 channels), BatchNorm, BipolarQuant: the layer every fold starts from.
fn gemm_batchnorm_bipolar_graph() -> Graph {
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let acc = b.bipolar_gemm(x);
    let bn = b.batchnorm(
        acc,
        &[1.0, 0.5, 2.0],
        &[0.0, 0.25, -1.0],
        &[0.0, 1.0, 2.0],
        &[1.0, 4.0, 0.25],
    );
    let out = b.bipolar_quant(bn);
    b.finish(out)
}

#[test]
fn bipolar_gemm_batchnorm_bipolar_quant() {
    let graph = gemm_batchnorm_bipolar_graph();
    let (g, report) = check(
        "bipolar_gemm_batchnorm_bipolar_quant",
        &graph,
        &all_sign_patterns(8),
    );
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1);
    assert!(!g
        .node_ids()
        .any(|n| matches!(g.node(n).op, Op::BatchNorm { .. })));
}

#[test]
fn negative_and_zero_gamma_channels() {
    // Channel 1 falls as the accumulator grows (directions -1); channel 2 is constant.
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let acc = b.bipolar_gemm(x);
    let bn = b.batchnorm(
        acc,
        &[1.0, -0.5, 0.0],
        &[0.5, 0.25, -1.0],
        &[1.0, -2.0, 0.0],
        &[1.0, 4.0, 1.0],
    );
    let out = b.bipolar_quant(bn);
    let graph = b.finish(out);
    let (g, _) = check(
        "negative_and_zero_gamma_channels",
        &graph,
        &all_sign_patterns(8),
    );
    let threshold = g
        .node_ids()
        .map(|n| g.node(n))
        .find(|n| matches!(n.op, Op::Threshold(_)))
        .expect("a threshold");
    assert_eq!(threshold.inputs.len(), 3, "directions operand expected");
}

#[test]
fn two_bit_quant_output() {
    // acc -> Mul(per channel) -> BatchNorm -> Add(scalar) -> Quant(2 bits, scale 0.5):
    // four levels, three thresholds per channel.
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let acc = b.gemm_then_quant2();
    let _ = x;
    let graph = b.finish(acc);
    let (g, report) = check("two_bit_quant_output", &graph, &all_sign_patterns(8));
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{report}");
    let t = g
        .node_ids()
        .map(|n| g.node(n))
        .find(|n| matches!(n.op, Op::Threshold(_)))
        .expect("a threshold");
    assert_eq!(g.value(t.inputs[1]).ty.shape, vec![3, 3]);
}

impl Builder {
    fn gemm_then_quant2(&mut self) -> ValueId {
        let x = self.g.inputs()[0];
        let acc = self.bipolar_gemm(x);
        let m = self.constant("scale", None, f32s(&[3], &[0.5, 0.25, 1.0]));
        let scaled = self.node("Mul_0", Op::Binary(BinaryOp::Mul), &[acc, m]);
        let bn = self.batchnorm(
            scaled,
            &[1.0, 2.0, 0.75],
            &[0.1, -0.2, 0.0],
            &[0.0, 0.5, -1.0],
            &[1.0, 2.0, 3.0],
        );
        let bias = self.constant("bias", None, f32s(&[], &[0.125]));
        let biased = self.node("Add_0", Op::Binary(BinaryOp::Add), &[bn, bias]);
        let q = |b: &mut Builder, name: &str, v: f32| b.constant(name, None, f32s(&[], &[v]));
        let (s, z, bits) = (
            q(self, "q_scale", 0.5),
            q(self, "q_zero", 0.0),
            q(self, "q_bits", 2.0),
        );
        self.node(
            "Quant_0",
            Op::Quant(QuantAttrs {
                signed: true,
                narrow: false,
                rounding: RoundingMode::HalfEven,
            }),
            &[biased, s, z, bits],
        )
    }
}

#[test]
fn sign_with_exact_zeros() {
    // acc * 0.5 - 1 is exactly 0 at acc = 2, where Sign gives 0: three levels.
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let acc = b.bipolar_gemm(x);
    let half = b.constant("half", None, f32s(&[], &[0.5]));
    let one = b.constant("one_f", None, f32s(&[1, 1], &[1.0]));
    let v = b.node("Mul_0", Op::Binary(BinaryOp::Mul), &[half, acc]);
    let v = b.node("Sub_0", Op::Binary(BinaryOp::Sub), &[v, one]);
    let out = b.node("Sign_0", Op::Sign, &[v]);
    let graph = b.finish(out);
    let (_, report) = check("sign_with_exact_zeros", &graph, &all_sign_patterns(8));
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{report}");
}

/// An accumulator of 4-bit activations scaled by `act_scale` and bipolar weights, through a
/// BatchNorm into a BipolarQuant.
fn scaled_accumulator_graph(act_scale: f32) -> Graph {
    let (mut b, x) = Builder::new(f32_input(&[1, 6]));
    let q = |b: &mut Builder, name: &str, v: f32| b.constant(name, None, f32s(&[], &[v]));
    let (s, z, bits) = (
        q(&mut b, "a_scale", act_scale),
        q(&mut b, "a_zero", 0.0),
        q(&mut b, "a_bits", 4.0),
    );
    let a = b.node(
        "Quant_in",
        Op::Quant(QuantAttrs {
            signed: true,
            narrow: false,
            rounding: RoundingMode::HalfEven,
        }),
        &[x, s, z, bits],
    );
    #[rustfmt::skip]
    let w = f32s(&[2, 6], &[
        1.0, -1.0, 1.0, 1.0, -1.0, 1.0,
        -1.0, -1.0, 1.0, -1.0, 1.0, 1.0,
    ]);
    let w = b.constant("W", Some(ElemType::BIPOLAR), w);
    let acc = b.node(
        "Gemm_0",
        Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        }),
        &[a, w],
    );
    let bn = b.batchnorm(acc, &[1.0, -1.5], &[0.1, 0.3], &[0.2, -0.4], &[1.0, 0.5]);
    let out = b.bipolar_quant(bn);
    b.finish(out)
}

/// Inputs covering the 4-bit activation grid: every level in every position, and mixes.
fn activation_grid(scale: f32) -> Vec<Tensor> {
    let mut inputs = Vec::new();
    let mut state = 0x9e37_79b9u32;
    for _ in 0..3000 {
        let x = (0..6)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ((state % 16) as f32 - 8.0) * scale
            })
            .collect();
        inputs.push(Tensor::f32(vec![1, 6], x));
    }
    inputs
}

#[test]
fn power_of_two_scaled_accumulator() {
    // i8*0.25 activations: the accumulator's f32 is exactly int * 0.25, so the chain starts
    // with Mul(0.25) and the thresholds are in units of 0.25.
    let graph = scaled_accumulator_graph(0.25);
    let (_, report) = check(
        "power_of_two_scaled_accumulator",
        &graph,
        &activation_grid(0.25),
    );
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{report}");
}

#[test]
fn non_power_of_two_scale_folds() {
    // A scale of 0.1 would round in every float product and sum, but the interpreter sums a
    // layer's integers and scales once, so the thresholds are exact all the same.
    let graph = scaled_accumulator_graph(0.1);
    let (_, report) = check(
        "non_power_of_two_scale_folds",
        &graph,
        &activation_grid(0.1),
    );
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{report}");
}

#[test]
fn identities_and_reshapes() {
    // x * 1, a reshape through (2, 4) and back, + (-0), - 0, / 1: all identities. `x + 0`
    // stays (it turns -0 into +0).
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let one = b.constant("one", None, f32s(&[], &[1.0]));
    let neg_zero = b.constant("neg_zero", None, f32s(&[1], &[-0.0]));
    let zero = b.constant("zero", None, f32s(&[], &[0.0]));
    let v = b.node("Mul_one", Op::Binary(BinaryOp::Mul), &[x, one]);
    let v = b.node("Reshape_a", Op::Reshape { shape: vec![2, 4] }, &[v]);
    let v = b.node("Reshape_b", Op::Reshape { shape: vec![1, 8] }, &[v]);
    let v = b.node("Add_neg_zero", Op::Binary(BinaryOp::Add), &[neg_zero, v]);
    let v = b.node("Sub_zero", Op::Binary(BinaryOp::Sub), &[v, zero]);
    let v = b.node("Div_one", Op::Binary(BinaryOp::Div), &[v, one]);
    let v = b.node("Add_zero", Op::Binary(BinaryOp::Add), &[v, zero]);
    let out = b.bipolar_quant(v);
    let graph = b.finish(out);
    let mut inputs = all_sign_patterns(8);
    inputs.push(f32s(
        &[1, 8],
        &[-0.0, 0.0, f32::NAN, -1.5, f32::INFINITY, 2.0, -0.0, 1.0],
    ));
    let (g, report) = check("identities_and_reshapes", &graph, &inputs);
    for rule in [
        "mul-by-one",
        "div-by-one",
        "add-negative-zero",
        "sub-zero",
        "reshape-of-reshape",
    ] {
        assert!(report.count(rule) > 0, "{rule} did not apply\n{report}");
    }
    // Left: the +0 add and the quantizer.
    assert_eq!(g.num_nodes(), 2, "{}", print_graph(&g));
}

#[test]
fn an_output_that_becomes_the_input_keeps_its_name() {
    let (mut b, x) = Builder::new(f32_input(&[1, 4]));
    let one = b.constant("one", None, f32s(&[], &[1.0]));
    let out = b.node("Mul_one", Op::Binary(BinaryOp::Mul), &[x, one]);
    let graph = b.finish(out);
    let (g, _) = streamline(&graph, &Limits::default()).unwrap();
    let out = g.outputs()[0];
    assert_eq!(g.value(out).name, "Mul_one_out");
    assert_eq!(g.value(g.inputs()[0]).name, "x");
    let x = f32s(&[1, 4], &[-0.0, 1.0, f32::NAN, 3.5]);
    let bits = |g: &Graph| -> Vec<u32> {
        run(g, std::slice::from_ref(&x)).unwrap()[0]
            .to_f32_vec()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&g), bits(&graph));
}

#[test]
fn a_bound_reached_is_reported() {
    let graph = gemm_batchnorm_bipolar_graph();
    let input = &all_sign_patterns(8)[37];
    let want = run(&graph, std::slice::from_ref(input)).unwrap();

    let tiny_nodes = Limits {
        nodes: 1,
        ..Limits::default()
    };
    let (g, report) = streamline(&graph, &tiny_nodes).unwrap();
    assert!(matches!(report.stop, StopReason::NodeLimit(_)), "{report}");
    assert!(report.stop.is_bound());
    assert!(
        report.to_string().contains("node limit reached"),
        "{report}"
    );
    // Stopping early is not wrong, only less rewritten.
    assert_eq!(run(&g, std::slice::from_ref(input)).unwrap(), want);

    let no_iterations = Limits {
        iterations: 0,
        ..Limits::default()
    };
    let (_, report) = streamline(&graph, &no_iterations).unwrap();
    assert_eq!(report.stop, StopReason::IterationLimit(0), "{report}");

    let no_time = Limits {
        time: Duration::ZERO,
        ..Limits::default()
    };
    let (_, report) = streamline(&graph, &no_time).unwrap();
    assert!(matches!(report.stop, StopReason::TimeLimit(_)), "{report}");
}

#[test]
fn relu_in_the_chain_folds() {
    // acc -> BatchNorm (one falling channel) -> Relu -> unsigned Quant(2 bits, scale 0.5): the
    // ReLU is a non-decreasing step; the falling channel stays falling through it.
    let (mut b, x) = Builder::new(f32_input(&[1, 8]));
    let acc = b.bipolar_gemm(x);
    let bn = b.batchnorm(
        acc,
        &[1.0, -0.5, 0.75],
        &[0.1, 0.5, -0.3],
        &[0.0, 1.0, 2.0],
        &[1.0, 4.0, 0.5],
    );
    let relu = b.node("Relu_0", Op::Relu, &[bn]);
    let q = |b: &mut Builder, name: &str, v: f32| b.constant(name, None, f32s(&[], &[v]));
    let (s, z, bits) = (
        q(&mut b, "q_scale", 0.5),
        q(&mut b, "q_zero", 0.0),
        q(&mut b, "q_bits", 2.0),
    );
    let out = b.node(
        "Quant_0",
        Op::Quant(QuantAttrs {
            signed: false,
            narrow: false,
            rounding: RoundingMode::HalfEven,
        }),
        &[relu, s, z, bits],
    );
    let graph = b.finish(out);
    let (g, report) = check("relu_in_the_chain_folds", &graph, &all_sign_patterns(8));
    assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{report}");
    assert!(!g.node_ids().any(|n| matches!(g.node(n).op, Op::Relu)));
}
