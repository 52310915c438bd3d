//! Counts of thresholds reached, stored a byte per position and channel, written out as the
//! plane words of their levels: the output stage of kernels that compute many positions of
//! one channel at a time (the lookup convolutions, the `i16` first layer's rows), whose
//! counts come out across positions while the planes hold a pixel's channels together.
//!
//! Per output pixel and sixteen channels: the largest count over the pooled window (levels
//! grow with counts), then each plane's sixteen bits at once, a byte lookup giving `0x80`
//! where the plane of the count's level is 1 and a byte mask (`pmovmskb`) gathering them.

use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::types::{I64, I8X16};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::KernelBuilder;
use crate::stage::Levels;

/// Channels a byte vector holds.
const LANES: usize = 16;

/// Where the counts of one sample lie and what is written from them.
pub(crate) struct CountLayout {
    /// Channels, and channels a position (a multiple of 16; counts past `m` are ignored).
    pub m: usize,
    pub m_pad: usize,
    /// The positions counted, `(rows, columns)`, row-major.
    pub out: (usize, usize),
    /// The pool's window (also its stride; `(1, 1)` without a pool) and pooled extent.
    pub pool: (usize, usize),
    pub pooled: (usize, usize),
}

/// The tables [`write`] looks the planes up in, per plane `[count]`: `0x80` where that plane
/// of the count's level is 1 (counts up to 15: `levels.thresholds` must not exceed it).
pub(crate) fn tables(levels: &Levels) -> Vec<u8> {
    (0..levels.planes)
        .flat_map(|r| {
            (0..16i64).map(move |count| {
                let level = levels.alpha * count + levels.beta;
                if count as usize <= levels.thresholds && level >> r & 1 == 1 {
                    0x80
                } else {
                    0
                }
            })
        })
        .collect()
}

/// The `planes` plane words of every (pooled) pixel of one sample at `out`, channels-last,
/// from the counts at `counts` (`[position][channel]`) and the [`tables`] at `tables`.
pub(crate) fn write(
    kb: &mut KernelBuilder,
    layout: &CountLayout,
    planes: usize,
    (counts, tables): (Value, Value),
    out: Value,
) {
    let l = layout;
    let wo = words(l.m);
    let pixel_bytes = (planes * wo * 8) as i64;
    let luts: Vec<Value> = (0..planes)
        .map(|r| kb.load_aligned(I8X16, tables, (r * 16) as i64))
        .collect();
    let m_pad = l.m_pad as i64;
    let cols = l.out.1;
    kb.for_range(l.pooled.0, |kb, oy| {
        let row = kb.mul_imm(oy, (l.pool.0 * cols) as i64);
        let out_row = kb.mul_imm(oy, l.pooled.1 as i64);
        kb.for_range(l.pooled.1, |kb, ox| {
            let col = kb.mul_imm(ox, l.pool.1 as i64);
            let v = kb.b.ins().iadd(row, col);
            let at = kb.addr(counts, v, m_pad, 0);
            let pixel = kb.b.ins().iadd(out_row, ox);
            let dst = kb.addr(out, pixel, pixel_bytes, 0);
            let mut plane_words = vec![vec![None::<Value>; wo]; planes];
            for chunk in 0..l.m_pad / LANES {
                let mut best: Option<Value> = None;
                for dy in 0..l.pool.0 {
                    for dx in 0..l.pool.1 {
                        let off = ((dy * cols + dx) as i64) * m_pad + (chunk * LANES) as i64;
                        let c = kb.load(I8X16, at, off);
                        best = Some(match best {
                            None => c,
                            Some(b) => kb.b.ins().umax(b, c),
                        });
                    }
                }
                let best = best.expect("a pool window has a position");
                let (word, within) = (chunk * LANES / WORD_BITS, chunk * LANES % WORD_BITS);
                for (r, &lut) in luts.iter().enumerate() {
                    let top = kb.shuffle_bytes(lut, best);
                    let bits = kb.b.ins().vhigh_bits(I64, top);
                    let bits = if within == 0 {
                        bits
                    } else {
                        kb.b.ins().ishl_imm_s(bits, within as i64)
                    };
                    let w = &mut plane_words[r][word];
                    *w = Some(match *w {
                        None => bits,
                        Some(w) => kb.b.ins().bor(w, bits),
                    });
                }
            }
            // Channels past `m` count garbage: their bits must stay 0.
            let tail = l.m % WORD_BITS;
            for (r, row_words) in plane_words.into_iter().enumerate() {
                for (word, w) in row_words.into_iter().enumerate() {
                    let mut w = w.expect("every word has a chunk");
                    if word + 1 == wo && tail != 0 {
                        w = kb.b.ins().band_imm_s(w, ((1u64 << tail) - 1) as i64);
                    }
                    kb.store(w, dst, ((r * wo + word) * 8) as i64);
                }
            }
        });
    });
}
