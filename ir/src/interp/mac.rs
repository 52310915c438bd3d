//! Multiply-accumulate kernels that round as onnxruntime's MLAS does.
//!
//! The reference executor runs Conv, Gemm and MatMul through MLAS, whose kernels fix the order
//! of every sum. Products of ±1 and of 8-bit fixed-point values are exact and their sums too,
//! so for quantized layers any order agrees; for float layers (first and last layers, residual
//! paths) the order decides the last bit, and a binarization after it can flip. So:
//!
//! - The general kernel (x86-64 with FMA, as on the reference machine) computes each output as
//!   a chain of fused multiply-adds from 0 in order of the reduction index,
//!   `acc = fma(a_k, b_k, acc)`, over slices of K ([`k_stride`](crate::summation_order::k_stride)); each slice's sum is added to
//!   the output so far.
//! - A single row (M = 1), or a single column with the operands swapped, goes through MLAS's
//!   AVX kernels for that case ([`m1_rows`], [`m1_transposed`]), with plain products and sums in
//!   their own orders.
//!
//! All of this was measured against onnxruntime 1.32 and the reference outputs bit for bit.
//! `f32::mul_add` is exactly the fused step; on x86-64 the hot loops are compiled a second
//! time with the FMA instructions enabled and chosen at run time, elsewhere `mul_add` is still
//! a correctly rounded fused multiply-add (in software: slower, same results).

use std::ops::Range;

use crate::summation_order::Segment;

/// Output rows computed together: independent chains that share each load of the other operand.
pub const BLOCK: usize = 8;

/// Rows of `w` (`rows x k`, row-major) packed as blocks of [`BLOCK`] rows, each stored
/// column-major (`k x BLOCK`); the missing rows of the last block are zeros.
pub(super) fn pack_blocks(w: &[f32], rows: usize, k: usize) -> Vec<f32> {
    let blocks = rows.div_ceil(BLOCK);
    let mut packed = vec![0f32; blocks * k * BLOCK];
    for r in 0..rows {
        let (b, j) = (r / BLOCK, r % BLOCK);
        for (kk, &v) in w[r * k..(r + 1) * k].iter().enumerate() {
            packed[(b * k + kk) * BLOCK + j] = v;
        }
    }
    packed
}

/// For the `sums.len()` rows packed by [`pack_blocks`] with `k = x.len()`: each row's dot
/// product with `x`, one fma chain per slice of `stride` indices, the slices' sums added in
/// order.
pub(super) fn dot_blocks(packed: &[f32], x: &[f32], stride: usize, sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `dot_blocks_fma` only requires the FMA extension, detected just above.
        return unsafe { dot_blocks_fma(packed, x, stride, sums) };
    }
    dot_blocks_body(packed, x, stride, sums);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dot_blocks_fma(packed: &[f32], x: &[f32], stride: usize, sums: &mut [f32]) {
    dot_blocks_body(packed, x, stride, sums);
}

#[inline(always)]
fn dot_blocks_body(packed: &[f32], x: &[f32], stride: usize, sums: &mut [f32]) {
    let k = x.len();
    if k == 0 {
        sums.fill(0.0);
        return;
    }
    let stride = stride.max(1);
    for (block, out) in packed.chunks_exact(k * BLOCK).zip(sums.chunks_mut(BLOCK)) {
        let mut total = [0f32; BLOCK];
        for (slice, (w_slice, x_slice)) in block
            .chunks(stride.saturating_mul(BLOCK))
            .zip(x.chunks(stride))
            .enumerate()
        {
            let mut acc = [0f32; BLOCK];
            for (w, &v) in w_slice.chunks_exact(BLOCK).zip(x_slice) {
                for j in 0..BLOCK {
                    acc[j] = w[j].mul_add(v, acc[j]);
                }
            }
            for j in 0..BLOCK {
                total[j] = if slice == 0 {
                    acc[j]
                } else {
                    total[j] + acc[j]
                };
            }
        }
        out.copy_from_slice(&total[..out.len()]);
    }
}

