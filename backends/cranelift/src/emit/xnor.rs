//! XNOR-popcount kernels on packed bits ([`bnnc_runtime::packing`]): the dot product of two
//! bipolar vectors of length K is `K - 2 * popcount(a ^ w)`.
//!
//! Weights are packed at compile time into read-only data. Output channels are computed in
//! blocks of [`BLOCK`], so that each activation word loaded serves several filters. The
//! output stage either stores the `i32` dot products or, with the following threshold fused
//! in, compares each against its channel's integer threshold and writes packed bits.

use bnnc_ir::{ConvAttrs, Graph, Node, Op};
use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I32X4, I64, I64X2, I8X16};
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};

use super::window::{flat_index, for_each_position, Window};
use super::{KernelBuilder, Operand};
use crate::groups::GroupWords;
use crate::schedule::bit_geometry;
use crate::stage::{BitPool, OutputStage};
use crate::BackendError;

/// Output channels a convolution computes together (four pairs of vectors).
const BLOCK: usize = 8;

/// The most words a window of the vector convolution has: its i16 sums, 16 per word at
/// most, stay below 2^15, and its splat activations take at most 64 KiB of stack.
const MAX_VECTOR_WORDS: usize = 2047;

/// Output channels a matrix product computes together (scalar registers).
const MATMUL_BLOCK: usize = 4;

/// The XNOR convolution of `node` and its output `stage` (a fused step's bits, or an unfused
/// one's sums) as a kernel for another code generator, if it is one such kernels cover
/// (2-D with any group, or 1-D with one group, padded or not; 3-D ones run on this crate's
/// kernel). An XNOR matrix product is offered as the 1x1 convolution it is (see
/// [`matmul_as_conv`]). With `pool`, the kernel pools its bits too.
pub(crate) fn conv_kernel(
    graph: &Graph,
    node: &Node,
    stage: &OutputStage,
    pool: Option<BitPool>,
    symbol: String,
) -> Result<Option<crate::XnorConvKernel>, BackendError> {
    let shape = |v| graph.value(v).ty.shape.clone();
    let (x, w, out) = (
        shape(node.inputs[0]),
        shape(node.inputs[1]),
        shape(node.outputs[0]),
    );
    let Some(data) = graph.const_data(node.inputs[1]) else {
        return Ok(None);
    };
    // The weights are packed as the kernels read them: (M, taps, words), one tap for a
    // matrix product.
    let weights = packed_words(data);
    let (input, filters, output, strides, dilations, groups, pads) =
        match (&node.op, &x[..], &w[..]) {
            (Op::XnorMatMul, &[rows, k], &[m, _]) => (
                (rows, k, 1, 1),
                (m, 1, 1),
                (1, 1),
                (1, 1),
                (1, 1),
                1,
                (0, 0),
            ),
            // A 1-D convolution is the 2-D one of height 1: the same taps in the same order,
            // and integer sums besides.
            (Op::XnorConv(attrs), &[batch, c, wd], &[m, kw, _]) => {
                let &[_, _, ow] = &out[..] else {
                    return Ok(None);
                };
                if attrs.group != 1 {
                    return Ok(None);
                }
                (
                    (batch, c, 1, wd),
                    (m, 1, kw),
                    (1, ow),
                    (1, attrs.strides[0]),
                    (1, attrs.dilations[0]),
                    1,
                    (0, attrs.pads[0]),
                )
            }
            (Op::XnorConv(attrs), &[batch, c, h, wd], &[m, kh, kw, _]) => {
                let &[_, _, oh, ow] = &out[..] else {
                    return Ok(None);
                };
                (
                    (batch, c, h, wd),
                    (m, kh, kw),
                    (oh, ow),
                    (attrs.strides[0], attrs.strides[1]),
                    (attrs.dilations[0], attrs.dilations[1]),
                    attrs.group.max(1),
                    (attrs.pads[0], attrs.pads[1]),
                )
            }
            _ => return Ok(None),
        };
    let writes = match stage.clone() {
        OutputStage::Bits { sign, bound } => crate::XnorOutput::Bits { sign, bound },
        OutputStage::Acc if pool.is_none() => crate::XnorOutput::Sums,
        _ => return Ok(None),
    };
    // Pooled, it computes the positions the pooled pixels gather.
    let (output, pool) = match pool {
        Some(p) => (
            p.computed(),
            Some(crate::KernelPool {
                window: p.window,
                pooled: p.pooled,
            }),
        ),
        None => (output, None),
    };
    Ok(Some(crate::XnorConvKernel {
        symbol,
        input,
        filters,
        output,
        strides,
        dilations,
        groups,
        weights,
        pads,
        writes,
        pool,
    }))
}

