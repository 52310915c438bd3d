//! Bit-serial convolutions by table lookup: stride-1 layers of many positions, on 128-bit
//! vectors, where a byte shuffle (`pshufb`, `tbl`) runs on more ports than the byte
//! popcount that bounds the plane-pair kernel ([`super::bitserial`]).
//!
//! Four channels' bits of one activation plane at one pixel form a nibble `s`. A filter's
//! table for those channels at one tap holds, for every `s`, the sum of the weights that
//! `s` selects. One shuffle of that table by the nibbles of sixteen positions gives sixteen
//! partial dot products; weighted by the plane's place value and summed over planes, taps
//! and groups of channels, they are the dot products.
//!
//! - **Positions.** The sixteen lanes are sixteen consecutive output positions. The nibble
//!   image (`[plane][group][padded pixel]`, zero in the padding) is built once per sample;
//!   with stride 1 each row's run of a block's positions reads consecutive bytes of it, so
//!   a block's nibbles for each tap and group are a few loads merged by byte shuffles, made
//!   once per block and read by every filter.
//! - **Exact.** A table holds offset weights `w' = (w - w0) / ws >= 0` (`w0` the layer's
//!   smallest weight, or -1 with `ws = 2` for bipolar ones), so it fits a byte and sums
//!   count up in `u8` lanes; they are widened into `i16` before any could wrap.
//!   The dot product is `ws * sum(w' a) + w0 * sum(a)`, the activations' total counted by a
//!   popcount table. `i16` arithmetic is exact modulo 2^16, and a layer is taken only when
//!   every dot product fits `i16`, so the wrapped sums give it exactly.
//! - **Output.** The counts of thresholds reached are stored per position and channel, and
//!   [`count_planes`] writes the output's plane words from them.

use bnnc_runtime::packing::words;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I16, I16X8, I32, I64, I8, I8X16};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::builder::little_endian;
use super::count_planes::{self, CountLayout};
use super::KernelBuilder;
use crate::stage::Levels;

/// Positions a vector holds.
const LANES: usize = 16;

/// The most stack the nibble image and the counts may take.
const MAX_STACK_BYTES: usize = 128 << 10;

/// Up to this many (tap, group) steps a product is unrolled; beyond, taps run in a loop.
const UNROLLED_STEPS: usize = 320;

/// The most rows a block's positions span (each a load and a shuffle per nibble vector).
const MAX_SEGMENTS: usize = 4;

/// The most bytes of filter tables (four bytes a weight): beyond, they would stream from
/// beyond the L2 caches of most machines, and the plane pairs read a sixteenth as much.
const MAX_TABLE_BYTES: usize = 1 << 20;

/// The most groups of four channels (each group's steps are unrolled).
const MAX_GROUPS: usize = 256;

/// The most filters (the output pass is unrolled over them in sixteens).
const MAX_FILTERS: usize = 1024;

/// A fused bit-serial convolution as the lookup kernel sees it, 1-D layers as 2-D ones of
/// one row. Pairs are `(rows, columns)`.
pub(crate) struct Layer<'a> {
    pub batch: usize,
    /// Input channels and filters.
    pub c: usize,
    pub m: usize,
    pub image: (usize, usize),
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    /// The padding before the first row and column.
    pub pads: (usize, usize),
    /// The positions computed (a pool's gathered ones).
    pub out: (usize, usize),
    /// The pool's window (also its stride; `(1, 1)` without a pool) and pooled extent.
    pub pool: (usize, usize),
    pub pooled: (usize, usize),
    /// The place value of each activation plane (negative for a signed type's top one).
    pub a_places: Vec<i64>,
    /// The integer weights, `(M, C, rows, columns)` row-major.
    pub weights: &'a [f32],
    /// The weights' planes and signedness, or bipolar weights (`w = ±1`).
    pub w_planes: (usize, bool),
    pub bipolar_w: bool,
    pub levels: Levels,
}

