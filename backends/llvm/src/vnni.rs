//! The first layer on byte dot products ([`Int16ConvKernel`] where the CPU has AVX-512
//! VNNI): each input integer is stored once per image as a byte, offset to be unsigned, and
//! every window row read as runs of four bytes, each splat and summed against sixteen
//! filters' four weights by one `vpdpbusd`, which multiplies and adds 64 pairs. The i16
//! kernel ([`crate::int16`]) spends a multiply and an add on 32.
//!
//! Exact: the products are of a byte and a signed byte, summed in `i32` lanes; a run past
//! the row's last tap reads a neighbour whose weight is 0; the offset's part of each sum,
//! `lo * sum(weights)`, is where the lanes start.

use bnnc_cranelift::Int16ConvKernel;
use bnnc_runtime::packing::words;
use inkwell::intrinsics::Intrinsic;

use crate::emitter::{Built, KernelEmitter};

/// Filters per vector: 16 `i32` lanes.
const WIDE: usize = 16;

/// Taps per byte run: the four bytes of a `vpdpbusd` lane.
const RUN: usize = 4;

/// Whether [`KernelEmitter::vnni_conv`] computes `k`: its integers span at most 256
/// values, so that offset they are bytes, and its window rows are contiguous (no
/// dilation across).
pub(crate) fn vnni_applies(k: &Int16ConvKernel) -> bool {
    let (lo, hi) = k.in_range;
    hi >= lo && hi - lo <= 255 && k.dilations.1 == 1
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// Adds kernel `k` (one that [`vnni_applies`] to) to the module.
    pub fn vnni_conv(&self, k: &Int16ConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (oh, ow) = k.output;
        let (taps, wo) = (c * kh * kw, words(m));
        let runs_per_row = kw.div_ceil(RUN);
        // Runs as (channel, row, run): the window's rows, each in runs of four taps.
        let runs = c * kh * runs_per_row;
        let blocks = m.div_ceil(WIDE);
        let lo = k.in_range.0;
        // Weights [block][run][lane], four signed bytes to a lane (a tap past the row's
        // end, or a padded filter, weighs 0); the offset's sums [block][lane].
        let mut wt = vec![0i64; blocks * runs * WIDE];
        let mut offset = vec![0i64; blocks * WIDE];
        for f in 0..m {
            let (blk, lane) = (f / WIDE, f % WIDE);
            let weight = |ch: usize, ky: usize, kx: usize| {
                i64::from(k.weights[f * taps + (ch * kh + ky) * kw + kx])
            };
            for ch in 0..c {
                for ky in 0..kh {
                    for r in 0..runs_per_row {
                        let mut packed = 0u32;
                        for j in 0..RUN.min(kw - r * RUN) {
                            let byte = weight(ch, ky, r * RUN + j) as i8 as u8;
                            packed |= u32::from(byte) << (8 * j);
                        }
                        let run = (ch * kh + ky) * runs_per_row + r;
                        wt[(blk * runs + run) * WIDE + lane] = i64::from(packed);
                    }
                }
            }
            let sum: i64 = (0..taps)
                .map(|tap| i64::from(k.weights[f * taps + tap]))
                .sum();
            offset[blk * WIDE + lane] = lo * sum;
        }
        let name = &k.symbol;
        let i32t = self.context.i32_type();
        let vt = i32t.vec_type(WIDE as u32);
        let wt = self.table(&format!("{name}.weights"), i32t, &wt);
        let offset = self.table(&format!("{name}.offset"), i32t, &offset);
        // Every sum lies well inside `i32`.
        let tables = self.output_tables(&k.symbol, &k.levels, (m, m), (i32t, WIDE));

        let (function, x, out) = self.kernel_function(name);
        let dot = Intrinsic::find("llvm.x86.avx512.vpdpbusd.512")
            .expect("llvm.x86.avx512.vpdpbusd.512 exists")
            .get_declaration(self.module, &[])
            .expect("vpdpbusd of <16 x i32>");
        let i8t = self.context.i8_type();
        let b = &self.builder;
        let load_vec = |base, index: usize| self.load_aligned(vt, base, self.i64(index as i64));
        let pixel_words = k.levels.planes * wo;
        // One image's bytes, converted once; the last run of the last row reads up to
        // three bytes past the image, kept zero.
        let image_len = c * h * w;
        let image = b.build_array_alloca(i8t, self.i64((image_len + RUN) as i64), "image")?;
        for i in 0..RUN {
            // SAFETY (of the generated code): the bytes past the image, inside the alloca.
            let dst = unsafe {
                b.build_in_bounds_gep(i8t, image, &[self.i64((image_len + i) as i64)], "")?
            };
            b.build_store(dst, i8t.const_zero())?;
        }
        self.counted(function, batch, &mut |n| {
            self.convert_image(function, (x, n, image_len), (image, i8t), k, lo)?;
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    let opix = self.pixel_index(n, (oy, ox), (oh, ow))?;
                    let first = b.build_int_mul(opix, self.i64(pixel_words as i64), "")?;
                    self.zero_words(out, first, pixel_words)?;
                    let mut acc = (0..blocks)
                        .map(|blk| load_vec(offset, blk * WIDE))
                        .collect::<Built<Vec<_>>>()?;
                    let y0 = b.build_int_mul(oy, self.i64(k.strides.0 as i64), "")?;
                    let x0 = b.build_int_mul(ox, self.i64(k.strides.1 as i64), "")?;
                    for ch in 0..c {
                        for ky in 0..kh {
                            // The window row's first byte: (ch, y0 + ky * dy, x0).
                            let iy = b.build_int_add(
                                y0,
                                self.i64((ch * h + ky * k.dilations.0) as i64),
                                "",
                            )?;
                            let row = b.build_int_mul(iy, self.i64(w as i64), "")?;
                            let row = b.build_int_add(row, x0, "row")?;
                            for r in 0..runs_per_row {
                                let at = b.build_int_add(row, self.i64((r * RUN) as i64), "")?;
                                // SAFETY (of the generated code): the run's four bytes lie
                                // inside the image and the zeros after it.
                                let src = unsafe { b.build_in_bounds_gep(i8t, image, &[at], "")? };
                                let bytes = b.build_load(i32t, src, "run")?.into_int_value();
                                bytes
                                    .as_instruction()
                                    .expect("a load is an instruction")
                                    .set_alignment(1)
                                    .expect("valid alignment");
                                let bytes = self.splat(bytes, WIDE)?;
                                let run = (ch * kh + ky) * runs_per_row + r;
                                for (blk, a) in acc.iter_mut().enumerate() {
                                    let wv = load_vec(wt, (blk * runs + run) * WIDE)?;
                                    *a = b
                                        .build_call(
                                            dot,
                                            &[(*a).into(), bytes.into(), wv.into()],
                                            "acc",
                                        )?
                                        .try_as_basic_value()
                                        .left()
                                        .expect("vpdpbusd returns a value")
                                        .into_vector_value();
                                }
                            }
                        }
                    }
                    for (blk, &a) in acc.iter().enumerate() {
                        self.first_layer_levels(a, &tables, (k, blk), (out, first, wo))?;
                    }
                    Ok(())
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }
}
