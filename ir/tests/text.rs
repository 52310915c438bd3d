//! The text form of small graphs, as snapshots (`cargo insta review` after an intended change).

use bnnc_ir::{
    text::print_graph, verify::verify, ConvAttrs, ElemType, GemmAttrs, Graph, Op, PoolAttrs,
    Tensor, TensorType,
};

fn conv3x3(pads: usize) -> Op {
    Op::Conv(ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![pads; 4],
        group: 1,
    })
}

/// A binary MLP layer: bipolar activations times bipolar weights, BatchNorm, binarize.
#[test]
fn binary_dense_layer() {
    let mut g = Graph::new("dense");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 6]));
    let one = g
        .add_const("one", None, Tensor::f32(vec![1], vec![1.0]))
        .unwrap();
    let w = g
        .add_const(
            "w",
            None,
            Tensor::f32(vec![4, 6], (0..24).map(|i| i as f32 - 11.5).collect()),
        )
        .unwrap();
    let stats: Vec<_> = ["gamma", "beta", "mean", "var"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            g.add_const(*n, None, Tensor::f32(vec![4], vec![i as f32 + 0.5; 4]))
                .unwrap()
        })
        .collect();
    let xq = g
        .add_node("act_quant", Op::BipolarQuant, &[x, one], vec!["xq".into()])
        .unwrap()[0];
    let wq = g
        .add_node(
            "weight_quant",
            Op::BipolarQuant,
            &[w, one],
            vec!["wq".into()],
        )
        .unwrap()[0];
    let gemm = Op::Gemm(GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    });
    let acc = g
        .add_node("fc", gemm, &[xq, wq], vec!["acc".into()])
        .unwrap()[0];
    let mut bn_in = vec![acc];
    bn_in.extend(&stats);
    let bn = g
        .add_node(
            "bn",
            Op::BatchNorm { epsilon: 1e-5 },
            &bn_in,
            vec!["bn".into()],
        )
        .unwrap()[0];
    let y = g
        .add_node(
            "out_quant",
            Op::BipolarQuant,
            &[bn, one],
            vec!["y/out".into()],
        )
        .unwrap()[0];
    g.set_outputs(vec![y]);
    verify(&g).unwrap();
    insta::assert_snapshot!(print_graph(&g));
}

/// A binary conv with padding and a max pool, with an 8-bit scaled input.
#[test]
fn binary_conv_block() {
    let mut g = Graph::new("conv");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 2, 6, 6]));
    let scale = g.add_const("scale", None, Tensor::scalar(0.25)).unwrap();
    let zero = g.add_const("zero", None, Tensor::scalar(0.0)).unwrap();
    let bits = g.add_const("bits", None, Tensor::scalar(8.0)).unwrap();
    let one = g.add_const("one", None, Tensor::scalar(1.0)).unwrap();
    let w = g
        .add_const(
            "w",
            Some(ElemType::BIPOLAR),
            Tensor::f32(
                vec![3, 2, 3, 3],
                (0..54)
                    .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
                    .collect(),
            ),
        )
        .unwrap();
    let quant = Op::Quant(bnnc_ir::QuantAttrs {
        signed: true,
        narrow: false,
        rounding: bnnc_ir::RoundingMode::HalfEven,
    });
    let xq = g
        .add_node(
            "in_quant",
            quant,
            &[x, scale, zero, bits],
            vec!["xq".into()],
        )
        .unwrap()[0];
    let c = g
        .add_node("conv0", conv3x3(1), &[xq, w], vec!["c".into()])
        .unwrap()[0];
    let b = g
        .add_node("binarize", Op::BipolarQuant, &[c, one], vec!["b".into()])
        .unwrap()[0];
    let pool = Op::MaxPool(PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        ceil_mode: false,
        count_include_pad: false,
    });
    let p = g.add_node("pool0", pool, &[b], vec!["p".into()]).unwrap()[0];
    g.set_outputs(vec![p]);
    verify(&g).unwrap();
    insta::assert_snapshot!(print_graph(&g));
}
