//! XNOR-popcount kernels on packed bits ([`bnnc_runtime::packing`]): the dot product of two
//! bipolar vectors of length K is `K - 2 * popcount(a ^ w)`.
//!
//! Weights are packed at compile time into read-only data. Output channels are computed in
//! blocks of [`BLOCK`], so that each activation word loaded serves several filters. The
//! output stage either stores the `i32` dot products or, with the following threshold fused
//! in, compares each against its channel's integer threshold and writes packed bits.

use bnnc_ir::{ConvAttrs, Graph, Node, Op};
use bnnc_runtime::packing::{pack_conv_weights, pack_matrix_weights, words, WORD_BITS};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::{KernelBuilder, Operand};
use crate::schedule::bit_geometry;
use crate::BackendError;

/// Output channels computed together.
const BLOCK: usize = 4;

/// Integer thresholds beyond any accumulator: "always" and "never".
const BEYOND: i64 = 1 << 40;

/// What a kernel does with its dot products.
pub(crate) enum OutputStage {
    /// Stores them as `i32`, NCHW.
    Acc,
    /// Stores bit `sign[m] * dot >= bound[m]` of every channel `m`, packed channels-last.
    Bits { sign: Vec<i64>, bound: Vec<i64> },
}

impl OutputStage {
    /// The bit rule of a fused threshold (one threshold per channel, bipolar output): the
    /// bit is 1 where the threshold's output is +1.
    pub fn bits(graph: &Graph, t: &Node) -> Result<OutputStage, BackendError> {
        let Op::Threshold(attrs) = &t.op else {
            return Err(BackendError::unsupported(t, "internal: not a threshold"));
        };
        let konst = |i: usize| {
            graph
                .const_data(t.inputs[i])
                .map(|d| d.to_f32_vec())
                .ok_or_else(|| BackendError::unsupported(t, "the thresholds must be constant"))
        };
        let table = konst(1)?;
        let channels = graph.value(t.outputs[0]).ty.shape[1];
        let descending: Vec<bool> = match t.inputs.get(2) {
            Some(_) => konst(2)?.iter().map(|&d| d < 0.0).collect(),
            None => vec![false; channels],
        };
        let value = |count: f32| attrs.out_scale * count + attrs.out_bias > 0.0;
        let (b0, b1) = (value(0.0), value(1.0));
        let (mut sign, mut bound) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
        for c in 0..channels {
            let th = f64::from(table[if table.len() == 1 { 0 } else { c }]);
            // reached <=> s * dot >= b, for an integer dot.
            let (s, b) = if th.is_nan() {
                (1, BEYOND)
            } else if descending[c] {
                (
                    -1,
                    (-th.floor()).clamp(-BEYOND as f64, BEYOND as f64) as i64,
                )
            } else {
                (1, th.ceil().clamp(-BEYOND as f64, BEYOND as f64) as i64)
            };
            let (s, b) = match (b0, b1) {
                (false, true) => (s, b),
                // bit = not reached <=> s * dot < b <=> -s * dot >= 1 - b
                (true, false) => (-s, 1 - b),
                (true, true) => (1, -BEYOND),
                (false, false) => (1, BEYOND),
            };
            sign.push(s);
            bound.push(b);
        }
        Ok(OutputStage::Bits { sign, bound })
    }
}

fn weights(node: &Node, w: &Operand) -> Result<Vec<f32>, BackendError> {
    w.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, "the weights must be constant"))
}

/// `popcount(x ^ w)` added to `acc`.
fn xor_popcount(kb: &mut KernelBuilder, acc: Value, x: Value, w: Value) -> Value {
    let d = kb.b.ins().bxor(x, w);
    let p = kb.b.ins().popcnt(d);
    kb.b.ins().iadd(acc, p)
}

/// The dot products of filters `first..first + width` at the current position.
type Dots<'d> = dyn FnMut(&mut KernelBuilder, Value, usize) -> Vec<Value> + 'd;

