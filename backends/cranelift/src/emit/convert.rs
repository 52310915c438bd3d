//! Conversions between storages: `f32` and `i32` elements, packed bits, and bit planes.

use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4, I64};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};

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
        (Storage::F32, Storage::F32) | (Storage::I32, Storage::I32) => {
            elementwise_words(kb, n, (src, dst), |_, v| v)
        }
        (a, b) if a == b => {
            let words = crate::schedule::storage_bytes(&from.shape, a) / 8;
            kb.for_range(words, |kb, i| {
                let v = kb.load_at(I64, src, i);
                kb.store_at(v, dst, i);
            })
        }
        (Storage::F32, Storage::Planes(planes)) if bit_geometry(&from.shape).2 == 1 => {
            let (rows, c, _) = bit_geometry(&from.shape);
            planes_of_rows(
                kb,
                (src, dst),
                (rows, c),
                planes.into(),
                value_scale(&from.elem),
            );
        }
        (Storage::F32 | Storage::I32, Storage::Planes(planes)) => {
            let float = from.storage == Storage::F32;
            let scale = value_scale(&from.elem);
            pack_planes(kb, &from.shape, dst, planes.into(), |kb, index, _| {
                if float {
                    let v = kb.load_at(F32, src, index);
                    let q = integer_of(kb, v, scale);
                    kb.b.ins().fcvt_to_sint_sat(I64, q)
                } else {
                    let v = kb.load_at(I32, src, index);
                    kb.b.ins().sextend(I64, v)
                }
            })
        }
        (Storage::Planes(planes), Storage::F32 | Storage::I32) => {
            let float = to.storage == Storage::F32;
            let scale = value_scale(&from.elem);
            let signed = from
                .elem
                .int_type()
                .and_then(|t| t.planes())
                .is_some_and(|p| p.1);
            unpack_planes(
                kb,
                &from.shape,
                src,
                (planes.into(), signed),
                |kb, index, level| {
                    let v = kb.b.ins().ireduce(I32, level);
                    let v = if float {
                        let f = kb.i32_to_f32(v);
                        if scale == 1.0 {
                            f
                        } else {
                            let s = kb.fconst(scale);
                            kb.b.ins().fmul(f, s)
                        }
                    } else {
                        v
                    };
                    kb.store_at(v, dst, index);
                },
            )
        }
        (Storage::I32, Storage::F32) => elementwise_words(kb, n, (src, dst), |kb, v| {
            let ty = kb.b.func.dfg.value_type(v);
            let f = if ty.is_vector() { F32X4 } else { F32 };
            kb.b.ins().fcvt_from_sint(f, v)
        }),
        (Storage::F32, Storage::I32) => elementwise_words(kb, n, (src, dst), |kb, v| {
            // The lanes' order is the same either way (a vector's bitcast names it).
            let ty = kb.b.func.dfg.value_type(v);
            let (f, i, flags) = if ty.is_vector() {
                let little = MemFlagsData::new().with_endianness(Endianness::Little);
                (F32X4, I32X4, little)
            } else {
                (F32, I32, MemFlagsData::new())
            };
            let x = kb.b.ins().bitcast(f, flags, v);
            kb.b.ins().fcvt_to_sint_sat(i, x)
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
        (a, b) => {
            return Err(BackendError::Codegen {
                function: "convert".into(),
                reason: format!("internal: no conversion from {a:?} to {b:?}"),
            })
        }
    }
    Ok(())
}

/// `out[i] = f(in[i])` for `n` 4-byte elements, read as their bits (`i32`, or `i32x4` four
/// at a time, then one by one for the last few): a copy or a conversion of each element.
fn elementwise_words(
    kb: &mut KernelBuilder,
    n: usize,
    (src, dst): (Value, Value),
    f: impl Fn(&mut KernelBuilder, Value) -> Value,
) {
    kb.for_range(n / 4, |kb, i| {
        let from = kb.addr(src, i, 16, 0);
        let v = kb.load(I32X4, from, 0);
        let y = f(kb, v);
        let to = kb.addr(dst, i, 16, 0);
        kb.store(y, to, 0);
    });
    for i in n / 4 * 4..n {
        let v = kb.load(I32, src, (i * 4) as i64);
        let y = f(kb, v);
        kb.store(y, dst, (i * 4) as i64);
    }
}

