//! The fused bit-serial convolution ([`PlaneConvKernel`]): per output pixel (pooled pixel),
//! a loop over blocks of eight filters, one per 64-bit lane; per block, every tap's
//! activation planes (splat) against the filters' planes, `vpopcntq` of each pair's AND
//! added into one accumulator per pair weight; the thresholds reached (by the largest value
//! over the pool's window), and their levels stored as planes (`levels.rs`). A tap in the
//! padding reads the activation 0: words of clear bits.

use bnnc_cranelift::{GroupWords, PlaneConvKernel};
use bnnc_runtime::packing::words;
use inkwell::values::{IntValue, VectorValue};

use crate::emitter::{filters_in_lanes, Built, KernelEmitter, LANES};
use crate::window::Window;

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// Adds kernel `k` to the module.
    pub fn plane_conv(&self, k: &PlaneConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (nw, taps, wo) = (words(c), kh * kw, words(m));
        let (pa, pw) = (k.a_places.len(), k.w_places.len());
        let blocks = m.div_ceil(LANES);
        // A grouped layer's blocks read their run of words ([`GroupWords`]); a filter's
        // planes are 0 at other groups' channels, so the ANDs count only its own.
        let grouped = (k.groups > 1).then(|| GroupWords::in_lanes(c, m, k.groups, LANES));
        let read = grouped.as_ref().map_or(nw, |g| g.span);
        let per_filter = taps * read * pw;
        let weights = match &grouped {
            None => k.weights.clone(),
            Some(g) => placed_planes(g, &k.weights, (m, taps, pw)),
        };
        // Weights as [block][tap][word][plane][lane]; padded filters are zeros.
        let wt = filters_in_lanes(&weights, m, per_filter);
        let name = &k.symbol;
        let i64t = self.context.i64_type();
        let wt = self.table(&format!("{name}.weights"), i64t, &wt);
        let tables = self.output_tables(name, &k.levels, (m, m), (i64t, LANES));
        // Grouped: each block's first word.
        let firsts = grouped.as_ref().map(|g| {
            let firsts: Vec<i64> = (0..blocks)
                .map(|b| g.first_word[b * LANES] as i64)
                .collect();
            self.table(&format!("{name}.first_words"), i64t, &firsts)
        });

        let (function, x, out) = self.kernel_function(name);
        let b = &self.builder;
        let window = Window {
            image: (h, w),
            strides: k.strides,
            dilations: k.dilations,
        };
        // The pair weights, each with its accumulator index.
        let mut weights: Vec<i64> = Vec::new();
        let mut pair_class = vec![0usize; pa * pw];
        for (q, &wq) in k.w_places.iter().enumerate() {
            for (p, &ap) in k.a_places.iter().enumerate() {
                let wgt = ap * wq;
                let class = weights.iter().position(|&x| x == wgt).unwrap_or_else(|| {
                    weights.push(wgt);
                    weights.len() - 1
                });
                pair_class[q * pa + p] = class;
            }
        }
        let ((ph, pwin), (out_h, out_w)) = match k.pool {
            Some(p) => (p.window, p.pooled),
            None => ((1, 1), k.output),
        };
        let out_planes = k.levels.planes;
        // Activation word `at`, or clear bits for a tap in the padding.
        let activation = |at: IntValue<'ctx>, inside: Option<IntValue<'ctx>>| {
            let a = self.load_i64(x, at)?;
            match inside {
                Some(inside) => Ok(b.build_select(inside, a, self.i64(0), "")?.into_int_value()),
                None => Ok(a),
            }
        };
        self.counted(function, batch, &mut |n| {
            self.counted(function, out_h, &mut |py| {
                self.counted(function, out_w, &mut |px| {
                    // The pixel's output words, zeroed: the blocks store bytes into them.
                    let opix = self.pixel_index(n, (py, px), (out_h, out_w))?;
                    let out_first =
                        b.build_int_mul(opix, self.i64((out_planes * wo) as i64), "")?;
                    for i in 0..out_planes * wo {
                        let at = b.build_int_add(out_first, self.i64(i as i64), "")?;
                        b.build_store(self.gep_i64(out, at)?, self.i64(0))?;
                    }
                    // Per window position, the first word of every tap's pixel.
                    let mut windows = Vec::with_capacity(ph * pwin);
                    for wy in 0..ph {
                        for wx in 0..pwin {
                            let oy = b.build_int_add(
                                b.build_int_mul(py, self.i64(ph as i64), "")?,
                                self.i64(wy as i64),
                                "oy",
                            )?;
                            let ox = b.build_int_add(
                                b.build_int_mul(px, self.i64(pwin as i64), "")?,
                                self.i64(wx as i64),
                                "ox",
                            )?;
                            // Each tap's first word, and whether it lies inside the image.
                            let mut firsts = Vec::with_capacity(taps);
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let (pixel, inside) =
                                        window.tap_padded(self, n, (oy, ox), (ky, kx), k.pads)?;
                                    let pixel_words = self.i64((pa * nw) as i64);
                                    let first = b.build_int_mul(pixel, pixel_words, "")?;
                                    firsts.push((first, inside));
                                }
                            }
                            // With bipolar weights, sum_p place_p * popcount(A_p).
                            let total = if k.bipolar_weights {
                                let mut total = self.i64(0);
                                for &(first, inside) in &firsts {
                                    for (p, &place) in k.a_places.iter().enumerate() {
                                        for word in 0..nw {
                                            let at = b.build_int_add(
                                                first,
                                                self.i64((p * nw + word) as i64),
                                                "",
                                            )?;
                                            let a = activation(at, inside)?;
                                            let cnt = self.popcount(a)?.into_int_value();
                                            let wc = b.build_int_mul(cnt, self.i64(place), "")?;
                                            total = b.build_int_add(total, wc, "total")?;
                                        }
                                    }
                                }
                                Some(self.splat(total, LANES)?)
                            } else {
                                None
                            };
                            windows.push((firsts, total));
                        }
                    }
                    self.counted(function, blocks, &mut |blk| {
                        let wbase =
                            b.build_int_mul(blk, self.i64((per_filter * LANES) as i64), "")?;
                        // The block's first word (grouped), after each plane's first.
                        let fw = match firsts {
                            Some(t) => self.load_i64(t, blk)?,
                            None => self.i64(0),
                        };
                        let mut best: Option<VectorValue<'ctx>> = None;
                        for (tap_firsts, total) in &windows {
                            let mut acc = vec![self.v8().const_zero(); weights.len()];
                            for (tap, &(first, inside)) in tap_firsts.iter().enumerate() {
                                let first = b.build_int_add(first, fw, "run")?;
                                for word in 0..read {
                                    let mut a = Vec::with_capacity(pa);
                                    for p in 0..pa {
                                        let at = b.build_int_add(
                                            first,
                                            self.i64((p * nw + word) as i64),
                                            "",
                                        )?;
                                        a.push(self.splat(activation(at, inside)?, LANES)?);
                                    }
                                    for q in 0..pw {
                                        let i = (tap * read + word) * pw + q;
                                        let at = b.build_int_add(
                                            wbase,
                                            self.i64((i * LANES) as i64),
                                            "",
                                        )?;
                                        let wv = self.load_v8(wt, at)?;
                                        for (p, &ap) in a.iter().enumerate() {
                                            let both = b.build_and(ap, wv, "both")?;
                                            let cnt = self.popcount(both)?.into_vector_value();
                                            let cl = pair_class[q * pa + p];
                                            acc[cl] = b.build_int_add(acc[cl], cnt, "acc")?;
                                        }
                                    }
                                }
                            }
                            let mut dot = self.v8().const_zero();
                            for (cl, &wgt) in weights.iter().enumerate() {
                                let wgt = self.const_splat(self.v8(), wgt);
                                let term = b.build_int_mul(acc[cl], wgt, "")?;
                                dot = b.build_int_add(dot, term, "dot")?;
                            }
                            if let Some(total) = total {
                                let twice = b.build_int_add(dot, dot, "")?;
                                dot = b.build_int_sub(twice, *total, "dot")?;
                            }
                            // The largest value reaches the most thresholds.
                            let v = self.ascending(dot, &tables, blk)?;
                            best = Some(match best {
                                None => v,
                                Some(prev) => self.larger(v, prev)?,
                            });
                        }
                        let count = self.count_reached(best.expect("a window"), &tables, blk)?;
                        let out = (out, out_first, wo);
                        self.store_block_levels(count, &tables, &k.levels, out, blk)?;
                        Ok(())
                    })
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }
}

/// A grouped layer's planes `[filter][tap][word][plane]` over `words(C / groups)` words,
/// each run holding its group's channels from bit 0, placed in the runs of words their
/// blocks read (`[filter][tap][span word][plane]`).
fn placed_planes(
    g: &GroupWords,
    weights: &[u64],
    (m, taps, pw): (usize, usize, usize),
) -> Vec<u64> {
    let nwg = words(g.group_channels);
    let mut table = Vec::with_capacity(m * taps * g.span * pw);
    for f in 0..m {
        for t in 0..taps {
            let runs: Vec<Vec<u64>> = (0..pw)
                .map(|q| {
                    let bit = |ch: usize| {
                        let word = weights[((f * taps + t) * nwg + ch / 64) * pw + q];
                        (word >> (ch % 64)) & 1 == 1
                    };
                    g.place(f, bit)
                })
                .collect();
            for word in 0..g.span {
                table.extend(runs.iter().map(|run| run[word]));
            }
        }
    }
    table
}
