//! Property: for random BatchNorm parameters (negative, zero and tiny gammas included), scales
//! and quantizers, `streamline` folds the chain after a bipolar Gemm and the graph gives the
//! same outputs as before on every accumulator value the layer can produce.

use bnnc_ir::interp::run;
use bnnc_ir::{
    BinaryOp, ElemType, GemmAttrs, Graph, Op, QuantAttrs, RoundingMode, Tensor, TensorType,
};
use bnnc_passes::egraph::{streamline, Limits};
use proptest::prelude::*;

const K: usize = 7;
const C: usize = 4;

/// The quantizer ending the chain.
#[derive(Clone, Debug)]
enum Quantizer {
    Bipolar,
    Sign,
    /// QONNX Quant: scale, bits, signed, narrow, rounding.
    Quant(f32, u8, bool, bool, RoundingMode),
}

fn graph(w: &[f32], mul: Option<f32>, bn: &[Vec<f32>; 4], q: &Quantizer) -> Graph {
    let mut g = Graph::new("prop");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, K]));
    let c = |g: &mut Graph, name: &str, shape: &[usize], v: &[f32]| {
        g.add_const(name, None, Tensor::f32(shape.to_vec(), v.to_vec()))
            .unwrap()
    };
    let one = c(&mut g, "one", &[], &[1.0]);
    let node = |g: &mut Graph, name: &str, op: Op, ins: &[bnnc_ir::ValueId]| {
        g.add_node(name, op, ins, vec![format!("{name}_out")])
            .unwrap()[0]
    };
    let a = node(&mut g, "Act", Op::BipolarQuant, &[x, one]);
    let w = g
        .add_const(
            "W",
            Some(ElemType::BIPOLAR),
            Tensor::f32(vec![C, K], w.to_vec()),
        )
        .unwrap();
    let gemm = Op::Gemm(GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    });
    let mut v = node(&mut g, "Gemm", gemm, &[a, w]);
    if let Some(m) = mul {
        let m = c(&mut g, "m", &[], &[m]);
        v = node(&mut g, "Mul", Op::Binary(BinaryOp::Mul), &[v, m]);
    }
    let p: Vec<_> = ["gamma", "beta", "mean", "var"]
        .iter()
        .zip(bn)
        .map(|(n, vals)| c(&mut g, n, &[C], vals))
        .collect();
    v = node(
        &mut g,
        "BN",
        Op::BatchNorm { epsilon: 1e-5 },
        &[v, p[0], p[1], p[2], p[3]],
    );
    let out = match q {
        Quantizer::Bipolar => node(&mut g, "Q", Op::BipolarQuant, &[v, one]),
        Quantizer::Sign => node(&mut g, "Q", Op::Sign, &[v]),
        Quantizer::Quant(scale, bits, signed, narrow, rounding) => {
            let s = c(&mut g, "qs", &[], &[*scale]);
            let z = c(&mut g, "qz", &[], &[0.0]);
            let b = c(&mut g, "qb", &[], &[f32::from(*bits)]);
            let attrs = QuantAttrs {
                signed: *signed,
                narrow: *narrow,
                rounding: *rounding,
            };
            node(&mut g, "Q", Op::Quant(attrs), &[v, s, z, b])
        }
    };
    g.set_outputs(vec![out]);
    g
}

fn quantizer() -> impl Strategy<Value = Quantizer> {
    let rounding = prop_oneof![
        Just(RoundingMode::HalfEven),
        Just(RoundingMode::Floor),
        Just(RoundingMode::Ceil),
        Just(RoundingMode::HalfUp),
    ];
    let scale = prop_oneof![Just(1.0f32), Just(0.5), Just(0.25), Just(2.0)];
    prop_oneof![
        Just(Quantizer::Bipolar),
        Just(Quantizer::Sign),
        (scale, 2u8..=3, any::<bool>(), any::<bool>(), rounding)
            .prop_map(|(s, b, signed, narrow, r)| Quantizer::Quant(s, b, signed, narrow, r)),
    ]
}

fn channel_values(range: std::ops::Range<f32>) -> impl Strategy<Value = Vec<f32>> {
    // Some exact small values, where the chain lands on a quantizer boundary exactly.
    let value = prop_oneof![
        range.prop_map(|v| v),
        Just(0.0f32),
        Just(1.0),
        Just(-1.0),
        Just(0.5)
    ];
    proptest::collection::vec(value, C)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn folded_chains_are_exact(
        w in proptest::collection::vec(prop_oneof![Just(-1.0f32), Just(1.0)], C * K),
        mul in prop_oneof![Just(None), (-3.0f32..3.0).prop_map(Some), Just(Some(0.5))],
        gamma in channel_values(-2.0..2.0),
        beta in channel_values(-3.0..3.0),
        mean in channel_values(-4.0..4.0),
        var in proptest::collection::vec(prop_oneof![0.0f32..4.0, Just(1.0)], C),
        q in quantizer(),
    ) {
        let g = graph(&w, mul, &[gamma, beta, mean, var], &q);
        let (s, report) = streamline(&g, &Limits::default()).unwrap();
        prop_assert_eq!(report.count("fold-batchnorm-to-threshold"), 1, "{}", report);
        for bits in 0..1u32 << K {
            let x: Vec<f32> = (0..K).map(|i| if bits >> i & 1 == 1 { 1.0 } else { -1.0 }).collect();
            let x = Tensor::f32(vec![1, K], x);
            let want = run(&g, std::slice::from_ref(&x)).unwrap();
            let got = run(&s, std::slice::from_ref(&x)).unwrap();
            // Integer outputs: -0 and +0 are the same integer (see the threshold module docs).
            prop_assert_eq!(want[0].to_f32_vec(), got[0].to_f32_vec(), "x = {:?}", x.to_f32_vec());
        }
    }
}