/// [`pack_planes`] of `rows` rows of `c` contiguous f32 (one pixel each), four at a time:
/// each lane's integer as [`integer_of`] computes it ([`planes_of_row_quads`]).
fn planes_of_rows(
    kb: &mut KernelBuilder,
    (src, dst): (Value, Value),
    (rows, c): (usize, usize),
    planes: usize,
    scale: f32,
) {
    let splat_f = |kb: &mut KernelBuilder, v: f32| {
        let f = kb.fconst(v);
        kb.b.ins().splat(F32X4, f)
    };
    let (scale_v, magic) = (splat_f(kb, scale), splat_f(kb, 12_582_912.0));
    planes_of_row_quads(kb, (src, dst), (rows, c), planes, |kb, v, _| {
        let v = if scale == 1.0 {
            v
        } else {
            kb.b.ins().fdiv(v, scale_v)
        };
        let shifted = kb.b.ins().fadd(v, magic);
        let rounded = kb.b.ins().fsub(shifted, magic);
        kb.b.ins().fcvt_to_sint_sat(I32X4, rounded)
    });
}

/// Rows of `c` contiguous f32 (one pixel each) into `planes` bit planes at `dst`, four
/// elements at a time: `int(kb, v, quad)` gives the integers (an `i32x4`) of the four
/// elements `v` (an `f32x4`, quad `quad` of the row, its lanes past the row's end 0), and
/// each plane's bits are their sign bits after a shift ([`or_quad_planes`]), sixteen
/// vectors a word. The lanes past the row's end store no bits.
pub(crate) fn planes_of_row_quads(
    kb: &mut KernelBuilder,
    (src, dst): (Value, Value),
    (rows, c): (usize, usize),
    planes: usize,
    mut int: impl FnMut(&mut KernelBuilder, Value, usize) -> Value,
) {
    let nwords = words(c);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (c * 4) as i64, 0);
        let out = kb.addr(dst, r, (planes * nwords * 8) as i64, 0);
        for w in 0..nwords {
            let first = w * WORD_BITS;
            let count = WORD_BITS.min(c - first);
            let z = kb.iconst(0);
            let mut plane_words = vec![z; planes];
            for q in 0..count.div_ceil(4) {
                let live = 4.min(count - 4 * q);
                let v = load_quad(kb, row, first + 4 * q, live);
                let i = int(kb, v, first / 4 + q);
                or_quad_planes(kb, i, (q, live), &mut plane_words);
            }
            for (p, &word) in plane_words.iter().enumerate() {
                kb.store(word, out, ((p * nwords + w) * 8) as i64);
            }
        }
    });
}

/// Four f32 of a row from element `first` on (`row` a byte address): the first `live`
/// (1 to 4) loaded, the lanes past them 0.
fn load_quad(kb: &mut KernelBuilder, row: Value, first: usize, live: usize) -> Value {
    if live == 4 {
        return kb.load(F32X4, row, (first * 4) as i64);
    }
    let zero = kb.fconst(0.0);
    let mut v = kb.b.ins().splat(F32X4, zero);
    for l in 0..live {
        let x = kb.load(F32, row, ((first + l) * 4) as i64);
        v = kb.b.ins().insertlane(v, x, l as u8);
    }
    v
}