/// An XNOR matrix product `(rows, K) x (K, M)` is a 1x1 convolution of `rows` images of one
/// pixel and `K` channels. On packed bits the layouts coincide (activations `[row][word]`,
/// filters `[filter][word]`, results `[row][word]` or `[row][filter]`), so the
/// convolution's kernels serve it, the vector filter pairs included (with vector popcounts;
/// without them, [`matmul`]).
pub(crate) fn matmul_as_conv(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
    simd: bool,
) -> Result<(), BackendError> {
    let (a, w) = (&operands[0], &operands[1]);
    // Without vector popcounts the register-blocked scalar product is the faster.
    let (true, &[rows, k], &[m, nw]) = (simd, a.shape.as_slice(), w.shape.as_slice()) else {
        return matmul(kb, node, operands, out, stage);
    };
    // The packed (M, words) weights are (M, 1, 1, words) filters as they are.
    let view = |shape: Vec<usize>, of: &Operand| Operand {
        data: of.data.clone(),
        shape,
        elem: of.elem.clone(),
        storage: of.storage,
        ptr: of.ptr,
    };
    let x = view(vec![rows, k, 1, 1], a);
    let filters = view(vec![m, 1, 1, nw], w);
    let out = view(vec![rows, m, 1, 1], out);
    let attrs = ConvAttrs {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![0; 4],
        group: 1,
    };
    conv(kb, node, &attrs, &[x, filters], &out, stage, simd, None)
}

/// The weights' packed words, as the lowering pass packed them ([`bnnc_ir::packing`]).
fn weights(node: &Node, w: &Operand) -> Result<Vec<u64>, BackendError> {
    w.data
        .as_deref()
        .map(packed_words)
        .ok_or_else(|| BackendError::unsupported(node, "the weights must be constant"))
}

/// The words of a packed-weights constant (stored as the bits of i64 elements).
fn packed_words(t: &bnnc_ir::Tensor) -> Vec<u64> {
    t.to_i64_vec().into_iter().map(|w| w as u64).collect()
}

/// XNOR kernels write sums or bits; multi-level outputs are the bit-serial kernels'.
fn refuse_levels(node: &Node, stage: &OutputStage) -> Result<(), BackendError> {
    match stage {
        OutputStage::Levels(_) => Err(BackendError::unsupported(
            node,
            "internal: an XNOR kernel was given a multi-level output stage",
        )),
        _ => Ok(()),
    }
}

/// `popcount(x ^ w)` added to `acc`.
fn xor_popcount(kb: &mut KernelBuilder, acc: Value, x: Value, w: Value) -> Value {
    let d = kb.b.ins().bxor(x, w);
    let p = kb.b.ins().popcnt(d);
    kb.b.ins().iadd(acc, p)
}

/// Dot products of consecutive filters.
enum Dot {
    /// One i64 per filter.
    Scalars(Vec<Value>),
    /// Four filters' dots per `i32x4`.
    Quads(Vec<Value>),
}

impl Dot {
    fn scalars(self, kb: &mut KernelBuilder) -> Vec<Value> {
        match self {
            Dot::Scalars(v) => v,
            Dot::Quads(qs) => qs
                .into_iter()
                .flat_map(|q| (0..4u8).map(move |j| (q, j)))
                .map(|(q, j)| {
                    let d = kb.b.ins().extractlane(q, j);
                    kb.b.ins().sextend(I64, d)
                })
                .collect(),
        }
    }
}

/// The dot products of filters `first..first + width` at the current position.
type Dots<'d> = dyn FnMut(&mut KernelBuilder, Value, usize) -> Dot + 'd;