/// A layer the kernel takes, with the sizes it runs on.
pub(crate) struct Plan<'a> {
    layer: Layer<'a>,
    /// Groups of four channels.
    groups: usize,
    /// The padded grid the windows span, `(rows, columns)`.
    grid: (usize, usize),
    /// Bytes per `(plane, group)` row of the nibble image.
    row_stride: usize,
    /// Output positions, and their blocks of [`LANES`].
    positions: usize,
    blocks: usize,
    /// The most rows of positions a block spans.
    segments: usize,
    /// Filters rounded up to sixteen (the output pass reads counts in sixteens).
    m_pad: usize,
    /// Weights as stored, `w = w_scale * w' + w_offset`, and the largest `w'`.
    w_scale: i64,
    w_offset: i64,
    w_max: usize,
    /// Filters whose sums run together (sharing each nibble load).
    filters_per_pass: usize,
}

impl<'a> Plan<'a> {
    /// The plan for `layer`, if the kernel takes it and should: stride 1, at most four
    /// planes each side and 15 thresholds, dot products within `i16`, the stack within
    /// [`MAX_STACK_BYTES`], the tables within [`MAX_TABLE_BYTES`], and blocks of sixteen
    /// positions at least three quarters full.
    pub fn new(layer: Layer<'a>) -> Option<Plan<'a>> {
        let l = &layer;
        let pa = l.a_places.len();
        let pw = l.w_planes.0;
        if l.strides != (1, 1)
            || pa == 0
            || pa > 4
            || pw == 0
            || pw > 4
            || l.levels.thresholds > 15
            || l.c == 0
            || l.m == 0
            || l.m > MAX_FILTERS
            || l.out.0 == 0
            || l.out.1 == 0
            || l.kernel.0 == 0
            || l.kernel.1 == 0
            || (l.pooled.0 * l.pool.0, l.pooled.1 * l.pool.1) != l.out
        {
            return None;
        }
        let groups = l.c.div_ceil(4);
        if groups > MAX_GROUPS {
            return None;
        }
        // Offset by the layer's smallest weight, not the type's: ternary weights of a 2-bit
        // type then look up sums of 0..=2, and bytes widen a third as often.
        let (w_scale, w_offset, w_max) = if l.bipolar_w {
            (2, -1, 1)
        } else {
            let (lo, hi) = l.weights.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &w| {
                (lo.min(w as i64), hi.max(w as i64))
            });
            // Within a 4-bit type the span is at most 15 (entries of four up to 60).
            let span = usize::try_from(hi - lo).ok().filter(|&s| s <= 15)?;
            (1, lo, span)
        };
        // The largest |a| and |w|: every dot product must fit i16.
        let positive: i64 = l.a_places.iter().filter(|&&p| p > 0).sum();
        let negative: i64 = -l.a_places.iter().filter(|&&p| p < 0).sum::<i64>();
        let max_a = positive.max(negative) as u64;
        let max_w = (w_scale * w_max as i64 + w_offset)
            .abs()
            .max(w_offset.abs()) as u64;
        let k = (l.c * l.kernel.0 * l.kernel.1) as u64;
        if k.saturating_mul(max_a).saturating_mul(max_w) >= 1 << 15 {
            return None;
        }
        let grid = (
            l.out.0 + (l.kernel.0 - 1) * l.dilations.0,
            l.out.1 + (l.kernel.1 - 1) * l.dilations.1,
        );
        let positions = l.out.0 * l.out.1;
        let blocks = positions.div_ceil(LANES);
        // A block of 16 positions in rows of `w` spans at most 1 + ceil(15 / w) rows.
        let segments = (1 + (LANES - 1).div_ceil(l.out.1)).min(l.out.0);
        // Three quarters of the lanes must be positions: the lookups are ~1.35x the
        // plane pairs' rate per lane (BENCHMARKS.md), so emptier blocks lose.
        if segments > MAX_SEGMENTS || blocks * LANES * 3 > positions * 4 {
            return None;
        }
        // Loads start up to 15 bytes before a run's first position and end up to 15 after.
        let row_stride = (grid.0 * grid.1 + LANES).next_multiple_of(LANES);
        let m_pad = l.m.next_multiple_of(LANES);
        let taps = l.kernel.0 * l.kernel.1;
        let stack = pa * groups * row_stride + taps * groups * pa * LANES + blocks * LANES * m_pad;
        if stack > MAX_STACK_BYTES || m_pad * taps * groups * 16 > MAX_TABLE_BYTES {
            return None;
        }
        Some(Plan {
            groups,
            grid,
            row_stride,
            positions,
            blocks,
            segments,
            m_pad,
            w_scale,
            w_offset,
            w_max,
            filters_per_pass: if pa <= 2 { 2 } else { 1 },
            layer,
        })
    }