/// Runs `dots` over all `m` output channels and stores the results for one position:
/// `acc_at` is the address of channel 0's `i32` (channels `channel_bytes` apart) and
/// `bits_at` the address of the position's packed words.
fn output_channels(
    kb: &mut KernelBuilder,
    m: usize,
    stage: &OutputStage,
    tables: Option<(Value, Value)>,
    (acc_at, channel_bytes): (Value, i64),
    dots: &mut Dots<'_>,
) {
    match stage {
        OutputStage::Acc => {
            let blocks = m / BLOCK;
            let mut store = |kb: &mut KernelBuilder, first: Value, width: usize| {
                let d = dots(kb, first, width);
                let at = kb.addr(acc_at, first, channel_bytes, 0);
                for (j, dot) in d.into_iter().enumerate() {
                    let dot = kb.b.ins().ireduce(I32, dot);
                    kb.store(dot, at, j as i64 * channel_bytes);
                }
            };
            kb.for_range(blocks, |kb, b| {
                let first = kb.b.ins().imul_imm_s(b, BLOCK as i64);
                store(kb, first, BLOCK);
            });
            for r in blocks * BLOCK..m {
                let first = kb.iconst(r as i64);
                store(kb, first, 1);
            }
        }
        OutputStage::Bits { .. } => {
            let (sign_t, bound_t) = tables.expect("bit stages come with their tables");
            // bit j of a word: sign * dot >= bound for channel `first + j`.
            let mut bits = |kb: &mut KernelBuilder, first: Value, width: usize, shift0: Value| {
                let d = dots(kb, first, width);
                let mut word = kb.iconst(0);
                for (j, dot) in d.into_iter().enumerate() {
                    let ch = kb.b.ins().iadd_imm_s(first, j as i64);
                    let s = kb.load_at(I64, sign_t, ch);
                    let b = kb.load_at(I64, bound_t, ch);
                    let v = kb.b.ins().imul(dot, s);
                    let on = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, b);
                    let on = kb.b.ins().uextend(I64, on);
                    let at = kb.b.ins().iadd_imm_s(shift0, j as i64);
                    let shifted = kb.b.ins().ishl(on, at);
                    word = kb.b.ins().bor(word, shifted);
                }
                word
            };
            for w in 0..words(m) {
                let count = WORD_BITS.min(m - w * WORD_BITS);
                let blocks = count / BLOCK;
                let zero = kb.iconst(0);
                let mut word = kb.fold_range(blocks, vec![zero], |kb, b, word| {
                    let shift = kb.b.ins().imul_imm_s(b, BLOCK as i64);
                    let first = kb.b.ins().iadd_imm_s(shift, (w * WORD_BITS) as i64);
                    let part = bits(kb, first, BLOCK, shift);
                    vec![kb.b.ins().bor(word[0], part)]
                })[0];
                for r in blocks * BLOCK..count {
                    let first = kb.iconst((w * WORD_BITS + r) as i64);
                    let shift = kb.iconst(r as i64);
                    let part = bits(kb, first, 1, shift);
                    word = kb.b.ins().bor(word, part);
                }
                kb.store(word, acc_at, (w * 8) as i64);
            }
        }
    }
}

/// The bit stage's tables (signs and bounds), if any.
fn stage_tables(kb: &mut KernelBuilder, stage: &OutputStage) -> Option<(Value, Value)> {
    match stage {
        OutputStage::Acc => None,
        OutputStage::Bits { sign, bound } => {
            let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Some((kb.table(bytes(sign)), kb.table(bytes(bound))))
        }
    }
}

/// XNOR matrix product: `a (rows, K)` bits times `w (K, M)`.
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
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
    let tables = stage_tables(kb, stage);
    let (src, dst) = (a.ptr, out.ptr);
    let row_out_bytes = match stage {
        OutputStage::Acc => m * 4,
        OutputStage::Bits { .. } => words(m) * 8,
    } as i64;
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (nw * 8) as i64, 0);
        let out_row = kb.addr(dst, r, row_out_bytes, 0);
        let mut dots = |kb: &mut KernelBuilder, first: Value, width: usize| -> Vec<Value> {
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
                        .map(|&a| a)
                        .enumerate()
                        .map(|(j, a)| {
                            let wv = kb.load(I64, wa, (j * nw * 8) as i64);
                            xor_popcount(kb, a, x, wv)
                        })
                        .collect()
                });
            }
            acc.into_iter()
                .map(|a| {
                    let twice = kb.b.ins().ishl_imm_s(a, 1);
                    let kk = kb.iconst(k as i64);
                    kb.b.ins().isub(kk, twice)
                })
                .collect()
        };
        output_channels(kb, m, stage, tables, (out_row, 4), &mut dots);
    });
    Ok(())
}

/// XNOR convolution (2-D, one group): `x (N, C, H, W)` bits, channels-last, times
/// `w (M, C, KH, KW)`. Taps in the zero padding contribute 0.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
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
    let tables = stage_tables(kb, stage);
    let (sh, sw) = (attrs.strides[0] as i64, attrs.strides[1] as i64);
    let (dh, dw) = (attrs.dilations[0] as i64, attrs.dilations[1] as i64);
    let (pt, pl) = (attrs.pads[0] as i64, attrs.pads[1] as i64);
    let padded = attrs.pads.iter().any(|&p| p != 0);
    let (src, dst) = (x.ptr, out.ptr);
    let pixel_bytes = (nw * 8) as i64;
    let positions = oh * ow;
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
                let mut dots = |kb: &mut KernelBuilder, first: Value, width: usize| -> Vec<Value> {
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
                    if padded {
                        return dots;
                    }
                    pcs.into_iter()
                        .map(|pc| {
                            let twice = kb.b.ins().ishl_imm_s(pc, 1);
                            let kk = kb.iconst((c * taps) as i64);
                            kb.b.ins().isub(kk, twice)
                        })
                        .collect()
                };
                let nm = kb.b.ins().imul_imm_s(n, m as i64);
                let (at, channel_bytes) = match stage {
                    OutputStage::Acc => {
                        let plane = kb.b.ins().imul_imm_s(nm, positions as i64);
                        let index = kb.b.ins().iadd(plane, pos);
                        (kb.addr(dst, index, 4, 0), (positions * 4) as i64)
                    }
                    OutputStage::Bits { .. } => {
                        let np = kb.b.ins().imul_imm_s(n, positions as i64);
                        let pixel = kb.b.ins().iadd(np, pos);
                        (kb.addr(dst, pixel, (words(m) * 8) as i64, 0), 0)
                    }
                };
                output_channels(kb, m, stage, tables, (at, channel_bytes), &mut dots);
            })
        })
    });
    Ok(())
}
