//! The XNOR-popcount peak: the best loops Cranelift emits for `sum(popcount(a ^ b))` over
//! words in cache, so that layer throughput can be reported as a fraction of what this
//! machine does with Cranelift code. Exported (C ABI) as
//! `uint64_t bnnc_xor_popcount_scalar(const uint64_t *a, const uint64_t *b, size_t words)`
//! and `bnnc_xor_popcount_vector` (`words` a multiple of 8; the vector one needs
//! [`simd_popcount`](crate::target) code, else it is the scalar one).

use cranelift_codegen::ir::types::{I16, I16X8, I64, I64X2, I8X16};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use cranelift_module::Linkage;

use crate::emit::{Emitter, KernelBuilder};
use crate::{BackendError, Options};

/// The object file holding both peak loops.
pub fn peak_object(options: &Options) -> Result<Vec<u8>, BackendError> {
    let isa = crate::target::isa(&options.triple, options.cpu)?;
    let simd = crate::target::simd_popcount(&*isa);
    let mut e = Emitter::new(isa, "bnnc_peak", true)?;
    let sig = e.signature(3, Some(I64));
    e.define(
        "bnnc_xor_popcount_scalar",
        Linkage::Export,
        sig.clone(),
        |kb| Ok(Some(scalar(kb))),
    )?;
    e.define("bnnc_xor_popcount_vector", Linkage::Export, sig, |kb| {
        Ok(Some(if simd { vector(kb) } else { scalar(kb) }))
    })?;
    e.finish()
}

/// Four independent 64-bit chains, eight words per iteration.
fn scalar(kb: &mut KernelBuilder) -> Value {
    let (a, b, words) = (kb.param(0), kb.param(1), kb.param(2));
    let iterations = kb.b.ins().ushr_imm_s(words, 3);
    let zero = kb.iconst(0);
    let acc = kb.fold_dynamic(iterations, vec![zero; 4], |kb, i, acc| {
        let pa = kb.addr(a, i, 64, 0);
        let pb = kb.addr(b, i, 64, 0);
        let mut acc = acc;
        for w in 0..8 {
            let x = kb.load(I64, pa, w * 8);
            let y = kb.load(I64, pb, w * 8);
            let d = kb.b.ins().bxor(x, y);
            let p = kb.b.ins().popcnt(d);
            let j = w as usize % 4;
            acc[j] = kb.b.ins().iadd(acc[j], p);
        }
        acc
    });
    let s = kb.b.ins().iadd(acc[0], acc[1]);
    let t = kb.b.ins().iadd(acc[2], acc[3]);
    kb.b.ins().iadd(s, t)
}

/// Four 128-bit chains of byte counts (`popcnt.i8x16`), widened to i16 every iteration
/// (each byte lane gains at most 2 * 8 per iteration), then summed.
fn vector(kb: &mut KernelBuilder) -> Value {
    let (a, b, words) = (kb.param(0), kb.param(1), kb.param(2));
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let iterations = kb.b.ins().ushr_imm_s(words, 3);
    let z16 = {
        let z = kb.iconst32(0);
        let z = kb.b.ins().ireduce(I16, z);
        kb.b.ins().splat(I16X8, z)
    };
    let acc = kb.fold_dynamic(iterations, vec![z16; 2], |kb, i, acc| {
        let pa = kb.addr(a, i, 64, 0);
        let pb = kb.addr(b, i, 64, 0);
        let mut bytes = Vec::with_capacity(2);
        for half in 0..2i64 {
            let mut sum: Option<Value> = None;
            for v in 0..2i64 {
                let off = (half * 2 + v) * 16;
                let x = kb.load(I64X2, pa, off);
                let y = kb.load(I64X2, pb, off);
                let d = kb.b.ins().bxor(x, y);
                let d = kb.b.ins().bitcast(I8X16, little, d);
                let p = kb.b.ins().popcnt(d);
                sum = Some(match sum {
                    Some(s) => kb.b.ins().iadd(s, p),
                    None => p,
                });
            }
            bytes.push(sum.expect("two vectors"));
        }
        acc.iter()
            .zip(bytes)
            .map(|(&h, by)| {
                let lo = kb.b.ins().uwiden_low(by);
                let hi = kb.b.ins().uwiden_high(by);
                let w = kb.b.ins().iadd_pairwise(lo, hi);
                kb.b.ins().iadd(h, w)
            })
            .collect()
    });
    let h = kb.b.ins().iadd(acc[0], acc[1]);
    let lo = kb.b.ins().uwiden_low(h);
    let hi = kb.b.ins().uwiden_high(h);
    let q = kb.b.ins().iadd_pairwise(lo, hi);
    let mut total = kb.iconst(0);
    for lane in 0..4u8 {
        let v = kb.b.ins().extractlane(q, lane);
        let v = kb.b.ins().uextend(I64, v);
        total = kb.b.ins().iadd(total, v);
    }
    total
}
