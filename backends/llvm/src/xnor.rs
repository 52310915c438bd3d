//! The XNOR convolution ([`XnorConvKernel`]): per output pixel, eight filters per vector
//! over every tap and word. Each vector of dot products is compared with eight thresholds,
//! giving a byte of the pixel's packed bits (ORed into the pooled pixel's with a pool), or
//! stored as eight `i32` sums. A padded layer counts only the taps inside the image.

use bnnc_cranelift::{GroupWords, XnorConvKernel, XnorOutput};
use bnnc_runtime::packing::words;
use inkwell::values::{IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use crate::emitter::{filters_in_lanes, Built, KernelEmitter, BEYOND, LANES};
use crate::window::Window;

/// Up to this many blocks of filters, the block loop is unrolled.
const UNROLLED_BLOCKS: usize = 8;

/// The sign and bound tables of a kernel writing bits.
struct BitTables<'ctx> {
    sign: PointerValue<'ctx>,
    bound: PointerValue<'ctx>,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// Adds kernel `k` to the module.
    pub fn xnor_conv(&self, k: &XnorConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (oh, ow) = k.output;
        let (nw, taps, wo) = (words(c), kh * kw, words(m));
        let blocks = m.div_ceil(LANES);
        let cg = c / k.groups.max(1);
        let padded = k.pads != (0, 0);
        // A grouped layer's blocks read their run of words ([`GroupWords`]), masked to
        // each filter's group.
        let grouped = (k.groups > 1).then(|| GroupWords::in_lanes(c, m, k.groups, LANES));
        let read = grouped.as_ref().map_or(nw, |g| g.span);
        let per_filter = taps * read;
        let weights = match &grouped {
            None => k.weights.clone(),
            Some(g) => placed_weights(g, &k.weights, m, taps),
        };
        // Weights as [block][tap][word][lane]; padded filters are zeros with "never" bounds.
        let wt = filters_in_lanes(&weights, m, per_filter);
        let name = &k.symbol;
        let i64t = self.context.i64_type();
        let wt = self.table(&format!("{name}.weights"), i64t, &wt);
        let bits = match &k.writes {
            XnorOutput::Bits { sign, bound } => {
                // Signs as masks: -1 for a descending channel, 0 otherwise (see `signed`).
                let mut sign: Vec<i64> = sign.iter().map(|&s| if s < 0 { -1 } else { 0 }).collect();
                let mut bound = bound.clone();
                sign.resize(blocks * LANES, 0);
                bound.resize(blocks * LANES, BEYOND);
                Some(BitTables {
                    sign: self.table(&format!("{name}.sign"), i64t, &sign),
                    bound: self.table(&format!("{name}.bound"), i64t, &bound),
                })
            }
            XnorOutput::Sums => None,
        };
        // Grouped: masks [block][word][lane] and each block's first word.
        let group_tables = grouped.as_ref().map(|g| {
            let masks: Vec<u64> = (0..m).flat_map(|f| g.mask(f)).collect();
            let masks = filters_in_lanes(&masks, m, g.span);
            let firsts: Vec<i64> = (0..blocks)
                .map(|b| g.first_word[b * LANES] as i64)
                .collect();
            (
                self.table(&format!("{name}.masks"), i64t, &masks),
                self.table(&format!("{name}.first_words"), i64t, &firsts),
            )
        });

        let (function, x, out) = self.kernel_function(name);
        let b = &self.builder;
        let window = Window {
            image: (h, w),
            strides: k.strides,
            dilations: k.dilations,
        };
        // The pixels written: the pooled ones (zeroed first, then ORed into), or every one.
        let ((ph, pw), (out_h, out_w)) = match k.pool {
            Some(p) => (p.window, p.pooled),
            None => ((1, 1), (oh, ow)),
        };
        if k.pool.is_some() {
            self.counted(function, batch * out_h * out_w * wo, &mut |i| {
                b.build_store(self.gep_i64(out, i)?, self.i64(0))?;
                Ok(())
            })?;
        }
        self.counted(function, batch, &mut |n| {
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    // The first word of every tap's pixel (row-major taps), whether it lies
                    // inside the image (padded), and, with one group, every tap's words,
                    // which every block reads.
                    let mut tap_firsts = Vec::with_capacity(taps);
                    let mut tap_inside = Vec::with_capacity(taps);
                    let mut tap_words = Vec::with_capacity(per_filter);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let (pixel, inside) =
                                window.tap_padded(self, n, (oy, ox), (ky, kx), k.pads)?;
                            tap_inside.extend(inside);
                            let first = b.build_int_mul(pixel, self.i64(nw as i64), "")?;
                            tap_firsts.push(first);
                            for word in (0..nw).filter(|_| grouped.is_none()) {
                                let at = b.build_int_add(first, self.i64(word as i64), "")?;
                                tap_words.push(self.splat(self.load_i64(x, at)?, LANES)?);
                            }
                        }
                    }
                    // The window's terms: every tap's channels, or those of the taps inside.
                    let k_total = if padded {
                        let mut inside = self.i64(0);
                        for &t in &tap_inside {
                            let one = b.build_int_z_extend(t, i64t, "")?;
                            inside = b.build_int_add(inside, one, "")?;
                        }
                        b.build_int_mul(inside, self.i64(cg as i64), "terms")?
                    } else {
                        self.i64((cg * taps) as i64)
                    };
                    let zero = self.v8().const_zero();
                    // Tap `t`'s mismatches, or none in the padding.
                    let counted = |t: usize, p: VectorValue<'ctx>| -> Built<VectorValue<'ctx>> {
                        match tap_inside.get(t) {
                            Some(&inside) => {
                                Ok(b.build_select(inside, p, zero, "")?.into_vector_value())
                            }
                            None => Ok(p),
                        }
                    };
                    // The dot products of block `blk` of eight filters.
                    let block_dot = |blk: IntValue<'ctx>| -> Built<VectorValue<'ctx>> {
                        let first =
                            b.build_int_mul(blk, self.i64((per_filter * LANES) as i64), "")?;
                        let mut acc = zero;
                        if let Some((masks, firsts)) = group_tables {
                            // The block's run of words of every tap, masked per filter.
                            let fw = self.load_i64(firsts, blk)?;
                            let mbase =
                                b.build_int_mul(blk, self.i64((read * LANES) as i64), "")?;
                            for (t, &tap_first) in tap_firsts.iter().enumerate() {
                                let run = b.build_int_add(tap_first, fw, "run")?;
                                for word in 0..read {
                                    let at = b.build_int_add(run, self.i64(word as i64), "")?;
                                    let xs = self.splat(self.load_i64(x, at)?, LANES)?;
                                    let i = t * read + word;
                                    let at =
                                        b.build_int_add(first, self.i64((i * LANES) as i64), "")?;
                                    let wv = self.load_v8(wt, at)?;
                                    let at = b.build_int_add(
                                        mbase,
                                        self.i64((word * LANES) as i64),
                                        "",
                                    )?;
                                    let mask = self.load_v8(masks, at)?;
                                    let d = b.build_xor(xs, wv, "d")?;
                                    let d = b.build_and(d, mask, "masked")?;
                                    let p = self.popcount(d)?.into_vector_value();
                                    acc = b.build_int_add(acc, counted(t, p)?, "acc")?;
                                }
                            }
                        }
                        for (i, &xs) in tap_words.iter().enumerate() {
                            let at = b.build_int_add(first, self.i64((i * LANES) as i64), "")?;
                            let wv = self.load_v8(wt, at)?;
                            let d = b.build_xor(xs, wv, "d")?;
                            let p = self.popcount(d)?.into_vector_value();
                            acc = b.build_int_add(acc, counted(i / nw, p)?, "acc")?;
                        }
                        let kv = self.splat(k_total, LANES)?;
                        let twice = b.build_int_add(acc, acc, "twice")?;
                        b.build_int_sub(kv, twice, "dot")
                    };
                    let Some(bits) = &bits else {
                        return self.store_sums(
                            function,
                            (out, n),
                            (oy, ox),
                            (m, oh, ow),
                            &block_dot,
                        );
                    };
                    // The byte of packed bits of block `blk` of eight filters.
                    let block_byte = |blk: IntValue<'ctx>| -> Built<IntValue<'ctx>> {
                        let dot = block_dot(blk)?;
                        let lanes = b.build_int_mul(blk, self.i64(LANES as i64), "")?;
                        let s = self.load_v8(bits.sign, lanes)?;
                        let bd = self.load_v8(bits.bound, lanes)?;
                        let v = self.signed(dot, s)?;
                        let on = b.build_int_compare(IntPredicate::SGE, v, bd, "on")?;
                        Ok(b.build_bit_cast(on, self.context.i8_type(), "byte")?
                            .into_int_value())
                    };
                    let (py, px) = if k.pool.is_some() {
                        (
                            b.build_int_unsigned_div(oy, self.i64(ph as i64), "py")?,
                            b.build_int_unsigned_div(ox, self.i64(pw as i64), "px")?,
                        )
                    } else {
                        (oy, ox)
                    };
                    let opix = self.pixel_index(n, (py, px), (out_h, out_w))?;
                    let out_first = b.build_int_mul(opix, self.i64(wo as i64), "")?;
                    if blocks <= UNROLLED_BLOCKS {
                        let mut word = self.i64(0);
                        for blk in 0..blocks {
                            let byte = block_byte(self.i64(blk as i64))?;
                            let byte = b.build_int_z_extend(byte, i64t, "")?;
                            let shifted =
                                b.build_left_shift(byte, self.i64(((blk % 8) * 8) as i64), "")?;
                            word = b.build_or(word, shifted, "word")?;
                            if blk % 8 == 7 || blk + 1 == blocks {
                                let at =
                                    b.build_int_add(out_first, self.i64((blk / 8) as i64), "")?;
                                let dst = self.gep_i64(out, at)?;
                                if k.pool.is_some() {
                                    let old = b.build_load(i64t, dst, "old")?.into_int_value();
                                    word = b.build_or(old, word, "pooled")?;
                                }
                                b.build_store(dst, word)?;
                                word = self.i64(0);
                            }
                        }
                        return Ok(());
                    }
                    // Many blocks: a loop storing a byte each, whose code fits the caches;
                    // the bytes of the last word past the blocks must read 0.
                    if k.pool.is_none() && blocks % 8 != 0 {
                        let last = b.build_int_add(out_first, self.i64((wo - 1) as i64), "")?;
                        b.build_store(self.gep_i64(out, last)?, self.i64(0))?;
                    }
                    let base = self.gep_i64(out, out_first)?;
                    self.counted(function, blocks, &mut |blk| {
                        let mut byte = block_byte(blk)?;
                        let i8t = self.context.i8_type();
                        // SAFETY (of the generated code): byte `blk` of the pixel's words.
                        let dst = unsafe { b.build_in_bounds_gep(i8t, base, &[blk], "dst")? };
                        if k.pool.is_some() {
                            let old = b.build_load(i8t, dst, "old")?.into_int_value();
                            byte = b.build_or(old, byte, "pooled")?;
                        }
                        b.build_store(dst, byte)?;
                        Ok(())
                    })?;
                    Ok(())
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }

    /// Stores pixel `(oy, ox)` of image `n`'s dot products, `block_dot` of each block of
    /// eight filters, as `i32` sums in `out`, `(batch, m, oh, ow)` row-major: the lanes of
    /// whole blocks in a loop (unrolled when few), those of the last one below `m`.
    fn store_sums(
        &self,
        function: inkwell::values::FunctionValue<'ctx>,
        (out, n): (PointerValue<'ctx>, IntValue<'ctx>),
        (oy, ox): (IntValue<'ctx>, IntValue<'ctx>),
        (m, oh, ow): (usize, usize, usize),
        block_dot: &dyn Fn(IntValue<'ctx>) -> Built<VectorValue<'ctx>>,
    ) -> Built<()> {
        let b = &self.builder;
        let i32t = self.context.i32_type();
        let plane = (oh * ow) as i64;
        // Channel 0's element of this pixel: `n * m * oh * ow + oy * ow + ox`.
        let image = b.build_int_mul(n, self.i64(m as i64 * plane), "")?;
        let row = b.build_int_mul(oy, self.i64(ow as i64), "")?;
        let at = b.build_int_add(image, row, "")?;
        let at = b.build_int_add(at, ox, "first")?;
        let store_block = |blk: IntValue<'ctx>, lanes: usize| -> Built<()> {
            let dot = block_dot(blk)?;
            let sums = b.build_int_truncate(dot, i32t.vec_type(LANES as u32), "sums")?;
            let channel = b.build_int_mul(blk, self.i64(LANES as i64), "")?;
            let offset = b.build_int_mul(channel, self.i64(plane), "")?;
            let base = b.build_int_add(at, offset, "")?;
            for lane in 0..lanes {
                let v = b.build_extract_element(
                    sums,
                    self.context.i32_type().const_int(lane as u64, false),
                    "",
                )?;
                let index = b.build_int_add(base, self.i64(lane as i64 * plane), "")?;
                // SAFETY (of the generated code): channel `blk * 8 + lane` < m of this pixel.
                let dst = unsafe { b.build_in_bounds_gep(i32t, out, &[index], "dst")? };
                b.build_store(dst, v)?;
            }
            Ok(())
        };
        let whole = m / LANES;
        if whole <= UNROLLED_BLOCKS {
            for blk in 0..whole {
                store_block(self.i64(blk as i64), LANES)?;
            }
        } else {
            self.counted(function, whole, &mut |blk| store_block(blk, LANES))?;
        }
        if m % LANES != 0 {
            store_block(self.i64(whole as i64), m % LANES)?;
        }
        Ok(())
    }
}

/// A grouped layer's filters' words `(M, taps, words(C / groups))`, each run holding its
/// group's channels from bit 0, placed in the runs of words their blocks read
/// (`(M, taps, span)`).
pub(crate) fn placed_weights(g: &GroupWords, weights: &[u64], m: usize, taps: usize) -> Vec<u64> {
    let nwg = words(g.group_channels);
    let mut table = Vec::with_capacity(m * taps * g.span);
    for f in 0..m {
        for t in 0..taps {
            let run = &weights[(f * taps + t) * nwg..][..nwg];
            table.extend(g.place(f, |ch| (run[ch / 64] >> (ch % 64)) & 1 == 1));
        }
    }
    table
}
