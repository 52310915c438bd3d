//! Pooling and reductions: MaxPool, AveragePool, GlobalAveragePool, ReduceMean.
//!
//! Windows are boxes, so each spatial axis is resolved on its own: for every output index, the
//! input coordinates its window covers and how many of its taps lie in the padded extent.

use super::strided::{broadcast_indices, dense_strides};
use super::{f32_result, floats, numel};
use crate::op::PoolAttrs;
use crate::summation_order::{average_pool_route, axis_windows, AveragePoolRoute, AxisWindow};
use crate::tensor::Tensor;

/// Calls `f(plane_offset, windows)` for every output position of one plane, in row-major
/// order, where the windows are the per-axis windows of that position.
fn for_each_window(
    attrs: &PoolAttrs,
    in_spatial: &[usize],
    out_spatial: &[usize],
    mut f: impl FnMut(&[&AxisWindow]),
) {
    let per_axis: Vec<Vec<AxisWindow>> = (0..in_spatial.len())
        .map(|d| axis_windows(attrs, d, in_spatial[d], out_spatial[d]))
        .collect();
    let mut pos = vec![0usize; out_spatial.len()];
    let mut windows: Vec<&AxisWindow> = Vec::with_capacity(pos.len());
    for _ in 0..numel(out_spatial) {
        windows.clear();
        windows.extend(pos.iter().enumerate().map(|(d, &o)| &per_axis[d][o]));
        f(&windows);
        for a in (0..pos.len()).rev() {
            pos[a] += 1;
            if pos[a] < out_spatial[a] {
                break;
            }
            pos[a] = 0;
        }
    }
}

/// Calls `f(offset)` for the input offset of every tap of a box window, row-major (so sums run
/// in onnxruntime's loop order).
fn for_each_tap(windows: &[&AxisWindow], strides: &[usize], mut f: impl FnMut(usize)) {
    fn walk(windows: &[&AxisWindow], strides: &[usize], base: usize, f: &mut impl FnMut(usize)) {
        match windows.split_first() {
            None => f(base),
            Some((w, rest)) => {
                for c in w.inputs() {
                    walk(rest, &strides[1..], base + c * strides[0], f);
                }
            }
        }
    }
    walk(windows, strides, 0, &mut f);
}

/// Runs `reduce(plane, windows)` for every plane (batch x channel) and output position.
fn pool(
    attrs: &PoolAttrs,
    x: &Tensor,
    out: &[usize],
    reduce: impl Fn(&[f32], &[&AxisWindow]) -> f32,
) -> Result<Tensor, String> {
    let data = floats(x);
    let shape = x.shape();
    check_windows(attrs, shape, out)?;
    let in_plane = numel(&shape[2..]);
    let mut y = Vec::with_capacity(numel(out));
    for plane in data.chunks_exact(in_plane.max(1)).take(shape[0] * shape[1]) {
        for_each_window(attrs, &shape[2..], &out[2..], |windows| {
            y.push(reduce(plane, windows))
        });
    }
    f32_result(out, y)
}

/// Re-derives the output extents (inference already did): the kernels index with them.
fn check_windows(attrs: &PoolAttrs, shape: &[usize], out: &[usize]) -> Result<(), String> {
    let extents = attrs.window().output_extents(shape)?;
    if out.len() != shape.len() {
        return Err(format!("pooling attributes do not fit input {shape:?}"));
    }
    for (d, (&count, &extent)) in extents.iter().zip(&out[2..]).enumerate() {
        if count != extent {
            return Err(format!("axis {d}: {count} windows, result extent {extent}"));
        }
    }
    Ok(())
}

/// ONNX MaxPool: padding never wins (it behaves as -inf); NaN never replaces a maximum.
pub(super) fn max_pool(attrs: &PoolAttrs, x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let strides = dense_strides(&x.shape()[2..]);
    pool(attrs, x, out, |plane, windows| {
        let mut max = f32::NEG_INFINITY;
        for_each_tap(windows, &strides, |o| {
            if plane[o] > max {
                max = plane[o];
            }
        });
        max
    })
}

