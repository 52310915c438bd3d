//! Strided views: walking a shape in row-major order while reading another layout, which is
//! what numpy broadcasting, transposition and padding all reduce to.

use std::borrow::Cow;

use crate::broadcast;

/// The offsets `sum(index[a] * strides[a])` of every index of `extents`, in row-major order.
pub(super) struct StridedIndices {
    extents: Vec<usize>,
    strides: Vec<usize>,
    counter: Vec<usize>,
    offset: usize,
    remaining: usize,
}

impl StridedIndices {
    /// Walks `extents` (starting at `base`) with one stride per axis.
    pub(super) fn new(extents: &[usize], strides: Vec<usize>, base: usize) -> Self {
        debug_assert_eq!(extents.len(), strides.len());
        StridedIndices {
            extents: extents.to_vec(),
            counter: vec![0; extents.len()],
            strides,
            offset: base,
            remaining: extents.iter().product(),
        }
    }
}

impl Iterator for StridedIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let current = self.offset;
        // Odometer: bump the last axis, carrying into earlier ones.
        for a in (0..self.extents.len()).rev() {
            self.counter[a] += 1;
            self.offset += self.strides[a];
            if self.counter[a] < self.extents[a] {
                break;
            }
            self.offset -= self.strides[a] * self.extents[a];
            self.counter[a] = 0;
        }
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Row-major strides of a dense tensor of `shape`.
pub(super) fn dense_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * shape[a + 1];
    }
    strides
}

/// For every element of `to` in row-major order, the index of the element of a tensor of shape
/// `from` that numpy broadcasting reads. Errs unless `from` broadcasts to exactly `to`.
pub(super) fn broadcast_indices(from: &[usize], to: &[usize]) -> Result<StridedIndices, String> {
    let strides = broadcast::strides(from, to).map_err(|e| e.to_string())?;
    Ok(StridedIndices::new(to, strides, 0))
}

/// An f32 operand broadcast to a result shape, read by result index.
pub(super) enum Expanded<'a> {
    /// One value for every index.
    One(f32),
    /// One value per result index.
    Each(Cow<'a, [f32]>),
}

impl Expanded<'_> {
    /// The operand's value at result index `i`.
    #[inline]
    pub(super) fn at(&self, i: usize) -> f32 {
        match self {
            Expanded::One(v) => *v,
            Expanded::Each(v) => v[i],
        }
    }
}

/// `data` (of shape `from`) broadcast to `to`.
pub(super) fn expand<'a>(
    data: &'a [f32],
    from: &[usize],
    to: &[usize],
) -> Result<Expanded<'a>, String> {
    let indices = broadcast_indices(from, to)?;
    Ok(match data {
        [v] => Expanded::One(*v),
        _ if from.iter().product::<usize>() == to.iter().product::<usize>() => {
            Expanded::Each(Cow::Borrowed(data))
        }
        _ => Expanded::Each(Cow::Owned(indices.map(|i| data[i]).collect())),
    })
}

/// `f` applied to `a` and `b` broadcast against each other to `to`.
pub(super) fn zip_broadcast<T: Copy, R>(
    (a, a_shape): (&[T], &[usize]),
    (b, b_shape): (&[T], &[usize]),
    to: &[usize],
    f: impl Fn(T, T) -> R,
) -> Result<Vec<R>, String> {
    let ia = broadcast_indices(a_shape, to)?;
    let ib = broadcast_indices(b_shape, to)?;
    if a_shape == to && b_shape == to {
        return Ok(a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect());
    }
    Ok(ia.zip(ib).map(|(i, j)| f(a[i], b[j])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_walk() {
        // A (2, 3) tensor read transposed from a (3, 2) layout.
        let idx: Vec<usize> = StridedIndices::new(&[2, 3], vec![1, 2], 0).collect();
        assert_eq!(idx, vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(StridedIndices::new(&[0, 3], vec![3, 1], 0).count(), 0);
        assert_eq!(
            StridedIndices::new(&[], vec![], 7).collect::<Vec<_>>(),
            vec![7]
        );
    }

    #[test]
    fn broadcasting() {
        let idx: Vec<usize> = broadcast_indices(&[3, 1], &[2, 3, 2]).unwrap().collect();
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert!(broadcast_indices(&[2], &[3]).is_err());
        assert!(broadcast_indices(&[1, 3], &[3]).is_err());
        let sum = zip_broadcast(
            (&[1.0f32, 2.0][..], &[2, 1]),
            (&[10.0, 20.0, 30.0][..], &[3]),
            &[2, 3],
            |x, y| x + y,
        );
        assert_eq!(sum.unwrap(), vec![11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
