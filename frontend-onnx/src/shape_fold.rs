//! Computation on constant tensors, for the shape and index arithmetic that exporters write as
//! ops (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape` and the like). The importer runs
//! these ops itself, so the graph sees only the constants they produce.
//!
//! Every function checks its operands (ranks, extents, index ranges) and the size of its result
//! against [`MAX_FOLDED_ELEMENTS`] before allocating; errors are reasons for the node's error.

use bnnc_ir::{broadcast, Shape, Tensor, TensorData};

/// The most elements a folded result may have. Shape arithmetic handles a handful of numbers;
/// the bound only keeps a hostile `ConstantOfShape` or `Expand` from exhausting memory.
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

/// Number of elements of `shape`, if it is at most [`MAX_FOLDED_ELEMENTS`].
pub fn folded_numel(shape: &[usize]) -> Result<usize, String> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_FOLDED_ELEMENTS)
        .ok_or_else(|| format!("folding would make a tensor of shape {shape:?}, more than {MAX_FOLDED_ELEMENTS} elements"))
}

/// The elements of an integer tensor: i64 data, or f32 data holding integers (int32 tensors
/// decode to f32).
pub fn int_values(t: &Tensor) -> Result<Vec<i64>, String> {
    match t.data() {
        TensorData::I64(v) => Ok(v.clone()),
        TensorData::F32(v) => v
            .iter()
            .map(|&x| {
                // Every integer in (-2^63, 2^63) is exactly representable here, so the cast is exact.
                if x.fract() == 0.0 && x.abs() < 9.2e18 {
                    Ok(x as i64)
                } else {
                    Err(format!("{x} is not an integer"))
                }
            })
            .collect(),
    }
}

/// The single element of a one-element tensor (shape `[]` or `[1]`), as f32.
pub fn single_f32(t: &Tensor) -> Result<f32, String> {
    match t.to_f32_vec().as_slice() {
        [x] => Ok(*x),
        _ => Err(format!("expected one element, found shape {:?}", t.shape())),
    }
}

/// The single element of a one-element integer tensor.
pub fn single_int(t: &Tensor) -> Result<i64, String> {
    match int_values(t)?.as_slice() {
        [x] => Ok(*x),
        _ => Err(format!("expected one element, found shape {:?}", t.shape())),
    }
}

