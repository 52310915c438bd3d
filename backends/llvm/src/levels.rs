//! The output stage the bit-serial and first-layer kernels share: levels from counts of
//! thresholds reached, stored as bit planes ([`bnnc_cranelift::KernelLevels`]).

use inkwell::values::{IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use crate::emitter::{Built, KernelEmitter};

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// The output stage of a block of channels, one per lane of `count` (the thresholds
    /// reached): each lane's level `alpha * count + beta` (0 where the mask `live` is 0, a
    /// padded channel; -1 elsewhere), and per plane the lanes' bits as one integer of as many bits, stored at
    /// integer index `block` of the plane's words (`out[first + plane * words]` on).
    pub fn store_levels(
        &self,
        count: VectorValue<'ctx>,
        live: VectorValue<'ctx>,
        levels: &bnnc_cranelift::KernelLevels,
        (out, first, words): (PointerValue<'ctx>, IntValue<'ctx>, usize),
        block: IntValue<'ctx>,
    ) -> Built<()> {
        let b = &self.builder;
        let ty = count.get_type();
        let splat = |v: i64| self.const_splat(ty, v);
        let scaled = b.build_int_mul(count, splat(levels.alpha), "")?;
        let level = b.build_int_add(scaled, splat(levels.beta), "level")?;
        // `live` is a mask: an AND, where a multiply would take the vector multiplier.
        let level = b.build_and(level, live, "")?;
        let bits_ty = self.context.custom_width_int_type(ty.get_size());
        for r in 0..levels.planes {
            let shifted = b.build_right_shift(level, splat(r as i64), false, "")?;
            let bit = b.build_and(shifted, splat(1), "")?;
            let on = b.build_int_compare(IntPredicate::NE, bit, ty.const_zero(), "")?;
            let bits = b.build_bit_cast(on, bits_ty, "bits")?.into_int_value();
            // Integer `block` of plane r's words (little-endian words).
            let word0 = b.build_int_add(first, self.i64((r * words) as i64), "")?;
            let base = self.gep_i64(out, word0)?;
            // SAFETY (of the generated code): the block's bits lie inside the plane's words.
            let dst = unsafe { b.build_in_bounds_gep(bits_ty, base, &[block], "dst")? };
            b.build_store(dst, bits)?;
        }
        Ok(())
    }
}