    fn taps(&self) -> usize {
        self.layer.kernel.0 * self.layer.kernel.1
    }

    /// The grid offset of each tap from its window's first position.
    fn tap_offsets(&self) -> Vec<usize> {
        let l = &self.layer;
        (0..l.kernel.0)
            .flat_map(|ty| {
                (0..l.kernel.1).map(move |tx| ty * l.dilations.0 * self.grid.1 + tx * l.dilations.1)
            })
            .collect()
    }

    /// Per block and run of positions in one row: where its load starts in the grid
    /// (`[block][segment]`, `i32`), and the shuffle taking the run's lanes from that load
    /// and zero for the others (`[block][segment][lane]`; unused segments and lanes past the
    /// last position are all zero).
    fn segment_tables(&self) -> (Vec<i32>, Vec<u8>) {
        let l = &self.layer;
        let mut starts = vec![0i32; self.blocks * self.segments];
        let mut shuffles = vec![0x80u8; self.blocks * self.segments * LANES];
        for b in 0..self.blocks {
            let mut segment = None::<(usize, usize)>;
            for lane in 0..LANES {
                let q = b * LANES + lane;
                if q >= self.positions {
                    break;
                }
                let (y, x) = (q / l.out.1, q % l.out.1);
                // A new run at each row's start (and the block's).
                let s = match segment {
                    Some((s, row)) if row == y => s,
                    _ => {
                        let s = segment.map_or(0, |(s, _)| s + 1);
                        starts[b * self.segments + s] = (y * self.grid.1 + x - lane) as i32;
                        s
                    }
                };
                segment = Some((s, y));
                shuffles[(b * self.segments + s) * LANES + lane] = lane as u8;
            }
        }
        (starts, shuffles)
    }

    /// The filters' tables, `[filter][tap][group][nibble]`: the sum of the offset weights of
    /// the channels each nibble's bits select (0 for channels past `C` and filters past `M`).
    fn weight_tables(&self) -> Vec<u8> {
        let l = &self.layer;
        let taps = self.taps();
        let mut table = vec![0u8; self.m_pad * taps * self.groups * 16];
        for f in 0..l.m {
            for t in 0..taps {
                for g in 0..self.groups {
                    let offset = |i: usize| {
                        let ch = 4 * g + i;
                        if ch >= l.c {
                            return 0;
                        }
                        let w = l.weights[(f * l.c + ch) * taps + t] as i64;
                        ((w - self.w_offset) / self.w_scale) as u8
                    };
                    let at = ((f * taps + t) * self.groups + g) * 16;
                    for s in 0..16 {
                        table[at + s] = (0..4).filter(|i| s >> i & 1 == 1).map(offset).sum();
                    }
                }
            }
        }
        table
    }

    /// The activations' total's tables, `[group][nibble]`: the channels each nibble selects.
    fn total_tables(&self) -> Vec<u8> {
        let c = self.layer.c;
        (0..self.groups)
            .flat_map(|g| {
                (0..16).map(move |s: usize| {
                    (0..4).filter(|i| s >> i & 1 == 1 && 4 * g + i < c).count() as u8
                })
            })
            .collect()
    }

    /// The thresholds as `i16x8` splats, `[filter][threshold]`: each rule `sign * dot >=
    /// bound` as `(dot > above) ^ flip` (as the plane-pair kernel's quads), `above` clamped
    /// to `i16` (dot products are within `±(2^15 - 1)`, so a clamped rule decides alike);
    /// and the flips, `[filter]`, when some channel descends.
    fn threshold_tables(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let levels = &self.layer.levels;
        let n = levels.thresholds;
        let splat = |v: i16| (0..8).flat_map(move |_| v.to_le_bytes());
        let mut above = Vec::with_capacity(self.m_pad * n * 16);
        let mut flips = Vec::with_capacity(self.m_pad * 16);
        for f in 0..self.m_pad {
            let ascending = levels.sign.get(f).is_none_or(|&s| s >= 0);
            for t in 0..n {
                let b = levels.bounds.get(f * n + t).copied().unwrap_or(0);
                let a = if ascending { b - 1 } else { -b };
                above.extend(splat(a.clamp(i16::MIN.into(), i16::MAX.into()) as i16));
            }
            flips.extend(splat(if ascending { 0 } else { -1 }));
        }
        let descending = levels.sign.iter().any(|&s| s < 0);
        (above, descending.then_some(flips))
    }

