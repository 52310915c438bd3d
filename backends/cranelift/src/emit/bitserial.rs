//! Bit-serial matrix products and convolutions (`bitserial_matmul`, `bitserial_conv`) on
//! bit planes ([`Storage::Planes`]).
//!
//! An integer of `b` bits is `sum_p c_p * 2^p * bit_p`, with `c_p = -1` for the top plane of
//! a two's complement type and 1 otherwise. So a dot product of activations `a` and weights
//! `w` is `sum_{p,q} c_p c_q 2^(p+q) * popcount(A_p & W_q)` over 64-bit words of planes. The
//! activations arrive as planes (the layer before wrote them so, or a conversion did); the
//! weights' planes are packed at compile time. A tap in the zero padding reads no bits, so
//! it adds 0, as a zero activation does.
//!
//! Bipolar weights are one plane `b` with `w = 2b - 1`: a plane pair then counts
//! `2 * popcount(A_p & B) - popcount(A_p)`, the second term once per position.
//!
//! The output stage ([`OutputStage`]) stores the `i32` sums, or runs the fused threshold:
//! bits for a bipolar output, the bit planes of the levels for a low-bit one, pooled (the
//! largest count of each window: counts grow with the levels) when a MaxPool follows.

use bnnc_ir::{ConvAttrs, ElemType, Graph, IntType, Node, Op};
use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::lookup_conv::{self, Layer, Plan};
use super::window::{flat_index, for_each_position, kernel_taps, Window};
use super::{KernelBuilder, Operand};
use crate::groups::GroupWords;
use crate::schedule::Storage;
use crate::stage::{BitPool, OutputStage};
use crate::BackendError;

/// Output channels computed together (scalar registers).
const BLOCK: usize = 4;

/// Up to this many words per position, the vector dots run (unrolled); longer windows
/// take the scalar loop, whose code does not grow with them.
const VECTOR_WORDS: usize = 256;

/// The most stack the vector dots' splat activations take (beyond, the scalar loop runs).
const MAX_SPLAT_BYTES: usize = 64 << 10;

/// Above this many words per position, a tap's words run in a loop rather than unrolled.
const UNROLLED_WORDS: usize = 64;

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
#[derive(Clone, Copy)]
struct Planes {
    /// The activations' planes, and whether the top one is negative.
    a: (usize, bool),
    /// The weights' planes, and whether the top one is negative.
    w: (usize, bool),
    /// Bipolar weights: one plane `b`, `w = 2b - 1`.
    bipolar_w: bool,
}

impl Planes {
    fn of(node: &Node, a: &Operand, w: &ElemType) -> Result<Planes, BackendError> {
        let unsupported = |why: &str| BackendError::unsupported(node, why);
        let Storage::Planes(pa) = a.storage else {
            return Err(unsupported(
                "internal: the activations are not stored as planes",
            ));
        };
        let signed_a = a
            .elem
            .int_type()
            .and_then(IntType::planes)
            .ok_or_else(|| unsupported("the activations are not low-bit integers"))?
            .1;
        let bipolar_w = w.int_type() == Some(IntType::Bipolar);
        Ok(Planes {
            a: (pa.into(), signed_a),
            w: if bipolar_w {
                (1, false)
            } else {
                w.int_type()
                    .and_then(IntType::planes)
                    .ok_or_else(|| unsupported("the weights are not low-bit integers"))?
            },
            bipolar_w,
        })
    }

    /// The weight of the count of plane pair `(p, q)`.
    fn pair_weight(&self, p: usize, q: usize) -> i64 {
        let (pa, signed_a) = self.a;
        let (pw, signed_w) = self.w;
        let wq = if self.bipolar_w {
            1
        } else {
            place(q, pw, signed_w)
        };
        place(p, pa, signed_a) * wq
    }
}

/// `acc + weight * count`, `weight` a signed power of two.
fn add_weighted(kb: &mut KernelBuilder, acc: Value, count: Value, weight: i64) -> Value {
    let shift = weight.unsigned_abs().trailing_zeros();
    let term = if shift == 0 {
        count
    } else {
        kb.b.ins().ishl_imm_s(count, i64::from(shift))
    };
    if weight < 0 {
        kb.b.ins().isub(acc, term)
    } else {
        kb.b.ins().iadd(acc, term)
    }
}

/// The layer as a convolution: input `(batch, c, spatial...)`, `m` filters of `taps` taps,
/// the output extents computed, and the window.
struct Geometry {
    batch: usize,
    c: usize,
    m: usize,
    taps: usize,
    out: Vec<usize>,
    window: Window,
}

/// One tap of a window position: its pixel's address, and whether it is inside the image.
type TapAt = (Value, Option<Value>);

/// The work on one word of one tap: `(kb, tap, tap index, word, state) -> state`.
type WordStep<'s> =
    dyn FnMut(&mut KernelBuilder, TapAt, usize, Value, Vec<Value>) -> Vec<Value> + 's;

/// The kernel's constants and shape, shared by its parts.
struct Kernel<'a> {
    planes: Planes,
    g: &'a Geometry,
    /// The weights' planes, `[filter][tap][word][plane]`.
    weights: Value,
    /// With vector popcounts: the weights' planes of filter pairs interleaved,
    /// `[pair][tap][word][plane][2]`, for [`Kernel::vector_dots`].
    pairs: Option<Value>,
    /// A grouped layer's words per tap and first word per filter ([`GroupWords`]).
    grouped: Option<(usize, Value)>,
}

