//! A 2-D convolution four neighbouring output columns to a vector ([`ColumnConv`]): each
//! tap's four inputs are one load, each weight one splat vector, and each filter's four
//! sums one vector of a block of eight filters. A padded, column-strided or scaled-integer
//! layer first copies each image into its workspace: zeros around it, its columns in
//! phases, or its integers.
//!
//! Exact sums (integers of at most 24 bits) are exact in any order; float sums run each
//! output's chain of fused multiply-adds over the window in the interpreter's order, one
//! output per lane, so that every lane's rounding is the interpreter's.

use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::column_conv::{ColumnConv, ColumnSum};
use crate::emit::convert::integer_of;
use crate::emit::KernelBuilder;

/// Filters summed at once: eight vectors of sums, one of inputs and one weight fit x86's
/// sixteen vector registers.
const FILTERS: usize = 8;
/// Up to this many terms a window's loop is unrolled whole; beyond, it loops over channels.
const UNROLLED_TERMS: usize = 64;
/// Up to this many blocks of filters (all groups') the blocks are unrolled.
const UNROLLED_BLOCKS: usize = 16;
/// Up to this many weights (256 KiB splat) the table holds each splat to a vector.
const SPLAT_WEIGHTS: usize = 1 << 14;

/// Where a column convolution reads and writes.
pub(super) struct ColumnIo {
    /// The input images, `(batch, c, h, w)` f32.
    pub src: Value,
    /// The output images, `(batch, m, oh, ow)` f32.
    pub dst: Value,
    /// One staged image, when [`ColumnConv::staged`].
    pub workspace: Option<Value>,
    /// The bias's table, if there is one.
    pub bias: Option<Value>,
}