/// Runs `dots` over all `m` output channels and stores the results for one position:
/// `acc_at` is the address of channel 0's `i32` (channels `channel_bytes` apart) and
/// `bits_at` the address of the position's packed words.
fn output_channels(
    kb: &mut KernelBuilder,
    (m, block): (usize, usize),
    stage: &OutputStage,
    tables: Option<BitTables>,
    (acc_at, channel_bytes, or_into): (Value, i64, bool),
    dots: &mut Dots<'_>,
) {
    match stage {
        OutputStage::Acc => {
            let blocks = m / block;
            let mut store = |kb: &mut KernelBuilder, first: Value, width: usize| {
                let d = dots(kb, first, width).scalars(kb);
                let at = kb.addr(acc_at, first, channel_bytes, 0);
                for (j, dot) in d.into_iter().enumerate() {
                    let dot = kb.b.ins().ireduce(I32, dot);
                    kb.store(dot, at, j as i64 * channel_bytes);
                }
            };
            kb.for_range(blocks, |kb, b| {
                let first = kb.b.ins().imul_imm_s(b, block as i64);
                store(kb, first, block);
            });
            for r in blocks * block..m {
                let first = kb.iconst(r as i64);
                store(kb, first, 1);
            }
        }
        OutputStage::Levels(_) => unreachable!("XNOR kernels refuse level stages on entry"),
        OutputStage::Bits { .. } => {
            let t = tables.expect("bit stages come with their tables");
            let (sign_t, bound_t) = (t.sign, t.bound);
            // bit j of a word: sign * dot >= bound for channel `first + j`.
            let mut bits = |kb: &mut KernelBuilder, first: Value, width: usize, shift0: Value| {
                let d = match dots(kb, first, width) {
                    Dot::Quads(qs) => {
                        // Four compares at once; their sign bits are the four bits.
                        let above_at = kb.addr(t.above, first, 4, 0);
                        let flip_at = t.flip.map(|f| kb.addr(f, first, 4, 0));
                        let mut word = kb.iconst(0);
                        for (i, q) in qs.into_iter().enumerate() {
                            let above = kb.load_aligned(I32X4, above_at, (i * 16) as i64);
                            let mut on = kb.b.ins().icmp(IntCC::SignedGreaterThan, q, above);
                            if let Some(flip_at) = flip_at {
                                let flip = kb.load_aligned(I32X4, flip_at, (i * 16) as i64);
                                on = kb.b.ins().bxor(on, flip);
                            }
                            let four = kb.b.ins().vhigh_bits(I64, on);
                            let four = if i == 0 {
                                four
                            } else {
                                kb.b.ins().ishl_imm_s(four, 4 * i as i64)
                            };
                            word = kb.b.ins().bor(word, four);
                        }
                        return kb.b.ins().ishl(word, shift0);
                    }
                    d => d.scalars(kb),
                };
                let mut word = kb.iconst(0);
                for (j, dot) in d.into_iter().enumerate() {
                    let ch = kb.b.ins().iadd_imm_s(first, j as i64);
                    let s = kb.load_at(I32, sign_t, ch);
                    let s = kb.b.ins().sextend(I64, s);
                    let b = kb.load_at(I32, bound_t, ch);
                    let b = kb.b.ins().sextend(I64, b);
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
                let blocks = count / block;
                let zero = kb.iconst(0);
                let mut word = kb.fold_range(blocks, vec![zero], |kb, b, word| {
                    let shift = kb.b.ins().imul_imm_s(b, block as i64);
                    let first = kb.b.ins().iadd_imm_s(shift, (w * WORD_BITS) as i64);
                    let part = bits(kb, first, block, shift);
                    vec![kb.b.ins().bor(word[0], part)]
                })[0];
                for r in blocks * block..count {
                    let first = kb.iconst((w * WORD_BITS + r) as i64);
                    let shift = kb.iconst(r as i64);
                    let part = bits(kb, first, 1, shift);
                    word = kb.b.ins().bor(word, part);
                }
                if or_into {
                    let old =
                        kb.b.ins()
                            .load(I64, super::builder::mem(), acc_at, (w * 8) as i32);
                    word = kb.b.ins().bor(old, word);
                }
                kb.store(word, acc_at, (w * 8) as i64);
            }
        }
    }
}

/// A bit stage's tables, `i32` entries padded to whole vectors.
#[derive(Clone, Copy)]
struct BitTables {
    /// Per channel, `sign` and `bound` of the rule `sign * dot >= bound`.
    sign: Value,
    bound: Value,
    /// The same rule as one signed compare, for vectors: `(dot > above) ^ flip`, where an
    /// ascending channel has `above = bound - 1` and `flip = 0`, and a descending one
    /// (`-dot >= bound`, `dot <= -bound`) `above = -bound` and `flip = -1`. `None` when
    /// every channel ascends.
    above: Value,
    flip: Option<Value>,
}

/// The bit stage's tables, if any.
fn stage_tables(kb: &mut KernelBuilder, stage: &OutputStage) -> Option<BitTables> {
    let OutputStage::Bits { sign, bound } = stage else {
        return None;
    };
    // The bounds are within +-2^40, clamped to +-2^30, still beyond any dot product
    // (|dot| <= K < 2^24); so are `bound - 1` and `-bound`.
    let narrow = |v: &mut dyn Iterator<Item = i64>| -> Vec<i32> {
        let mut n: Vec<i32> = v.map(|x| x.clamp(-(1 << 30), 1 << 30) as i32).collect();
        n.resize(n.len().next_multiple_of(4), 0);
        n
    };
    let above =
        narrow(
            &mut sign
                .iter()
                .zip(bound)
                .map(|(&s, &b)| if s >= 0 { b.saturating_sub(1) } else { -b }),
        );
    let descending = sign.iter().any(|&s| s < 0);
    let flip = narrow(&mut sign.iter().map(|&s| if s >= 0 { 0 } else { -1 }));
    Some(BitTables {
        sign: kb.table_i32(&narrow(&mut sign.iter().copied())),
        bound: kb.table_i32(&narrow(&mut bound.iter().copied())),
        above: kb.table_i32(&above),
        flip: descending.then(|| kb.table_i32(&flip)),
    })
}

/// XNOR matrix product: `a (rows, K)` bits times `w (K, M)`.
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
) -> Result<(), BackendError> {
    refuse_levels(node, stage)?;
    let (a, w) = (&operands[0], &operands[1]);
    let (rows, k, _) = bit_geometry(&a.shape);
    let &[m, nw] = w.shape.as_slice() else {
        return Err(BackendError::unsupported(
            node,
            "weights must be packed as (M, words)",
        ));
    };
    if nw != words(k) {
        return Err(BackendError::unsupported(node, "operand shapes disagree"));
    }
    let packed = kb.table_u64(&weights(node, w)?);
    let tables = stage_tables(kb, stage);
    let (src, dst) = (a.ptr, out.ptr);
    let row_out_bytes = match stage {
        OutputStage::Acc => m * 4,
        OutputStage::Bits { .. } | OutputStage::Levels(_) => words(m) * 8,
    } as i64;
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (nw * 8) as i64, 0);
        let out_row = kb.addr(dst, r, row_out_bytes, 0);
        let mut dots = |kb: &mut KernelBuilder, first: Value, width: usize| -> Dot {
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
                        .copied()
                        .enumerate()
                        .map(|(j, a)| {
                            let wv = kb.load(I64, wa, (j * nw * 8) as i64);
                            xor_popcount(kb, a, x, wv)
                        })
                        .collect()
                });
            }
            Dot::Scalars(
                acc.into_iter()
                    .map(|a| {
                        let twice = kb.b.ins().ishl_imm_s(a, 1);
                        let kk = kb.iconst(k as i64);
                        kb.b.ins().isub(kk, twice)
                    })
                    .collect(),
            )
        };
        output_channels(
            kb,
            (m, MATMUL_BLOCK),
            stage,
            tables,
            (out_row, 4, false),
            &mut dots,
        );
    });
    Ok(())
}