impl<'a> Kernel<'a> {
    /// The kernel of weight planes `table` ([`pack_weights`]); with `simd`, also their
    /// filter pairs for the vector dots. A grouped layer's table is
    /// [`pack_grouped_weights`]'s, read with `groups`.
    fn new(
        kb: &mut KernelBuilder,
        planes: Planes,
        g: &'a Geometry,
        (table, groups): (&[u64], Option<&GroupWords>),
        simd: bool,
    ) -> Kernel<'a> {
        let nw = groups.map_or(words(g.c), |gw| gw.span);
        let per = g.taps * nw * planes.w.0;
        let grouped = groups.map(|gw| {
            let first: Vec<i32> = gw.first_word.iter().map(|&w| w as i32).collect();
            (gw.span, kb.table_i32(&first))
        });
        Kernel {
            planes,
            g,
            weights: kb.table_u64(table),
            pairs: simd.then(|| kb.table_u64(&pair_weights(table, g.m, per))),
            grouped,
        }
    }

    /// Words a filter reads per tap and plane.
    fn nw(&self) -> usize {
        self.grouped.map_or(words(self.g.c), |(span, _)| span)
    }

    /// Words of a pixel's plane.
    fn pixel_words(&self) -> usize {
        words(self.g.c)
    }

    /// The taps as filter `first`'s block reads them: from its first word when grouped.
    fn block_taps(&self, kb: &mut KernelBuilder, first: Value, taps: &[TapAt]) -> Vec<TapAt> {
        let Some((_, first_words)) = self.grouped else {
            return taps.to_vec();
        };
        let fw = kb.load_at(I32, first_words, first);
        let fw = kb.b.ins().uextend(I64, fw);
        let off = kb.b.ins().imul_imm_s(fw, 8);
        taps.iter()
            .map(|&(at, inside)| (kb.b.ins().iadd(at, off), inside))
            .collect()
    }

    /// The activation words of plane-word `word` of a tap (0 in the padding).
    fn activation(&self, kb: &mut KernelBuilder, (at, inside): TapAt, word: Value) -> Vec<Value> {
        let nw = self.pixel_words();
        (0..self.planes.a.0)
            .map(|p| {
                let a = kb.addr(at, word, 8, (p * nw * 8) as i64);
                let v = kb.load(I64, a, 0);
                match inside {
                    Some(inside) => {
                        let zero = kb.iconst(0);
                        kb.select(inside, v, zero)
                    }
                    None => v,
                }
            })
            .collect()
    }

    /// Runs `body(kb, tap, tap_index, word)` for every word of every tap: unrolled when
    /// short, a loop over each tap's words otherwise.
    fn each_word(
        &self,
        kb: &mut KernelBuilder,
        taps: &[TapAt],
        acc: Vec<Value>,
        body: &mut WordStep<'_>,
    ) -> Vec<Value> {
        let nw = self.nw();
        let mut acc = acc;
        for (t, &tap) in taps.iter().enumerate() {
            if taps.len() * nw <= UNROLLED_WORDS {
                for word in 0..nw {
                    let wv = kb.iconst(word as i64);
                    acc = body(kb, tap, t, wv, acc);
                }
            } else {
                acc = kb.fold_range(nw, acc, |kb, word, acc| body(kb, tap, t, word, acc));
            }
        }
        acc
    }

    /// `sum_p place_p * popcount(A_p)` over the window: the bipolar weights' correction.
    fn activation_total(&self, kb: &mut KernelBuilder, taps: &[TapAt]) -> Value {
        let (pa, signed_a) = self.planes.a;
        let zero = kb.iconst(0);
        self.each_word(kb, taps, vec![zero], &mut |kb, tap, _, word, acc| {
            let a = self.activation(kb, tap, word);
            let mut total = acc[0];
            for (p, &ap) in a.iter().enumerate() {
                let count = kb.b.ins().popcnt(ap);
                total = add_weighted(kb, total, count, place(p, pa, signed_a));
            }
            vec![total]
        })[0]
    }

    /// The dot products of filters `first..first + width` over the window `taps`
    /// (`total`: the activation total, for bipolar weights).
    fn dots(
        &self,
        kb: &mut KernelBuilder,
        first: Value,
        width: usize,
        (taps, splats): (&[TapAt], Option<Value>),
        total: Option<Value>,
    ) -> Vec<Value> {
        if let (Some(pairs), BLOCK, Some(splats)) = (self.pairs, width, splats) {
            return self.vector_dots(kb, pairs, first, (taps.len(), splats), total);
        }
        let taps = &self.block_taps(kb, first, taps)[..];
        let (nw, pw) = (self.nw(), self.planes.w.0);
        let per_filter = (self.g.taps * nw * pw * 8) as i64;
        let filters = kb.addr(self.weights, first, per_filter, 0);
        let zero = kb.iconst(0);
        let acc = self.each_word(
            kb,
            taps,
            vec![zero; width],
            &mut |kb, tap, t, word, mut acc| {
                let a = self.activation(kb, tap, word);
                for (j, acc_j) in acc.iter_mut().enumerate() {
                    // Filter j's words of tap t: [word][plane].
                    let base = (j as i64) * per_filter + ((t * nw * pw) * 8) as i64;
                    let at = kb.addr(filters, word, (pw * 8) as i64, base);
                    for q in 0..pw {
                        let wq = kb.load(I64, at, (q * 8) as i64);
                        for (p, &ap) in a.iter().enumerate() {
                            let both = kb.b.ins().band(ap, wq);
                            let count = kb.b.ins().popcnt(both);
                            *acc_j = add_weighted(kb, *acc_j, count, self.planes.pair_weight(p, q));
                        }
                    }
                }
                acc
            },
        );
        match total {
            // 2 * sum(A & B) - sum(A), per plane weighed alike.
            Some(total) => acc
                .into_iter()
                .map(|d| {
                    let twice = kb.b.ins().ishl_imm_s(d, 1);
                    kb.b.ins().isub(twice, total)
                })
                .collect(),
            None => acc,
        }
    }
}