/// [`max_pool`] on the channels whose `min` is false, the minimum on the others; padded
/// taps never count on either.
pub(super) fn min_max_pool(
    attrs: &PoolAttrs,
    min: &[bool],
    x: &Tensor,
    out: &[usize],
) -> Result<Tensor, String> {
    let channels = x.shape().get(1).copied().unwrap_or(1).max(1);
    let flipped = |t: &Tensor| -> Result<Tensor, String> {
        let plane = numel(&t.shape()[2.min(t.shape().len())..]).max(1);
        let v = floats(t)
            .iter()
            .enumerate()
            .map(|(i, &v)| if min[(i / plane) % channels] { -v } else { v })
            .collect();
        f32_result(t.shape(), v)
    };
    // min(x) = -max(-x): negation is exact, and padding never counts either way.
    flipped(&max_pool(attrs, &flipped(x)?, out)?)
}

/// ONNX AveragePool as onnxruntime computes it. Without dilations, and unless ceil_mode and
/// count_include_pad meet (where MLAS would divide partial windows by the full kernel size),
/// onnxruntime runs MLAS's pooling: the global kernel when the window is the whole plane
/// ([`mlas_global_mean`]), the vectorized kernel for 2-D and 3-D windows of at most 32 with a
/// last stride of 1 or 2 ([`mlas_vector_average`]), else the generic one. The generic order,
/// also onnxruntime's own for the other cases, is the f32 sum from 0 of the taps inside the
/// input, row-major, divided by their number, or with `count_include_pad` by the number of
/// taps inside the padded extent.
pub(super) fn average_pool(attrs: &PoolAttrs, x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let spatial = &x.shape()[2.min(x.shape().len())..];
    let route = average_pool_route(attrs, spatial);
    if route == AveragePoolRoute::Global {
        return global_average_pool(x, out);
    }
    if route == AveragePoolRoute::Vector {
        check_windows(attrs, x.shape(), out)?;
        let data = floats(x);
        let in_plane = numel(spatial);
        let mut y = Vec::with_capacity(numel(out));
        for plane in data
            .chunks_exact(in_plane.max(1))
            .take(x.shape()[0] * x.shape()[1])
        {
            mlas_vector_average(attrs, plane, spatial, &out[2..], &mut y);
        }
        return f32_result(out, y);
    }
    let strides = dense_strides(spatial);
    pool(attrs, x, out, |plane, windows| {
        let mut sum = 0f32;
        for_each_tap(windows, &strides, |o| sum += plane[o]);
        let count: usize = if attrs.count_include_pad {
            windows.iter().map(|w| w.padded).product()
        } else {
            windows.iter().map(|w| w.inputs().count()).product()
        };
        sum / count as f32
    })
}

