//! XNOR-popcount kernels on packed bits ([`bnnc_runtime::packing`]): the dot product of two
//! bipolar vectors of length K is `K - 2 * popcount(a ^ w)`.
//!
//! Weights are packed at compile time into read-only data. Output channels are computed in
//! blocks of [`BLOCK`], so that each activation word loaded serves several filters.

use bnnc_ir::{ConvAttrs, Node};
use bnnc_runtime::packing::{pack_conv_weights, pack_matrix_weights, words};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::{KernelBuilder, Operand};
use crate::schedule::bit_geometry;
use crate::BackendError;

/// Output channels computed together.
const BLOCK: usize = 4;

fn weights(node: &Node, w: &Operand) -> Result<Vec<f32>, BackendError> {
    w.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, "the weights must be constant"))
}

/// Runs `body(kb, m, width)` over output channels `0..m` in blocks of [`BLOCK`], then the
/// remainder one at a time; `m` is the block's first channel.
fn channel_blocks(
    kb: &mut KernelBuilder,
    m: usize,
    mut body: impl FnMut(&mut KernelBuilder, Value, usize),
) {
    let blocks = m / BLOCK;
    kb.for_range(blocks, |kb, b| {
        let first = kb.b.ins().imul_imm_s(b, BLOCK as i64);
        body(kb, first, BLOCK);
    });
    for r in blocks * BLOCK..m {
        let first = kb.iconst(r as i64);
        body(kb, first, 1);
    }
}

/// `popcount(x ^ w)` added to `acc`.
fn xor_popcount(kb: &mut KernelBuilder, acc: Value, x: Value, w: Value) -> Value {
    let d = kb.b.ins().bxor(x, w);
    let p = kb.b.ins().popcnt(d);
    kb.b.ins().iadd(acc, p)
}

/// XNOR matrix product: `a (rows, K)` bits times `w (K, M)`, into `i32 (rows, M)`.
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, w) = (&operands[0], &operands[1]);
    let (rows, k, _) = bit_geometry(&a.shape);
    let &[wk, m] = w.shape.as_slice() else {
        return Err(BackendError::unsupported(
            node,
            "weights must be a (K, M) matrix",
        ));
    };
    if wk != k {
        return Err(BackendError::unsupported(node, "operand shapes disagree"));
    }
    let nw = words(k);
    let packed = kb.table_u64(&pack_matrix_weights(&weights(node, w)?, k, m));
    let (src, dst) = (a.ptr, out.ptr);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (nw * 8) as i64, 0);
        let out_row = kb.addr(dst, r, (m * 4) as i64, 0);
        channel_blocks(kb, m, |kb, first, width| {
            let wrow = kb.addr(packed, first, (nw * 8) as i64, 0);
            let zero = kb.iconst(0);
            let mut acc = vec![zero; width];
            if nw <= 32 {
                for word in 0..nw {
                    let x = kb.load(I64, row, (word * 8) as i64);
                    for (j, a) in acc.iter_mut().enumerate() {
                        let wv = kb.load(I64, wrow, ((j * nw + word) * 8) as i64);
                        *a = xor_popcount(kb, *a, x, wv);
                    }
                }
            } else {
                acc = kb.fold_range(nw, acc, |kb, word, acc| {
                    let xa = kb.addr(row, word, 8, 0);
                    let x = kb.load(I64, xa, 0);
                    let wa = kb.addr(wrow, word, 8, 0);
                    acc.iter()
                        .enumerate()
                        .map(|(j, &a)| {
                            let wv = kb.load(I64, wa, (j * nw * 8) as i64);
                            xor_popcount(kb, a, x, wv)
                        })
                        .collect()
                });
            }
            let out_at = kb.addr(out_row, first, 4, 0);
            for (j, a) in acc.into_iter().enumerate() {
                let twice = kb.b.ins().ishl_imm_s(a, 1);
                let kk = kb.iconst(k as i64);
                let dot = kb.b.ins().isub(kk, twice);
                let dot = kb.b.ins().ireduce(I32, dot);
                kb.store(dot, out_at, (j * 4) as i64);
            }
        });
    });
    Ok(())
}