    /// The nibble image of one sample's planes `image` at `ni`: zero, then each pixel the
    /// grid holds, a byte per plane and group.
    fn nibble_image(&self, kb: &mut KernelBuilder, image: Value, ni: Value) {
        let l = &self.layer;
        let pa = l.a_places.len();
        let nw = words(l.c);
        let bytes = pa * self.groups * self.row_stride;
        let zero = kb.splat_i8(0);
        kb.for_range(bytes / 64, |kb, i| {
            let at = kb.addr(ni, i, 64, 0);
            for k in 0..4 {
                kb.store(zero, at, k * 16);
            }
        });
        for k in 0..(bytes % 64) / 16 {
            kb.store(zero, ni, (bytes / 64 * 64 + k * 16) as i64);
        }
        let rows = l.image.0.min(self.grid.0.saturating_sub(l.pads.0));
        let cols = l.image.1.min(self.grid.1.saturating_sub(l.pads.1));
        kb.for_range(rows, |kb, y| {
            let row = kb.mul_imm(y, l.image.1 as i64);
            let grid_row = kb.add_imm(y, l.pads.0 as i64);
            let grid_row = kb.mul_imm(grid_row, self.grid.1 as i64);
            let grid_row = kb.add_imm(grid_row, l.pads.1 as i64);
            kb.for_range(cols, |kb, x| {
                let pixel = kb.b.ins().iadd(row, x);
                let src = kb.addr(image, pixel, (pa * nw * 8) as i64, 0);
                let col = kb.b.ins().iadd(grid_row, x);
                let dst = kb.b.ins().iadd(ni, col);
                for p in 0..pa {
                    for word in 0..nw {
                        let v = kb.load(I64, src, ((p * nw + word) * 8) as i64);
                        for k in 0..16.min(self.groups - word * 16) {
                            let g = word * 16 + k;
                            let nibble = kb.b.ins().ushr_imm_s(v, 4 * k as i64);
                            let nibble = kb.b.ins().band_imm_s(nibble, 15);
                            let byte = kb.b.ins().ireduce(I8, nibble);
                            kb.store(byte, dst, ((p * self.groups + g) * self.row_stride) as i64);
                        }
                    }
                }
            });
        });
    }

    /// Block `b`'s nibbles, `[tap][group][plane]` vectors at `gathered`, from the nibble
    /// image at `ni`: per vector, each row's run loaded and shuffled into its lanes.
    fn gather(
        &self,
        kb: &mut KernelBuilder,
        (ni, gathered): (Value, Value),
        (starts, shuffles): (Value, Value),
        b: Value,
    ) {
        let pa = self.layer.a_places.len();
        let segments: Vec<(Value, Value)> = (0..self.segments)
            .map(|s| {
                let first = kb.mul_imm(b, self.segments as i64);
                let i = kb.add_imm(first, s as i64);
                let start = kb.load_at(I32, starts, i);
                let start = kb.b.ins().uextend(I64, start);
                let from = kb.b.ins().iadd(ni, start);
                let at = kb.addr(shuffles, i, LANES as i64, 0);
                (from, kb.load_aligned(I8X16, at, 0))
            })
            .collect();
        for (t, &off) in self.tap_offsets().iter().enumerate() {
            for g in 0..self.groups {
                for p in 0..pa {
                    let row = ((p * self.groups + g) * self.row_stride + off) as i64;
                    let mut v = None;
                    for &(from, shuffle) in &segments {
                        let run = kb.load(I8X16, from, row);
                        let run = kb.shuffle_bytes(run, shuffle);
                        v = Some(v.map_or(run, |v| kb.b.ins().bor(v, run)));
                    }
                    let v = v.expect("a block has a segment");
                    kb.store(
                        v,
                        gathered,
                        (((t * self.groups + g) * pa + p) * LANES) as i64,
                    );
                }
            }
        }
    }