/// MLAS's vectorized 2-D / 3-D average pooling of one plane (`MlasPool2DVectorKernel`,
/// `MlasPool3DVectorKernel`), appending the outputs to `y`. For each output row it first sums
/// every input column over the window's leading axes (in 2-D from the first row, in 3-D from
/// 0) into a buffer with zeros for the left and right padding; each output then sums its
/// window of that buffer from the first element, and divides by the kernel size (with
/// count_include_pad) or by the number of input elements in the window.
fn mlas_vector_average(
    attrs: &PoolAttrs,
    plane: &[f32],
    spatial: &[usize],
    out: &[usize],
    y: &mut Vec<f32>,
) {
    let last = spatial.len() - 1;
    let width = spatial[last];
    let (kw, sw, pad_left) = (attrs.kernel[last], attrs.strides[last], attrs.pads[last]);
    let kernel_size: usize = attrs.kernel.iter().product();
    let strides = dense_strides(spatial);
    let mut columns = vec![0f32; pad_left + width];
    let mut lead = vec![0usize; last];
    let mut offsets = Vec::new();
    for _ in 0..numel(&out[..last]) {
        // The window's extent along each leading axis, clamped to the input.
        let ranges: Vec<(usize, usize)> = (0..last)
            .map(|d| {
                let start = lead[d] * attrs.strides[d];
                let lo = start.saturating_sub(attrs.pads[d]).min(spatial[d]);
                let hi = (start + attrs.kernel[d])
                    .saturating_sub(attrs.pads[d])
                    .min(spatial[d]);
                (lo, hi.max(lo))
            })
            .collect();
        let rows: usize = ranges.iter().map(|(lo, hi)| hi - lo).product();
        // Offsets of the window's rows (leading axes row-major) within the plane.
        offsets.clear();
        offsets.push(0usize);
        for (d, &(lo, hi)) in ranges.iter().enumerate() {
            let stride = strides[d];
            offsets = offsets
                .iter()
                .flat_map(|&o| (lo..hi).map(move |i| o + i * stride))
                .collect();
        }
        for (w, column) in columns[pad_left..].iter_mut().enumerate() {
            let mut values = offsets.iter().map(|&o| plane[o + w]);
            // The 2-D kernel starts from the first row, the 3-D one from 0.
            let first = if last == 1 {
                values.next().unwrap_or(0.0)
            } else {
                0.0
            };
            *column = values.fold(first, |s, v| s + v);
        }
        for pw in 0..out[last] {
            let s = pw * sw;
            let at = |i: usize| columns.get(i).copied().unwrap_or(0.0);
            let sum = (s + 1..s + kw).fold(at(s), |acc, i| acc + at(i));
            let divisor = if attrs.count_include_pad {
                kernel_size as f32
            } else {
                let covered = (s + kw)
                    .min(pad_left + width)
                    .saturating_sub(s.max(pad_left));
                ((covered * rows) as f32).max(1.0)
            };
            y.push(sum / divisor);
        }
        for a in (0..last).rev() {
            lead[a] += 1;
            if lead[a] < out[a] {
                break;
            }
            lead[a] = 0;
        }
    }
}

/// ONNX GlobalAveragePool through MLAS's global kernel, per (batch, channel) plane: see
/// [`mlas_global_mean`].
pub(super) fn global_average_pool(x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let data = floats(x);
    let plane = numel(x.shape().get(2..).unwrap_or(&[]));
    let planes = numel(&x.shape()[..2.min(x.shape().len())]);
    let y = (0..planes)
        .map(|p| mlas_global_mean(&data[p * plane..(p + 1) * plane]))
        .collect();
    f32_result(out, y)
}

/// `MlasPoolGlobalKernel`: four lane sums from 0 over whole vectors, reduced as
/// `(l0 + l2) + (l1 + l3)`, then the tail in order, divided by the count.
fn mlas_global_mean(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 4];
    let mut chunks = v.chunks_exact(4);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let head = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    chunks.remainder().iter().fold(head, |s, &x| s + x) / v.len() as f32
}

/// ONNX ReduceMean as onnxruntime computes it: when the reduced axes are the trailing ones
/// (a global pool written as ReduceMean, or a full reduction), each output is Eigen's
/// vectorized sum of its contiguous run ([`eigen_sum`]); otherwise the sums run in row-major
/// order of the input. Each sum is then divided by the number of reduced elements.
pub(super) fn reduce_mean(axes: &[usize], x: &Tensor, out: &[usize]) -> Result<Tensor, String> {
    let data = floats(x);
    let shape = x.shape();
    let reduced = |a: usize| axes.is_empty() || axes.contains(&a);
    let count: usize = shape
        .iter()
        .enumerate()
        .filter(|&(a, _)| reduced(a))
        .map(|(_, &d)| d)
        .product();
    let first_reduced = (0..shape.len())
        .find(|&a| reduced(a))
        .unwrap_or(shape.len());
    let trailing = (first_reduced..shape.len()).all(reduced);
    let sums: Vec<f32> = if trailing && count > 0 {
        data.chunks_exact(count)
            .enumerate()
            .map(|(i, run)| eigen_sum(run, i * count))
            .collect()
    } else {
        // The result with reduced axes kept as 1 broadcasts back over the input: that
        // broadcast maps every input element to its sum.
        let kept: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(a, &d)| if reduced(a) { 1 } else { d })
            .collect();
        let mut sums = vec![0f32; numel(&kept)];
        for (&v, o) in data.iter().zip(broadcast_indices(&kept, shape)?) {
            sums[o] += v;
        }
        sums
    };
    let y = sums.into_iter().map(|s| s / count as f32).collect();
    f32_result(out, y)
}

