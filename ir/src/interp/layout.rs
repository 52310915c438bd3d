//! Data movement: Reshape, Transpose, Pad and Concat. These keep the element kind (f32 or
//! i64), since shape computations pass through them.

use super::strided::{dense_strides, StridedIndices};
use super::{f32_result, numel};
use crate::tensor::{Tensor, TensorData};

/// Applies `f` to the data whichever its kind, keeping the kind.
fn map_data(
    t: &Tensor,
    shape: &[usize],
    f32s: impl FnOnce(&[f32]) -> Vec<f32>,
    i64s: impl FnOnce(&[i64]) -> Vec<i64>,
) -> Result<Tensor, String> {
    match t.data() {
        TensorData::F32(v) => f32_result(shape, f32s(v)),
        TensorData::I64(v) => {
            let y = i64s(v);
            let len = y.len();
            Tensor::try_i64(shape.to_vec(), y)
                .ok_or_else(|| format!("internal: {len} elements for shape {shape:?}"))
        }
    }
}

/// The same row-major data under another shape.
pub(super) fn reshape(x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    x.clone()
        .reshaped(out.to_vec())
        .ok_or_else(|| format!("cannot reshape {:?} to {out:?}", x.shape()))
}

/// Output axis `i` is input axis `perm[i]`.
pub(super) fn transpose(perm: &[usize], x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let in_strides = dense_strides(x.shape());
    let strides: Vec<usize> = perm
        .iter()
        .map(|&p| in_strides.get(p).copied().unwrap_or(0))
        .collect();
    if strides.len() != out.len() {
        return Err(format!(
            "perm {perm:?} does not fit the result shape {out:?}"
        ));
    }
    let gather = || StridedIndices::new(out, strides.clone(), 0);
    map_data(
        x,
        out,
        |v| gather().map(|i| v[i]).collect(),
        |v| gather().map(|i| v[i]).collect(),
    )
}

/// Constant padding: begins of every axis, then ends.
pub(super) fn pad(pads: &[usize], value: f32, x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let rank = x.shape().len();
    if pads.len() != 2 * rank || out.len() != rank {
        return Err(format!("{} pads for rank {rank}", pads.len()));
    }
    let out_strides = dense_strides(out);
    let base: usize = (0..rank).map(|a| pads[a] * out_strides[a]).sum();
    // Every input element lands at its index shifted by the begins.
    let targets = || StridedIndices::new(x.shape(), out_strides.clone(), base);
    if matches!(x.data(), TensorData::I64(_)) && value.fract() != 0.0 {
        return Err(format!(
            "pad value {value} is not an integer, the tensor is i64"
        ));
    }
    map_data(
        x,
        out,
        |v| scatter(vec![value; numel(out)], v, targets()),
        |v| scatter(vec![value as i64; numel(out)], v, targets()),
    )
}

fn scatter<T: Copy>(mut y: Vec<T>, v: &[T], targets: StridedIndices) -> Vec<T> {
    for (o, &e) in targets.zip(v) {
        y[o] = e;
    }
    y
}

/// Joins the operands along `axis`.
pub(super) fn concat(axis: usize, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    if let Some(parts) = x
        .iter()
        .map(|t| t.as_f32())
        .collect::<Option<Vec<&[f32]>>>()
    {
        return f32_result(out, join(&parts, x, axis, out));
    }
    if let Some(parts) = x
        .iter()
        .map(|t| t.as_i64())
        .collect::<Option<Vec<&[i64]>>>()
    {
        let y = join(&parts, x, axis, out);
        let len = y.len();
        return Tensor::try_i64(out.to_vec(), y)
            .ok_or_else(|| format!("internal: {len} elements for shape {out:?}"));
    }
    Err("Concat of f32 and i64 tensors".into())
}

/// Each operand contributes a contiguous chunk of `extent * inner` per index of the axes
/// before `axis`.
fn join<T: Copy>(parts: &[&[T]], x: &[&Tensor], axis: usize, out: &[usize]) -> Vec<T> {
    let mut y = Vec::with_capacity(numel(out));
    for o in 0..numel(&out[..axis]) {
        for (part, t) in parts.iter().zip(x) {
            let c = numel(&t.shape()[axis..]);
            y.extend_from_slice(&part[o * c..(o + 1) * c]);
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use crate::interp::eval;
    use crate::op::Op;
    use crate::tensor::Tensor;

    fn iota(shape: &[usize]) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::f32(shape.to_vec(), (0..n).map(|v| v as f32).collect())
    }

    fn eval1(op: Op, inputs: &[&Tensor]) -> Tensor {
        eval(&op, inputs).unwrap().remove(0)
    }

    #[test]
    fn reshape_keeps_data() {
        let y = eval1(Op::Reshape { shape: vec![3, 2] }, &[&iota(&[2, 3])]);
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[3, 2][..], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0][..])
        );
        let shape = Tensor::i64(vec![2], vec![1, 4]);
        let y = eval1(
            Op::Reshape { shape: vec![4, 1] },
            &[&Tensor::i64(vec![4], vec![1, 2, 3, 4])],
        );
        assert_eq!(y.as_i64().unwrap(), &[1, 2, 3, 4]);
        assert!(eval(&Op::Reshape { shape: vec![3] }, &[&shape]).is_err());
    }

    #[test]
    fn transpose_3d() {
        // (2, 3, 2) -> perm (2, 0, 1) -> (2, 2, 3): y[k][i][j] = x[i][j][k].
        let y = eval1(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[&iota(&[2, 3, 2])],
        );
        assert_eq!(y.shape(), &[2, 2, 3]);
        let want = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0];
        assert_eq!(y.as_f32().unwrap(), &want);
    }

    #[test]
    fn pad_constant() {
        let y = eval1(
            Op::Pad {
                pads: vec![0, 1, 1, 0],
                value: -1.0,
            },
            &[&iota(&[2, 2])],
        );
        assert_eq!(y.shape(), &[3, 3]);
        assert_eq!(
            y.as_f32().unwrap(),
            &[-1.0, 0.0, 1.0, -1.0, 2.0, 3.0, -1.0, -1.0, -1.0]
        );
    }

    #[test]
    fn concat_axes() {
        let (a, b) = (iota(&[2, 1]), iota(&[2, 2]));
        let y = eval1(Op::Concat { axis: 1 }, &[&a, &b]);
        assert_eq!(y.as_f32().unwrap(), &[0.0, 0.0, 1.0, 1.0, 2.0, 3.0]);
        let y = eval1(Op::Concat { axis: 0 }, &[&b, &b]);
        assert_eq!(y.shape(), &[4, 2]);
        let ints = Tensor::i64(vec![1], vec![-1]);
        let y = eval1(
            Op::Concat { axis: 0 },
            &[&Tensor::i64(vec![2], vec![1, 2]), &ints],
        );
        assert_eq!(y.as_i64().unwrap(), &[1, 2, -1]);
        assert!(eval(&Op::Concat { axis: 0 }, &[&iota(&[1]), &ints]).is_err());
    }
}