/// MLAS's general product `y = alpha * a (m x k) @ b (k x n) + y`, row-major, by column
/// segments: per slice of the segment's K stride an fma chain from 0, joined to the output as
/// `fma(acc, alpha, y)`; without `start` (beta 0) the first slice is stored as `alpha * acc`.
pub(super) fn matmul_2d(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    segments: &[Segment],
    alpha: f32,
    start: Option<Vec<f32>>,
) -> Vec<f32> {
    let zero_mode = start.is_none();
    let mut y = start.unwrap_or_else(|| vec![0f32; m * n]);
    let mut acc = vec![0f32; m * n];
    for seg in segments {
        let columns = seg.start..seg.end;
        let stride = seg.stride_k.max(1);
        let mut k0 = 0;
        let mut first = zero_mode;
        while k0 < k || first {
            let k1 = k.min(k0.saturating_add(stride));
            fma_rows(a, b, (k, n), (k0..k1, columns.clone()), &mut acc);
            for i in 0..m {
                for j in columns.clone() {
                    let (yv, av) = (&mut y[i * n + j], acc[i * n + j]);
                    *yv = match (first, alpha == 1.0) {
                        (true, true) => av,
                        (true, false) => av * alpha,
                        (false, _) => av.mul_add(alpha, *yv),
                    };
                }
            }
            first = false;
            k0 = k1.max(k0 + 1);
        }
    }
    y
}

/// `acc_row[cols] = sum over kk in range of a[i, kk] * b_row_kk[cols]`, an fma chain from 0
/// per output in order of k, the inner loop streaming contiguous rows.
fn fma_rows(
    a: &[f32],
    b: &[f32],
    (k, n): (usize, usize),
    ranges: (Range<usize>, Range<usize>),
    acc: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `fma_rows_fma` only requires the FMA extension, detected just above.
        return unsafe { fma_rows_fma(a, b, (k, n), ranges, acc) };
    }
    fma_rows_body(a, b, (k, n), ranges, acc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn fma_rows_fma(
    a: &[f32],
    b: &[f32],
    (k, n): (usize, usize),
    ranges: (Range<usize>, Range<usize>),
    acc: &mut [f32],
) {
    fma_rows_body(a, b, (k, n), ranges, acc);
}

#[inline(always)]
fn fma_rows_body(
    a: &[f32],
    b: &[f32],
    (k, n): (usize, usize),
    (ks, cols): (Range<usize>, Range<usize>),
    acc: &mut [f32],
) {
    if n == 0 || k == 0 {
        return;
    }
    for (row, a_row) in acc.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        let row = &mut row[cols.clone()];
        row.fill(0.0);
        for kk in ks.clone() {
            let av = a_row[kk];
            for (yv, &bv) in row
                .iter_mut()
                .zip(&b[kk * n + cols.start..kk * n + cols.end])
            {
                *yv = av.mul_add(bv, *yv);
            }
        }
    }
}

/// One output of MLAS's M = 1 kernel (see [`m1_rows`]): `w . x` summed four products at a
/// time, `((p0 + p1) + p2) + p3`, then two and one at the end, each group added to the sum so
/// far (the first to 0).
pub(super) fn m1_dot(w: &[f32], x: &[f32]) -> f32 {
    let k = w.len().min(x.len());
    let mut y = 0f32;
    let mut kk = 0;
    let mut group = |rows: usize, kk: usize| {
        let sum = (1..rows).fold(w[kk] * x[kk], |s, r| s + w[kk + r] * x[kk + r]);
        y += sum;
    };
    while k - kk >= 4 {
        group(4, kk);
        kk += 4;
    }
    if (k - kk) & 2 != 0 {
        group(2, kk);
        kk += 2;
    }
    if (k - kk) & 1 != 0 {
        group(1, kk);
    }
    y
}