/// ORs the bit planes of four elements' integers `int` (an `i32x4`, quad `q` of a 64-bit
/// word) into `words`, one word per plane: plane p's bit moved to the sign bit, the lanes'
/// high bits (`vhigh_bits`) placed at bits `4q..4q + 4`. Only the first `live` lanes count.
fn or_quad_planes(
    kb: &mut KernelBuilder,
    int: Value,
    (q, live): (usize, usize),
    words: &mut [Value],
) {
    for (p, word) in words.iter_mut().enumerate() {
        let top = kb.b.ins().ishl_imm_s(int, 31 - p as i64);
        let mut four = kb.b.ins().vhigh_bits(I64, top);
        if live < 4 {
            four = kb.b.ins().band_imm_s(four, (1 << live) - 1);
        }
        let four = kb.b.ins().ishl_imm_s(four, (4 * q) as i64);
        *word = kb.b.ins().bor(*word, four);
    }
}

/// The scale of a value type's integers: `value = int * scale` (1 for plain integers).
fn value_scale(elem: &bnnc_ir::ElemType) -> f32 {
    match elem {
        bnnc_ir::ElemType::Scaled(_, bnnc_ir::Scale::Tensor(s)) => *s,
        _ => 1.0,
    }
}

/// Packs an NCHW tensor of `shape` (at least four pixels) into bits at `dst`, four pixels at
/// a time: `lanes(kb, at, channel)` gives, for the four pixels whose channel-`channel`
/// elements start at `at` (contiguous in NCHW), their bits as an `i32x4` mask (all ones
/// for 1), or `None` for bits known to be 0 ([`pack_pixels4_planes`] of one plane).
pub(crate) fn pack_pixels4(
    kb: &mut KernelBuilder,
    shape: &[usize],
    (src, dst): (Value, Value),
    mut lanes: impl FnMut(&mut KernelBuilder, Value, usize) -> Option<Value>,
) {
    pack_pixels4_planes(kb, shape, (src, dst), 1, |kb, at, c| {
        lanes(kb, at, c).map(|mask| vec![mask])
    });
}

/// Packs an NCHW tensor of `shape` (at least four pixels) into `planes` bit planes at `dst`
/// ([`Storage::Planes`]), four pixels at a time: `lanes(kb, at, channel)` gives, for the
/// four pixels whose channel-`channel` elements start at `at` (contiguous in NCHW), one
/// `i32x4` mask per plane (all ones for 1), or `None` for bits known to be 0. Each mask's
/// lanes go to bit `channel % 64` of their pixels' words of its plane, kept in two `i64x2`
/// per plane while a word fills.
pub(crate) fn pack_pixels4_planes(
    kb: &mut KernelBuilder,
    shape: &[usize],
    (src, dst): (Value, Value),
    planes: usize,
    mut lanes: impl FnMut(&mut KernelBuilder, Value, usize) -> Option<Vec<Value>>,
) {
    use cranelift_codegen::ir::types::I64X2;
    let (outer, c, pixels) = bit_geometry(shape);
    debug_assert!(pixels >= 4);
    let nwords = words(c);
    let pixel_bytes = (planes * nwords * 8) as i64;
    // One bit per channel of a word, as i64x2 constants.
    let bits: Vec<u64> = (0..WORD_BITS).flat_map(|j| [1u64 << j; 2]).collect();
    let bits = kb.table_u64(&bits);
    kb.for_range(outer, |kb, n| {
        let image = kb.addr(src, n, (c * pixels * 4) as i64, 0);
        let out_image = kb.addr(dst, n, pixels as i64 * pixel_bytes, 0);
        kb.for_range(pixels.div_ceil(4), |kb, b| {
            // The last block overlaps the one before when 4 does not divide the pixels.
            let start = kb.b.ins().imul_imm_s(b, 4);
            let last = kb.iconst((pixels - 4) as i64);
            let p = kb.b.ins().umin(start, last);
            let at = kb.addr(image, p, 4, 0);
            let out_at = kb.addr(out_image, p, pixel_bytes, 0);
            for w in 0..nwords {
                let zero = kb.iconst(0);
                let zero = kb.b.ins().splat(I64X2, zero);
                let mut acc = vec![[zero; 2]; planes];
                for j in 0..WORD_BITS.min(c - w * WORD_BITS) {
                    let ch = w * WORD_BITS + j;
                    let channel_at = kb.add_imm(at, (ch * pixels * 4) as i64);
                    let Some(masks) = lanes(kb, channel_at, ch) else {
                        continue;
                    };
                    let bit = kb.load_aligned(I64X2, bits, (j * 16) as i64);
                    for (plane, mask) in acc.iter_mut().zip(masks) {
                        let halves = [kb.b.ins().swiden_low(mask), kb.b.ins().swiden_high(mask)];
                        for (a, h) in plane.iter_mut().zip(halves) {
                            let on = kb.b.ins().band(h, bit);
                            *a = kb.b.ins().bor(*a, on);
                        }
                    }
                }
                for (plane, halves) in acc.into_iter().enumerate() {
                    for (half, a) in halves.into_iter().enumerate() {
                        for lane in 0..2u8 {
                            let word = kb.b.ins().extractlane(a, lane);
                            let pixel = half as i64 * 2 + i64::from(lane);
                            let at = pixel * pixel_bytes + ((plane * nwords + w) * 8) as i64;
                            kb.store(word, out_at, at);
                        }
                    }
                }
            }
        });
    });
}