/// A tensor of `shape` whose element `k` is element `sources[k]` of `t`. Callers compute
/// `sources` from `t`'s own shape, so every index is in range.
fn take(t: &Tensor, shape: Shape, sources: &[usize]) -> Result<Tensor, String> {
    let picked = match t.data() {
        TensorData::F32(v) => sources
            .iter()
            .map(|&i| v.get(i).copied())
            .collect::<Option<Vec<_>>>()
            .map(TensorData::F32),
        TensorData::I64(v) => sources
            .iter()
            .map(|&i| v.get(i).copied())
            .collect::<Option<Vec<_>>>()
            .map(TensorData::I64),
    };
    let tensor = match picked {
        Some(TensorData::F32(v)) => Tensor::try_f32(shape, v),
        Some(TensorData::I64(v)) => Tensor::try_i64(shape, v),
        None => None,
    };
    tensor.ok_or_else(|| "internal error: an index out of range while folding".to_string())
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Selects, on every axis, the listed indices (in order, repeats allowed): the result's shape
/// is the lengths of the lists. Gather and Slice are selections.
fn select(t: &Tensor, picks: &[Vec<usize>]) -> Result<Tensor, String> {
    let shape: Shape = picks.iter().map(Vec::len).collect();
    let numel = folded_numel(&shape)?;
    if picks.len() != t.shape().len()
        || picks
            .iter()
            .zip(t.shape())
            .any(|(p, &d)| p.iter().any(|&i| i >= d))
    {
        return Err("internal error: a selection outside the tensor".into());
    }
    let in_strides = strides(t.shape());
    let mut sources = Vec::with_capacity(numel);
    // An odometer over the result's multi-index.
    let mut index = vec![0usize; shape.len()];
    for _ in 0..numel {
        sources.push(
            index
                .iter()
                .zip(picks)
                .zip(&in_strides)
                .map(|((&i, p), &s)| p[i] * s)
                .sum(),
        );
        for axis in (0..shape.len()).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    take(t, shape, &sources)
}

/// The shape all of `tensors` broadcast to, as a reason for the node's error.
fn broadcast_shape(tensors: &[&Tensor]) -> Result<Shape, String> {
    let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
    broadcast::shape(&shapes).map_err(|e| e.to_string())
}

/// `t` broadcast to `shape` (which [`broadcast_shape`] gave).
fn broadcast_to(t: &Tensor, shape: &[usize]) -> Result<Tensor, String> {
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let strides = broadcast::strides(t.shape(), shape).map_err(|e| e.to_string())?;
    let sources: Vec<usize> = (0..folded_numel(shape)?)
        .map(|i| broadcast::source_index(i, shape, &strides))
        .collect();
    take(t, shape.to_vec(), &sources)
}

/// Integer arithmetic of shape computations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntArith {
    Add,
    Sub,
    Mul,
    /// Truncating division, as onnxruntime divides integers.
    Div,
}

/// `a op b` elementwise with broadcasting, on integer tensors; overflow and division by zero
/// are errors.
pub fn int_arith(op: IntArith, a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shape(&[a, b])?;
    folded_numel(&shape)?;
    let a = int_values(&broadcast_to(a, &shape)?)?;
    let b = int_values(&broadcast_to(b, &shape)?)?;
    let values = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| {
            let r = match op {
                IntArith::Add => x.checked_add(y),
                IntArith::Sub => x.checked_sub(y),
                IntArith::Mul => x.checked_mul(y),
                IntArith::Div => x.checked_div(y),
            };
            r.ok_or_else(|| format!("{x} {op:?} {y} overflows or divides by zero"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::try_i64(shape, values).ok_or_else(|| "internal error: broadcast size".into())
}

/// `a == b` elementwise with broadcasting, as f32 0/1 (ONNX bool).
pub fn equal(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shape(&[a, b])?;
    folded_numel(&shape)?;
    let a = broadcast_to(a, &shape)?.to_f64_vec();
    let b = broadcast_to(b, &shape)?.to_f64_vec();
    let values = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f32::from(u8::from(x == y)))
        .collect();
    Tensor::try_f32(shape, values).ok_or_else(|| "internal error: broadcast size".into())
}

/// `cond ? x : y` elementwise with broadcasting; `x` and `y` hold the same kind of data.
pub fn where_select(cond: &Tensor, x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    let shape = broadcast_shape(&[cond, x, y])?;
    folded_numel(&shape)?;
    let cond = broadcast_to(cond, &shape)?.to_f64_vec();
    let (x, y) = (broadcast_to(x, &shape)?, broadcast_to(y, &shape)?);
    let chosen = match (x.data(), y.data()) {
        (TensorData::F32(x), TensorData::F32(y)) => Tensor::try_f32(
            shape,
            cond.iter()
                .zip(x.iter().zip(y))
                .map(|(&c, (&a, &b))| if c != 0.0 { a } else { b })
                .collect(),
        ),
        (TensorData::I64(x), TensorData::I64(y)) => Tensor::try_i64(
            shape,
            cond.iter()
                .zip(x.iter().zip(y))
                .map(|(&c, (&a, &b))| if c != 0.0 { a } else { b })
                .collect(),
        ),
        _ => return Err("the two branches hold different data types".into()),
    };
    chosen.ok_or_else(|| "internal error: broadcast size".into())
}

/// ONNX Gather: picks `indices` (negative counts from the end) along `axis`; the result's
/// shape is `data[..axis] ++ indices ++ data[axis + 1..]`.
pub fn gather(data: &Tensor, indices: &Tensor, axis: usize) -> Result<Tensor, String> {
    let extent = *data
        .shape()
        .get(axis)
        .ok_or_else(|| format!("axis {axis} of a rank-{} tensor", data.shape().len()))?;
    let picked = int_values(indices)?
        .into_iter()
        .map(|i| {
            let j = if i < 0 {
                i.checked_add(extent as i64)
            } else {
                Some(i)
            };
            j.and_then(|j| usize::try_from(j).ok())
                .filter(|&j| j < extent)
                .ok_or_else(|| format!("index {i} is out of range for extent {extent}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut picks: Vec<Vec<usize>> = data.shape().iter().map(|&d| (0..d).collect()).collect();
    picks[axis] = picked;
    let mut shape = data.shape()[..axis].to_vec();
    shape.extend_from_slice(indices.shape());
    shape.extend_from_slice(&data.shape()[axis + 1..]);
    select(data, &picks)?
        .reshaped(shape)
        .ok_or_else(|| "internal error: gather size".into())
}

/// ONNX Slice of one axis: the indices `start, start + step, ...` before `end`, after
/// ONNX's clamping (negative bounds count from the end; bounds beyond the extent are clamped).
pub fn slice_indices(extent: usize, start: i64, end: i64, step: i64) -> Result<Vec<usize>, String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    if extent == 0 {
        return Ok(Vec::new());
    }
    let (extent_i, start, end, step) = (
        extent as i128,
        i128::from(start),
        i128::from(end),
        i128::from(step),
    );
    let from_end = |x: i128| if x < 0 { x + extent_i } else { x };
    let (start, end) = if step > 0 {
        (
            from_end(start).clamp(0, extent_i),
            from_end(end).clamp(0, extent_i),
        )
    } else {
        (
            from_end(start).clamp(0, extent_i - 1),
            from_end(end).clamp(-1, extent_i - 1),
        )
    };
    let mut picked = Vec::new();
    let mut i = start;
    while (step > 0 && i < end) || (step < 0 && i > end) {
        // 0 <= i < extent here, so the conversion is exact.
        picked.push(i as usize);
        i += step;
    }
    Ok(picked)
}

/// ONNX Slice: `ranges` gives, for some axes, the indices to keep (from [`slice_indices`]).
pub fn slice(data: &Tensor, ranges: &[(usize, Vec<usize>)]) -> Result<Tensor, String> {
    let mut picks: Vec<Vec<usize>> = data.shape().iter().map(|&d| (0..d).collect()).collect();
    for (axis, picked) in ranges {
        *picks
            .get_mut(*axis)
            .ok_or_else(|| format!("axis {axis} of a rank-{} tensor", data.shape().len()))? =
            picked.clone();
    }
    select(data, &picks)
}

/// Joins tensors of one data kind along `axis`; their other extents must agree.
pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor, String> {
    let first = parts.first().ok_or("nothing to concatenate")?;
    let rank = first.shape().len();
    if axis >= rank {
        return Err(format!("axis {axis} of rank-{rank} tensors"));
    }
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for p in parts {
        let same_elsewhere = p.shape().len() == rank
            && (0..rank).all(|i| i == axis || p.shape()[i] == first.shape()[i]);
        if !same_elsewhere {
            return Err(format!(
                "cannot concatenate shapes {:?} and {:?} on axis {axis}",
                first.shape(),
                p.shape()
            ));
        }
        shape[axis] += p.shape()[axis];
    }
    folded_numel(&shape)?;
    let outer: usize = first.shape()[..axis].iter().product();
    let inner: usize = first.shape()[axis + 1..].iter().product();
    fn join<T: Copy>(chunks: &[(&[T], usize)], outer: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(chunks.iter().map(|(d, _)| d.len()).sum());
        for o in 0..outer {
            for (data, chunk) in chunks {
                out.extend_from_slice(&data[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let chunk = |p: &Tensor| p.shape()[axis] * inner;
    if let Some(f) = parts
        .iter()
        .map(|p| p.as_f32().map(|d| (d, chunk(p))))
        .collect::<Option<Vec<_>>>()
    {
        return Tensor::try_f32(shape, join(&f, outer))
            .ok_or_else(|| "internal error: concat size".into());
    }
    if let Some(i) = parts
        .iter()
        .map(|p| p.as_i64().map(|d| (d, chunk(p))))
        .collect::<Option<Vec<_>>>()
    {
        return Tensor::try_i64(shape, join(&i, outer))
            .ok_or_else(|| "internal error: concat size".into());
    }
    Err("the parts hold different data types".into())
}

/// A tensor of `shape` filled with the single element of `value`.
pub fn constant_of_shape(shape: Shape, value: &Tensor) -> Result<Tensor, String> {
    let numel = folded_numel(&shape)?;
    let filled = match value.data() {
        TensorData::F32(v) if v.len() == 1 => Tensor::try_f32(shape, vec![v[0]; numel]),
        TensorData::I64(v) if v.len() == 1 => Tensor::try_i64(shape, vec![v[0]; numel]),
        _ => {
            return Err(format!(
                "the fill value must have one element, found shape {:?}",
                value.shape()
            ))
        }
    };
    filled.ok_or_else(|| "internal error: fill size".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_scalar_and_vector_indices() {
        let shape = Tensor::i64(vec![4], vec![1, 1, 28, 28]);
        assert_eq!(
            gather(&shape, &Tensor::i64(vec![], vec![0]), 0).unwrap(),
            Tensor::i64(vec![], vec![1])
        );
        assert_eq!(
            gather(&shape, &Tensor::i64(vec![2], vec![-1, 2]), 0).unwrap(),
            Tensor::i64(vec![2], vec![28, 28])
        );
        assert!(gather(&shape, &Tensor::i64(vec![], vec![4]), 0).is_err());
        let m = Tensor::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(
            gather(&m, &Tensor::i64(vec![1], vec![2]), 1).unwrap(),
            Tensor::f32(vec![2, 1], vec![2., 5.])
        );
    }

    #[test]
    fn slices_follow_onnx_clamping() {
        assert_eq!(slice_indices(5, 1, i64::MAX, 1).unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(
            slice_indices(5, -1, i64::MIN, -1).unwrap(),
            vec![4, 3, 2, 1, 0]
        );
        assert_eq!(slice_indices(5, 0, -2, 2).unwrap(), vec![0, 2]);
        assert!(slice_indices(5, 0, 1, 0).is_err());
        // A zero-extent axis has nothing to slice, in either direction (this used to panic
        // on a negative step: clamping to 0..=-1).
        assert_eq!(
            slice_indices(0, -1, i64::MIN, -1).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(slice_indices(0, 0, 5, 1).unwrap(), Vec::<usize>::new());
        let t = Tensor::i64(vec![2, 3], vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(
            slice(&t, &[(1, vec![2, 0])]).unwrap(),
            Tensor::i64(vec![2, 2], vec![2, 0, 5, 3])
        );
    }

    #[test]
    fn arithmetic_broadcasts() {
        let a = Tensor::i64(vec![2], vec![3, -7]);
        let two = Tensor::i64(vec![], vec![2]);
        assert_eq!(
            int_arith(IntArith::Div, &a, &two).unwrap(),
            Tensor::i64(vec![2], vec![1, -3])
        );
        assert_eq!(
            int_arith(IntArith::Mul, &two, &a).unwrap(),
            Tensor::i64(vec![2], vec![6, -14])
        );
        assert!(int_arith(IntArith::Div, &a, &Tensor::i64(vec![], vec![0])).is_err());
        assert!(int_arith(IntArith::Add, &Tensor::i64(vec![], vec![i64::MAX]), &two).is_err());
        let eq = equal(&a, &Tensor::i64(vec![], vec![-7])).unwrap();
        assert_eq!(eq, Tensor::f32(vec![2], vec![0.0, 1.0]));
        let w = where_select(&eq, &Tensor::i64(vec![], vec![1]), &a).unwrap();
        assert_eq!(w, Tensor::i64(vec![2], vec![3, 1]));
    }

    #[test]
    fn concat_and_fill() {
        let a = Tensor::i64(vec![1], vec![1]);
        let b = Tensor::i64(vec![1], vec![-1]);
        assert_eq!(
            concat(&[&a, &b], 0).unwrap(),
            Tensor::i64(vec![2], vec![1, -1])
        );
        assert!(concat(&[&a, &Tensor::f32(vec![1], vec![1.0])], 0).is_err());
        let m = Tensor::f32(vec![2, 1], vec![1., 2.]);
        assert_eq!(
            concat(&[&m, &m], 1).unwrap(),
            Tensor::f32(vec![2, 2], vec![1., 1., 2., 2.])
        );
        assert_eq!(
            constant_of_shape(vec![2], &Tensor::i64(vec![1], vec![7])).unwrap(),
            Tensor::i64(vec![2], vec![7, 7])
        );
        assert!(constant_of_shape(vec![1 << 20, 1 << 20], &Tensor::scalar(0.0)).is_err());
    }
}
