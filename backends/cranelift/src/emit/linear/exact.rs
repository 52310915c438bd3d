//! Sums that any order gives exactly: integers (times one power-of-two scale) whose partial
//! sums fit f32's 24 bits, or the integers of a layer that sums integers and scales once
//! ([`IntegerFirst`]). Free of an order to follow, these kernels keep four output channels
//! in each vector. (Most 2-D convolutions take the column kernel, [`super::columns`].)

use bnnc_ir::interp::IntegerFirst;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::bytes::{self, BytePlan};
use super::layout::{ConvLayout, Product, ProductIo, Sums};
use crate::emit::convert::integer_of;
use crate::emit::KernelBuilder;

/// [`super::conv`] when its sums are exact (`sums.exact`, or integers scaled once) and the
/// column kernel does not take it: per group as rows of [`exact_rows`], for any rank.
pub(super) fn conv(kb: &mut KernelBuilder, layout: &ConvLayout, sums: &Sums) {
    let batch = layout.input[0];
    let (group, mg, positions, k) = (layout.group, layout.mg, layout.positions, layout.k);
    let (dst, out_image) = (layout.dst, layout.m * positions);
    let plan = sums.plan.as_ref();
    kb.for_range(batch, |kb, n| {
        for g in 0..group {
            // The group's (mg, K) weights as a (K, mg) matrix.
            let mut w_km = vec![0f32; k * mg];
            for jj in 0..mg {
                for kk in 0..k {
                    w_km[kk * mg + jj] = sums.weights[(g * mg + jj) * k + kk];
                }
            }
            let x = |kb: &mut KernelBuilder, p: Value, kk: Value| {
                let v = layout.load(kb, n, g, p, kk);
                match plan {
                    Some(plan) => integer_of(kb, v, plan.a_scale),
                    None => v,
                }
            };
            let store = |kb: &mut KernelBuilder, p: Value, jj: usize, _: Value, s: Value| {
                let j = g * mg + jj;
                let s = match plan {
                    Some(plan) => scale_sum(kb, plan, j, s),
                    None => s,
                };
                let jv = kb.iconst(j as i64);
                let s = layout.add_bias(kb, jv, s);
                let image = kb.addr(dst, n, (out_image * 4) as i64, (j * positions * 4) as i64);
                let at = kb.addr(image, p, 4, 0);
                kb.store(s, at, 0);
            };
            exact_rows(kb, positions, k, mg, &w_km, &x, &store);
        }
    });
}

/// [`super::product`] on integers scaled once: the activations' integers as they are
/// loaded, each sum scaled (and times alpha, plus C) as it is stored.
pub(super) fn product_scaled(
    kb: &mut KernelBuilder,
    p: &Product<'_>,
    plan: &IntegerFirst,
    io: &ProductIo,
) {
    let (m, k, n) = p.mkn;
    let alpha = p.alpha;
    let load_int = |kb: &mut KernelBuilder, i: Value, kk: Value| {
        let v = io.load_a(kb, i, kk);
        integer_of(kb, v, plan.a_scale)
    };
    let store_scaled = |kb: &mut KernelBuilder, i: Value, j: usize, jv: Value, s: Value| {
        let mut s = scale_sum(kb, plan, j, s);
        if alpha != 1.0 {
            let a = kb.fconst(alpha);
            s = kb.b.ins().fmul(s, a);
        }
        let s = match io.start_at(kb, i, jv) {
            Some(c) => kb.b.ins().fadd(s, c),
            None => s,
        };
        io.store(kb, i, jv, s);
    };
    match BytePlan::of(p, kb.byte_dot) {
        Some(bytes) => bytes::rows(kb, &bytes, io.a, m, &store_scaled),
        None => exact_rows(kb, m, k, n, p.b_kn, &load_int, &store_scaled),
    }
}