    /// `sum_p place_p * sum_{tap, group} table[tap][group][nibbles_p]` for each table base
    /// in `tables` (`tap_stride` bytes per tap; 0 for tables of groups only), over the
    /// block whose nibbles [`Plan::gather`] put at `gathered`: per table, the even lanes'
    /// sums and the odd lanes' (`i16x8` each). Entries are at most `max_entry`.
    fn sums(
        &self,
        kb: &mut KernelBuilder,
        gathered: Value,
        tables: &[Value],
        tap_stride: usize,
        max_entry: usize,
    ) -> Vec<[Value; 2]> {
        let places = &self.layer.a_places;
        let pa = places.len();
        let groups = self.groups;
        let flush_every = (255 / max_entry.max(1)).max(1);
        let zero8 = kb.splat_i8(0);
        let zero16 = kb.splat_i16(0);
        let nf = tables.len();
        // Per table and plane, the bytes not yet widened.
        let fresh = || vec![vec![zero8; pa]; nf];
        // Bytes widen into the even lanes' sums and the odd lanes', weighted by the plane's
        // place: on x86 one `pmaddubsw` by `[place, 0, ...]` or `[0, place, ...]` each
        // (a byte times at most 8, inside i16); elsewhere a mask or a shift, then the place.
        let weights: Option<Vec<[Value; 2]>> = kb.byte_dot.map(|_| {
            places
                .iter()
                .map(|&place| {
                    [0, 1].map(|odd| {
                        let bytes: Vec<u8> = (0..16)
                            .map(|i| if i % 2 == odd { place as i8 as u8 } else { 0 })
                            .collect();
                        let c = kb.b.func.dfg.constants.insert(bytes.into());
                        kb.b.ins().vconst(I8X16, c)
                    })
                })
                .collect()
        });
        let flush = |kb: &mut KernelBuilder, bytes: &[Vec<Value>], wide: &mut Vec<Value>| {
            for (f, planes) in bytes.iter().enumerate() {
                for (p, (&b, &place)) in planes.iter().zip(places).enumerate() {
                    for h in 0..2 {
                        let w = &mut wide[2 * f + h];
                        if let Some(weights) = &weights {
                            let v = kb.b.ins().x86_pmaddubsw(weights[p][h], b);
                            *w = kb.b.ins().iadd(*w, v);
                            continue;
                        }
                        let b = kb.b.ins().bitcast(I16X8, little_endian(), b);
                        let v = if h == 0 {
                            let low = kb.splat_i16(0xff);
                            kb.b.ins().band(b, low)
                        } else {
                            kb.b.ins().ushr_imm_s(b, 8)
                        };
                        let shift = place.unsigned_abs().trailing_zeros();
                        let v = if shift == 0 {
                            v
                        } else {
                            kb.b.ins().ishl_imm_s(v, i64::from(shift))
                        };
                        *w = if place < 0 {
                            kb.b.ins().isub(*w, v)
                        } else {
                            kb.b.ins().iadd(*w, v)
                        };
                    }
                }
            }
        };
        // One (tap, group) step: each table's lookup by each plane's nibbles added in.
        let step = |kb: &mut KernelBuilder,
                    nibbles: Value,
                    tabs: &[Value],
                    (t, g): (usize, usize),
                    bytes: &mut Vec<Vec<Value>>| {
            let idx: Vec<Value> = (0..pa)
                .map(|p| {
                    let at = (((t * groups + g) * pa + p) * LANES) as i64;
                    kb.load_aligned(I8X16, nibbles, at)
                })
                .collect();
            for (f, &tab) in tabs.iter().enumerate() {
                let table = kb.load_aligned(I8X16, tab, (t * tap_stride + g * 16) as i64);
                for (p, &i) in idx.iter().enumerate() {
                    let looked = kb.shuffle_bytes(table, i);
                    bytes[f][p] = kb.b.ins().iadd(bytes[f][p], looked);
                }
            }
        };
        let taps = self.taps();
        let mut wide = vec![zero16; 2 * nf];
        if taps * groups <= UNROLLED_STEPS {
            let mut bytes = fresh();
            let mut pending = 0;
            for t in 0..taps {
                for g in 0..groups {
                    step(kb, gathered, tables, (t, g), &mut bytes);
                    pending += 1;
                    if pending == flush_every {
                        flush(kb, &bytes, &mut wide);
                        bytes = fresh();
                        pending = 0;
                    }
                }
            }
            if pending > 0 {
                flush(kb, &bytes, &mut wide);
            }
        } else {
            wide = kb.fold_range(taps, wide, |kb, t, mut wide| {
                let nibbles = kb.addr(gathered, t, (groups * pa * LANES) as i64, 0);
                let tabs: Vec<Value> = tables
                    .iter()
                    .map(|&tab| kb.addr(tab, t, tap_stride as i64, 0))
                    .collect();
                let mut bytes = fresh();
                let mut pending = 0;
                for g in 0..groups {
                    step(kb, nibbles, &tabs, (0, g), &mut bytes);
                    pending += 1;
                    if pending == flush_every || g + 1 == groups {
                        flush(kb, &bytes, &mut wide);
                        bytes = fresh();
                        pending = 0;
                    }
                }
                wide
            });
        }
        wide.chunks(2).map(|w| [w[0], w[1]]).collect()
    }