impl Kernel<'_> {
    /// A bound on the magnitude of any dot product: `K` terms of at most `2^pa * 2^pw`.
    fn dot_bound(&self) -> u64 {
        let k = (self.g.taps * self.g.c) as u64;
        k.saturating_mul(1 << (self.planes.a.0 + self.planes.w.0))
    }

    /// Stack bytes for the splat activations of `windows` windows, if the vector dots take
    /// windows this wide (their code is unrolled over the window's words).
    fn splat_bytes(&self, windows: usize) -> Option<u32> {
        let words = self.g.taps * self.nw();
        // Every word of a tap's pixel is splat (a grouped block reads its run of them).
        let bytes = windows * self.g.taps * self.pixel_words() * self.planes.a.0 * 16;
        (self.pairs.is_some() && words <= VECTOR_WORDS && bytes <= MAX_SPLAT_BYTES)
            .then_some(bytes as u32)
    }

    /// Splats every activation plane word of the window `taps` to both lanes of a 128-bit
    /// vector, `[tap][word][plane]` at `scratch`: done once per window, read by the
    /// [`Kernel::vector_dots`] of every filter block.
    fn splat_window(&self, kb: &mut KernelBuilder, taps: &[TapAt], scratch: Value) {
        use cranelift_codegen::ir::types::I64X2;
        let (nw, pa) = (self.pixel_words(), self.planes.a.0);
        for (t, &tap) in taps.iter().enumerate() {
            for word in 0..nw {
                let wv = kb.iconst(word as i64);
                for (p, x) in self.activation(kb, tap, wv).into_iter().enumerate() {
                    let xs = kb.b.ins().splat(I64X2, x);
                    kb.store(xs, scratch, (((t * nw + word) * pa + p) * 16) as i64);
                }
            }
        }
    }

    /// [`Kernel::vector_quad`] as four `i64` dot products.
    fn vector_dots(
        &self,
        kb: &mut KernelBuilder,
        pairs: Value,
        first: Value,
        window: (usize, Value),
        total: Option<Value>,
    ) -> Vec<Value> {
        let quad = self.vector_quad(kb, pairs, first, window, total);
        (0..4u8)
            .map(|j| {
                let d = kb.b.ins().extractlane(quad, j);
                kb.b.ins().sextend(I64, d)
            })
            .collect()
    }

    /// The dot products of `BLOCK` filters (`first` even), an `i32x4`, on 128-bit vectors,
    /// two filters to a vector as the XNOR kernels pair them: each activation plane word
    /// (splat by [`Kernel::splat_window`]) is ANDed with both filters' plane words and
    /// counted per byte (`popcnt.i8x16`). Pairs of planes of equal weight share a byte
    /// accumulator; before any byte can overflow, each is widened to `i32` lanes and added
    /// in with its weight. Exact while dot products fit `i32` ([`Kernel::dot_bound`]).
    fn vector_quad(
        &self,
        kb: &mut KernelBuilder,
        pairs: Value,
        first: Value,
        (taps, splats): (usize, Value),
        total: Option<Value>,
    ) -> Value {
        use cranelift_codegen::ir::types::{I32X4, I64X2, I8, I8X16};
        use cranelift_codegen::ir::{Endianness, MemFlagsData};
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let (nw, (pa, _), (pw, _)) = (self.nw(), self.planes.a, self.planes.w);
        // The distinct pair weights, and each pair's.
        let mut weights: Vec<i64> = Vec::new();
        let mut class = vec![0usize; pa * pw];
        for q in 0..pw {
            for p in 0..pa {
                let w = self.planes.pair_weight(p, q);
                class[q * pa + p] = weights.iter().position(|&x| x == w).unwrap_or_else(|| {
                    weights.push(w);
                    weights.len() - 1
                });
            }
        }
        let widest = (0..weights.len())
            .map(|c| class.iter().filter(|&&k| k == c).count())
            .max()
            .unwrap_or(1);
        // Bytes count at most 8 per pair and word: flush before 255.
        let flush_every = (255 / (8 * widest)).max(1);
        let per_pair = (self.g.taps * nw * pw * 16) as i64;
        // A grouped block reads each tap's splat words from its first word on.
        let pixel_words = self.pixel_words();
        let splats = match self.grouped {
            Some((_, first_words)) => {
                let fw = kb.load_at(I32, first_words, first);
                let fw = kb.b.ins().uextend(I64, fw);
                kb.addr(splats, fw, (pa * 16) as i64, 0)
            }
            None => splats,
        };
        let base = kb.addr(pairs, first, per_pair / 2, 0);
        let zero8 = {
            let z = kb.iconst32(0);
            let z = kb.b.ins().ireduce(I8, z);
            kb.b.ins().splat(I8X16, z)
        };
        let zero32 = {
            let z = kb.iconst32(0);
            kb.b.ins().splat(I32X4, z)
        };
        // Two pairs: one `i32x4` of the four filters' sums at the end.
        let pair_count = BLOCK / 2;
        debug_assert_eq!(pair_count, 2);
        let mut bytes = vec![vec![zero8; weights.len()]; pair_count];
        // Per pair: [f f f+1 f+1] partial sums, weighted.
        let mut wide = vec![zero32; pair_count];
        let flush = |kb: &mut KernelBuilder, bytes: &mut [Vec<Value>], wide: &mut [Value]| {
            for (pair, acc) in bytes.iter_mut().enumerate() {
                for (c, b) in acc.iter_mut().enumerate() {
                    // i8x16 -> i16x8 -> i32x4, pairwise: lanes 0-1 filter f, 2-3 filter f+1.
                    // The i16 lanes sum two bytes (< 2^9): widened signed, one `pmaddwd`.
                    let lo = kb.b.ins().uwiden_low(*b);
                    let hi = kb.b.ins().uwiden_high(*b);
                    let h = kb.b.ins().iadd_pairwise(lo, hi);
                    let lo = kb.b.ins().swiden_low(h);
                    let hi = kb.b.ins().swiden_high(h);
                    let v = kb.b.ins().iadd_pairwise(lo, hi);
                    let w = weights[c];
                    let shift = w.unsigned_abs().trailing_zeros();
                    let v = if shift == 0 {
                        v
                    } else {
                        kb.b.ins().ishl_imm_s(v, i64::from(shift))
                    };
                    wide[pair] = if w < 0 {
                        kb.b.ins().isub(wide[pair], v)
                    } else {
                        kb.b.ins().iadd(wide[pair], v)
                    };
                    *b = zero8;
                }
            }
        };
        let mut pending = 0;
        for t in 0..taps {
            for word in 0..nw {
                let a: Vec<Value> = (0..pa)
                    .map(|p| {
                        let at = (((t * pixel_words + word) * pa + p) * 16) as i64;
                        kb.load_aligned(I64X2, splats, at)
                    })
                    .collect();
                for (pair, acc) in bytes.iter_mut().enumerate() {
                    for q in 0..pw {
                        let off = pair as i64 * per_pair + (((t * nw + word) * pw + q) * 16) as i64;
                        let w = kb.load_aligned(I64X2, base, off);
                        for (p, &ap) in a.iter().enumerate() {
                            let both = kb.b.ins().band(ap, w);
                            let both = kb.b.ins().bitcast(I8X16, little, both);
                            let count = kb.b.ins().popcnt(both);
                            let c = class[q * pa + p];
                            acc[c] = kb.b.ins().iadd(acc[c], count);
                        }
                    }
                }
                pending += 1;
                if pending == flush_every {
                    flush(kb, &mut bytes, &mut wide);
                    pending = 0;
                }
            }
        }
        if pending > 0 {
            flush(kb, &mut bytes, &mut wide);
        }
        // [f0 f0 f1 f1] and [f2 f2 f3 f3] to [f0 f1 f2 f3].
        let quad = kb.b.ins().iadd_pairwise(wide[0], wide[1]);
        match total {
            // 2 * sum(A & B) - sum(A).
            Some(total) => {
                let total = kb.b.ins().ireduce(I32, total);
                let total = kb.b.ins().splat(I32X4, total);
                let twice = kb.b.ins().ishl_imm_s(quad, 1);
                kb.b.ins().isub(twice, total)
            }
            None => quad,
        }
    }
}

