//! Bit-serial matrix products and convolutions (`bitserial_matmul`, `bitserial_conv`):
//! low-bit integers as bit planes.
//!
//! An integer of `b` bits is `sum_p c_p * 2^p * bit_p`, with `c_p = -1` for the top plane of
//! a two's complement type and 1 otherwise. So a dot product of activations `a` and weights
//! `w` is `sum_{p,q} c_p c_q 2^(p+q) * popcount(A_p & W_q)` over 64-bit words of planes: the
//! weights' planes are packed at compile time (`(N, planes, words)`), the activations' planes
//! once per row on the stack, and every output sums `planes_a * planes_w` popcounts per
//! word. The sums are exact integers, stored as `i32`.
//!
//! Bipolar weights are one plane `b` with `w = 2b - 1`: a plane pair then counts
//! `2 * popcount(A_p & B) - popcount(A_p)`, the second term once per row.

use bnnc_ir::{ConvAttrs, ElemType, IntType, Node};
use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::{KernelBuilder, Operand};
use crate::BackendError;

/// How a value type splits into planes ([`IntType::planes`]).
fn planes(elem: &ElemType) -> Option<(usize, bool)> {
    elem.int_type()?.planes()
}

/// The place value of plane `p` of `n`, negative for the top plane of a signed type.
fn place(p: usize, n: usize, signed: bool) -> i64 {
    let v = 1i64 << p;
    if signed && p + 1 == n {
        -v
    } else {
        v
    }
}

/// How a product's operands split into planes.
struct Planes {
    /// The activations' planes, and whether the top one is negative.
    a: (usize, bool),
    /// The weights' planes, and whether the top one is negative.
    w: (usize, bool),
    /// Bipolar weights: one plane `b`, `w = 2b - 1`.
    bipolar_w: bool,
}

impl Planes {
    fn of(node: &Node, a: &ElemType, w: &ElemType) -> Result<Planes, BackendError> {
        let unsupported = |why: &str| BackendError::unsupported(node, why);
        let bipolar_w = w.int_type() == Some(IntType::Bipolar);
        Ok(Planes {
            a: planes(a).ok_or_else(|| unsupported("the activations are not low-bit integers"))?,
            w: if bipolar_w {
                (1, false)
            } else {
                planes(w).ok_or_else(|| unsupported("the weights are not low-bit integers"))?
            },
            bipolar_w,
        })
    }
}

/// What a row's terms are read from, computed once per row `r`.
type RowSetup<'g> = dyn Fn(&mut KernelBuilder, Value) -> Vec<Value> + 'g;

/// Term `kk` of the row set up as given, as an f32 value (an activation, or 0 for a tap in
/// the padding).
type Gather<'g> = dyn Fn(&mut KernelBuilder, &[Value], Value) -> Value + 'g;

/// Stores the integer sum of output `j` of row `r`.
type Store<'s> = dyn Fn(&mut KernelBuilder, Value, Value, Value) + 's;