    /// `w0 * sum(a)`, the weights' offset's share of every filter's dot products in a
    /// block, from the activations' total.
    fn offset_share(&self, kb: &mut KernelBuilder, total: [Value; 2]) -> [Value; 2] {
        let w0 = kb.b.ins().iconst(I16, self.w_offset);
        let w0 = kb.b.ins().splat(I16X8, w0);
        total.map(|t| kb.b.ins().imul(t, w0))
    }

    /// The dot products from a filter's sums and the block's [`Plan::offset_share`].
    fn dot(
        &self,
        kb: &mut KernelBuilder,
        sums: [Value; 2],
        offset: Option<[Value; 2]>,
    ) -> [Value; 2] {
        let scale = self.w_scale.trailing_zeros();
        let mut dot = sums;
        for h in 0..2 {
            if scale > 0 {
                dot[h] = kb.b.ins().ishl_imm_s(dot[h], i64::from(scale));
            }
            if let Some(o) = offset {
                dot[h] = kb.b.ins().iadd(dot[h], o[h]);
            }
        }
        dot
    }

    /// The counts of thresholds filter `f`'s dot products (even lanes', odd lanes') reach,
    /// as sixteen bytes.
    fn counts(
        &self,
        kb: &mut KernelBuilder,
        (above, flips): (Value, Option<Value>),
        f: Value,
        dot: [Value; 2],
    ) -> Value {
        let n = self.layer.levels.thresholds;
        let at = kb.addr(above, f, (n * 16) as i64, 0);
        let flip = flips.map(|fl| {
            let at = kb.addr(fl, f, 16, 0);
            kb.load_aligned(I16X8, at, 0)
        });
        let zero = kb.splat_i16(0);
        let mut count = [zero; 2];
        for t in 0..n {
            let a = kb.load_aligned(I16X8, at, (t * 16) as i64);
            for h in 0..2 {
                let mut on = kb.b.ins().icmp(IntCC::SignedGreaterThan, dot[h], a);
                if let Some(flip) = flip {
                    on = kb.b.ins().bxor(on, flip);
                }
                count[h] = kb.b.ins().isub(count[h], on);
            }
        }
        // Counts are at most 15: the odd lanes' go to each `i16`'s high byte.
        let odd = kb.b.ins().ishl_imm_s(count[1], 8);
        let both = kb.b.ins().bor(count[0], odd);
        kb.b.ins().bitcast(I8X16, little_endian(), both)
    }
}