/// One window position's activation words, splat to both lanes of a 128-bit vector, in a
/// stack buffer `[tap][word]`, with each tap's byte mask in the padding (all ones inside, 0
/// outside) and the number of valid terms: prepared once per position, read by the
/// [`vector_dots`] of every filter block.
struct SplatWindow {
    splats: Value,
    masks: Option<Value>,
    k: Value,
}

impl SplatWindow {
    /// Stack bytes for a window of `taps` taps of `nw` words.
    fn bytes(taps: usize, nw: usize, padded: bool) -> u32 {
        ((taps * nw + if padded { taps } else { 0 }) * 16) as u32
    }

    /// Splats the words of `taps` (`c` channels each) into `scratch`
    /// ([`SplatWindow::bytes`] long).
    fn new(
        kb: &mut KernelBuilder,
        scratch: Value,
        taps: &[(Value, Option<Value>)],
        nw: usize,
        c: usize,
    ) -> SplatWindow {
        let padded = taps.iter().any(|t| t.1.is_some());
        let masks = padded.then(|| kb.add_imm(scratch, (taps.len() * nw * 16) as i64));
        let cc = kb.iconst32(c as i32);
        let mut k = kb.iconst32(0);
        for (t, &(at, inside)) in taps.iter().enumerate() {
            for word in 0..nw {
                let x = kb.load(I64, at, (word * 8) as i64);
                let xs = kb.b.ins().splat(I64X2, x);
                kb.store(xs, scratch, ((t * nw + word) * 16) as i64);
            }
            match (inside, masks) {
                (Some(inside), Some(masks)) => {
                    let ones = kb.iconst32(0xFF);
                    let zero = kb.iconst32(0);
                    let m = kb.select(inside, ones, zero);
                    let m = kb.b.ins().ireduce(cranelift_codegen::ir::types::I8, m);
                    let m = kb.b.ins().splat(I8X16, m);
                    kb.store(m, masks, (t * 16) as i64);
                    let valid = kb.select(inside, cc, zero);
                    k = kb.b.ins().iadd(k, valid);
                }
                _ => k = kb.b.ins().iadd(k, cc),
            }
        }
        SplatWindow {
            splats: scratch,
            masks,
            k,
        }
    }
}