/// `rows` dot products of `k` terms with each of the `n` filters (`(N, K)` row-major
/// integers), bit-serially: per row, the activations' planes are packed once (each word in
/// registers from its 64 terms), then every filter counts each pair of planes over the words.
#[allow(clippy::too_many_arguments)]
fn products(
    kb: &mut KernelBuilder,
    planes: &Planes,
    filters: &[f32],
    (rows, k, n): (usize, usize, usize),
    a_scale: f32,
    (setup, gather): (&RowSetup<'_>, &Gather<'_>),
    store: &Store<'_>,
) {
    let ((pa, signed_a), (pw, signed_w)) = (planes.a, planes.w);
    let bipolar_w = planes.bipolar_w;
    let words = words(k);
    // Weight planes, (N, pw, words): bit k of plane q of filter j.
    let mut table = vec![0u64; n * pw * words];
    for j in 0..n {
        for kk in 0..k {
            // In range of the weight type (inference and the interpreter check), so the
            // two's complement bits below are the planes; a bipolar weight's plane is 1 for +1.
            let q = filters[j * k + kk] as i64;
            let q = if bipolar_w { i64::from(q > 0) } else { q };
            for plane in 0..pw {
                if (q >> plane) & 1 == 1 {
                    table[(j * pw + plane) * words + kk / WORD_BITS] |= 1 << (kk % WORD_BITS);
                }
            }
        }
    }
    let w_t = kb.table_u64(&table);
    let stack = kb.stack(((pa * words * 8) as u32).max(8));

    kb.for_range(rows, |kb, r| {
        let row = setup(kb, r);
        let pack_words = |kb: &mut KernelBuilder, first_word: usize, count: usize, len: usize| {
            kb.for_range(count, |kb, wi| {
                let wi = kb.b.ins().iadd_imm_s(wi, first_word as i64);
                let first = kb.b.ins().imul_imm_s(wi, WORD_BITS as i64);
                let zero = kb.iconst(0);
                let gathered = kb.fold_range(len, vec![zero; pa], |kb, i, mut acc| {
                    let kk = kb.b.ins().iadd(first, i);
                    let x = gather(kb, &row, kk);
                    let v = integer(kb, x, a_scale);
                    for (plane, word) in acc.iter_mut().enumerate() {
                        let shifted = kb.b.ins().ushr_imm_s(v, plane as i64);
                        let b = kb.b.ins().band_imm_s(shifted, 1);
                        let placed = kb.b.ins().ishl(b, i);
                        *word = kb.b.ins().bor(*word, placed);
                    }
                    acc
                });
                for (plane, &word) in gathered.iter().enumerate() {
                    let at = kb.b.ins().iadd_imm_s(wi, (plane * words) as i64);
                    kb.store_at(word, stack, at);
                }
            });
        };
        pack_words(kb, 0, k / WORD_BITS, WORD_BITS);
        if k % WORD_BITS != 0 {
            pack_words(kb, k / WORD_BITS, 1, k % WORD_BITS);
        }
        // With bipolar weights, each activation plane's popcount over the row.
        let totals: Vec<Value> = if bipolar_w {
            let zero = kb.iconst(0);
            kb.fold_range(words, vec![zero; pa], |kb, wi, mut totals| {
                for (p, total) in totals.iter_mut().enumerate() {
                    let at = kb.b.ins().iadd_imm_s(wi, (p * words) as i64);
                    let word = kb.load_written(I64, stack, at);
                    let count = kb.b.ins().popcnt(word);
                    *total = kb.b.ins().iadd(*total, count);
                }
                totals
            })
        } else {
            Vec::new()
        };
        kb.for_range(n, |kb, j| {
            let filter = kb.addr(w_t, j, (pw * words * 8) as i64, 0);
            // One count per pair of planes over the words; the place values weigh them once.
            let zero = kb.iconst(0);
            let counts = kb.fold_range(words, vec![zero; pa * pw], |kb, wi, mut counts| {
                let a_words: Vec<Value> = (0..pa)
                    .map(|p| {
                        let at = kb.b.ins().iadd_imm_s(wi, (p * words) as i64);
                        kb.load_written(I64, stack, at)
                    })
                    .collect();
                for q in 0..pw {
                    let at = kb.b.ins().iadd_imm_s(wi, (q * words) as i64);
                    let wq = kb.load_at(I64, filter, at);
                    for (p, &ap) in a_words.iter().enumerate() {
                        let both = kb.b.ins().band(ap, wq);
                        let count = kb.b.ins().popcnt(both);
                        counts[q * pa + p] = kb.b.ins().iadd(counts[q * pa + p], count);
                    }
                }
                counts
            });
            let mut total = kb.iconst(0);
            for q in 0..pw {
                for p in 0..pa {
                    let mut count = counts[q * pa + p];
                    if bipolar_w {
                        // 2 * popcount(A_p & B) - popcount(A_p).
                        let twice = kb.b.ins().iadd(count, count);
                        count = kb.b.ins().isub(twice, totals[p]);
                    }
                    let weight = place(p, pa, signed_a) * place(q, pw, signed_w);
                    let term = kb.b.ins().imul_imm_s(count, weight);
                    total = kb.b.ins().iadd(total, term);
                }
            }
            let sum = kb.b.ins().ireduce(I32, total);
            store(kb, r, j, sum);
        });
    });
}