/// The filter pairs' interleaved planes for [`Kernel::vector_dots`], from
/// [`pack_weights`]'s table of `m` filters of `per` words.
fn pair_weights(table: &[u64], m: usize, per: usize) -> Vec<u64> {
    let mut v = vec![0u64; m.div_ceil(2) * 2 * per];
    for f in 0..m {
        for i in 0..per {
            v[((f / 2) * per + i) * 2 + f % 2] = table[f * per + i];
        }
    }
    v
}

/// The tables a bit or level stage compares with: `(sign, bounds, thresholds per channel)`.
fn stage_tables(kb: &mut KernelBuilder, stage: &OutputStage) -> Option<(Value, Value, usize)> {
    let table = |kb: &mut KernelBuilder, v: &[i64]| {
        kb.table(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    };
    match stage {
        OutputStage::Acc => None,
        OutputStage::Bits { sign, bound } => Some((table(kb, sign), table(kb, bound), 1)),
        OutputStage::Levels(l) => Some((table(kb, &l.sign), table(kb, &l.bounds), l.thresholds)),
    }
}

/// A threshold stage's tables as `i32` vectors, for four channels at a time, padded to
/// whole vectors: each rule `sign * dot >= bound` as one signed compare
/// `(dot > above) ^ flip`, with `above = bound - 1` and `flip = 0` on an ascending channel,
/// `above = -bound` and `flip = -1` (`dot <= -bound`) on a descending one. `above` is
/// `[threshold][channel]`, `flip` `[channel]`, `None` when every channel ascends.
#[derive(Clone, Copy)]
struct QuadTables {
    above: Value,
    flip: Option<Value>,
    thresholds: usize,
    /// Channels per row of `bounds`.
    stride: usize,
    /// The level of a count, `alpha * count + beta`, and its planes.
    alpha: i64,
    beta: i64,
    planes: usize,
}

impl QuadTables {
    /// The tables of `stage` (levels, or bits as one level), if every dot product is within
    /// `±dot_bound < 2^30`: bounds beyond it then clamp to `±2^30` and still compare alike.
    fn new(kb: &mut KernelBuilder, stage: &OutputStage, dot_bound: u64) -> Option<QuadTables> {
        const LIMIT: i64 = 1 << 30;
        let levels = stage.levels()?;
        if dot_bound >= LIMIT as u64 {
            return None;
        }
        let m = levels.sign.len();
        let stride = m.next_multiple_of(4);
        let n = levels.thresholds;
        let mut flip = vec![0i32; stride];
        let mut above = vec![0i32; n * stride];
        for ch in 0..m {
            let ascending = levels.sign[ch] >= 0;
            flip[ch] = if ascending { 0 } else { -1 };
            for t in 0..n {
                let b = levels.bounds[ch * n + t].clamp(-LIMIT, LIMIT);
                above[t * stride + ch] = if ascending { b - 1 } else { -b } as i32;
            }
        }
        let descending = levels.sign.iter().any(|&s| s < 0);
        Some(QuadTables {
            above: kb.table_i32(&above),
            flip: descending.then(|| kb.table_i32(&flip)),
            thresholds: n,
            stride,
            alpha: levels.alpha,
            beta: levels.beta,
            planes: levels.planes,
        })
    }

    /// The counts of thresholds reached by the dot products `quad` of channels
    /// `first..first + 4` (`first` a multiple of 4).
    fn counts(&self, kb: &mut KernelBuilder, first: Value, quad: Value) -> Value {
        use cranelift_codegen::ir::types::I32X4;
        let flip = self.flip.map(|f| {
            let at = kb.addr(f, first, 4, 0);
            kb.load_aligned(I32X4, at, 0)
        });
        let above_at = kb.addr(self.above, first, 4, 0);
        let mut count = None;
        for t in 0..self.thresholds {
            let above = kb.load_aligned(I32X4, above_at, (t * self.stride * 4) as i64);
            // All ones (-1) where reached.
            let mut on = kb.b.ins().icmp(IntCC::SignedGreaterThan, quad, above);
            if let Some(flip) = flip {
                on = kb.b.ins().bxor(on, flip);
            }
            count = Some(match count {
                None => kb.b.ins().ineg(on),
                Some(c) => kb.b.ins().isub(c, on),
            });
        }
        count.unwrap_or_else(|| {
            let zero = kb.iconst32(0);
            kb.b.ins().splat(I32X4, zero)
        })
    }
}

/// The count of thresholds `dot` reaches in channel `ch`.
fn count(
    kb: &mut KernelBuilder,
    (sign, bounds, n): (Value, Value, usize),
    ch: Value,
    dot: Value,
) -> Value {
    let s = kb.load_at(I64, sign, ch);
    let v = kb.b.ins().imul(dot, s);
    let row = kb.b.ins().imul_imm_s(ch, n as i64);
    let mut total = kb.iconst(0);
    for t in 0..n {
        let at = kb.b.ins().iadd_imm_s(row, t as i64);
        let b = kb.load_at(I64, bounds, at);
        let on = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, b);
        let on = kb.b.ins().uextend(I64, on);
        total = kb.b.ins().iadd(total, on);
    }
    total
}