/// MLAS's kernel for one row times a row-major `b (k x n)` (`SgemmKernelM1Avx`), which
/// onnxruntime runs when M = 1, alpha = 1 and beta is 0 or 1 (`c` given: beta 1). Plain
/// products and sums: rows of `b` are taken four at a time, `((p0 + p1) + p2) + p3`, then two
/// and one at the end, and each group's sum is added to the output so far (to `c`, or to 0
/// for the first group when there is no `c`).
pub(super) fn m1_rows(a: &[f32], b: &[f32], k: usize, n: usize, c: Option<&[f32]>) -> Vec<f32> {
    let mut y = c.map_or_else(|| vec![0f32; n], <[f32]>::to_vec);
    let mut first = c.is_none();
    let mut kk = 0;
    let mut add_group = |rows: usize, kk: usize, y: &mut [f32]| {
        for (j, out) in y.iter_mut().enumerate() {
            let mut sum = a[kk] * b[kk * n + j];
            for r in 1..rows {
                sum += a[kk + r] * b[(kk + r) * n + j];
            }
            // The kernel masks the old output to 0 in its first (zeroing) pass.
            *out = sum + if first { 0.0 } else { *out };
        }
        first = false;
    };
    while k - kk >= 4 {
        add_group(4, kk, &mut y);
        kk += 4;
    }
    if (k - kk) & 2 != 0 {
        add_group(2, kk, &mut y);
        kk += 2;
    }
    if (k - kk) & 1 != 0 {
        add_group(1, kk, &mut y);
    }
    y
}

/// MLAS's kernel for one row `a (k)` against the rows of `bt (n x k)`
/// (`SgemmKernelM1TransposeBAvx`, used when M = 1 with B transposed, alpha = 1 and beta 0 or
/// 1; also for N = 1 with the operands swapped). See [`m1_transposed_one`]; `c`, when given,
/// is added last.
pub(super) fn m1_transposed(
    a: &[f32],
    bt: &[f32],
    k: usize,
    n: usize,
    c: Option<&[f32]>,
) -> Vec<f32> {
    (0..n)
        .map(|j| m1_transposed_one(a, &bt[j * k..(j + 1) * k], j, n) + c.map_or(0.0, |c| c[j]))
        .collect()
}

