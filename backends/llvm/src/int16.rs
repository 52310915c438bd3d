//! The first layer on small integers ([`Int16ConvKernel`]): per output pixel, the window's
//! integers (converted once per image: [`KernelEmitter::convert_image`]), each splat and
//! multiplied by a vector of 32 filters' `i16` weights; then the output stage
//! ([`KernelEmitter::first_layer_levels`]).

use bnnc_cranelift::Int16ConvKernel;
use bnnc_runtime::packing::words;

use crate::emitter::{Built, KernelEmitter};
use crate::window::Window;

/// The most `i16` elements of an input image the kernel converts onto its stack (64 KiB:
/// within any thread's stack).
pub(crate) const MAX_STACK_IMAGE: usize = 32 * 1024;

/// Filters per vector: 32 `i16` lanes.
const WIDE: usize = 32;

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// Adds kernel `k` to the module.
    pub fn int16_conv(&self, k: &Int16ConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (oh, ow) = k.output;
        let (taps, wo) = (c * kh * kw, words(m));
        let blocks = m.div_ceil(WIDE);
        let i16t = self.context.i16_type();
        let vt = i16t.vec_type(WIDE as u32);
        // Weights [tap][block][lane]; padded filters weigh 0.
        let mut wt = vec![0i64; taps * blocks * WIDE];
        for f in 0..m {
            for tap in 0..taps {
                wt[(tap * blocks + f / WIDE) * WIDE + f % WIDE] =
                    i64::from(k.weights[f * taps + tap]);
            }
        }
        let name = &k.symbol;
        let wt = self.table(&format!("{name}.weights"), i16t, &wt);
        let tables = self.output_tables(&k.symbol, &k.levels, (m, m), (i16t, WIDE));

        let (function, x, out) = self.kernel_function(name);
        let b = &self.builder;
        let load_vec = |base, index: usize| self.load_aligned(vt, base, self.i64(index as i64));
        let window = Window {
            image: (h, w),
            strides: k.strides,
            dilations: k.dilations,
        };
        let pixel_words = k.levels.planes * wo;
        // One image's integers, converted once (not once per tap of every window).
        let image_len = c * h * w;
        let image = b.build_array_alloca(i16t, self.i64(image_len as i64), "image")?;
        self.counted(function, batch, &mut |n| {
            self.convert_image(function, (x, n, image_len), (image, i16t), k, 0)?;
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    let opix = self.pixel_index(n, (oy, ox), (oh, ow))?;
                    let first = b.build_int_mul(opix, self.i64(pixel_words as i64), "")?;
                    self.zero_words(out, first, pixel_words)?;
                    let mut acc = vec![vt.const_zero(); blocks];
                    for tap in 0..taps {
                        // The image is channels-first: each channel is a plane of pixels.
                        let (ch, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
                        let channel = self.i64(ch as i64);
                        let at = window.tap(self, channel, (oy, ox), (ky, kx))?;
                        // SAFETY (of the generated code): an unpadded window's taps lie
                        // inside the image.
                        let src = unsafe { b.build_in_bounds_gep(i16t, image, &[at], "src")? };
                        let q = b.build_load(i16t, src, "q")?.into_int_value();
                        let qs = self.splat(q, WIDE)?;
                        for (blk, a) in acc.iter_mut().enumerate() {
                            let wv = load_vec(wt, (tap * blocks + blk) * WIDE)?;
                            let p = b.build_int_mul(qs, wv, "p")?;
                            *a = b.build_int_add(*a, p, "acc")?;
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