/// XNOR convolution (2-D, one group): `x (N, C, H, W)` bits, channels-last, times
/// `w (M, C, KH, KW)`, into `i32 (N, M, OH, OW)`. Taps in the zero padding contribute 0.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let (&[batch, c, h, wd], &[m, wc, kh, kw], &[_, _, oh, ow]) =
        (x.shape.as_slice(), w.shape.as_slice(), out.shape.as_slice())
    else {
        return Err(BackendError::unsupported(
            node,
            "the native XNOR convolution is 2-D",
        ));
    };
    if attrs.group != 1 || wc != c {
        return Err(BackendError::unsupported(
            node,
            "grouped XNOR convolutions have no native kernel yet",
        ));
    }
    let nw = words(c);
    let taps = kh * kw;
    let packed = kb.table_u64(&pack_conv_weights(&weights(node, w)?, m, c, taps));
    let (sh, sw) = (attrs.strides[0] as i64, attrs.strides[1] as i64);
    let (dh, dw) = (attrs.dilations[0] as i64, attrs.dilations[1] as i64);
    let (pt, pl) = (attrs.pads[0] as i64, attrs.pads[1] as i64);
    let padded = attrs.pads.iter().any(|&p| p != 0);
    let (src, dst) = (x.ptr, out.ptr);
    let pixel_bytes = (nw * 8) as i64;
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, h as i64 * wd as i64 * pixel_bytes, 0);
        kb.for_range(oh, |kb, oy| {
            kb.for_range(ow, |kb, ox| {
                // Per tap: its pixel's address, and whether it is inside the image.
                let mut tap_at = Vec::with_capacity(taps);
                for ky in 0..kh as i64 {
                    for kx in 0..kw as i64 {
                        let y0 = kb.b.ins().imul_imm_s(oy, sh);
                        let iy = kb.b.ins().iadd_imm_s(y0, ky * dh - pt);
                        let x0 = kb.b.ins().imul_imm_s(ox, sw);
                        let ix = kb.b.ins().iadd_imm_s(x0, kx * dw - pl);
                        let row = kb.b.ins().imul_imm_s(iy, wd as i64);
                        let pixel = kb.b.ins().iadd(row, ix);
                        let at = kb.addr(image, pixel, pixel_bytes, 0);
                        if padded {
                            // Unsigned compares also reject negative coordinates.
                            let in_y = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iy, h as i64);
                            let in_x =
                                kb.b.ins()
                                    .icmp_imm_s(IntCC::UnsignedLessThan, ix, wd as i64);
                            let inside = kb.b.ins().band(in_y, in_x);
                            // An outside tap reads the image's first pixel, then counts 0.
                            let safe = kb.select(inside, at, image);
                            tap_at.push((safe, Some(inside)));
                        } else {
                            tap_at.push((at, None));
                        }
                    }
                }
                let oyx = kb.b.ins().imul_imm_s(oy, ow as i64);
                let pos = kb.b.ins().iadd(oyx, ox);
                channel_blocks(kb, m, |kb, first, width| {
                    let filters = kb.addr(packed, first, (taps * nw * 8) as i64, 0);
                    let zero = kb.iconst(0);
                    let mut dots = vec![zero; width];
                    let mut pcs = vec![zero; width];
                    for (t, &(at, inside)) in tap_at.iter().enumerate() {
                        let mut tap_pc = vec![zero; width];
                        for word in 0..nw {
                            let xv = kb.load(I64, at, (word * 8) as i64);
                            for (j, pc) in tap_pc.iter_mut().enumerate() {
                                let off = (((j * taps + t) * nw + word) * 8) as i64;
                                let wv = kb.load(I64, filters, off);
                                *pc = xor_popcount(kb, *pc, xv, wv);
                            }
                        }
                        match inside {
                            None => {
                                for (p, tp) in pcs.iter_mut().zip(&tap_pc) {
                                    *p = kb.b.ins().iadd(*p, *tp);
                                }
                            }
                            Some(inside) => {
                                for (d, tp) in dots.iter_mut().zip(&tap_pc) {
                                    let twice = kb.b.ins().ishl_imm_s(*tp, 1);
                                    let cc = kb.iconst(c as i64);
                                    let tap_dot = kb.b.ins().isub(cc, twice);
                                    let contribution = kb.select(inside, tap_dot, zero);
                                    *d = kb.b.ins().iadd(*d, contribution);
                                }
                            }
                        }
                    }
                    let nm = kb.b.ins().imul_imm_s(n, m as i64);
                    let channel = kb.b.ins().iadd(nm, first);
                    let plane = kb.b.ins().imul_imm_s(channel, (oh * ow) as i64);
                    let index = kb.b.ins().iadd(plane, pos);
                    let out_at = kb.addr(dst, index, 4, 0);
                    for j in 0..width {
                        let dot = if padded {
                            dots[j]
                        } else {
                            let twice = kb.b.ins().ishl_imm_s(pcs[j], 1);
                            let kk = kb.iconst((c * taps) as i64);
                            kb.b.ins().isub(kk, twice)
                        };
                        let dot = kb.b.ins().ireduce(I32, dot);
                        kb.store(dot, out_at, (j * oh * ow * 4) as i64);
                    }
                });
            })
        })
    });
    Ok(())
}