/// Packs a tensor of `shape` into bits at `dst`: `bit(kb, index, channel)` gives the bit (an
/// i8 condition) of the element at row-major `index`, in `channel`.
pub(crate) fn pack(
    kb: &mut KernelBuilder,
    shape: &[usize],
    dst: Value,
    mut bit: impl FnMut(&mut KernelBuilder, Value, Value) -> Value,
) {
    pack_planes(kb, shape, dst, 1, |kb, index, channel| {
        let b = bit(kb, index, channel);
        kb.b.ins().uextend(I64, b)
    })
}

/// Packs a tensor of `shape` into `planes` bit planes at `dst` ([`Storage::Planes`]):
/// `level(kb, index, channel)` gives the integer (an i64, whose low `planes` bits are
/// stored) of the element at row-major `index`, in `channel`.
pub(crate) fn pack_planes(
    kb: &mut KernelBuilder,
    shape: &[usize],
    dst: Value,
    planes: usize,
    mut level: impl FnMut(&mut KernelBuilder, Value, Value) -> Value,
) {
    let (outer, c, pixels) = bit_geometry(shape);
    let nwords = words(c);
    kb.for_range(outer, |kb, n| {
        kb.for_range(pixels, |kb, p| {
            // pixel = n * pixels + p; its words start at pixel * planes * nwords.
            let np = kb.b.ins().imul_imm_s(n, pixels as i64);
            let px = kb.b.ins().iadd(np, p);
            let at = kb.addr(dst, px, (planes * nwords * 8) as i64, 0);
            for w in 0..nwords {
                let count = WORD_BITS.min(c - w * WORD_BITS);
                let zero = kb.iconst(0);
                let plane_words = kb.fold_range(count, vec![zero; planes], |kb, j, mut words| {
                    // index = (n * c + 64 w + j) * pixels + p
                    let ch = kb.b.ins().iadd_imm_s(j, (w * WORD_BITS) as i64);
                    let nc = kb.b.ins().imul_imm_s(n, c as i64);
                    let row = kb.b.ins().iadd(nc, ch);
                    let row_px = kb.b.ins().imul_imm_s(row, pixels as i64);
                    let index = kb.b.ins().iadd(row_px, p);
                    let v = level(kb, index, ch);
                    for (plane, word) in words.iter_mut().enumerate() {
                        let shifted = kb.b.ins().ushr_imm_s(v, plane as i64);
                        let bit = kb.b.ins().band_imm_s(shifted, 1);
                        let placed = kb.b.ins().ishl(bit, j);
                        *word = kb.b.ins().bor(*word, placed);
                    }
                    words
                });
                for (plane, word) in plane_words.into_iter().enumerate() {
                    kb.store(word, at, ((plane * nwords + w) * 8) as i64);
                }
            }
        })
    });
}