/// The kernel: every output position (pooled pixel) of every image.
fn run(
    kb: &mut KernelBuilder,
    kernel: &Kernel<'_>,
    stage: &OutputStage,
    pool: Option<BitPool>,
    x: Value,
    dst: Value,
) {
    let g = kernel.g;
    let nw = kernel.pixel_words();
    let pa = kernel.planes.a.0;
    let in_pixels: usize = g.window.image.iter().product();
    let pixel_bytes = (pa * nw * 8) as i64;
    let padded = g.window.reaches_outside(&g.out);
    // Per axis: the pool's window (1 without a pool), and the output's extent.
    let (pool_window, out_ext) = match pool {
        Some(p) => (vec![p.window.0, p.window.1], vec![p.pooled.0, p.pooled.1]),
        None => (vec![1; g.out.len()], g.out.clone()),
    };
    let positions: usize = out_ext.iter().product();
    let gathered = kernel_taps(&pool_window);
    let tables = stage_tables(kb, stage);
    let out_planes = match stage {
        OutputStage::Acc => 0,
        OutputStage::Bits { .. } => 1,
        OutputStage::Levels(l) => l.planes,
    };
    let wo = words(g.m);
    let quads = match kernel.pairs {
        Some(_) => QuadTables::new(kb, stage, kernel.dot_bound()),
        None => None,
    };
    let splat_bytes = kernel.splat_bytes(gathered.len());
    let scratch = splat_bytes.map(|bytes| kb.stack(bytes));
    kb.for_range(g.batch, |kb, n| {
        let image = kb.addr(x, n, in_pixels as i64 * pixel_bytes, 0);
        for_each_position(kb, &out_ext, &mut |kb, po| {
            // The windows of the positions this output gathers (one without a pool).
            let mut windows = Vec::with_capacity(gathered.len());
            for offsets in &gathered {
                let o: Vec<Value> = po
                    .iter()
                    .zip(&pool_window)
                    .zip(offsets)
                    .map(|((&c, &p), &t)| {
                        let c = kb.mul_imm(c, p as i64);
                        kb.add_imm(c, t as i64)
                    })
                    .collect();
                let taps: Vec<TapAt> = g
                    .window
                    .taps(kb, &o, padded)
                    .into_iter()
                    .map(|t| (kb.addr(image, t.pixel, pixel_bytes, 0), t.inside))
                    .collect();
                let total = kernel
                    .planes
                    .bipolar_w
                    .then(|| kernel.activation_total(kb, &taps));
                let splats = scratch.zip(splat_bytes).map(|(s, bytes)| {
                    let one = (bytes / gathered.len() as u32) as i64;
                    let at = kb.add_imm(s, windows.len() as i64 * one);
                    kernel.splat_window(kb, &taps, at);
                    at
                });
                windows.push((taps, splats, total));
            }
            let pos = flat_index(kb, po, &out_ext);
            let np = kb.b.ins().imul_imm_s(n, positions as i64);
            let pixel = kb.b.ins().iadd(np, pos);
            let Some(tables) = tables else {
                // i32 sums, NCHW (no pool).
                let (taps, splats, total) = &windows[0];
                let positions = positions as i64;
                let plane0 = kb.b.ins().imul_imm_s(n, g.m as i64 * positions);
                let at = kb.b.ins().iadd(plane0, pos);
                let sums = kb.addr(dst, at, 4, 0);
                let store = |kb: &mut KernelBuilder, first: Value, width: usize| {
                    let d = kernel.dots(kb, first, width, (taps, *splats), *total);
                    let at = kb.addr(sums, first, positions * 4, 0);
                    for (j, dot) in d.into_iter().enumerate() {
                        let dot = kb.b.ins().ireduce(I32, dot);
                        kb.store(dot, at, j as i64 * positions * 4);
                    }
                };
                let blocks = g.m / BLOCK;
                kb.for_range(blocks, |kb, b| {
                    let first = kb.b.ins().imul_imm_s(b, BLOCK as i64);
                    store(kb, first, BLOCK);
                });
                for r in blocks * BLOCK..g.m {
                    let first = kb.iconst(r as i64);
                    store(kb, first, 1);
                }
                return;
            };
            let out_at = kb.addr(dst, pixel, (out_planes * wo * 8) as i64, 0);
            // The plane words of channels `first..first + width`, bits from `shift0`.
            let part = |kb: &mut KernelBuilder, first: Value, width: usize, shift0: Value| {
                if let (BLOCK, Some(pairs), Some(quads)) = (width, kernel.pairs, quads) {
                    if let Some(windows) = windows
                        .iter()
                        .map(|(taps, splats, total)| Some(((taps.len(), (*splats)?), *total)))
                        .collect::<Option<Vec<_>>>()
                    {
                        return quad_planes(kb, kernel, (pairs, quads), &windows, first, shift0);
                    }
                }
                let mut best: Option<Vec<Value>> = None;
                for (taps, splats, total) in &windows {
                    let d = kernel.dots(kb, first, width, (taps, *splats), *total);
                    let counts: Vec<Value> = d
                        .into_iter()
                        .enumerate()
                        .map(|(j, dot)| {
                            let ch = kb.b.ins().iadd_imm_s(first, j as i64);
                            count(kb, tables, ch, dot)
                        })
                        .collect();
                    best = Some(match best {
                        None => counts,
                        Some(b) => b
                            .into_iter()
                            .zip(counts)
                            .map(|(b, c)| {
                                let more = kb.b.ins().icmp(IntCC::SignedGreaterThan, c, b);
                                kb.select(more, c, b)
                            })
                            .collect(),
                    });
                }
                let zero = kb.iconst(0);
                let mut plane_words = vec![zero; out_planes];
                for (j, c) in best.expect("a window").into_iter().enumerate() {
                    let level = match stage {
                        OutputStage::Levels(l) => {
                            let scaled = kb.b.ins().imul_imm_s(c, l.alpha);
                            kb.b.ins().iadd_imm_s(scaled, l.beta)
                        }
                        _ => c,
                    };
                    let at = kb.b.ins().iadd_imm_s(shift0, j as i64);
                    for (r, word) in plane_words.iter_mut().enumerate() {
                        let shifted = kb.b.ins().ushr_imm_s(level, r as i64);
                        let bit = kb.b.ins().band_imm_s(shifted, 1);
                        let placed = kb.b.ins().ishl(bit, at);
                        *word = kb.b.ins().bor(*word, placed);
                    }
                }
                plane_words
            };
            for word in 0..wo {
                let count = WORD_BITS.min(g.m - word * WORD_BITS);
                let blocks = count / BLOCK;
                let zero = kb.iconst(0);
                let mut plane_words =
                    kb.fold_range(blocks, vec![zero; out_planes], |kb, b, acc| {
                        let shift = kb.b.ins().imul_imm_s(b, BLOCK as i64);
                        let first = kb.b.ins().iadd_imm_s(shift, (word * WORD_BITS) as i64);
                        let bits = part(kb, first, BLOCK, shift);
                        acc.into_iter()
                            .zip(bits)
                            .map(|(a, b)| kb.b.ins().bor(a, b))
                            .collect()
                    });
                for r in blocks * BLOCK..count {
                    let first = kb.iconst((word * WORD_BITS + r) as i64);
                    let shift = kb.iconst(r as i64);
                    let bits = part(kb, first, 1, shift);
                    for (a, b) in plane_words.iter_mut().zip(bits) {
                        *a = kb.b.ins().bor(*a, b);
                    }
                }
                for (r, &v) in plane_words.iter().enumerate() {
                    kb.store(v, out_at, ((r * wo + word) * 8) as i64);
                }
            }
        })
    });
}

