//! The helpers the families' tests share, and the tests that span families.

use super::infer_output_types;
use crate::op::Op;
use crate::types::{ElemType, TensorType};

/// An `f32` tensor type of `shape`.
pub(super) fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(ElemType::F32, shape.to_vec())
}

/// A tensor type of `elem` and `shape`.
pub(super) fn typed(elem: ElemType, shape: &[usize]) -> TensorType {
    TensorType::new(elem, shape.to_vec())
}

/// Infers with every operand a non-constant.
pub(super) fn infer_vars(op: &Op, inputs: &[TensorType]) -> Result<Vec<TensorType>, String> {
    let refs: Vec<&TensorType> = inputs.iter().collect();
    infer_output_types(op, &refs, &vec![None; inputs.len()])
}

#[test]
fn heads_and_reductions() {
    let topk = Op::TopK {
        k: 3,
        axis: 1,
        largest: true,
        sorted: true,
    };
    let t = infer_vars(&topk, &[f32t(&[1, 10])]).unwrap();
    assert_eq!(t, vec![f32t(&[1, 3]), typed(ElemType::I64, &[1, 3])]);
    assert!(infer_vars(
        &Op::TopK {
            k: 11,
            axis: 1,
            largest: true,
            sorted: true
        },
        &[f32t(&[1, 10])]
    )
    .is_err());
    let rm = infer_vars(
        &Op::ReduceMean {
            axes: vec![2, 3],
            keep_dims: false,
        },
        &[f32t(&[1, 2, 3, 4])],
    )
    .unwrap();
    assert_eq!(rm[0].shape, vec![1, 2]);
    let gap = infer_vars(&Op::GlobalAveragePool, &[f32t(&[1, 2, 3, 4])]).unwrap();
    assert_eq!(gap[0].shape, vec![1, 2, 1, 1]);
    assert!(infer_vars(
        &Op::Softmax {
            axis: 2,
            coerce_2d: true
        },
        &[f32t(&[1, 2])]
    )
    .is_err());
}

#[test]
fn oversized_results_are_rejected() {
    let err = infer_vars(
        &Op::Reshape {
            shape: vec![1 << 40, 1 << 40],
        },
        &[f32t(&[4])],
    )
    .unwrap_err();
    assert!(err.contains("too many elements"), "{err}");
    let big = f32t(&[1 << 20, 1 << 12]);
    assert!(infer_vars(&Op::Relu, &[big])
        .unwrap_err()
        .contains("bnnc's limit for one tensor"));
    let pads = Op::Pad {
        pads: vec![usize::MAX, 1],
        value: 0.0,
    };
    assert!(infer_vars(&pads, &[f32t(&[4])]).is_err());
}