/// Where a grouped layer's block of filters reads the splat window: its first word's offset
/// in a tap's splat words, and the filters' pair masks ([`GroupWords`]).
#[derive(Clone, Copy)]
struct GroupedBlock {
    mask_pairs: Value,
    /// Bytes from a tap's first splat word to the block's first.
    splat_offset: Value,
    /// Words of a pixel (splat per tap).
    pixel_words: usize,
}

/// The dots of filters `first..first + BLOCK` (`first` even) against the window `win` of
/// `taps` taps, two filters to a 128-bit vector: the activation word (splat) is xor-ed with
/// both filters' words, and counted per byte (`popcnt.i8x16`); the byte counts are widened
/// pairwise (bytes to i16 before any can overflow, then to i32) and each two pairs' sums
/// joined into one `i32x4` of four filters' counts. A tap in the padding has its counts
/// masked to 0 and its `c` terms left out of `K` (`win.k`): it contributes 0 to the dot
/// product.
fn vector_dots(
    kb: &mut KernelBuilder,
    pairs: Value,
    first: Value,
    win: &SplatWindow,
    (taps, nw): (usize, usize),
    grouped: Option<GroupedBlock>,
) -> Dot {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let per = taps * nw;
    // Filters first and first + 1 are pair first / 2; its words start at pair * per * 16.
    let base = kb.addr(pairs, first, (per * 8) as i64, 0);
    // A grouped block's pair masks, `[pair][word][2]` (the same for every tap), and its
    // run of each tap's splat words.
    let masks = grouped.map(|g| kb.addr(g.mask_pairs, first, (nw * 8) as i64, 0));
    let (splats, pixel_words) = match grouped {
        Some(g) => (kb.b.ins().iadd(win.splats, g.splat_offset), g.pixel_words),
        None => (win.splats, nw),
    };
    let zero8 = {
        let z = kb.iconst32(0);
        let z = kb.b.ins().ireduce(cranelift_codegen::ir::types::I8, z);
        kb.b.ins().splat(I8X16, z)
    };
    let widen = |kb: &mut KernelBuilder, v: Value| {
        let lo = kb.b.ins().uwiden_low(v);
        let hi = kb.b.ins().uwiden_high(v);
        kb.b.ins().iadd_pairwise(lo, hi)
    };
    let pair_count = BLOCK / 2;
    let mut bytes = vec![zero8; pair_count];
    // The i16 sums of the flushed bytes (none before the first flush).
    let mut halves: Vec<Option<Value>> = vec![None; pair_count];
    let add_halves = |kb: &mut KernelBuilder, h: Option<Value>, wide: Value| match h {
        Some(h) => kb.b.ins().iadd(h, wide),
        None => wide,
    };
    // Byte lanes hold at most 8 per word: flush to i16 lanes before 32 words.
    let mut pending = 0;
    for t in 0..taps {
        let mask = win
            .masks
            .map(|masks| kb.load_aligned(I8X16, masks, (t * 16) as i64));
        for word in 0..nw {
            let i = t * nw + word;
            let xs = kb.load_aligned(I64X2, splats, ((t * pixel_words + word) * 16) as i64);
            for (q, acc) in bytes.iter_mut().enumerate() {
                let wv = kb.load_aligned(I64X2, base, ((q * per + i) * 16) as i64);
                let d = kb.b.ins().bxor(xs, wv);
                let d = match masks {
                    Some(m) => {
                        let mv = kb.load_aligned(I64X2, m, ((q * nw + word) * 16) as i64);
                        kb.b.ins().band(d, mv)
                    }
                    None => d,
                };
                let d = kb.b.ins().bitcast(I8X16, little, d);
                let pc = kb.b.ins().popcnt(d);
                let pc = match mask {
                    Some(m) => kb.b.ins().band(pc, m),
                    None => pc,
                };
                *acc = kb.b.ins().iadd(*acc, pc);
            }
            pending += 1;
            if pending == 31 {
                for (h, b) in halves.iter_mut().zip(bytes.iter_mut()) {
                    let wide = widen(kb, *b);
                    *h = Some(add_halves(kb, *h, wide));
                    *b = zero8;
                }
                pending = 0;
            }
        }
    }
    let mut halves_of_pairs = Vec::with_capacity(pair_count);
    for (h, b) in halves.iter().zip(&bytes) {
        let wide = widen(kb, *b);
        let h = add_halves(kb, *h, wide);
        // Signed widening (one `pmaddwd` on x86): an i16 lane sums two bytes' counts of
        // every word, at most 16 * taps * words < 2^15 for the windows the vector kernel
        // takes ([`MAX_VECTOR_WORDS`]).
        let lo = kb.b.ins().swiden_low(h);
        let hi = kb.b.ins().swiden_high(h);
        halves_of_pairs.push(kb.b.ins().iadd_pairwise(lo, hi));
    }
    let kk = kb.b.ins().splat(I32X4, win.k);
    // [f0 f0 f1 f1] and [f2 f2 f3 f3] to [f0 f1 f2 f3], for each two pairs.
    let quads = halves_of_pairs
        .chunks(2)
        .map(|two| {
            let counts = kb.b.ins().iadd_pairwise(two[0], two[1]);
            let twice = kb.b.ins().ishl_imm_s(counts, 1);
            kb.b.ins().isub(kk, twice)
        })
        .collect();
    Dot::Quads(quads)
}