/// The output plane words of channels `first..first + BLOCK` (bits from `shift0`) with
/// vectors: the dot products of each window, their counts of thresholds reached, the
/// largest count over the windows (a pooled pixel's: levels grow with counts), its level,
/// and each plane's four bits from the lanes' sign bits.
fn quad_planes(
    kb: &mut KernelBuilder,
    kernel: &Kernel<'_>,
    (pairs, quads): (Value, QuadTables),
    windows: &[((usize, Value), Option<Value>)],
    first: Value,
    shift0: Value,
) -> Vec<Value> {
    use cranelift_codegen::ir::types::I32X4;
    let mut best: Option<Value> = None;
    for &(window, total) in windows {
        let quad = kernel.vector_quad(kb, pairs, first, window, total);
        let count = quads.counts(kb, first, quad);
        best = Some(match best {
            None => count,
            Some(b) => kb.b.ins().smax(b, count),
        });
    }
    let mut level = best.expect("a window");
    let (alpha, beta, planes) = (quads.alpha, quads.beta, quads.planes);
    // Levels are small integers: their low 32 bits, all the planes read, are exact in i32.
    if alpha != 1 {
        let a = kb.iconst32(alpha as i32);
        let a = kb.b.ins().splat(I32X4, a);
        level = kb.b.ins().imul(level, a);
    }
    if beta != 0 {
        let c = kb.iconst32(beta as i32);
        let c = kb.b.ins().splat(I32X4, c);
        level = kb.b.ins().iadd(level, c);
    }
    (0..planes)
        .map(|r| {
            let top = kb.b.ins().ishl_imm_s(level, 31 - r as i64);
            let four = kb.b.ins().vhigh_bits(I64, top);
            kb.b.ins().ishl(four, shift0)
        })
        .collect()
}

/// The weights' planes, `[filter][tap][word][plane]`, from integers `(M, C, taps)`.
fn pack_weights(planes: &Planes, w: &[f32], (m, c, taps): (usize, usize, usize)) -> Vec<u64> {
    let (nw, pw) = (words(c), planes.w.0);
    let mut table = vec![0u64; m * taps * nw * pw];
    for j in 0..m {
        for ch in 0..c {
            for t in 0..taps {
                // In range of the weight type (inference and the interpreter check), so the
                // two's complement bits are the planes; a bipolar weight's plane is 1 for +1.
                let q = w[(j * c + ch) * taps + t] as i64;
                let q = if planes.bipolar_w {
                    i64::from(q > 0)
                } else {
                    q
                };
                for plane in 0..pw {
                    if (q >> plane) & 1 == 1 {
                        let word = ((j * taps + t) * nw + ch / WORD_BITS) * pw + plane;
                        table[word] |= 1 << (ch % WORD_BITS);
                    }
                }
            }
        }
    }
    table
}

/// A grouped layer's weight planes, `[filter][tap][word][plane]` over each filter's run
/// of `groups.span` words, from integers `(M, C/group, taps)`: a filter's bits at its
/// channels' places, 0 at other groups' (so the AND with the activations skips them).
fn pack_grouped_weights(
    planes: &Planes,
    w: &[f32],
    (m, taps): (usize, usize),
    groups: &GroupWords,
) -> Vec<u64> {
    let (cg, pw) = (groups.group_channels, planes.w.0);
    let mut table = Vec::with_capacity(m * taps * groups.span * pw);
    for f in 0..m {
        for t in 0..taps {
            // Bipolar weights come as two's complement 2-bit planes (see `conv`).
            let q = |ch: usize| w[(f * cg + ch) * taps + t] as i64;
            let by_plane: Vec<Vec<u64>> = (0..pw)
                .map(|plane| groups.place(f, |ch| (q(ch) >> plane) & 1 == 1))
                .collect();
            for word in 0..groups.span {
                table.extend(by_plane.iter().map(|run| run[word]));
            }
        }
    }
    table
}