/// Stores the counts of filters `f..f + counts.len()` (one or two, `f` even), sixteen
/// positions each, at `at` (`[position][filter]`, `m_pad` filters a position): two filters'
/// bytes interleaved, so that each position's pair is one `i16` store.
fn store_counts(kb: &mut KernelBuilder, counts: &[Value], at: Value, m_pad: usize) {
    let stride = m_pad as i64;
    match *counts {
        [a, b] => {
            for half in 0..2u8 {
                let lanes: Vec<u8> = (0..8)
                    .flat_map(|i| [8 * half + i, 8 * half + i + 16])
                    .collect();
                let mask = kb.b.func.dfg.immediates.push(lanes.into());
                let pairs = kb.b.ins().shuffle(a, b, mask);
                let pairs = kb.b.ins().bitcast(I16X8, little_endian(), pairs);
                for lane in 0..8u8 {
                    let pair = kb.b.ins().extractlane(pairs, lane);
                    kb.store(pair, at, i64::from(8 * half + lane) * stride);
                }
            }
        }
        _ => {
            for (j, &c) in counts.iter().enumerate() {
                for lane in 0..LANES as u8 {
                    let byte = kb.b.ins().extractlane(c, lane);
                    kb.store(byte, at, i64::from(lane) * stride + j as i64);
                }
            }
        }
    }
}

/// The layer of `plan`: planes `x` in, the threshold stage's (pooled) planes out at `dst`.
pub(crate) fn conv(kb: &mut KernelBuilder, plan: &Plan<'_>, x: Value, dst: Value) {
    let l = &plan.layer;
    let pa = l.a_places.len();
    let (taps, groups, m_pad) = (plan.taps(), plan.groups, plan.m_pad);
    let weights = kb.table(plan.weight_tables());
    let totals = (plan.w_offset != 0).then(|| kb.table(plan.total_tables()));
    let (above, flips) = plan.threshold_tables();
    let thresholds = (kb.table(above), flips.map(|f| kb.table(f)));
    let layout = CountLayout {
        m: l.m,
        m_pad,
        out: l.out,
        pool: l.pool,
        pooled: l.pooled,
    };
    let planes = kb.table(count_planes::tables(&l.levels));
    let (starts, shuffles) = plan.segment_tables();
    let segments = (kb.table_i32(&starts), kb.table(shuffles));
    let ni = kb.stack((pa * groups * plan.row_stride) as u32);
    let gathered = kb.stack((taps * groups * pa * LANES) as u32);
    let counts = kb.stack((plan.blocks * LANES * m_pad) as u32);
    let in_bytes = (l.image.0 * l.image.1 * pa * words(l.c) * 8) as i64;
    let out_bytes = (l.pooled.0 * l.pooled.1 * l.levels.planes * words(l.m) * 8) as i64;
    let per_pass = plan.filters_per_pass;
    let filter_bytes = (taps * groups * 16) as i64;
    kb.for_range(l.batch, |kb, n| {
        let image = kb.addr(x, n, in_bytes, 0);
        plan.nibble_image(kb, image, ni);
        kb.for_range(plan.blocks, |kb, b| {
            plan.gather(kb, (ni, gathered), segments, b);
            let offset = totals.map(|t| {
                let total = plan.sums(kb, gathered, &[t], 0, 4)[0];
                plan.offset_share(kb, total)
            });
            let q0 = kb.mul_imm(b, LANES as i64);
            let counts_at = kb.addr(counts, q0, m_pad as i64, 0);
            kb.for_range(m_pad / per_pass, |kb, pass| {
                let f0 = kb.mul_imm(pass, per_pass as i64);
                let tabs: Vec<Value> = (0..per_pass)
                    .map(|j| kb.addr(weights, f0, filter_bytes, j as i64 * filter_bytes))
                    .collect();
                let sums = plan.sums(kb, gathered, &tabs, groups * 16, 4 * plan.w_max);
                let counts: Vec<Value> = sums
                    .into_iter()
                    .enumerate()
                    .map(|(j, s)| {
                        let f = kb.add_imm(f0, j as i64);
                        let dot = plan.dot(kb, s, offset);
                        plan.counts(kb, thresholds, f, dot)
                    })
                    .collect();
                let at = kb.b.ins().iadd(counts_at, f0);
                store_counts(kb, &counts, at, m_pad);
            });
        });
        let out = kb.addr(dst, n, out_bytes, 0);
        count_planes::write(kb, &layout, l.levels.planes, (counts, planes), out);
    });
}