/// Calls `each(kb, index, level)` for every element of `(planes, signed)` bit planes of
/// `shape` at `src` ([`Storage::Planes`]), with the element's row-major index and its
/// integer as an i64.
pub(crate) fn unpack_planes(
    kb: &mut KernelBuilder,
    shape: &[usize],
    src: Value,
    (planes, signed): (usize, bool),
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
                let base = kb.addr(src, px, (planes * nwords * 8) as i64, 0);
                let at = kb.addr(base, word_index, 8, 0);
                let shift = kb.b.ins().band_imm_s(ch, 63);
                let mut level = kb.iconst(0);
                for plane in 0..planes {
                    let word = kb.load(I64, at, (plane * nwords * 8) as i64);
                    let shifted = kb.b.ins().ushr(word, shift);
                    let bit = kb.b.ins().band_imm_s(shifted, 1);
                    let placed = kb.b.ins().ishl_imm_s(bit, plane as i64);
                    level = if signed && plane + 1 == planes {
                        kb.b.ins().isub(level, placed)
                    } else {
                        kb.b.ins().bor(level, placed)
                    };
                }
                let nc = kb.b.ins().imul_imm_s(n, c as i64);
                let row = kb.b.ins().iadd(nc, ch);
                let row_px = kb.b.ins().imul_imm_s(row, pixels as i64);
                let index = kb.b.ins().iadd(row_px, p);
                each(kb, index, level);
            })
        })
    });
}

/// Calls `each(kb, index, bit)` for every element of packed bits of `shape` at `src`, with
/// the element's row-major index and its bit (an i8 condition): packed bits are one
/// unsigned bit plane ([`unpack_planes`]).
pub(crate) fn unpack(
    kb: &mut KernelBuilder,
    shape: &[usize],
    src: Value,
    mut each: impl FnMut(&mut KernelBuilder, Value, Value),
) {
    unpack_planes(kb, shape, src, (1, false), |kb, index, level| {
        let set = kb.b.ins().icmp_imm_s(IntCC::NotEqual, level, 0);
        each(kb, index, set);
    })
}

/// 1.5 * 2^23: an f32 `x` with `|x| < 2^22` plus this is rounded to an integer (to even),
/// which the sum's low mantissa bits hold.
pub(crate) const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// `v / scale` rounded to the nearest integer, plus [`ROUNDING_MAGIC`], for an f32 scalar or
/// vector `v` (the value `int * scale`, rounded once, so exact while `|int| < 2^22`).
pub(crate) fn plus_rounding_magic(kb: &mut KernelBuilder, v: Value, scale: f32) -> Value {
    let q = if scale == 1.0 {
        v
    } else {
        let s = f32_like(kb, v, scale);
        kb.b.ins().fdiv(v, s)
    };
    let magic = f32_like(kb, v, ROUNDING_MAGIC);
    kb.b.ins().fadd(q, magic)
}

/// The integer `v / scale` of a value `int * scale` (rounded once), as an f32 scalar or
/// vector like `v`: rounded to nearest by adding and removing [`ROUNDING_MAGIC`], exact
/// while `|int| < 2^22`.
pub(crate) fn integer_of(kb: &mut KernelBuilder, v: Value, scale: f32) -> Value {
    if scale == 1.0 {
        return v;
    }
    let shifted = plus_rounding_magic(kb, v, scale);
    let magic = f32_like(kb, v, ROUNDING_MAGIC);
    kb.b.ins().fsub(shifted, magic)
}

/// The constant `x` as an f32 scalar, or splat to a vector, as `like` is.
fn f32_like(kb: &mut KernelBuilder, like: Value, x: f32) -> Value {
    let ty = kb.b.func.dfg.value_type(like);
    let c = kb.fconst(x);
    if ty.is_vector() {
        kb.b.ins().splat(ty, c)
    } else {
        c
    }
}
