//! MaxPool and MinMaxPool (on floats, or on packed bipolar bits as OR and AND) and
//! ReduceMean.

use bnnc_ir::{Node, PoolAttrs};
use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::InstBuilder;

use super::window::{Tap, Window};
use super::{KernelBuilder, Operand};
use crate::schedule::{bit_geometry, Storage};
use crate::BackendError;

/// 2-D MaxPool, or MinPool on the channels `min` marks (empty: none). Taps outside the input
/// (padding, ceil mode) never count. On bits, the maximum of bipolar values is the OR of
/// their bits (1 is +1) and the minimum their AND.
pub(crate) fn max_pool(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &PoolAttrs,
    min: &[bool],
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let (&[n, c, h, w], &[_, _, oh, ow]) = (x.shape.as_slice(), out.shape.as_slice()) else {
        return Err(BackendError::unsupported(node, "the native MaxPool is 2-D"));
    };
    let is_min = |ch: usize| min.get(ch).copied().unwrap_or(false);
    let window = Window {
        image: (h, w),
        kernel: (attrs.kernel[0], attrs.kernel[1]),
        strides: (attrs.strides[0], attrs.strides[1]),
        dilations: (attrs.dilations[0], attrs.dilations[1]),
        pads: (attrs.pads[0], attrs.pads[1]),
    };
    // Windows that fit whatever the position need no test.
    let check = attrs.ceil_mode || attrs.pads.iter().any(|&p| p != 0);
    let bits = x.storage == Storage::Bits;
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    // Planes: every (n, c) for floats; every n for bits, whose pixels hold all channels.
    let (planes, pixel_words) = if bits {
        let (outer, ch, _) = bit_geometry(&x.shape);
        (outer, words(ch))
    } else {
        (n * c, 1)
    };
    // Per word of bits, the channels pooled by their minimum.
    let min_masks: Vec<u64> = (0..pixel_words)
        .map(|word| {
            (0..WORD_BITS)
                .filter(|&b| is_min(word * WORD_BITS + b))
                .fold(0u64, |m, b| m | 1 << b)
        })
        .collect();
    // Per f32 plane, whether its channel takes the minimum.
    let plane_min: Vec<i32> = (0..n * c).map(|p| i32::from(is_min(p % c))).collect();
    let plane_min_t = (!bits && min.contains(&true)).then(|| kb.table_i32(&plane_min));
    // A pixel is `pixel_words` words of bits, or one f32.
    let pixel_bytes = if bits { pixel_words * 8 } else { 4 };
    kb.for_range(planes, |kb, plane| {
        let in_plane = kb.addr(src, plane, (h * w * pixel_bytes) as i64, 0);
        let out_plane = kb.addr(dst, plane, (oh * ow * pixel_bytes) as i64, 0);
        // f32 planes taking the minimum pool the negated values (exact) and negate back.
        let sign = plane_min_t.map(|t| {
            let m = kb.load_at(I32, t, plane);
            let (minus, one) = (kb.fconst(-1.0), kb.fconst(1.0));
            kb.select(m, minus, one)
        });
        kb.for_range(oh, |kb, oy| {
            kb.for_range(ow, |kb, ox| {
                let taps = window.taps(kb, oy, ox, check);
                let oyw = kb.b.ins().imul_imm_s(oy, ow as i64);
                let opix = kb.b.ins().iadd(oyw, ox);
                if bits {
                    for (word, &mask) in min_masks.iter().enumerate() {
                        let (mut any, mut all) = (kb.iconst(0), kb.iconst(-1));
                        for &Tap { pixel, inside } in &taps {
                            let at = kb.addr(
                                in_plane,
                                pixel,
                                (pixel_words * 8) as i64,
                                (word * 8) as i64,
                            );
                            let v = kb.load(I64, at, 0);
                            // A tap outside counts as 0 for OR, as all ones for AND.
                            let (v_or, v_and) = match inside {
                                Some(inside) => {
                                    let (zero, ones) = (kb.iconst(0), kb.iconst(-1));
                                    (kb.select(inside, v, zero), kb.select(inside, v, ones))
                                }
                                None => (v, v),
                            };
                            any = kb.b.ins().bor(any, v_or);
                            if mask != 0 {
                                all = kb.b.ins().band(all, v_and);
                            }
                        }
                        let pooled = if mask == 0 {
                            any
                        } else {
                            let keep_any = kb.b.ins().band_imm_s(any, !mask as i64);
                            let keep_all = kb.b.ins().band_imm_s(all, mask as i64);
                            kb.b.ins().bor(keep_any, keep_all)
                        };
                        let at =
                            kb.addr(out_plane, opix, (pixel_words * 8) as i64, (word * 8) as i64);
                        kb.store(pooled, at, 0);
                    }
                } else {
                    let mut max = kb.fconst(f32::NEG_INFINITY);
                    for &Tap { pixel, inside } in &taps {
                        let v = kb.load_at(F32, in_plane, pixel);
                        let v = match sign {
                            Some(s) => kb.b.ins().fmul(v, s),
                            None => v,
                        };
                        // `if v > max { max = v }`, as the interpreter.
                        let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, v, max);
                        let take = match inside {
                            Some(inside) => kb.b.ins().band(greater, inside),
                            None => greater,
                        };
                        max = kb.select(take, v, max);
                    }
                    let max = match sign {
                        Some(s) => kb.b.ins().fmul(max, s),
                        None => max,
                    };
                    kb.store_at(max, out_plane, opix);
                }
            })
        })
    });
    Ok(())
}

/// ReduceMean over trailing axes: the f32 sum in order, divided by the count.
pub(crate) fn reduce_mean(
    kb: &mut KernelBuilder,
    node: &Node,
    axes: &[usize],
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let rank = x.shape.len();
    let reduced = |a: usize| axes.is_empty() || axes.contains(&a);
    let first = (0..rank).find(|&a| reduced(a)).unwrap_or(rank);
    if !(first..rank).all(reduced) {
        return Err(BackendError::unsupported(
            node,
            "the native ReduceMean reduces trailing axes only",
        ));
    }
    let count: usize = x.shape[first..].iter().product();
    let rows: usize = x.shape[..first].iter().product();
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (count * 4) as i64, 0);
        let zero = kb.fconst(0.0);
        let sum = kb.fold_range(count, vec![zero], |kb, i, s| {
            let v = kb.load_at(F32, row, i);
            vec![kb.b.ins().fadd(s[0], v)]
        })[0];
        let n = kb.fconst(count as f32);
        let mean = kb.b.ins().fdiv(sum, n);
        kb.store_at(mean, dst, r);
    });
    Ok(())
}