/// `bitserial_matmul`: rows of activations `(.., K)` against `(K, N)` integer weights.
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    a_scale: f32,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, w) = (&operands[0], &operands[1]);
    let unsupported = |why: &str| BackendError::unsupported(node, why);
    let w_data = w
        .const_f32()
        .ok_or_else(|| unsupported("the weights must be constant"))?;
    let &[k, n] = w.shape.as_slice() else {
        return Err(unsupported("the weights must be a (K, N) matrix"));
    };
    let planes = Planes::of(node, &a.elem, &w.elem)?;
    let filters: Vec<f32> = (0..n * k).map(|i| w_data[(i % k) * n + i / k]).collect();
    let (src, dst) = (a.f32_ptr(kb), out.ptr);
    let setup = move |kb: &mut KernelBuilder, r: Value| vec![kb.addr(src, r, (k * 4) as i64, 0)];
    let gather = |kb: &mut KernelBuilder, row: &[Value], kk: Value| kb.load_at(F32, row[0], kk);
    let store = move |kb: &mut KernelBuilder, r: Value, j: Value, sum: Value| {
        let row = kb.addr(dst, r, (n * 4) as i64, 0);
        kb.store_at(sum, row, j);
    };
    let rows = a.numel() / k.max(1);
    products(
        kb,
        &planes,
        &filters,
        (rows, k, n),
        a_scale,
        (&setup, &gather),
        &store,
    );
    Ok(())
}

/// `bitserial_conv`: every output position's receptive field (channel-major, then taps
/// row-major, as the weights are laid out; 0 in the padding) against `(M, C, KH, KW)`
/// integer weights, one group. Results are `i32`, NCHW.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    a_scale: f32,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let unsupported = |why: &str| BackendError::unsupported(node, why);
    let filters = w
        .const_f32()
        .ok_or_else(|| unsupported("the weights must be constant"))?;
    let (&[batch, c, h, wd], &[m, _, kh, kw], &[_, _, oh, ow]) =
        (x.shape.as_slice(), w.shape.as_slice(), out.shape.as_slice())
    else {
        return Err(unsupported("the native bit-serial convolution is 2-D"));
    };
    let planes = Planes::of(node, &x.elem, &w.elem)?;
    let k = c * kh * kw;
    let im2col = super::window::Im2col::new(kb, attrs, (c, h, wd));
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let positions = oh * ow;
    // Per row (output position): its image and the window's origin.
    let setup = move |kb: &mut KernelBuilder, r: Value| {
        let n = kb.b.ins().udiv_imm_s(r, positions as i64);
        let pos = kb.b.ins().urem_imm_s(r, positions as i64);
        let oy = kb.b.ins().udiv_imm_s(pos, ow as i64);
        let ox = kb.b.ins().urem_imm_s(pos, ow as i64);
        let image = kb.addr(src, n, (c * h * wd * 4) as i64, 0);
        let (y0, x0) = im2col.origin(kb, oy, ox);
        vec![image, y0, x0]
    };
    let gather = move |kb: &mut KernelBuilder, row: &[Value], kk: Value| {
        im2col.load(kb, row[0], (row[1], row[2]), kk)
    };
    let store = move |kb: &mut KernelBuilder, r: Value, j: Value, sum: Value| {
        let n = kb.b.ins().udiv_imm_s(r, positions as i64);
        let pos = kb.b.ins().urem_imm_s(r, positions as i64);
        let nm = kb.b.ins().imul_imm_s(n, m as i64);
        let plane = kb.b.ins().iadd(nm, j);
        let base = kb.b.ins().imul_imm_s(plane, positions as i64);
        let at = kb.b.ins().iadd(base, pos);
        kb.store_at(sum, dst, at);
    };
    products(
        kb,
        &planes,
        &filters,
        (batch * positions, k, m),
        a_scale,
        (&setup, &gather),
        &store,
    );
    Ok(())
}

/// The integer `x / scale` of a value `int * scale` as an i64.
fn integer(kb: &mut KernelBuilder, x: Value, scale: f32) -> Value {
    let v = super::linear::integer_of(kb, x, scale);
    kb.b.ins().fcvt_to_sint_sat(I64, v)
}