/// XNOR convolution (any number of spatial axes, any group): `x (N, C, spatial...)` bits,
/// channels-last, times `w (M, k..., words)`. Taps in the zero padding contribute 0. With
/// `pool` (2-D only, as `fuse-output-stages` marks them), `out` is the pooled result. A
/// grouped layer's filters read their block's run of words ([`GroupWords`]) and mask out
/// the channels of other groups.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
    simd: bool,
    pool: Option<BitPool>,
) -> Result<(), BackendError> {
    refuse_levels(node, stage)?;
    let (x, w) = (&operands[0], &operands[1]);
    let rank = x.shape.len();
    if rank < 3 || w.shape.len() != rank || out.shape.len() != rank {
        return Err(BackendError::unsupported(
            node,
            "the XNOR convolution needs an input (N, C, spatial...) and weights (M, k..., words)",
        ));
    }
    let (batch, c, m, wc) = (x.shape[0], x.shape[1], w.shape[0], w.shape[rank - 1]);
    let (image, out_ext) = (&x.shape[2..], &out.shape[2..]);
    let groups = attrs.group.max(1);
    // Terms per tap: the group's channels.
    let cg = c / groups;
    if c % groups != 0 || m % groups != 0 || wc != words(cg) {
        return Err(BackendError::unsupported(
            node,
            "the packed weights do not match the groups' channels",
        ));
    }
    // The positions computed, and the window a pooled pixel gathers.
    let (computed, pool_window) = match pool {
        Some(p) if rank == 4 => (
            vec![p.computed().0, p.computed().1],
            vec![p.window.0, p.window.1],
        ),
        Some(_) => {
            return Err(BackendError::unsupported(
                node,
                "internal: a fused pool is 2-D (fuse-output-stages marks no other)",
            ))
        }
        None => (out_ext.to_vec(), vec![1; rank - 2]),
    };
    let window = Window::new(attrs.window(), image);
    let taps = window.taps_per_window();
    let grouped = (groups > 1).then(|| GroupWords::new(c, m, groups, BLOCK));
    // Words each filter reads per tap, and the filters' words, `[filter][tap][word]`.
    let (nw, w_packed) = match &grouped {
        None => (words(c), weights(node, w)?),
        Some(g) => {
            let data = w
                .data
                .as_deref()
                .ok_or_else(|| BackendError::unsupported(node, "the weights must be constant"))?;
            let signs = bnnc_ir::packing::unpack_conv_weights(data, cg);
            let mut table = Vec::with_capacity(m * taps * g.span);
            for f in 0..m {
                for t in 0..taps {
                    table.extend(g.place(f, |ch| signs[(f * cg + ch) * taps + t] > 0.0));
                }
            }
            (g.span, table)
        }
    };
    let packed = kb.table_u64(&w_packed);
    let padded = attrs.pads.iter().any(|&p| p != 0);
    let interleave = |per: usize, table: &[u64]| {
        let mut v = vec![0u64; m.div_ceil(2) * 2 * per];
        for f in 0..m {
            for i in 0..per {
                v[((f / 2) * per + i) * 2 + f % 2] = table[f * per + i];
            }
        }
        v
    };
    // Filter pairs interleaved word by word, for the vector kernel (whose code and splat
    // buffer grow with the window: wider windows take the scalar loop). The splat window
    // holds every word of a tap's pixel; a grouped block reads its run of them.
    let splat_bytes = SplatWindow::bytes(taps, words(c), padded);
    let vector = simd && taps * words(c) <= MAX_VECTOR_WORDS;
    let pairs = vector.then(|| {
        let v = interleave(taps * nw, &w_packed);
        kb.table_u64(&v)
    });
    // A grouped layer's first words (per filter) and masks (`[filter][word]`, and as
    // pairs for the vector kernel).
    let group_tables = grouped.as_ref().map(|g| {
        let first: Vec<i32> = g.first_word.iter().map(|&w| w as i32).collect();
        let masks: Vec<u64> = (0..m).flat_map(|f| g.mask(f)).collect();
        let mask_pairs = vector.then(|| interleave(nw, &masks));
        (
            kb.table_i32(&first),
            kb.table_u64(&masks),
            mask_pairs.map(|v| kb.table_u64(&v)),
        )
    });
    let tables = stage_tables(kb, stage);
    // The vector kernel's splat activations, one window's worth.
    let scratch = pairs.map(|_| kb.stack(splat_bytes));
    let (src, dst) = (x.ptr, out.ptr);
    let pixel_bytes = (words(c) * 8) as i64;
    let in_pixels: usize = image.iter().product();
    let positions: usize = out_ext.iter().product();
    if pool.is_some() {
        // Pooled pixels gather bits with OR: all start at 0.
        let zero = kb.iconst(0);
        kb.for_range(batch * positions * words(m), |kb, i| {
            kb.store_at(zero, dst, i)
        });
    }
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, in_pixels as i64 * pixel_bytes, 0);
        for_each_position(kb, &computed, &mut |kb, o| {
            // Per tap: its pixel's address (the first pixel's for a tap outside the
            // image, which then counts 0), and whether it is inside.
            let tap_at: Vec<(Value, Option<Value>)> = window
                .taps(kb, o, padded)
                .into_iter()
                .map(|t| (kb.addr(image, t.pixel, pixel_bytes, 0), t.inside))
                .collect();
            let pooled: Vec<Value> = o
                .iter()
                .zip(&pool_window)
                .map(|(&c, &p)| {
                    if p == 1 {
                        c
                    } else {
                        kb.b.ins().udiv_imm_s(c, p as i64)
                    }
                })
                .collect();
            let pos = flat_index(kb, &pooled, out_ext);
            let splat = scratch.map(|s| SplatWindow::new(kb, s, &tap_at, words(c), cg));
            let mut dots = |kb: &mut KernelBuilder, first: Value, width: usize| -> Dot {
                // A grouped block reads from its first word on.
                let first_word = group_tables.map(|(first_words, _, _)| {
                    let fw = kb.load_at(I32, first_words, first);
                    kb.b.ins().uextend(I64, fw)
                });
                if let (Some(pairs), Some(win), BLOCK) = (pairs, &splat, width) {
                    let grouped = group_tables.zip(first_word).and_then(|(t, fw)| {
                        Some(GroupedBlock {
                            mask_pairs: t.2?,
                            splat_offset: kb.b.ins().imul_imm_s(fw, 16),
                            pixel_words: words(c),
                        })
                    });
                    return vector_dots(kb, pairs, first, win, (taps, nw), grouped);
                }
                let tap_at: Vec<(Value, Option<Value>)> = match first_word {
                    None => tap_at.clone(),
                    Some(fw) => {
                        let off = kb.b.ins().imul_imm_s(fw, 8);
                        tap_at
                            .iter()
                            .map(|&(at, inside)| (kb.b.ins().iadd(at, off), inside))
                            .collect()
                    }
                };
                let filters = kb.addr(packed, first, (taps * nw * 8) as i64, 0);
                let masks = group_tables.map(|(_, m, _)| kb.addr(m, first, (nw * 8) as i64, 0));
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
                            *pc = match masks {
                                None => xor_popcount(kb, *pc, xv, wv),
                                Some(masks) => {
                                    let mask = kb.load(I64, masks, ((j * nw + word) * 8) as i64);
                                    let d = kb.b.ins().bxor(xv, wv);
                                    let d = kb.b.ins().band(d, mask);
                                    let p = kb.b.ins().popcnt(d);
                                    kb.b.ins().iadd(*pc, p)
                                }
                            };
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
                                let cc = kb.iconst(cg as i64);
                                let tap_dot = kb.b.ins().isub(cc, twice);
                                let contribution = kb.select(inside, tap_dot, zero);
                                *d = kb.b.ins().iadd(*d, contribution);
                            }
                        }
                    }
                }
                if padded {
                    return Dot::Scalars(dots);
                }
                Dot::Scalars(
                    pcs.into_iter()
                        .map(|pc| {
                            let twice = kb.b.ins().ishl_imm_s(pc, 1);
                            let kk = kb.iconst((cg * taps) as i64);
                            kb.b.ins().isub(kk, twice)
                        })
                        .collect(),
                )
            };
            let nm = kb.b.ins().imul_imm_s(n, m as i64);
            let (at, channel_bytes) = match stage {
                OutputStage::Acc => {
                    let plane = kb.b.ins().imul_imm_s(nm, positions as i64);
                    let index = kb.b.ins().iadd(plane, pos);
                    (kb.addr(dst, index, 4, 0), (positions * 4) as i64)
                }
                OutputStage::Bits { .. } | OutputStage::Levels(_) => {
                    let np = kb.b.ins().imul_imm_s(n, positions as i64);
                    let pixel = kb.b.ins().iadd(np, pos);
                    (kb.addr(dst, pixel, (words(m) * 8) as i64, 0), 0)
                }
            };
            output_channels(
                kb,
                (m, BLOCK),
                stage,
                tables,
                (at, channel_bytes, pool.is_some()),
                &mut dots,
            );
        });
    });
    Ok(())
}