/// [`super::product`] on exact sums (alpha 1), plus C.
pub(super) fn product(kb: &mut KernelBuilder, p: &Product<'_>, io: &ProductIo) {
    let (m, k, n) = p.mkn;
    let load_a = |kb: &mut KernelBuilder, i: Value, kk: Value| io.load_a(kb, i, kk);
    let store_exact = |kb: &mut KernelBuilder, i: Value, _j: usize, jv: Value, s: Value| {
        let s = match io.start_at(kb, i, jv) {
            Some(c) => kb.b.ins().fadd(s, c),
            None => s,
        };
        io.store(kb, i, jv, s);
    };
    match BytePlan::of(p, kb.byte_dot) {
        Some(bytes) => bytes::rows(kb, &bytes, io.a, m, &store_exact),
        None => exact_rows(kb, m, k, n, p.b_kn, &load_a, &store_exact),
    }
}

/// `sum * out_scales[j]`: one scale, or the one of output channel `j`.
fn scale_sum(kb: &mut KernelBuilder, plan: &IntegerFirst, j: usize, sum: Value) -> Value {
    let s = kb.fconst(plan.out_scales[j % plan.out_scales.len()]);
    kb.b.ins().fmul(sum, s)
}

/// Loads element `kk` of the reduction for output row `r`.
type Loader<'l> = dyn Fn(&mut KernelBuilder, Value, Value) -> Value + 'l;

/// The exact kernel: `out(r, j) = sum over kk of x(r, kk) * w[kk][j]`, four `j` at a time,
/// `w` being a constant `(k, m)` matrix.
fn exact_rows(
    kb: &mut KernelBuilder,
    rows: usize,
    k: usize,
    m: usize,
    w_km: &[f32],
    x: &Loader<'_>,
    store: &dyn Fn(&mut KernelBuilder, Value, usize, Value, Value),
) {
    let mp = m.next_multiple_of(4);
    let mut padded = vec![0f32; k * mp];
    for kk in 0..k {
        padded[kk * mp..kk * mp + m].copy_from_slice(&w_km[kk * m..(kk + 1) * m]);
    }
    let table = kb.table_f32(&padded);
    // Eight vectors (32 channels) per pass keep the accumulators, the splat input and a
    // weight vector in x86's sixteen registers.
    const VECTORS: usize = 8;
    // A row's inputs loaded (and converted) once into the stack, not once per pass.
    const MAX_STAGED: usize = 16 << 10;
    let passes = mp.div_ceil(VECTORS * 4);
    let staged = (passes > 1 && k <= MAX_STAGED).then(|| kb.stack((k * 4) as u32));
    kb.for_range(rows, |kb, r| {
        if let Some(buf) = staged {
            kb.for_range(k, |kb, kk| {
                let v = x(kb, r, kk);
                kb.store_at(v, buf, kk);
            });
        }
        let mut j0 = 0;
        while j0 < mp {
            let nv = VECTORS.min((mp - j0) / 4);
            let zero = kb.fconst(0.0);
            let zv = kb.b.ins().splat(F32X4, zero);
            let acc = kb.fold_range(k, vec![zv; nv], |kb, kk, acc| {
                let xv = match staged {
                    Some(buf) => kb.load_at(F32, buf, kk),
                    None => x(kb, r, kk),
                };
                let xs = kb.b.ins().splat(F32X4, xv);
                let row = kb.addr(table, kk, (mp * 4) as i64, (j0 * 4) as i64);
                acc.iter()
                    .enumerate()
                    .map(|(v, &a)| {
                        let wv = kb.load(F32X4, row, (v * 16) as i64);
                        kb.exact_multiply_add(xs, wv, a)
                    })
                    .collect()
            });
            for (v, a) in acc.into_iter().enumerate() {
                for lane in 0..4 {
                    let j = j0 + v * 4 + lane;
                    if j < m {
                        let s = kb.b.ins().extractlane(a, lane as u8);
                        let jv = kb.iconst(j as i64);
                        store(kb, r, j, jv, s);
                    }
                }
            }
            j0 += nv * 4;
        }
    });
}