/// Output `j` of `n` of the M = 1, transposed-B kernel: the dot product runs in 8 lanes, lane
/// `i` summing the plain products of the indices `i mod 8` in order; the lanes are then
/// reduced in an order that depends on whether the output falls in a group of four, two or one
/// (the kernel takes outputs four at a time, then two, then one).
pub(super) fn m1_transposed_one(a: &[f32], row: &[f32], j: usize, n: usize) -> f32 {
    let mut l = [0f32; 8];
    for (i, (&x, &w)) in a.iter().zip(row).enumerate() {
        l[i % 8] += x * w;
    }
    // The masked tail of the last 8 adds 0 * 0 to the unused lanes (-0 becomes +0).
    if !row.len().is_multiple_of(8) {
        l[row.len() % 8..].iter_mut().for_each(|v| *v += 0.0);
    }
    let grouped_by_four = n - n % 4;
    if j < grouped_by_four {
        (((l[0] + l[1]) + l[2]) + l[3]) + (((l[4] + l[5]) + l[6]) + l[7])
    } else if n % 4 >= 2 && j < grouped_by_four + 2 {
        ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7]))
    } else {
        ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::summation_order::{k_stride, segments, Threading};

    /// The plain scalar twin: one fused chain per output, in order.
    fn reference_dot(w: &[f32], x: &[f32]) -> f32 {
        w.iter().zip(x).fold(0.0, |acc, (&a, &b)| a.mul_add(b, acc))
    }

    #[test]
    fn fused_rounding() {
        // (1 + e)^2 = 1 + 2e + e^2 with e = 2^-12 needs 25 bits: a separate product rounds
        // off the e^2, the fused step adds it to -1 exactly.
        let e = 2f32.powi(-12);
        let (w, x) = ([1.0, 1.0 + e], [-1.0, 1.0 + e]);
        let mut sums = [0f32];
        dot_blocks(&pack_blocks(&w, 1, 2), &x, usize::MAX, &mut sums);
        assert_eq!(sums[0], 2.0 * e + e * e);
        assert_eq!(
            matmul_2d(
                &w,
                &x,
                (1, 2, 1),
                &segments(1, 1, 2, Threading::Gemm, true),
                1.0,
                None
            ),
            vec![2.0 * e + e * e]
        );
    }

    #[test]
    fn k_strides_and_thread_segments() {
        assert_eq!(k_stride(64, 300, true), 256);
        assert_eq!(k_stride(9, 1152, true), 1024);
        assert_eq!(k_stride(300, 64, true), 64);
        assert_eq!(k_stride(9, 1152, false), 128);
        // 16 x 36 x 576 runs on 6 threads, trimmed to 5 strides of 16 columns (the last 4).
        let segs = segments(16, 36, 576, Threading::Conv, true);
        let bounds: Vec<(usize, usize, usize)> =
            segs.iter().map(|s| (s.start, s.end, s.stride_k)).collect();
        assert_eq!(bounds, vec![(0, 16, 1024), (16, 32, 1024), (32, 36, 1024)]);
        // Small products run on one thread over all columns.
        assert_eq!(
            segments(2, 64, 300, Threading::Gemm, true),
            vec![Segment {
                start: 0,
                end: 64,
                stride_k: 256
            }]
        );
    }

    #[test]
    fn m1_kernel_orders() {
        // Groups of four: ((1e8 + 1) - 1e8) + 1 = 1, then the single tail product: 2.
        assert_eq!(m1_dot(&[1.0; 5], &[1e8, 1.0, -1e8, 1.0, 1.0]), 2.0);
        // Lanes [1e8, 1, -1e8, 1, 0, ...]: the 4-, 2- and 1-row reductions of the transposed
        // kernel give 1, 2 and 0 for seven outputs (four, two, one).
        let a = [1e8, 1.0, -1e8, 1.0, 0.0, 0.0, 0.0, 0.0];
        let rows = [1f32; 8 * 7];
        assert_eq!(
            m1_transposed(&a, &rows, 8, 7, None),
            vec![1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0]
        );
        // M = 1 rows kernel with a start (beta 1): each group of four joins it.
        let b = [1f32; 4 * 2];
        assert_eq!(
            m1_rows(&[1.0, 2.0, 3.0, 4.0], &b, 4, 2, Some(&[0.5, -0.5])),
            vec![10.5, 9.5]
        );
    }

    proptest! {
        /// The blocked kernels agree with the scalar chain bit for bit on odd sizes.
        #[test]
        fn kernels_match_scalar_chain(rows in 1usize..20, k in 0usize..40, seed in any::<u64>()) {
            let mut state = seed | 1;
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            };
            let w: Vec<f32> = (0..rows * k).map(|_| next()).collect();
            let x: Vec<f32> = (0..k).map(|_| next()).collect();
            let mut sums = vec![0f32; rows];
            dot_blocks(&pack_blocks(&w, rows, k), &x, usize::MAX, &mut sums);
            let segs = segments(rows, 1, k, Threading::Gemm, true);
            let via_matmul = matmul_2d(&w, &x, (rows, k, 1), &segs, 1.0, None);
            for r in 0..rows {
                let want = reference_dot(&w[r * k..(r + 1) * k], &x);
                prop_assert_eq!(sums[r].to_bits(), want.to_bits());
                prop_assert_eq!(via_matmul[r].to_bits(), want.to_bits());
            }
        }
    }
}
