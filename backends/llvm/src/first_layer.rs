//! What the two first-layer kernels ([`Int16ConvKernel`] on `i16` lanes in `int16.rs`, on
//! byte dot products in `vnni.rs`) share: the image's integers converted once per sample
//! onto the stack, and the output pixel's words zeroed before its blocks store levels.

use bnnc_cranelift::Int16ConvKernel;
use inkwell::types::IntType;
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};

use crate::emitter::{Built, KernelEmitter};
use crate::levels::OutputTables;

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// [`KernelEmitter::thresholds_reached`] and [`KernelEmitter::store_block_levels`] of
    /// block `blk` of `k`'s filters, whose sums are `acc`.
    pub fn first_layer_levels(
        &self,
        acc: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        (k, blk): (&Int16ConvKernel, usize),
        out: (PointerValue<'ctx>, IntValue<'ctx>, usize),
    ) -> Built<()> {
        let blk = self.i64(blk as i64);
        let count = self.thresholds_reached(acc, tables, blk)?;
        self.store_block_levels(count, tables, &k.levels, out, blk)
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
}
