//! The first layer on small integers ([`Int16ConvKernel`]): per output pixel, the window's
//! integers (the f32 input times `1 / in_scale`, clamped to its type's range:
//! [`KernelEmitter::input_integer`]), each splat and multiplied by a vector of 32 filters' `i16` weights; then
//! [`KernelEmitter::store_levels`] on the counts of thresholds reached.

use bnnc_cranelift::Int16ConvKernel;
use bnnc_runtime::packing::words;
use inkwell::IntPredicate;

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
        let t = k.levels.thresholds;
        let i16t = self.context.i16_type();
        let vt = i16t.vec_type(WIDE as u32);
        let clamp = |v: i64| v.clamp(-32768, 32767);
        // Weights [tap][block][lane]; signs and live masks [block][lane]; bounds
        // [block][threshold][lane]. Padded filters: weight 0, "never", not live.
        let mut wt = vec![0i64; taps * blocks * WIDE];
        let mut sign = vec![1i64; blocks * WIDE];
        let mut live = vec![0i64; blocks * WIDE];
        let mut bounds = vec![32767i64; blocks * t * WIDE];
        for f in 0..m {
            for tap in 0..taps {
                wt[(tap * blocks + f / WIDE) * WIDE + f % WIDE] =
                    i64::from(k.weights[f * taps + tap]);
            }
            sign[f] = clamp(k.levels.sign[f]);
            live[f] = -1;
            for i in 0..t {
                bounds[((f / WIDE) * t + i) * WIDE + f % WIDE] = clamp(k.levels.bounds[f * t + i]);
            }
        }
        let name = &k.symbol;
        let wt = self.table(&format!("{name}.weights"), i16t, &wt);
        let sign = self.table(&format!("{name}.sign"), i16t, &sign);
        let live = self.table(&format!("{name}.live"), i16t, &live);
        let bounds = self.table(&format!("{name}.bounds"), i16t, &bounds);

        let (function, x, out) = self.kernel_function(name);
        let f32t = self.context.f32_type();
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
            let first = b.build_int_mul(n, self.i64(image_len as i64), "")?;
            self.counted(function, image_len, &mut |i| {
                let at = b.build_int_add(first, i, "")?;
                // SAFETY (of the generated code): element `i` of image `n`.
                let src = unsafe { b.build_in_bounds_gep(f32t, x, &[at], "src")? };
                let v = b.build_load(f32t, src, "x")?.into_float_value();
                let q = self.input_integer(v, k.in_scale, k.in_range)?;
                let q = b.build_int_truncate(q, i16t, "q16")?;
                // SAFETY (of the generated code): element `i` of the image on the stack.
                let dst = unsafe { b.build_in_bounds_gep(i16t, image, &[i], "dst")? };
                b.build_store(dst, q)?;
                Ok(())
            })?;
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    let opix = self.pixel_index(n, (oy, ox), (oh, ow))?;
                    let first = b.build_int_mul(opix, self.i64(pixel_words as i64), "")?;
                    for i in 0..pixel_words {
                        let at = b.build_int_add(first, self.i64(i as i64), "")?;
                        b.build_store(self.gep_i64(out, at)?, self.i64(0))?;
                    }
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
                        let s = load_vec(sign, blk * WIDE)?;
                        let v = b.build_int_mul(a, s, "v")?;
                        let mut count = vt.const_zero();
                        for i in 0..t {
                            let bd = load_vec(bounds, (blk * t + i) * WIDE)?;
                            let on = b.build_int_compare(IntPredicate::SGE, v, bd, "on")?;
                            let on = b.build_int_z_extend(on, vt, "")?;
                            count = b.build_int_add(count, on, "count")?;
                        }
                        let live = load_vec(live, blk * WIDE)?;
                        self.store_levels(
                            count,
                            live,
                            &k.levels,
                            (out, first, wo),
                            self.i64(blk as i64),
                        )?;
                    }
                    Ok(())
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }
}
