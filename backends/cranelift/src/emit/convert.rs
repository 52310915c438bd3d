//! Conversions between storages: `f32` and `i32` elements, and packed bits.

use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::{KernelBuilder, Operand};
use crate::schedule::{bit_geometry, Storage};
use crate::BackendError;

/// Writes `from`'s elements to `to` in `to`'s storage.
pub(crate) fn convert(
    kb: &mut KernelBuilder,
    from: &Operand,
    to: &Operand,
) -> Result<(), BackendError> {
    let n = from.numel();
    let (src, dst) = (from.f32_ptr(kb), to.ptr);
    match (from.storage, to.storage) {
        (a, b) if a == b && a != Storage::Bits => kb.for_range(n, |kb, i| {
            let v = kb.load_at(I32, src, i);
            kb.store_at(v, dst, i);
        }),
        (Storage::Bits, Storage::Bits) => {
            let (outer, c, pixels) = bit_geometry(&from.shape);
            kb.for_range(outer * pixels * words(c), |kb, i| {
                let v = kb.load_at(I64, src, i);
                kb.store_at(v, dst, i);
            })
        }
        (Storage::I32, Storage::F32) => kb.for_range(n, |kb, i| {
            let v = kb.load_at(I32, src, i);
            let f = kb.i32_to_f32(v);
            kb.store_at(f, dst, i);
        }),
        (Storage::F32, Storage::I32) => kb.for_range(n, |kb, i| {
            let v = kb.load_at(F32, src, i);
            let r = kb.b.ins().fcvt_to_sint_sat(I32, v);
            kb.store_at(r, dst, i);
        }),
        (Storage::F32 | Storage::I32, Storage::Bits) => {
            let ty = if from.storage == Storage::F32 {
                F32
            } else {
                I32
            };
            pack(kb, &from.shape, dst, |kb, index, _| {
                let v = kb.load_at(ty, src, index);
                if ty == F32 {
                    let zero = kb.fconst(0.0);
                    kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zero)
                } else {
                    kb.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, v, 0)
                }
            })
        }
        (Storage::Bits, Storage::F32 | Storage::I32) => {
            let as_float = to.storage == Storage::F32;
            unpack(kb, &from.shape, src, |kb, index, bit| {
                let v = if as_float {
                    let (one, minus) = (kb.fconst(1.0), kb.fconst(-1.0));
                    kb.select(bit, one, minus)
                } else {
                    let (one, minus) = (kb.iconst32(1), kb.iconst32(-1));
                    kb.select(bit, one, minus)
                };
                kb.store_at(v, dst, index);
            })
        }
        (a, b) => unreachable!("conversion from {a:?} to {b:?}"),
    }
    Ok(())
}

/// Packs a tensor of `shape` into bits at `dst`: `bit(kb, index, channel)` gives the bit (an
/// i8 condition) of the element at row-major `index`, in `channel`.
pub(crate) fn pack(
    kb: &mut KernelBuilder,
    shape: &[usize],
    dst: Value,
    mut bit: impl FnMut(&mut KernelBuilder, Value, Value) -> Value,
) {
    let (outer, c, pixels) = bit_geometry(shape);
    let nwords = words(c);
    kb.for_range(outer, |kb, n| {
        kb.for_range(pixels, |kb, p| {
            for w in 0..nwords {
                let count = WORD_BITS.min(c - w * WORD_BITS);
                let zero = kb.iconst(0);
                let word = kb.fold_range(count, vec![zero], |kb, j, state| {
                    // index = (n * c + 64 w + j) * pixels + p
                    let ch = kb.b.ins().iadd_imm_s(j, (w * WORD_BITS) as i64);
                    let nc = kb.b.ins().imul_imm_s(n, c as i64);
                    let row = kb.b.ins().iadd(nc, ch);
                    let row_px = kb.b.ins().imul_imm_s(row, pixels as i64);
                    let index = kb.b.ins().iadd(row_px, p);
                    let b = bit(kb, index, ch);
                    let b64 = kb.b.ins().uextend(I64, b);
                    let shifted = kb.b.ins().ishl(b64, j);
                    vec![kb.b.ins().bor(state[0], shifted)]
                });
                // word offset = ((n * pixels + p) * nwords + w) * 8
                let np = kb.b.ins().imul_imm_s(n, pixels as i64);
                let px = kb.b.ins().iadd(np, p);
                let at = kb.addr(dst, px, (nwords * 8) as i64, (w * 8) as i64);
                kb.store(word[0], at, 0);
            }
        })
    });
}

/// Calls `each(kb, index, bit)` for every element of packed bits of `shape` at `src`, with
/// the element's row-major index and its bit (an i8 condition).
pub(crate) fn unpack(
    kb: &mut KernelBuilder,
    shape: &[usize],
    src: Value,
    mut each: impl FnMut(&mut KernelBuilder, Value, Value),
) {
    let (outer, c, pixels) = bit_geometry(shape);
    let nwords = words(c);
    kb.for_range(outer, |kb, n| {
        kb.for_range(c, |kb, ch| {
            kb.for_range(pixels, |kb, p| {
                let np = kb.b.ins().imul_imm_s(n, pixels as i64);
                let px = kb.b.ins().iadd(np, p);
                let word_index = kb.b.ins().ushr_imm_s(ch, 6);
                let base = kb.addr(src, px, (nwords * 8) as i64, 0);
                let at = kb.addr(base, word_index, 8, 0);
                let word = kb.load(I64, at, 0);
                let shift = kb.b.ins().band_imm_s(ch, 63);
                let shifted = kb.b.ins().ushr(word, shift);
                let bit = kb.b.ins().band_imm_s(shifted, 1);
                let set = kb.b.ins().icmp_imm_s(IntCC::NotEqual, bit, 0);
                let nc = kb.b.ins().imul_imm_s(n, c as i64);
                let row = kb.b.ins().iadd(nc, ch);
                let row_px = kb.b.ins().imul_imm_s(row, pixels as i64);
                let index = kb.b.ins().iadd(row_px, p);
                each(kb, index, set);
            })
        })
    });
}
