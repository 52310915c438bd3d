//! Running whole graphs: `run`, `run_batch`, value lifetimes and error reporting.

use super::{run, run_batch};
use crate::error::IrError;
use crate::graph::Graph;
use crate::op::{BinaryOp, GemmAttrs, Op, QuantAttrs, RoundingMode};
use crate::tensor::Tensor;
use crate::types::{ElemType, TensorType};

fn names(n: &str) -> Vec<String> {
    vec![n.to_string()]
}

/// input (1, 4) -> Gemm with bipolar weights (transB) -> BatchNorm -> BipolarQuant.
fn tiny_bnn() -> Graph {
    let mut g = Graph::new("tiny");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 4]));
    let w = Tensor::f32(
        vec![3, 4],
        vec![
            1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0, 1.0,
        ],
    );
    let w = g.add_const("w", Some(ElemType::BIPOLAR), w).unwrap();
    let gemm = Op::Gemm(GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    });
    let acc = g.add_node("fc", gemm, &[x, w], names("acc")).unwrap()[0];
    let p = |g: &mut Graph, n: &str, v: [f32; 3]| {
        g.add_const(n, None, Tensor::f32(vec![3], v.to_vec()))
            .unwrap()
    };
    let gamma = p(&mut g, "gamma", [1.0, -1.0, 2.0]);
    let beta = p(&mut g, "beta", [-1.5, 0.0, 0.0]);
    let mean = p(&mut g, "mean", [0.0, 0.0, -2.0]);
    let var = p(&mut g, "var", [0.75, 0.0, 3.75]);
    let bn = g
        .add_node(
            "bn",
            Op::BatchNorm { epsilon: 0.25 },
            &[acc, gamma, beta, mean, var],
            names("bn"),
        )
        .unwrap()[0];
    let one = g.add_const("one", None, Tensor::scalar(1.0)).unwrap();
    let y = g
        .add_node("sign", Op::BipolarQuant, &[bn, one], names("y"))
        .unwrap()[0];
    g.set_outputs(vec![y]);
    g
}

#[test]
fn tiny_bnn_by_hand() {
    let g = tiny_bnn();
    // acc = [1.5, 3.5, -1.5].
    // BatchNorm: ch0 s = 1, t = -1.5 -> 0 (BipolarQuant(0) = +1); ch1 s = -2, t = 0 -> -7;
    // ch2 s = 2 * 0.5 = 1, t = 0 + 2 = 2 -> 0.5.
    let x = Tensor::f32(vec![1, 4], vec![0.5, -1.0, 2.0, 0.0]);
    let y = run(&g, &[x]).unwrap();
    assert_eq!(y.len(), 1);
    assert_eq!(y[0].shape(), &[1, 3]);
    assert_eq!(y[0].as_f32().unwrap(), &[1.0, -1.0, 1.0]);
}

#[test]
fn input_shape_must_match() {
    let g = tiny_bnn();
    let err = run(&g, &[Tensor::f32(vec![4], vec![0.0; 4])]).unwrap_err();
    assert!(
        matches!(&err, IrError::Value { value, .. } if value == "x"),
        "{err}"
    );
    assert!(matches!(run(&g, &[]).unwrap_err(), IrError::Graph { .. }));
}

#[test]
fn run_batch_splits_samples() {
    let g = tiny_bnn();
    let rows = [
        [0.5, -1.0, 2.0, 0.0],
        [-3.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
    ];
    let batch = Tensor::f32(vec![3, 4], rows.iter().flatten().copied().collect());
    let y = run_batch(&g, &batch).unwrap();
    assert_eq!(y[0].shape(), &[3, 3]);
    for (i, row) in rows.iter().enumerate() {
        let one = run(&g, &[Tensor::f32(vec![1, 4], row.to_vec())]).unwrap();
        assert_eq!(
            &y[0].as_f32().unwrap()[i * 3..(i + 1) * 3],
            one[0].as_f32().unwrap()
        );
    }
    // The graph's own shape runs once.
    let single = Tensor::f32(vec![1, 4], rows[0].to_vec());
    assert_eq!(
        run_batch(&g, &single).unwrap()[0].as_f32().unwrap(),
        &[1.0, -1.0, 1.0]
    );
    let err = run_batch(&g, &Tensor::f32(vec![3, 5], vec![0.0; 15])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("[3, 5]") && msg.contains("[1, 4]") && msg.contains('x'),
        "{msg}"
    );
}

#[test]
fn values_used_twice_and_constant_subgraphs() {
    // y = (x + x) @ Quant(w) with the quantizer on a constant, computed once per session.
    let mut g = Graph::new("reuse");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 2]));
    let sum = g
        .add_node("add", Op::Binary(BinaryOp::Add), &[x, x], names("sum"))
        .unwrap()[0];
    let w = g
        .add_const("w", None, Tensor::f32(vec![2, 1], vec![0.6, -1.4]))
        .unwrap();
    let s = g.add_const("s", None, Tensor::scalar(0.5)).unwrap();
    let z = g.add_const("z", None, Tensor::scalar(0.0)).unwrap();
    let b = g.add_const("b", None, Tensor::scalar(4.0)).unwrap();
    let quant = Op::Quant(QuantAttrs {
        signed: true,
        narrow: false,
        rounding: RoundingMode::HalfEven,
    });
    let wq = g.add_node("wq", quant, &[w, s, z, b], names("wq")).unwrap()[0];
    let y = g
        .add_node("mm", Op::MatMul, &[sum, wq], names("y"))
        .unwrap()[0];
    // Outputs may name an intermediate value and repeat one.
    g.set_outputs(vec![y, sum, y]);
    let out = run(&g, &[Tensor::f32(vec![1, 2], vec![1.0, 2.0])]).unwrap();
    // wq = [0.5, -1.5] (1.2 -> 1, -2.8 -> -3); sum = [2, 4]; y = 1 - 6 = -5.
    assert_eq!(out[0].as_f32().unwrap(), &[-5.0]);
    assert_eq!(out[1].as_f32().unwrap(), &[2.0, 4.0]);
    assert_eq!(out[2], out[0]);
}