/// Emits `plan` with the layer's weights `(m, c / groups, kh, kw)` (integers with
/// [`ColumnSum::Integers`]).
pub(super) fn conv(kb: &mut KernelBuilder, plan: &ColumnConv, weights: &[f32], io: &ColumnIo) {
    let (batch, c, h, w) = plan.image;
    let (m, kh, kw) = plan.filters;
    let (oh, ow) = plan.out;
    let (sy, sx) = plan.strides;
    let (dy, dx) = plan.dilations;
    // Where the kernel reads: the staged layout, or the image itself (one phase, unpadded).
    let (phases, rows, cols) = plan.read_layout();
    let (cg, mg) = (c / plan.groups, m / plan.groups);
    let (taps, k) = (kh * kw, cg * kh * kw);
    let blocks = mg.div_ceil(FILTERS);
    // Weights as [group][block][channel][tap][filter of the block], the last block padded
    // with zeros (whose sums are not stored); each weight splat to a vector in the table
    // (one load, no broadcast: a quarter faster on small layers) up to SPLAT_WEIGHTS, one
    // f32 beyond (the table four times smaller, and read again by every run of columns).
    let lanes = if m * k <= SPLAT_WEIGHTS { 4 } else { 1 };
    let mut table = vec![0f32; plan.groups * blocks * cg * taps * FILTERS * lanes];
    for j in 0..m {
        let (g, jj) = (j / mg, j % mg);
        let (blk, f) = (jj / FILTERS, jj % FILTERS);
        for kk in 0..k {
            let (ch, t) = (kk / taps, kk % taps);
            let at = (((g * blocks + blk) * cg + ch) * taps + t) * FILTERS + f;
            table[at * lanes..(at + 1) * lanes].fill(weights[j * k + kk]);
        }
    }
    let table = kb.table_f32(&table);
    // Each tap's offset from its window's first input, in bytes: column `kx * dx` of the
    // padded image is column `q` of phase `r`.
    let tap_offsets: Vec<i64> = (0..taps)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            let (q, r) = (kx * dx / sx, kx * dx % sx);
            (((r * rows + ky * dy) * cols + q) * 4) as i64
        })
        .collect();
    let channel_bytes = (phases * rows * cols * 4) as i64;
    let sum = &plan.sum;
    let fma = *sum == ColumnSum::Fma;
    // Each output channel's scale (integers), as a table: channels are run-time values.
    let scales = match sum {
        ColumnSum::Integers(p) => {
            let per_channel: Vec<f32> = (0..m)
                .map(|j| p.out_scales[j % p.out_scales.len()])
                .collect();
            Some(kb.table_f32(&per_channel))
        }
        ColumnSum::Exact | ColumnSum::Fma => None,
    };
    // Block `blk` (of `blocks` per group) of `count` filters in group `g`: one image read at
    // `image`, its sums written at `out_image`.
    let block = |kb: &mut KernelBuilder,
                 (image, out_image): (Value, Value),
                 g: Value,
                 blk: Value,
                 count: usize| {
        let group_image = kb.addr(image, g, cg as i64 * channel_bytes, 0);
        let gb = kb.addr(blk, g, blocks as i64, 0);
        let block_weights = kb.addr(table, gb, (cg * taps * FILTERS * lanes * 4) as i64, 0);
        // The block's first output channel, `g * mg + blk * FILTERS`.
        let in_group = kb.mul_imm(blk, FILTERS as i64);
        let first = kb.addr(in_group, g, mg as i64, 0);
        kb.for_range(oh, |kb, oy| {
            let in_row = kb.addr(group_image, oy, (sy * cols * 4) as i64, 0);
            let out_row = kb.addr(out_image, oy, (ow * 4) as i64, 0);
            kb.for_quads(ow, |kb, ox| {
                let at = kb.addr(in_row, ox, 4, 0);
                let zero = kb.fconst(0.0);
                let zv = kb.b.ins().splat(F32X4, zero);
                let init = vec![zv; count];
                let channel = |kb: &mut KernelBuilder, ch: Value, acc: Vec<Value>| {
                    let x_at = kb.addr(at, ch, channel_bytes, 0);
                    let w_at = kb.addr(block_weights, ch, (taps * FILTERS * lanes * 4) as i64, 0);
                    window_terms(kb, (fma, lanes), (x_at, w_at), &tap_offsets, acc)
                };
                let acc = if k <= UNROLLED_TERMS {
                    (0..cg).fold(init, |acc, ch| {
                        let ch = kb.iconst(ch as i64);
                        channel(kb, ch, acc)
                    })
                } else {
                    kb.fold_range(cg, init, channel)
                };
                let at_out = kb.addr(out_row, ox, 4, 0);
                for (f, a) in acc.into_iter().enumerate() {
                    let j = kb.add_imm(first, f as i64);
                    let a = epilogue(kb, (scales, io.bias), j, a);
                    let at = kb.addr(at_out, j, (oh * ow * 4) as i64, 0);
                    kb.store(a, at, 0);
                }
            });
        });
    };
    kb.for_range(batch, |kb, n| {
        let given = kb.addr(io.src, n, (c * h * w * 4) as i64, 0);
        let image = match io.workspace {
            Some(ws) => {
                stage(kb, plan, given, ws);
                ws
            }
            None => given,
        };
        let out_image = kb.addr(io.dst, n, (m * oh * ow * 4) as i64, 0);
        // Groups and whole blocks, then the last block's fewer filters: unrolled (their
        // offsets constants of the code) while few, in loops otherwise, so that the code
        // stays a few blocks' size however many filters and groups a layer has.
        let unrolled = plan.groups * blocks <= UNROLLED_BLOCKS;
        repeat(kb, plan.groups, unrolled, &mut |kb, g| {
            repeat(kb, mg / FILTERS, unrolled, &mut |kb, blk| {
                block(kb, (image, out_image), g, blk, FILTERS)
            });
            if mg % FILTERS != 0 {
                let blk = kb.iconst((mg / FILTERS) as i64);
                block(kb, (image, out_image), g, blk, mg % FILTERS);
            }
        });
    });
}

/// `body(i)` for `i` in `0..n`: unrolled, each `i` a constant, or in a loop.
fn repeat(
    kb: &mut KernelBuilder,
    n: usize,
    unrolled: bool,
    body: &mut dyn FnMut(&mut KernelBuilder, Value),
) {
    if unrolled {
        for i in 0..n {
            let i = kb.iconst(i as i64);
            body(kb, i);
        }
    } else {
        kb.for_range(n, |kb, i| body(kb, i));
    }
}

