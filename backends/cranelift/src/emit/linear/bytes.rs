//! Exact matrix products on byte dot products: activations of at most 8 bits, staged per
//! row as unsigned bytes, times integer weights within `i8`, four products summed into each
//! `i32` lane by one instruction where the target has it ([`ByteDot`]). The sums are the
//! integers [`super::exact`] sums in f32 (every partial sum is exact either way), from a
//! weight table a quarter of the size: the 8-bit first layer of an MLP (KWS's 490 x 256)
//! streams 125 KB instead of 500 KB, sixteen products to an instruction instead of four.

use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I8X16};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};

use bnnc_ir::interp::IntegerFirst;
use bnnc_ir::ElemType;

use super::layout::Product;
use crate::emit::convert::{plus_rounding_magic, ROUNDING_MAGIC};
use crate::emit::{builder::mem, KernelBuilder};
use crate::target::{ByteDot, PMADDUBSW_WEIGHTS};

/// Stores output `(row, j)` (`j` also as a value) of the f32 sum the f32 kernels would have
/// computed.
pub(super) type Store<'s> = dyn Fn(&mut KernelBuilder, Value, usize, Value, Value) + 's;

/// A product the byte kernel takes: how its activations become bytes and its weights.
pub(super) struct BytePlan {
    /// `(k, n)`: the reduction's length and the outputs per row.
    kn: (usize, usize),
    /// Each activation's integer is `value / a_scale`.
    a_scale: f32,
    /// Added to each activation's integer to make it an unsigned byte (128 for `i8`); the
    /// accumulators start at `-offset` times their weights' sum to take it out again.
    offset: i32,
    /// The weights' integers, `(k, n)` row-major.
    weights: Vec<i8>,
    /// The f32 sum is the integer sum times this: the scales of power-of-two operands, or 1
    /// where the integers are scaled as they are stored ([`bnnc_ir::interp::IntegerFirst`]).
    sum_scale: f32,
}

impl BytePlan {
    /// The plan for `p`, whose sums are exact (integers summed, or products exact in any
    /// order), on a target with byte dot product `dot`; `None` where the byte kernel does not
    /// apply: no byte dot, a transposed A, activations wider than a byte, weights that are not
    /// integers of `i8` (of 7 bits for [`ByteDot::Pmaddubsw`]), or sums that may pass `i32`.
    pub(super) fn of(p: &Product<'_>, dot: Option<ByteDot>) -> Option<BytePlan> {
        let (_, k, n) = p.mkn;
        let operands = ByteOperands {
            a_elem: p.a_elem,
            w_elem: p.w_elem,
            weights: p.b_kn,
            kn: (k, n),
            scaled: p.scaled,
            exact: p.exact,
            alpha: p.alpha,
            trans_a: p.trans_a,
        };
        operands.plan(dot?)
    }
}

/// What decides whether a product runs on bytes (its shape aside).
pub(super) struct ByteOperands<'d> {
    pub(super) a_elem: &'d ElemType,
    pub(super) w_elem: &'d ElemType,
    /// B's values in any order: its integers where `scaled` is some.
    pub(super) weights: &'d [f32],
    /// The reduction's length and the outputs per row.
    pub(super) kn: (usize, usize),
    pub(super) scaled: Option<&'d IntegerFirst>,
    /// Whether the products are exact in any order.
    pub(super) exact: bool,
    pub(super) alpha: f32,
    pub(super) trans_a: bool,
}

impl ByteOperands<'_> {
    /// The [`BytePlan`] on a target with `dot` ([`BytePlan::of`] says when there is none).
    pub(super) fn plan(&self, dot: ByteDot) -> Option<BytePlan> {
        if self.trans_a {
            return None;
        }
        // With a plan, B already holds the weights' integers.
        let (a_int, a_scale, w_scale) = match self.scaled {
            Some(plan) => (self.a_elem.int_type()?, plan.a_scale, 1.0),
            None if self.exact && self.alpha == 1.0 => {
                let (a_int, a_scale) = self.a_elem.exact_scaled()?;
                (a_int, a_scale, self.w_elem.exact_scaled()?.1)
            }
            None => return None,
        };
        let offset = match (a_int.min(), a_int.max()) {
            (lo, hi) if lo >= 0 && hi <= 255 => 0,
            (lo, hi) if lo >= -128 && hi <= 127 => 128,
            _ => return None,
        };
        let largest = match dot {
            ByteDot::Vnni => 128.0,
            ByteDot::Pmaddubsw => PMADDUBSW_WEIGHTS as f32,
        };
        let weights = self
            .weights
            .iter()
            .map(|&v| {
                let q = v / w_scale;
                (q == q.round() && (-largest..=largest.min(127.0)).contains(&q)).then_some(q as i8)
            })
            .collect::<Option<Vec<i8>>>()?;
        // The accumulator starts at -offset * sum(w) and adds (int + offset) * w: both
        // parts' magnitudes together stay within i32.
        let w_max = weights.iter().map(|w| i64::from(w.unsigned_abs())).max()?;
        if (self.kn.0 as i64) * (255 + i64::from(offset)) * w_max >= 1 << 31 {
            return None;
        }
        Some(BytePlan {
            kn: self.kn,
            a_scale,
            offset,
            weights,
            sum_scale: if self.scaled.is_some() {
                1.0
            } else {
                a_scale * w_scale
            },
        })
    }
}

/// Eight vectors (32 outputs) per pass keep the accumulators, the splat activations and a
/// weight vector in x86's sixteen registers.
const VECTORS: usize = 8;