#[test]
fn op_errors_name_the_node() {
    let mut g = Graph::new("xnor");
    let a = g.add_input("a", TensorType::new(ElemType::F32, vec![1, 2]));
    let w = g
        .add_const(
            "w",
            Some(ElemType::I64),
            crate::packing::pack_matrix_weights(&Tensor::f32(vec![2, 1], vec![1.0, -1.0])).unwrap(),
        )
        .unwrap();
    let y = g
        .add_node("popcount", Op::XnorMatMul, &[a, w], names("y"))
        .unwrap()[0];
    g.set_outputs(vec![y]);
    assert_eq!(
        run(&g, &[Tensor::f32(vec![1, 2], vec![1.0, 1.0])]).unwrap()[0]
            .as_f32()
            .unwrap(),
        &[0.0]
    );
    let err = run(&g, &[Tensor::f32(vec![1, 2], vec![1.0, 0.5])]).unwrap_err();
    match err {
        IrError::Node { node, op, reason } => {
            assert_eq!((node.as_str(), op), ("popcount", "xnor_matmul"));
            assert!(reason.contains("0.5"), "{reason}");
        }
        other => panic!("expected a node error, got {other}"),
    }
}

/// An output without a batch axis of 1 (a reshape of (1, 2, 6) to (3, 4)) gets the samples
/// as a new first axis, as native code shapes it: (2, 3, 4) for two samples, not (6, 4).
#[test]
fn batch_outputs_without_a_batch_axis_stack_on_a_new_one() {
    let mut g = Graph::new("flat");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 2, 6]));
    let y = g
        .add_node("r", Op::Reshape { shape: vec![3, 4] }, &[x], names("y"))
        .unwrap()[0];
    g.set_outputs(vec![y]);
    let batch = Tensor::f32(vec![2, 2, 6], (0..24).map(|i| i as f32).collect());
    let out = run_batch(&g, &batch).unwrap();
    assert_eq!(out[0].shape(), &[2, 3, 4]);
    assert_eq!(out[0].as_f32().unwrap()[12], 12.0);
    // Exactly the input's shape is one sample, shaped as the graph says.
    let one = Tensor::f32(vec![1, 2, 6], vec![0.0; 12]);
    assert_eq!(run_batch(&g, &one).unwrap()[0].shape(), &[3, 4]);
}

/// Found by mutation fuzzing: 0 / 0 before a Sign made a NaN in a value typed i2; the
/// unoptimized network carried it through the next quantizer while the thresholds the passes
/// make compare it away, so the two gave different answers. A non-finite value in an integer
/// type is now an error that names the node.
#[test]
fn integer_results_hold_no_nan() {
    let mut g = Graph::new("nan");
    let x = g.add_input("x", TensorType::new(ElemType::F32, vec![1, 2]));
    let zero = g
        .add_const("zero", None, Tensor::f32(vec![2], vec![0.0, 1.0]))
        .unwrap();
    let q = g
        .add_node("div", Op::Binary(BinaryOp::Div), &[x, zero], names("q"))
        .unwrap()[0];
    let s = g.add_node("sign", Op::Sign, &[q], names("s")).unwrap()[0];
    g.set_outputs(vec![s]);
    let err = run(&g, &[Tensor::f32(vec![1, 2], vec![0.0, 3.0])]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node `sign` (sign): result 0 holds NaN, which its type i2 cannot hold"
    );
    // Finite quotients are values of the type.
    let out = run(&g, &[Tensor::f32(vec![1, 2], vec![-2.0, 3.0])]).unwrap();
    assert_eq!(out[0].to_f32_vec(), [-1.0, 1.0]);
}
