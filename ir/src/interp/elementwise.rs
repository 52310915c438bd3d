//! Elementwise ops: broadcast arithmetic, Relu, Sign and Clip.

use super::strided::zip_broadcast;
use super::{f32_result, floats};
use crate::op::{BinaryOp, CompareOp};
use crate::tensor::{Tensor, TensorData};

/// Add, Sub, Mul, Div and Pow with numpy broadcasting: f32 arithmetic on floats, checked
/// integer arithmetic on two i64 operands (shape computations; Div truncates). Pow also
/// accepts an i64 exponent for a float base, as ONNX does.
pub(super) fn binary(op: BinaryOp, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let (a, b) = (x[0], x[1]);
    match (a.data(), b.data()) {
        (TensorData::F32(av), TensorData::F32(bv)) => {
            float_binary(op, (av, a.shape()), (bv, b.shape()), out)
        }
        (TensorData::F32(av), TensorData::I64(_)) if op == BinaryOp::Pow => {
            float_binary(op, (av, a.shape()), (&floats(b), b.shape()), out)
        }
        (TensorData::I64(av), TensorData::I64(bv)) => {
            let y = zip_broadcast((av, a.shape()), (bv, b.shape()), out, |p, q| {
                int_binary(op, p, q)
            })?;
            let y = y.into_iter().collect::<Result<Vec<i64>, String>>()?;
            let len = y.len();
            Tensor::try_i64(out.to_vec(), y)
                .ok_or_else(|| format!("internal: {len} elements for shape {out:?}"))
        }
        _ => Err(format!("{} of an f32 and an i64 tensor", op.name())),
    }
}

fn float_binary(
    op: BinaryOp,
    a: (&[f32], &[usize]),
    b: (&[f32], &[usize]),
    out: &[usize],
) -> Result<Tensor, String> {
    let y = match op {
        BinaryOp::Add => zip_broadcast(a, b, out, |p, q| p + q)?,
        BinaryOp::Sub => zip_broadcast(a, b, out, |p, q| p - q)?,
        BinaryOp::Mul => zip_broadcast(a, b, out, |p, q| p * q)?,
        BinaryOp::Div => zip_broadcast(a, b, out, |p, q| p / q)?,
        // onnxruntime squares and cubes a scalar exponent of 2 or 3 by multiplication.
        BinaryOp::Min => zip_broadcast(a, b, out, ieee_minimum)?,
        BinaryOp::Max => zip_broadcast(a, b, out, ieee_maximum)?,
        BinaryOp::Pow => match b.0 {
            [e] if *e == 2.0 => a.0.iter().map(|&p| p * p).collect(),
            [e] if *e == 3.0 => a.0.iter().map(|&p| p * p * p).collect(),
            _ => zip_broadcast(a, b, out, f32::powf)?,
        },
    };
    f32_result(out, y)
}

fn int_binary(op: BinaryOp, p: i64, q: i64) -> Result<i64, String> {
    let r = match op {
        BinaryOp::Add => p.checked_add(q),
        BinaryOp::Sub => p.checked_sub(q),
        BinaryOp::Mul => p.checked_mul(q),
        BinaryOp::Div if q == 0 => return Err("integer division by zero".into()),
        BinaryOp::Div => p.checked_div(q),
        BinaryOp::Pow => u32::try_from(q).ok().and_then(|e| p.checked_pow(e)),
        BinaryOp::Min => Some(p.min(q)),
        BinaryOp::Max => Some(p.max(q)),
    };
    r.ok_or_else(|| {
        format!(
            "integer {} of {p} and {q} overflows or is undefined",
            op.name()
        )
    })
}

/// IEEE 754's `minimum`: NaN if either is NaN, and -0 below +0 (Cranelift's `fmin`).
pub fn ieee_minimum(p: f32, q: f32) -> f32 {
    if p.is_nan() || q.is_nan() {
        f32::NAN
    } else if p < q || (p == q && p.is_sign_negative()) {
        p
    } else {
        q
    }
}

/// IEEE 754's `maximum`: NaN if either is NaN, and +0 above -0 (Cranelift's `fmax`).
pub fn ieee_maximum(p: f32, q: f32) -> f32 {
    if p.is_nan() || q.is_nan() {
        f32::NAN
    } else if p > q || (p == q && p.is_sign_positive()) {
        p
    } else {
        q
    }
}