/// One channel's taps added to the block's sums (float ones with fused multiply-adds if
/// `fma`, exact ones with any): the inputs at `x_at` plus each tap's offset, the weights at
/// `w_at` as `[tap][filter]`, each splat (`lanes` 4) or not (1).
fn window_terms(
    kb: &mut KernelBuilder,
    (fma, lanes): (bool, usize),
    (x_at, w_at): (Value, Value),
    tap_offsets: &[i64],
    mut acc: Vec<Value>,
) -> Vec<Value> {
    for (t, &off) in tap_offsets.iter().enumerate() {
        let xv = kb.load(F32X4, x_at, off);
        for (f, a) in acc.iter_mut().enumerate() {
            // The weight, splat, goes first: x86's multiply-add overwrites its first
            // operand, and the inputs are read again by the next filter.
            let at = ((t * FILTERS + f) * lanes * 4) as i64;
            let wv = if lanes == 4 {
                kb.load_aligned(F32X4, w_at, at)
            } else {
                let w = kb.load_aligned(F32, w_at, at);
                kb.b.ins().splat(F32X4, w)
            };
            *a = if fma {
                kb.b.ins().fma(wv, xv, *a)
            } else {
                kb.exact_multiply_add(xv, wv, *a)
            };
        }
    }
    acc
}

/// Output channel `j`'s four sums as stored: times its scale (integers: `scales` is then
/// the table of every channel's), plus its bias.
fn epilogue(
    kb: &mut KernelBuilder,
    (scales, bias): (Option<Value>, Option<Value>),
    j: Value,
    a: Value,
) -> Value {
    let a = match scales {
        Some(t) => {
            let s = kb.load_at(F32, t, j);
            let sv = kb.b.ins().splat(F32X4, s);
            kb.b.ins().fmul(a, sv)
        }
        None => a,
    };
    match bias {
        Some(t) => {
            let bv = kb.load_at(F32, t, j);
            let bs = kb.b.ins().splat(F32X4, bv);
            kb.b.ins().fadd(a, bs)
        }
        None => a,
    }
}

/// Copies image `src` into `ws` as the kernel reads it ([`ColumnConv::read_layout`]):
/// inside its padding (zeros), in column phases, as the integers of its scale with
/// [`ColumnSum::Integers`].
fn stage(kb: &mut KernelBuilder, plan: &ColumnConv, src: Value, ws: Value) {
    let (_, c, h, w) = plan.image;
    let (phases, rows, cols) = plan.read_layout();
    let (top, left, _, _) = plan.pads;
    let len = c * phases * rows * cols;
    if (phases, rows, cols) != (1, h, w) {
        let zero = kb.fconst(0.0);
        let zv = kb.b.ins().splat(F32X4, zero);
        kb.for_range(len / 4, |kb, i| {
            let at = kb.addr(ws, i, 16, 0);
            kb.store(zv, at, 0);
        });
        for i in len / 4 * 4..len {
            kb.store(zero, ws, (i * 4) as i64);
        }
    }
    let a_scale = match &plan.sum {
        ColumnSum::Integers(p) if p.a_scale != 1.0 => Some(p.a_scale),
        _ => None,
    };
    // x / s rounded to the nearest integer (x being one, times s, rounded once).
    let integer = |kb: &mut KernelBuilder, v: Value| match a_scale {
        Some(s) => integer_of(kb, v, s),
        None => v,
    };
    let sx = plan.strides.1;
    kb.for_range(c, |kb, ch| {
        let from_plane = kb.addr(src, ch, (h * w * 4) as i64, 0);
        let to_plane = kb.addr(ws, ch, (phases * rows * cols * 4) as i64, 0);
        kb.for_range(h, |kb, y| {
            let from = kb.addr(from_plane, y, (w * 4) as i64, 0);
            // Input column x is padded column x + left: column (x + left) / sx of phase
            // (x + left) % sx. Per phase, its columns are every sx-th input column.
            for phase in 0..sx {
                let x0 = (phase + sx - left % sx) % sx;
                if x0 >= w {
                    continue;
                }
                let count = (w - x0).div_ceil(sx);
                let row = ((phase * rows + top) * cols + (x0 + left) / sx) * 4;
                let to = kb.addr(to_plane, y, (cols * 4) as i64, row as i64);
                let from = kb.add_imm(from, (x0 * 4) as i64);
                let vectors = if sx == 1 { count / 4 } else { 0 };
                kb.for_range(vectors, |kb, i| {
                    let at = kb.addr(from, i, 16, 0);
                    let v = kb.load(F32X4, at, 0);
                    let v = integer(kb, v);
                    let at = kb.addr(to, i, 16, 0);
                    kb.store(v, at, 0);
                });
                let rest = count - vectors * 4;
                kb.for_range(rest, |kb, i| {
                    let i = kb.add_imm(i, (vectors * 4) as i64);
                    let at = kb.addr(from, i, (sx * 4) as i64, 0);
                    let v = kb.load(F32, at, 0);
                    let v = integer(kb, v);
                    kb.store_at(v, to, i);
                });
            }
        });
    });
}
