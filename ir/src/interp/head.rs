//! Network heads: Softmax and TopK.

use std::cmp::Ordering;

use super::{f32_result, floats, numel};
use crate::tensor::{Tensor, TensorData};

/// ONNX Softmax: `exp(x - max) / sum(exp(x - max))` in f32, the sum in order. With `coerce_2d`
/// (opset < 13) each row of the 2-D view `(prod(shape[..axis]), prod(shape[axis..]))` is one
/// softmax; otherwise the softmax runs along `axis`.
pub(super) fn softmax(axis: usize, coerce_2d: bool, x: &Tensor) -> Result<Tensor, String> {
    let data = floats(x);
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(format!("axis {axis} out of range for rank {}", shape.len()));
    }
    // The softmax lanes: `outer` groups of `len` elements `inner` apart.
    let (outer, len, inner) = if coerce_2d {
        (numel(&shape[..axis]), numel(&shape[axis..]), 1)
    } else {
        (
            numel(&shape[..axis]),
            shape[axis],
            numel(&shape[axis + 1..]),
        )
    };
    let mut y = vec![0f32; data.len()];
    let mut exps = vec![0f32; len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * len * inner + j * inner + i;
            let max = (0..len)
                .map(|j| data[at(j)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (j, e) in exps.iter_mut().enumerate() {
                *e = (data[at(j)] - max).exp();
                sum += *e;
            }
            for (j, &e) in exps.iter().enumerate() {
                y[at(j)] = e / sum;
            }
        }
    }
    f32_result(shape, y)
}

/// Orders floats with NaN above everything (numpy's sort order) and -0 equal to +0.
fn float_order(a: f32, b: f32) -> Ordering {
    a.partial_cmp(&b)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
}

/// ONNX TopK: the `k` largest (or smallest) elements along `axis`, sorted, and their indices as
/// i64. Equal values keep the lower index first, as onnxruntime does.
pub(super) fn top_k(
    k: usize,
    axis: usize,
    largest: bool,
    x: &Tensor,
) -> Result<Vec<Tensor>, String> {
    let shape = x.shape();
    let len = *shape
        .get(axis)
        .ok_or_else(|| format!("axis {axis} out of range for rank {}", shape.len()))?;
    if k > len {
        return Err(format!("k = {k} exceeds the extent {len} of axis {axis}"));
    }
    let mut out_shape = shape.to_vec();
    out_shape[axis] = k;
    let (outer, inner) = (numel(&shape[..axis]), numel(&shape[axis + 1..]));
    let order = |v: &dyn Fn(usize, usize) -> Ordering| -> Vec<usize> {
        let mut picked = Vec::with_capacity(outer * k * inner);
        let mut lane: Vec<usize> = Vec::with_capacity(len);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * len * inner + i;
                lane.clear();
                lane.extend((0..len).map(|j| base + j * inner));
                // A stable sort keeps equal values in index order.
                lane.sort_by(|&p, &q| if largest { v(q, p) } else { v(p, q) });
                picked.extend(lane.iter().take(k).copied());
            }
        }
        // `picked` is (outer, inner, k): reorder to (outer, k, inner).
        let mut y = vec![0usize; picked.len()];
        for o in 0..outer {
            for i in 0..inner {
                for r in 0..k {
                    y[(o * k + r) * inner + i] = picked[(o * inner + i) * k + r];
                }
            }
        }
        y
    };
    let (values, picked) = match x.data() {
        TensorData::F32(v) => {
            let picked = order(&|p, q| float_order(v[p], v[q]));
            (
                f32_result(&out_shape, picked.iter().map(|&p| v[p]).collect())?,
                picked,
            )
        }
        TensorData::I64(v) => {
            let picked = order(&|p, q| v[p].cmp(&v[q]));
            let values = picked.iter().map(|&p| v[p]).collect();
            (
                Tensor::try_i64(out_shape.clone(), values)
                    .ok_or("internal: TopK values do not fit")?,
                picked,
            )
        }
    };
    // The index along the axis of each picked element.
    let idx = picked
        .iter()
        .map(|&p| ((p / inner.max(1)) % len.max(1)) as i64)
        .collect();
    let indices = Tensor::try_i64(out_shape, idx).ok_or("internal: TopK indices do not fit")?;
    Ok(vec![values, indices])
}

#[cfg(test)]
mod tests {
    use crate::interp::eval;
    use crate::op::Op;
    use crate::tensor::Tensor;

    #[test]
    fn softmax_axes() {
        let x = Tensor::f32(vec![2, 2], vec![0.0, 0.0, 1.0, 1.0]);
        let y = eval(
            &Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&x],
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[0.5; 4]);
        let y = eval(
            &Op::Softmax {
                axis: 0,
                coerce_2d: false,
            },
            &[&x],
        )
        .unwrap()
        .remove(0);
        let (a, b) = (1.0 / (1.0 + 1f32.exp()), 1f32.exp() / (1.0 + 1f32.exp()));
        assert_eq!(y.as_f32().unwrap(), &[a, a, b, b]);
        // Huge values do not overflow: x - max.
        let big = Tensor::f32(vec![1, 2], vec![1000.0, 1000.0]);
        let y = eval(
            &Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&big],
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[0.5, 0.5]);
    }

    #[test]
    fn softmax_legacy_coerce() {
        // Opset < 13, axis 1 on (1, 2, 2): one softmax over all four elements.
        let x = Tensor::f32(vec![1, 2, 2], vec![0.0; 4]);
        let y = eval(
            &Op::Softmax {
                axis: 1,
                coerce_2d: true,
            },
            &[&x],
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[0.25; 4]);
        // Along axis 1 only (opset 13): pairs.
        let y = eval(
            &Op::Softmax {
                axis: 1,
                coerce_2d: false,
            },
            &[&x],
        )
        .unwrap()
        .remove(0);
        assert_eq!(y.as_f32().unwrap(), &[0.5; 4]);
    }

    #[test]
    fn top_k_ties_take_lower_index() {
        let x = Tensor::f32(vec![1, 6], vec![3.0, 5.0, 5.0, 1.0, 5.0, 3.0]);
        let out = eval(
            &Op::TopK {
                k: 4,
                axis: 1,
                largest: true,
                sorted: true,
            },
            &[&x],
        )
        .unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[5.0, 5.0, 5.0, 3.0]);
        assert_eq!(out[1].as_i64().unwrap(), &[1, 2, 4, 0]);
        let out = eval(
            &Op::TopK {
                k: 3,
                axis: 1,
                largest: false,
                sorted: true,
            },
            &[&x],
        )
        .unwrap();
        assert_eq!(out[0].as_f32().unwrap(), &[1.0, 3.0, 3.0]);
        assert_eq!(out[1].as_i64().unwrap(), &[3, 0, 5]);
    }

    #[test]
    fn top_k_along_first_axis() {
        // (3, 2) along axis 0, k 2: per column.
        let x = Tensor::f32(vec![3, 2], vec![1.0, 9.0, 4.0, 8.0, 2.0, 7.0]);
        let out = eval(
            &Op::TopK {
                k: 2,
                axis: 0,
                largest: true,
                sorted: true,
            },
            &[&x],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2, 2]);
        assert_eq!(out[0].as_f32().unwrap(), &[4.0, 9.0, 2.0, 8.0]);
        assert_eq!(out[1].as_i64().unwrap(), &[1, 0, 2, 1]);
    }
}