/// Eigen's `sum()` of a contiguous run as compiled into onnxruntime (SSE, 4-lane packets),
/// for a run starting `offset` elements into a 16-byte aligned buffer: the elements before
/// the first aligned one wait until the end; aligned packets go alternately into two
/// accumulators, which are added, then one more packet if there is an odd one; the lanes
/// reduce as `(l0 + l2) + (l1 + l3)`; then come the skipped head and the tail, in order.
/// Runs too short for a packet are summed in order.
fn eigen_sum(x: &[f32], offset: usize) -> f32 {
    const P: usize = 4;
    let start = ((P - offset % P) % P).min(x.len());
    let body = x.len() - start;
    let (aligned, aligned2) = (body / P * P, body / (2 * P) * (2 * P));
    if aligned == 0 {
        return x
            .iter()
            .skip(1)
            .fold(x.first().copied().unwrap_or(0.0), |s, &v| s + v);
    }
    let packet = |i: usize| -> [f32; P] { [x[i], x[i + 1], x[i + 2], x[i + 3]] };
    let add = |a: [f32; P], b: [f32; P]| -> [f32; P] {
        [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
    };
    let mut p0 = packet(start);
    if aligned > P {
        let mut p1 = packet(start + P);
        for i in (start + 2 * P..start + aligned2).step_by(2 * P) {
            p0 = add(p0, packet(i));
            p1 = add(p1, packet(i + P));
        }
        p0 = add(p0, p1);
        if aligned > aligned2 {
            p0 = add(p0, packet(start + aligned2));
        }
    }
    let mut sum = (p0[0] + p0[2]) + (p0[1] + p0[3]);
    for &v in x[..start].iter().chain(&x[start + aligned..]) {
        sum += v;
    }
    sum
}

#[cfg(test)]
mod tests {
    use crate::interp::eval;
    use crate::op::{Op, PoolAttrs};
    use crate::tensor::Tensor;

    fn attrs(
        kernel: usize,
        stride: usize,
        pads: [usize; 4],
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![kernel; 2],
            strides: vec![stride; 2],
            dilations: vec![1; 2],
            pads: pads.to_vec(),
            ceil_mode,
            count_include_pad,
        }
    }

    fn grid(h: usize, w: usize) -> Tensor {
        Tensor::f32(vec![1, 1, h, w], (1..=h * w).map(|v| v as f32).collect())
    }

    fn run(op: Op, x: &Tensor) -> Tensor {
        eval(&op, &[x]).unwrap().remove(0)
    }

    #[test]
    fn min_max_pool_takes_the_minimum_on_marked_channels() {
        // Two channels of 1..=4 (2x2), one window each, padded by 1 (kernel 3, stride 2):
        // channel 0 its maximum, channel 1 its minimum; padding counts for neither.
        let x = Tensor::f32(
            vec![1, 2, 2, 2],
            vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0],
        );
        let op = Op::MinMaxPool {
            attrs: attrs(3, 2, [1, 1, 1, 1], false, false),
            min: vec![false, true],
        };
        let y = run(op, &x);
        assert_eq!(y.shape(), &[1, 2, 1, 1]);
        assert_eq!(y.as_f32().unwrap(), &[4.0, 1.0]);
        // The flags must match the channels.
        let wrong = Op::MinMaxPool {
            attrs: attrs(2, 2, [0; 4], false, false),
            min: vec![true],
        };
        assert!(eval(&wrong, &[&x]).is_err());
    }

    #[test]
    fn max_pool_padding_never_wins() {
        // All-negative input padded by 1: the padding (-inf) is never the maximum.
        let x = Tensor::f32(vec![1, 1, 2, 2], vec![-4.0, -3.0, -2.0, -1.0]);
        let y = run(Op::MaxPool(attrs(2, 1, [1, 1, 1, 1], false, false)), &x);
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(
            y.as_f32().unwrap(),
            &[-4.0, -3.0, -3.0, -2.0, -1.0, -1.0, -2.0, -1.0, -1.0]
        );
    }

    #[test]
    fn max_pool_ceil_mode_and_dilation() {
        // 5x5, kernel 2, stride 2, ceil: 3x3 windows, the last ones partial.
        let y = run(Op::MaxPool(attrs(2, 2, [0; 4], true, false)), &grid(5, 5));
        assert_eq!(
            y.as_f32().unwrap(),
            &[7.0, 9.0, 10.0, 17.0, 19.0, 20.0, 22.0, 24.0, 25.0]
        );
        // Dilation 2 on 4x4 with kernel 2: taps (i, i + 2).
        let dilated = PoolAttrs {
            dilations: vec![2, 2],
            ..attrs(2, 1, [0; 4], false, false)
        };
        let y = run(Op::MaxPool(dilated), &grid(4, 4));
        assert_eq!(y.as_f32().unwrap(), &[11.0, 12.0, 15.0, 16.0]);
    }

    #[test]
    fn average_pool_count_include_pad_both_ways() {
        // 2x2 input 1..4, kernel 2, stride 1, pad 1 all around: 3x3 windows.
        let x = grid(2, 2);
        let excl = run(Op::AveragePool(attrs(2, 1, [1, 1, 1, 1], false, false)), &x);
        assert_eq!(
            excl.as_f32().unwrap(),
            &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0]
        );
        let incl = run(Op::AveragePool(attrs(2, 1, [1, 1, 1, 1], false, true)), &x);
        assert_eq!(
            incl.as_f32().unwrap(),
            &[0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0]
        );
    }

    #[test]
    fn average_pool_ceil_mode() {
        // ONNX test_averagepool_2d_ceil: 4x4 1..16, kernel 3, stride 2, ceil.
        let y = run(
            Op::AveragePool(attrs(3, 2, [0; 4], true, false)),
            &grid(4, 4),
        );
        assert_eq!(y.as_f32().unwrap(), &[6.0, 7.5, 12.0, 13.5]);
        // A ceil window past the padded extent divides by its taps inside it only:
        // 3x3 input, kernel 2, stride 2, pad_end 0, ceil -> windows [0,1] and [2,3): the second
        // has one tap inside (the input edge), with count_include_pad as without.
        let y = run(
            Op::AveragePool(attrs(2, 2, [0; 4], true, true)),
            &grid(3, 3),
        );
        assert_eq!(y.as_f32().unwrap(), &[3.0, 4.5, 7.5, 9.0]);
    }

    #[test]
    fn eigen_sum_order() {
        // 1e8 swallows 1 unless the ones meet first: lanes (l0 + l2) + (l1 + l3) with
        // x = [1e8, 1, -1e8, 1] gives (1e8 - 1e8) + (1 + 1) = 2, in order it would be 1; too
        // short for a packet, [1e8, 1, -1e8] sums in order to 0.
        assert_eq!(super::eigen_sum(&[1e8, 1.0, -1e8, 1.0], 0), 2.0);
        assert_eq!(super::eigen_sum(&[1e8, 1.0, -1e8], 0), 0.0);
        // Misaligned by one: x[0] waits until after the packet.
        assert_eq!(super::eigen_sum(&[1.0, 1e8, 1.0, -1e8, 1.0], 3), 3.0);
        assert_eq!(super::eigen_sum(&[], 0), 0.0);
    }

    #[test]
    fn global_average_and_reduce_mean() {
        let x = Tensor::f32(vec![1, 2, 1, 2], vec![1.0, 2.0, 3.0, 5.0]);
        let y = run(Op::GlobalAveragePool, &x);
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[1, 2, 1, 1][..], &[1.5, 4.0][..])
        );
        let y = run(
            Op::ReduceMean {
                axes: vec![1],
                keep_dims: false,
            },
            &x,
        );
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[1, 1, 2][..], &[2.0, 3.5][..])
        );
        let y = run(
            Op::ReduceMean {
                axes: vec![],
                keep_dims: true,
            },
            &x,
        );
        assert_eq!(
            (y.shape(), y.as_f32().unwrap()),
            (&[1, 1, 1, 1][..], &[2.75][..])
        );
    }
}