/// The fused bit-serial layer of `node` as a kernel for another code generator, if it is
/// one such kernels cover (1-D or 2-D, padded or not; a threshold stage, not sums; 3-D ones
/// run on this crate's kernel). A matrix product is
/// offered as the 1x1 convolution it is.
pub(crate) fn plane_kernel(
    graph: &Graph,
    node: &Node,
    stage: &OutputStage,
    pool: Option<BitPool>,
    symbol: String,
) -> Result<Option<crate::PlaneConvKernel>, BackendError> {
    let shape = |v| graph.value(v).ty.shape.clone();
    let (x, w) = (shape(node.inputs[0]), shape(node.inputs[1]));
    let Some(data) = graph.const_data(node.inputs[1]) else {
        return Ok(None);
    };
    let w_data = data.to_f32_vec();
    let a_elem = &graph.value(node.inputs[0]).ty.elem;
    let w_elem = &graph.value(node.inputs[1]).ty.elem;
    let Some((pa, signed_a)) = a_elem.int_type().and_then(IntType::planes) else {
        return Ok(None);
    };
    let bipolar_w = w_elem.int_type() == Some(IntType::Bipolar);
    let (pw, signed_w) = if bipolar_w {
        (1, false)
    } else {
        match w_elem.int_type().and_then(IntType::planes) {
            Some(p) => p,
            None => return Ok(None),
        }
    };
    let mut planes = Planes {
        a: (pa, signed_a),
        w: (pw, signed_w),
        bipolar_w,
    };
    let (input, filters, output, strides, dilations, groups, weights, pads) =
        match (&node.op, &x[..], &w[..]) {
            (Op::BitSerialMatMul { .. }, &[rows, k], &[_, n]) => {
                let filters: Vec<f32> = (0..n * k).map(|i| w_data[(i % k) * n + i / k]).collect();
                let weights = pack_weights(&planes, &filters, (n, k, 1));
                (
                    (rows, k, 1, 1),
                    (n, 1, 1),
                    (1, 1),
                    (1, 1),
                    (1, 1),
                    1,
                    weights,
                    (0, 0),
                )
            }
            // A 1-D convolution of one group is the 2-D one of height 1: the same taps in the
            // same order, and integer sums besides.
            (Op::BitSerialConv { attrs, .. }, &[batch, c, wd], &[m, _, kw]) => {
                let out = shape(node.outputs[0]);
                if attrs.group != 1 {
                    return Ok(None);
                }
                let weights = pack_weights(&planes, &w_data, (m, c, kw));
                (
                    (batch, c, 1, wd),
                    (m, 1, kw),
                    (1, out[2]),
                    (1, attrs.strides[0]),
                    (1, attrs.dilations[0]),
                    1,
                    weights,
                    (0, attrs.pads[0]),
                )
            }
            (Op::BitSerialConv { attrs, .. }, &[batch, c, h, wd], &[m, cg, kh, kw]) => {
                let out = shape(node.outputs[0]);
                let groups = attrs.group.max(1);
                if groups > 1 && planes.bipolar_w {
                    // As `conv` runs them: signed 2-bit integers.
                    planes.bipolar_w = false;
                    planes.w = (2, true);
                }
                let weights = pack_weights(&planes, &w_data, (m, cg, kh * kw));
                (
                    (batch, c, h, wd),
                    (m, kh, kw),
                    (out[2], out[3]),
                    (attrs.strides[0], attrs.strides[1]),
                    (attrs.dilations[0], attrs.dilations[1]),
                    groups,
                    weights,
                    (attrs.pads[0], attrs.pads[1]),
                )
            }
            _ => return Ok(None),
        };
    let Some(levels) = stage.levels() else {
        return Ok(None);
    };
    let places = |(n, signed): (usize, bool)| (0..n).map(|p| place(p, n, signed)).collect();
    Ok(Some(crate::PlaneConvKernel {
        symbol,
        input,
        a_places: places(planes.a),
        w_places: places(planes.w),
        bipolar_weights: planes.bipolar_w,
        filters,
        output: pool.map_or(output, |p| p.computed()),
        strides,
        dilations,
        groups,
        pads,
        weights,
        levels: levels.kernel(),
        pool: pool.map(|p| crate::KernelPool {
            window: p.window,
            pooled: p.pooled,
        }),
    }))
}

/// `bitserial_matmul`: rows of activations `(rows, K)` against `(K, N)` integer weights, as
/// the 1x1 convolution of `rows` one-pixel images it is on planes.
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
    simd: bool,
) -> Result<(), BackendError> {
    let (a, w) = (&operands[0], &operands[1]);
    let unsupported = |why: &str| BackendError::unsupported(node, why);
    let w_data = w
        .const_f32()
        .ok_or_else(|| unsupported("the weights must be constant"))?;
    let (&[rows, k], &[_, n]) = (a.shape.as_slice(), w.shape.as_slice()) else {
        return Err(unsupported(
            "the native bit-serial product is (rows, K) x (K, N)",
        ));
    };
    let planes = Planes::of(node, a, &w.elem)?;
    let filters: Vec<f32> = (0..n * k).map(|i| w_data[(i % k) * n + i / k]).collect();
    let g = Geometry {
        batch: rows,
        c: k,
        m: n,
        taps: 1,
        out: vec![1],
        window: Window {
            image: vec![1],
            kernel: vec![1],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![0],
        },
    };
    let table = pack_weights(&planes, &filters, (n, k, 1));
    let kernel = Kernel::new(kb, planes, &g, (&table, None), simd);
    run(kb, &kernel, stage, None, a.ptr, out.ptr);
    Ok(())
}