/// `f` on every element.
pub(super) fn map(x: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor, String> {
    f32_result(x.shape(), floats(x).iter().map(|&v| f(v)).collect())
}

/// A comparison with broadcasting: 1.0 where it holds, else 0.0.
pub(super) fn compare(op: CompareOp, x: &[&Tensor], out: &[usize]) -> Result<Tensor, String> {
    let (a, b) = (floats(x[0]), floats(x[1]));
    let y = zip_broadcast((&a, x[0].shape()), (&b, x[1].shape()), out, |p, q| {
        if op.apply(p, q) {
            1.0
        } else {
            0.0
        }
    })?;
    f32_result(out, y)
}

/// ONNX Relu: `x > 0 ? x : 0`.
pub(super) fn relu(x: &Tensor) -> Result<Tensor, String> {
    f32_result(
        x.shape(),
        floats(x)
            .iter()
            .map(|&v| if v > 0.0 { v } else { 0.0 })
            .collect(),
    )
}

/// ONNX Sign: -1, 0 (for both zeros) or +1; NaN stays NaN as in numpy. Unlike BipolarQuant,
/// `Sign(0) = 0`.
pub(super) fn sign(x: &Tensor) -> Result<Tensor, String> {
    let y = floats(x)
        .iter()
        .map(|&v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else if v == 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect();
    f32_result(x.shape(), y)
}

/// ONNX Clip: `min(max(x, lo), hi)`; with lo > hi every element becomes hi. NaN passes.
pub(super) fn clip(lo: f32, hi: f32, x: &Tensor) -> Result<Tensor, String> {
    let y = floats(x)
        .iter()
        .map(|&v| {
            let v = if v < lo { lo } else { v };
            if v > hi {
                hi
            } else {
                v
            }
        })
        .collect();
    f32_result(x.shape(), y)
}

#[cfg(test)]
mod tests {
    use crate::interp::eval;
    use crate::op::{BinaryOp, CompareOp, Op};
    use crate::tensor::Tensor;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::f32(shape.to_vec(), data.to_vec())
    }

    fn eval1(op: Op, inputs: &[&Tensor]) -> Tensor {
        eval(&op, inputs).unwrap().remove(0)
    }

    #[test]
    fn min_max_are_ieee_minimum_and_maximum() {
        let a = t(&[4], &[1.0, -0.0, f32::NAN, 3.0]);
        let b = t(&[4], &[2.0, 0.0, 1.0, f32::NAN]);
        let min = eval1(Op::Binary(BinaryOp::Min), &[&a, &b]);
        let max = eval1(Op::Binary(BinaryOp::Max), &[&a, &b]);
        let bits = |t: &Tensor| {
            t.as_f32()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        };
        let nan = f32::NAN.to_bits();
        assert_eq!(bits(&min)[..2], [1f32.to_bits(), (-0f32).to_bits()]);
        assert_eq!(bits(&max)[..2], [2f32.to_bits(), 0f32.to_bits()]);
        assert!(
            min.as_f32().unwrap()[2..].iter().all(|v| v.is_nan()),
            "{nan}"
        );
        assert!(max.as_f32().unwrap()[2..].iter().all(|v| v.is_nan()));
        // Broadcast against a scalar, and on i64 shape values.
        let clip = eval1(
            Op::Binary(BinaryOp::Min),
            &[&t(&[3], &[0.5, 1.5, -2.0]), &t(&[], &[1.0])],
        );
        assert_eq!(clip.as_f32().unwrap(), &[0.5, 1.0, -2.0]);
        let ints = Tensor::i64(vec![2], vec![3, -4]);
        let m = eval1(
            Op::Binary(BinaryOp::Max),
            &[&ints, &Tensor::i64(vec![], vec![0])],
        );
        assert_eq!(m, Tensor::i64(vec![2], vec![3, 0]));
    }

    #[test]
    fn abs_round_and_comparisons() {
        let x = t(&[6], &[-2.5, -0.5, 0.5, 1.5, 2.5, -3.7]);
        let round = eval1(Op::Round, &[&x]);
        assert_eq!(round.as_f32().unwrap(), &[-2.0, -0.0, 0.0, 2.0, 2.0, -4.0]);
        let abs = eval1(Op::Abs, &[&x]);
        assert_eq!(abs.as_f32().unwrap(), &[2.5, 0.5, 0.5, 1.5, 2.5, 3.7]);
        let c = t(&[], &[0.5]);
        let le = eval1(Op::Compare(CompareOp::LessOrEqual), &[&x, &c]);
        assert_eq!(le.as_f32().unwrap(), &[1.0, 1.0, 1.0, 0.0, 0.0, 1.0]);
        let gt = eval1(Op::Compare(CompareOp::Greater), &[&x, &c]);
        assert_eq!(gt.as_f32().unwrap(), &[0.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let eq = eval1(Op::Compare(CompareOp::Equal), &[&x, &c]);
        assert_eq!(eq.as_f32().unwrap(), &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        // NaN compares false every way.
        let nan = t(&[1], &[f32::NAN]);
        for op in CompareOp::ALL {
            assert_eq!(
                eval1(Op::Compare(op), &[&nan, &nan]).as_f32().unwrap(),
                &[0.0]
            );
        }
        let lt = eval1(
            Op::Compare(CompareOp::Less),
            &[&t(&[2, 1], &[0.0, 1.0]), &t(&[2], &[0.5, 1.5])],
        );
        assert_eq!(lt.shape(), &[2, 2]);
        assert_eq!(lt.as_f32().unwrap(), &[1.0, 1.0, 0.0, 1.0]);
        let ge = eval1(Op::Compare(CompareOp::GreaterOrEqual), &[&x, &c]);
        assert_eq!(ge.as_f32().unwrap(), &[0.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn broadcast_arithmetic() {
        let a = t(&[2, 1], &[1.0, 2.0]);
        let b = t(&[3], &[10.0, 20.0, 30.0]);
        let add = eval1(Op::Binary(BinaryOp::Add), &[&a, &b]);
        assert_eq!(
            (add.shape(), add.as_f32().unwrap()),
            (&[2, 3][..], &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0][..])
        );
        let sub = eval1(Op::Binary(BinaryOp::Sub), &[&b, &a]);
        assert_eq!(sub.as_f32().unwrap(), &[9.0, 19.0, 29.0, 8.0, 18.0, 28.0]);
        let div = eval1(Op::Binary(BinaryOp::Div), &[&a, &t(&[], &[4.0])]);
        assert_eq!(div.as_f32().unwrap(), &[0.25, 0.5]);
        let mul = eval1(Op::Binary(BinaryOp::Mul), &[&a, &a]);
        assert_eq!(mul.as_f32().unwrap(), &[1.0, 4.0]);
        let pow = eval1(Op::Binary(BinaryOp::Pow), &[&a, &t(&[2, 1], &[3.0, 0.5])]);
        assert_eq!(pow.as_f32().unwrap(), &[1.0, 2f32.sqrt()]);
        let sq = eval1(
            Op::Binary(BinaryOp::Pow),
            &[&b, &Tensor::i64(vec![], vec![2])],
        );
        assert_eq!(sq.as_f32().unwrap(), &[100.0, 400.0, 900.0]);
    }

    #[test]
    fn integer_arithmetic() {
        let a = Tensor::i64(vec![3], vec![7, -7, 6]);
        let b = Tensor::i64(vec![], vec![2]);
        let div = eval1(Op::Binary(BinaryOp::Div), &[&a, &b]);
        assert_eq!(div.as_i64().unwrap(), &[3, -3, 3]);
        let zero = Tensor::i64(vec![], vec![0]);
        assert!(eval(&Op::Binary(BinaryOp::Div), &[&a, &zero]).is_err());
        let big = Tensor::i64(vec![], vec![i64::MAX]);
        assert!(eval(&Op::Binary(BinaryOp::Add), &[&a, &big]).is_err());
        let f = t(&[3], &[1.0; 3]);
        assert!(eval(&Op::Binary(BinaryOp::Add), &[&f, &a])
            .unwrap_err()
            .contains("f32 and an i64"));
    }

    #[test]
    fn relu_sign_clip() {
        let x = t(&[5], &[-2.0, -0.0, 0.0, 0.5, f32::NAN]);
        let relu = eval1(Op::Relu, &[&x]);
        assert_eq!(&relu.as_f32().unwrap()[..4], &[0.0, 0.0, 0.0, 0.5]);
        let sign = eval1(Op::Sign, &[&x]);
        assert_eq!(&sign.as_f32().unwrap()[..4], &[-1.0, 0.0, 0.0, 1.0]);
        assert!(sign.as_f32().unwrap()[4].is_nan());
        let clip = eval1(
            Op::Clip {
                min: -1.0,
                max: 0.25,
            },
            &[&x],
        );
        assert_eq!(&clip.as_f32().unwrap()[..4], &[-1.0, -0.0, 0.0, 0.25]);
        assert!(clip.as_f32().unwrap()[4].is_nan());
        // min > max: everything is max.
        let clip = eval1(Op::Clip { min: 2.0, max: 1.0 }, &[&x]);
        assert_eq!(&clip.as_f32().unwrap()[..4], &[1.0; 4]);
    }
}
