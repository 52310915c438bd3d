//! Multiply-accumulate kernels that round as onnxruntime's MLAS does.
//!
//! MLAS (on the x86-64 CPUs with FMA the reference executor ran on) computes each output of
//! Conv, Gemm and MatMul as one chain of fused multiply-adds from 0, in order of the reduction
//! index: `acc = fma(a_k, b_k, acc)`, one rounding per step. Measured against the reference
//! outputs, this order reproduces Conv (K = 9 and K = 288) and Gemm (K = 128) on non-exact
//! products bit for bit, where a separate multiply and add differs in about a third of the
//! outputs. (Products of ±1 and 8-bit fixed-point values are exact, so on those both agree.)
//!
//! `f32::mul_add` is exactly that step. On x86-64 the kernels are compiled a second time with
//! the FMA instructions enabled and chosen at run time; elsewhere, or without FMA, `mul_add`
//! is still a correctly rounded fused multiply-add (in software: slower, same results).

/// Output rows computed together: independent chains that share each load of the other operand.
pub(super) const BLOCK: usize = 8;

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

/// `sums[r] = fma chain over kk of packed_row_r[kk] * x[kk]`, for the `sums.len()` rows packed
/// by [`pack_blocks`] with `k = x.len()`.
pub(super) fn dot_blocks(packed: &[f32], x: &[f32], sums: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `dot_blocks_fma` only requires the FMA extension, detected just above.
        return unsafe { dot_blocks_fma(packed, x, sums) };
    }
    dot_blocks_body(packed, x, sums);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn dot_blocks_fma(packed: &[f32], x: &[f32], sums: &mut [f32]) {
    dot_blocks_body(packed, x, sums);
}

#[inline(always)]
fn dot_blocks_body(packed: &[f32], x: &[f32], sums: &mut [f32]) {
    let k = x.len();
    if k == 0 {
        sums.fill(0.0);
        return;
    }
    for (block, out) in packed.chunks_exact(k * BLOCK).zip(sums.chunks_mut(BLOCK)) {
        let mut acc = [0f32; BLOCK];
        for (w, &v) in block.chunks_exact(BLOCK).zip(x) {
            for j in 0..BLOCK {
                acc[j] = w[j].mul_add(v, acc[j]);
            }
        }
        out.copy_from_slice(&acc[..out.len()]);
    }
}

/// `a (m x k) @ b (k x n)`, row-major, every output one fma chain in order of k.
pub(super) fn matmul_2d(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: `matmul_2d_fma` only requires the FMA extension, detected just above.
        unsafe { matmul_2d_fma(a, b, k, n, &mut y) };
        return y;
    }
    matmul_2d_body(a, b, k, n, &mut y);
    y
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn matmul_2d_fma(a: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
    matmul_2d_body(a, b, k, n, y);
}

/// Row by row: `y_row += a[i, kk] * b_row_kk` for kk in order, so each output's chain runs in
/// order of k while the inner loop streams contiguous rows.
#[inline(always)]
fn matmul_2d_body(a: &[f32], b: &[f32], k: usize, n: usize, y: &mut [f32]) {
    if n == 0 || k == 0 {
        return;
    }
    for (row, a_row) in y.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
        for (&av, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            for (yv, &bv) in row.iter_mut().zip(b_row) {
                *yv = av.mul_add(bv, *yv);
            }
        }
    }
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

/// MLAS's kernel for one row `a (k)` against the rows of `bt (n x k)` (`SgemmKernelM1TransposeBAvx`,
/// used when M = 1 with B transposed, alpha = 1 and beta 0 or 1; also for N = 1 with the
/// operands swapped). Each dot product runs in 8 lanes, lane `i` summing the plain products of
/// indices `i mod 8` in order; the lanes are then reduced in an order that depends on whether
/// the output is in a group of four, two or one (outputs are taken four at a time), and `c`,
/// when given, is added last.
pub(super) fn m1_transposed(
    a: &[f32],
    bt: &[f32],
    k: usize,
    n: usize,
    c: Option<&[f32]>,
) -> Vec<f32> {
    let lanes = |row: &[f32]| {
        let mut l = [0f32; 8];
        for (i, (&x, &w)) in a.iter().zip(row).enumerate() {
            l[i % 8] += x * w;
        }
        // The masked tail of the last 8 adds 0 * 0 to the unused lanes (-0 becomes +0).
        if k % 8 != 0 {
            l[k % 8..].iter_mut().for_each(|v| *v += 0.0);
        }
        l
    };
    // The horizontal sums of the kernel's 4-, 2- and 1-row epilogues.
    let four = |l: [f32; 8]| (((l[0] + l[1]) + l[2]) + l[3]) + (((l[4] + l[5]) + l[6]) + l[7]);
    let two = |l: [f32; 8]| ((l[0] + l[2]) + (l[4] + l[6])) + ((l[1] + l[3]) + (l[5] + l[7]));
    let one = |l: [f32; 8]| ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
    let grouped_by_four = n - n % 4;
    (0..n)
        .map(|j| {
            let l = lanes(&bt[j * k..(j + 1) * k]);
            let dot = if j < grouped_by_four {
                four(l)
            } else if n % 4 >= 2 && j < grouped_by_four + 2 {
                two(l)
            } else {
                one(l)
            };
            dot + c.map_or(0.0, |c| c[j])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
        dot_blocks(&pack_blocks(&w, 1, 2), &x, &mut sums);
        assert_eq!(sums[0], 2.0 * e + e * e);
        assert_eq!(matmul_2d(&w, &x, 1, 2, 1), vec![2.0 * e + e * e]);
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
            dot_blocks(&pack_blocks(&w, rows, k), &x, &mut sums);
            let via_matmul = matmul_2d(&w, &x, rows, k, 1);
            for r in 0..rows {
                let want = reference_dot(&w[r * k..(r + 1) * k], &x);
                prop_assert_eq!(sums[r].to_bits(), want.to_bits());
                prop_assert_eq!(via_matmul[r].to_bits(), want.to_bits());
            }
        }
    }
}