/// `bitserial_conv`: `x (N, C, spatial...)` planes against `(M, C/group, k...)` integer
/// weights; with `pool` (2-D only), `out` is the pooled result. A grouped layer's filters
/// read their block's run of words ([`GroupWords`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
    stage: &OutputStage,
    pool: Option<BitPool>,
    simd: bool,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let unsupported = |why: &str| BackendError::unsupported(node, why);
    let filters = w
        .const_f32()
        .ok_or_else(|| unsupported("the weights must be constant"))?;
    let rank = x.shape.len();
    if rank < 3 || w.shape.len() != rank || out.shape.len() != rank {
        return Err(unsupported(
            "the bit-serial convolution needs an input (N, C, spatial...) and weights (M, C/group, k...)",
        ));
    }
    let (batch, c, m, wc) = (x.shape[0], x.shape[1], w.shape[0], w.shape[1]);
    let groups_n = attrs.group.max(1);
    if wc * groups_n != c || m % groups_n != 0 {
        return Err(unsupported("the weights do not match the groups' channels"));
    }
    let out_extent = match pool {
        Some(p) if rank == 4 => vec![p.computed().0, p.computed().1],
        Some(_) => {
            return Err(unsupported(
                "internal: a fused pool is 2-D (fuse-output-stages marks no other)",
            ))
        }
        None => out.shape[2..].to_vec(),
    };
    let mut planes = Planes::of(node, x, &w.elem)?;
    let window = Window::new(attrs.window(), &x.shape[2..]);
    let taps = window.taps_per_window();
    let g = Geometry {
        batch,
        c,
        m,
        taps,
        out: out_extent,
        window,
    };
    if groups_n == 1 && simd && kb.byte_shuffle.is_some() {
        if let Some(plan) = lookup_layer(&g, planes, &filters, stage, pool).and_then(Plan::new) {
            lookup_conv::conv(kb, &plan, x.ptr, out.ptr);
            return Ok(());
        }
    }
    if groups_n == 1 {
        let table = pack_weights(&planes, &filters, (m, c, taps));
        let kernel = Kernel::new(kb, planes, &g, (&table, None), simd);
        run(kb, &kernel, stage, pool, x.ptr, out.ptr);
        return Ok(());
    }
    // Bipolar weights count their activations' total over all channels; grouped, they run
    // as the signed 2-bit integers they are (+1 = 01, -1 = 11), whose 0 bits at other
    // groups' channels count nothing.
    if planes.bipolar_w {
        planes.bipolar_w = false;
        planes.w = (2, true);
    }
    let groups = GroupWords::new(c, m, groups_n, BLOCK);
    let table = pack_grouped_weights(&planes, &filters, (m, taps), &groups);
    let kernel = Kernel::new(kb, planes, &g, (&table, Some(&groups)), simd);
    run(kb, &kernel, stage, pool, x.ptr, out.ptr);
    Ok(())
}

/// Whether the fused bit-serial convolution `node` (output stage `stage`, then `pool`) runs
/// on table lookups ([`lookup_conv`]) on a target with a byte shuffle and vector popcounts:
/// what [`conv`] decides, from the graph alone, for the plan's description.
pub(crate) fn on_lookups(
    graph: &Graph,
    node: &Node,
    stage: &OutputStage,
    pool: Option<BitPool>,
) -> bool {
    let Op::BitSerialConv { attrs, .. } = &node.op else {
        return false;
    };
    let ty = |v| &graph.value(v).ty;
    let (x, w, out) = (ty(node.inputs[0]), ty(node.inputs[1]), ty(node.outputs[0]));
    let (Some(filters), Some((pa, signed_a))) = (
        graph.const_data(node.inputs[1]).map(|d| d.to_f32_vec()),
        x.elem.int_type().and_then(IntType::planes),
    ) else {
        return false;
    };
    let bipolar_w = w.elem.int_type() == Some(IntType::Bipolar);
    let w_planes = match w.elem.int_type() {
        _ if bipolar_w => (1, false),
        Some(t) => match t.planes() {
            Some(p) => p,
            None => return false,
        },
        None => return false,
    };
    let rank = x.shape.len();
    if attrs.group.max(1) != 1 || !(3..=4).contains(&rank) || w.shape.len() != rank {
        return false;
    }
    let out_extent = match pool {
        Some(p) => vec![p.computed().0, p.computed().1],
        None => out.shape[2..].to_vec(),
    };
    let window = Window::new(attrs.window(), &x.shape[2..]);
    let g = Geometry {
        batch: x.shape[0],
        c: x.shape[1],
        m: w.shape[0],
        taps: window.taps_per_window(),
        out: out_extent,
        window,
    };
    let planes = Planes {
        a: (pa, signed_a),
        w: w_planes,
        bipolar_w,
    };
    lookup_layer(&g, planes, &filters, stage, pool)
        .and_then(Plan::new)
        .is_some()
}

/// The layer of `g` as the lookup kernel reads it ([`lookup_conv`]), if 1-D or 2-D with a
/// threshold stage.
fn lookup_layer<'a>(
    g: &Geometry,
    planes: Planes,
    filters: &'a [f32],
    stage: &OutputStage,
    pool: Option<BitPool>,
) -> Option<Layer<'a>> {
    let w = &g.window;
    let pair = |v: &[usize], one: usize| match *v {
        [x] => Some((one, x)),
        [y, x] => Some((y, x)),
        _ => None,
    };
    let out = pair(&g.out, 1)?;
    let (pa, signed_a) = planes.a;
    Some(Layer {
        batch: g.batch,
        c: g.c,
        m: g.m,
        image: pair(&w.image, 1)?,
        kernel: pair(&w.kernel, 1)?,
        strides: pair(&w.strides, 1)?,
        dilations: pair(&w.dilations, 1)?,
        pads: pair(&w.pads, 0)?,
        out,
        pool: pool.map_or((1, 1), |p| p.window),
        pooled: pool.map_or(out, |p| p.pooled),
        a_places: (0..pa).map(|p| place(p, pa, signed_a)).collect(),
        weights: filters,
        w_planes: planes.w,
        bipolar_w: planes.bipolar_w,
        levels: stage.levels()?,
    })
}
