//! What the two first-layer kernels ([`Int16ConvKernel`] on `i16` lanes in `int16.rs`, on
//! byte dot products in `vnni.rs`) share: the image's integers converted once per sample
//! onto the stack, and the output stage of a block of filter lanes (thresholds counted,
//! levels stored as planes).

use bnnc_cranelift::Int16ConvKernel;
use inkwell::types::IntType;
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use crate::emitter::{Built, KernelEmitter};

/// The output stage's constant tables for blocks of `lanes` filters in integers of one
/// width: sign masks and live masks `[block][lane]` (-1: descending, live), bounds
/// `[block][threshold][lane]` clamped to the lane type. A padded filter is ascending, never
/// reached and not live.
pub(crate) struct OutputTables<'ctx> {
    sign: PointerValue<'ctx>,
    live: PointerValue<'ctx>,
    bounds: PointerValue<'ctx>,
    lanes: usize,
    ty: IntType<'ctx>,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// [`OutputTables`] of kernel `k` for lanes of `ty` (16 or 32 bits), whose sums lie
    /// inside that type's range (so clamped bounds keep every answer).
    pub fn output_tables(
        &self,
        k: &Int16ConvKernel,
        ty: IntType<'ctx>,
        lanes: usize,
    ) -> OutputTables<'ctx> {
        let m = k.filters.0;
        let t = k.levels.thresholds;
        let blocks = m.div_ceil(lanes);
        let bits = ty.get_bit_width();
        let (min, max) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
        let mut sign = vec![0i64; blocks * lanes];
        let mut live = vec![0i64; blocks * lanes];
        let mut bounds = vec![max; blocks * t * lanes];
        for f in 0..m {
            sign[f] = if k.levels.sign[f] < 0 { -1 } else { 0 };
            live[f] = -1;
            for i in 0..t {
                bounds[((f / lanes) * t + i) * lanes + f % lanes] =
                    k.levels.bounds[f * t + i].clamp(min, max);
            }
        }
        let name = &k.symbol;
        OutputTables {
            sign: self.table(&format!("{name}.sign"), ty, &sign),
            live: self.table(&format!("{name}.live"), ty, &live),
            bounds: self.table(&format!("{name}.bounds"), ty, &bounds),
            lanes,
            ty,
        }
    }

    /// Stores image `n` of the f32 input `x` (`len` elements) as integers on the stack at
    /// `image`: each [`KernelEmitter::input_integer`] less `offset`, truncated to `ty`.
    pub fn convert_image(
        &self,
        function: FunctionValue<'ctx>,
        (x, n, len): (PointerValue<'ctx>, IntValue<'ctx>, usize),
        (image, ty): (PointerValue<'ctx>, IntType<'ctx>),
        k: &Int16ConvKernel,
        offset: i64,
    ) -> Built<()> {
        let b = &self.builder;
        let f32t = self.context.f32_type();
        let offset = self.context.i32_type().const_int(offset as u64, true);
        let first = b.build_int_mul(n, self.i64(len as i64), "")?;
        self.counted(function, len, &mut |i| {
            let at = b.build_int_add(first, i, "")?;
            // SAFETY (of the generated code): element `i` of image `n`.
            let src = unsafe { b.build_in_bounds_gep(f32t, x, &[at], "src")? };
            let v = b.build_load(f32t, src, "x")?.into_float_value();
            let q = self.input_integer(v, k.in_scale, k.in_range)?;
            let q = b.build_int_sub(q, offset, "")?;
            let q = b.build_int_truncate(q, ty, "q")?;
            // SAFETY (of the generated code): element `i` of the image on the stack.
            let dst = unsafe { b.build_in_bounds_gep(ty, image, &[i], "dst")? };
            b.build_store(dst, q)?;
            Ok(())
        })
    }

    /// Zeroes the output pixel's `count` words from `first`: its blocks store into them.
    pub fn zero_words(
        &self,
        out: PointerValue<'ctx>,
        first: IntValue<'ctx>,
        count: usize,
    ) -> Built<()> {
        for i in 0..count {
            let at = self.builder.build_int_add(first, self.i64(i as i64), "")?;
            self.builder
                .build_store(self.gep_i64(out, at)?, self.i64(0))?;
        }
        Ok(())
    }

    /// The output stage of block `blk` of `k`'s filters, whose sums are `acc`: the
    /// thresholds each reaches, and [`KernelEmitter::store_levels`] of the counts.
    pub fn first_layer_levels(
        &self,
        acc: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        (k, blk): (&Int16ConvKernel, usize),
        (out, first, words): (PointerValue<'ctx>, IntValue<'ctx>, usize),
    ) -> Built<()> {
        let b = &self.builder;
        let (lanes, t) = (tables.lanes, k.levels.thresholds);
        let vt = tables.ty.vec_type(lanes as u32);
        let load = |base, index: usize| self.load_aligned(vt, base, self.i64(index as i64));
        let v = self.signed(acc, load(tables.sign, blk * lanes)?)?;
        let mut count = vt.const_zero();
        for i in 0..t {
            let bound = load(tables.bounds, (blk * t + i) * lanes)?;
            let on = b.build_int_compare(IntPredicate::SGE, v, bound, "on")?;
            let on = b.build_int_z_extend(on, vt, "")?;
            count = b.build_int_add(count, on, "count")?;
        }
        let live = load(tables.live, blk * lanes)?;
        self.store_levels(
            count,
            live,
            &k.levels,
            (out, first, words),
            self.i64(blk as i64),
        )
    }
}