/// `out(r, j) = sum over kk of a(r, kk) * w[kk][j]` for the `rows` rows of `a` (row-major
/// `(rows, k)` f32 values), each sum handed to `store` as the f32 sum.
pub(super) fn rows(kb: &mut KernelBuilder, plan: &BytePlan, a: Value, rows: usize, store: &Store) {
    let (k, n) = plan.kn;
    let (quads, np) = (k.div_ceil(4), n.next_multiple_of(4));
    // The weights as [quad of k][output][4 bytes]: one 16-byte load is four outputs' four
    // products; the padding is zeros.
    let mut table = vec![0u8; quads * np * 4];
    for kk in 0..k {
        for j in 0..n {
            table[((kk / 4) * np + j) * 4 + kk % 4] = plan.weights[kk * n + j] as u8;
        }
    }
    let table = kb.table(table);
    let start = (plan.offset != 0).then(|| {
        let column_sum =
            |j: usize| -> i32 { (0..k).map(|kk| i32::from(plan.weights[kk * n + j])).sum() };
        let sums: Vec<i32> = (0..np)
            .map(|j| {
                if j < n {
                    -plan.offset * column_sum(j)
                } else {
                    0
                }
            })
            .collect();
        kb.table_i32(&sums)
    });
    // A row's bytes; those past k are never written, their weights being zero.
    let staged = kb.stack((quads * 4).next_multiple_of(16) as u32);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(a, r, (k * 4) as i64, 0);
        stage_row(kb, plan, row, staged);
        let mut j0 = 0;
        while j0 < np {
            let nv = VECTORS.min((np - j0) / 4);
            let init: Vec<Value> = (0..nv)
                .map(|v| match start {
                    Some(t) => kb.load(I32X4, t, ((j0 + v * 4) * 4) as i64),
                    None => {
                        let zero = kb.iconst32(0);
                        kb.b.ins().splat(I32X4, zero)
                    }
                })
                .collect();
            let little = MemFlagsData::new().with_endianness(Endianness::Little);
            let acc = kb.fold_range(quads, init, |kb, q, acc| {
                let word = kb.load_at(I32, staged, q);
                let splat = kb.b.ins().splat(I32X4, word);
                let bytes = kb.b.ins().bitcast(I8X16, little, splat);
                let at = kb.addr(table, q, (np * 4) as i64, (j0 * 4) as i64);
                acc.iter()
                    .enumerate()
                    .map(|(v, &c)| {
                        let w = kb.load_aligned(I8X16, at, (v * 16) as i64);
                        kb.dot_bytes(c, bytes, w)
                    })
                    .collect()
            });
            for (v, sum) in acc.into_iter().enumerate() {
                let mut f = kb.b.ins().fcvt_from_sint(F32X4, sum);
                if plan.sum_scale != 1.0 {
                    let s = kb.fconst(plan.sum_scale);
                    let s = kb.b.ins().splat(F32X4, s);
                    f = kb.b.ins().fmul(f, s);
                }
                for lane in 0..4 {
                    let j = j0 + v * 4 + lane;
                    if j < n {
                        let s = kb.b.ins().extractlane(f, lane as u8);
                        let jv = kb.iconst(j as i64);
                        store(kb, r, j, jv, s);
                    }
                }
            }
            j0 += nv * 4;
        }
    });
}

/// Writes row `row`'s `k` activations as bytes `int + offset` at `staged`: four at a time
/// (the last four overlapping the ones before), one at a time in a row shorter than four.
fn stage_row(kb: &mut KernelBuilder, plan: &BytePlan, row: Value, staged: Value) {
    let k = plan.kn.0;
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    if k >= 4 {
        kb.for_quads(k, |kb, at| {
            let src = kb.addr(row, at, 4, 0);
            let v = kb.load(F32X4, src, 0);
            let v = biased_integers(kb, plan, v);
            let halves = kb.b.ins().snarrow(v, v);
            let bytes = kb.b.ins().unarrow(halves, halves);
            let words = kb.b.ins().bitcast(I32X4, little, bytes);
            let word = kb.b.ins().extractlane(words, 0);
            let dst = kb.b.ins().iadd(staged, at);
            kb.store(word, dst, 0);
        });
    } else {
        for kk in 0..k {
            let v = kb.load(F32, row, (kk * 4) as i64);
            let v = biased_integers(kb, plan, v);
            kb.b.ins().istore8(mem(), v, staged, kk as i32);
        }
    }
}

/// `round(v / a_scale) + offset` of the f32 scalar or vector `v` as `i32`s: the rounded
/// quotient plus [`ROUNDING_MAGIC`], whose low mantissa bits are then the integer.
fn biased_integers(kb: &mut KernelBuilder, plan: &BytePlan, v: Value) -> Value {
    let shifted = plus_rounding_magic(kb, v, plan.a_scale);
    let vector = kb.b.func.dfg.value_type(v).is_vector();
    let (ity, flags) = if vector {
        (
            I32X4,
            MemFlagsData::new().with_endianness(Endianness::Little),
        )
    } else {
        (I32, MemFlagsData::new())
    };
    let bits = kb.b.ins().bitcast(ity, flags, shifted);
    let bias = kb.iconst32(ROUNDING_MAGIC.to_bits() as i32 - plan.offset);
    let bias = if vector {
        kb.b.ins().splat(I32X4, bias)
    } else {
        bias
    };
    kb.b.ins().isub(bits, bias)
}
