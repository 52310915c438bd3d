//! The output stage every kernel but XNOR's shares: per block of channel lanes, the
//! thresholds each sum reaches, and the levels of those counts stored as bit planes
//! ([`bnnc_cranelift::KernelLevels`]).

use bnnc_cranelift::KernelLevels;
use inkwell::types::IntType;
use inkwell::values::{IntValue, PointerValue, VectorValue};
use inkwell::IntPredicate;

use crate::emitter::{Built, KernelEmitter};

/// The output stage's constant tables for blocks of `lanes` channels in integers of one
/// width: sign masks and live masks `[block][lane]` (-1: descending, live), bounds
/// `[block][threshold][lane]` clamped to the lane type. A padded channel is ascending,
/// never reached and not live.
pub(crate) struct OutputTables<'ctx> {
    sign: PointerValue<'ctx>,
    live: PointerValue<'ctx>,
    bounds: PointerValue<'ctx>,
    thresholds: usize,
    lanes: usize,
    ty: IntType<'ctx>,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// [`OutputTables`] named after `symbol` for `levels`'s `m` channels, in blocks of
    /// `lanes` lanes of `ty` covering at least `slots` channels (the kernel's padded
    /// count). The kernel's sums lie inside `ty`'s range, so clamped bounds keep every
    /// answer.
    pub fn output_tables(
        &self,
        symbol: &str,
        levels: &KernelLevels,
        (m, slots): (usize, usize),
        (ty, lanes): (IntType<'ctx>, usize),
    ) -> OutputTables<'ctx> {
        let t = levels.thresholds;
        let blocks = slots.max(m).div_ceil(lanes);
        let bits = ty.get_bit_width();
        let (min, max) = (
            (-(1i128 << (bits - 1))) as i64,
            ((1i128 << (bits - 1)) - 1) as i64,
        );
        let mut sign = vec![0i64; blocks * lanes];
        let mut live = vec![0i64; blocks * lanes];
        let mut bounds = vec![max; blocks * t * lanes];
        for f in 0..m {
            sign[f] = if levels.sign[f] < 0 { -1 } else { 0 };
            live[f] = -1;
            for i in 0..t {
                bounds[((f / lanes) * t + i) * lanes + f % lanes] =
                    levels.bounds[f * t + i].clamp(min, max);
            }
        }
        OutputTables {
            sign: self.table(&format!("{symbol}.sign"), ty, &sign),
            live: self.table(&format!("{symbol}.live"), ty, &live),
            bounds: self.table(&format!("{symbol}.bounds"), ty, &bounds),
            thresholds: t,
            lanes,
            ty,
        }
    }

    /// The thresholds each lane of `sums`, channel block `blk` of `tables`, reaches.
    pub fn thresholds_reached(
        &self,
        sums: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        blk: IntValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        let v = self.ascending(sums, tables, blk)?;
        self.count_reached(v, tables, blk)
    }

    /// `sums` of channel block `blk` with the descending channels' negated: values whose
    /// thresholds every channel reaches as they rise. The count reached never falls as such
    /// a value rises, so a pool's largest count is the count of its largest value.
    pub fn ascending(
        &self,
        sums: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        blk: IntValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        let vt = tables.ty.vec_type(tables.lanes as u32);
        let at = self
            .builder
            .build_int_mul(blk, self.i64(tables.lanes as i64), "")?;
        self.signed(sums, self.load_aligned(vt, tables.sign, at)?)
    }

    /// The thresholds each lane of `v` ([`KernelEmitter::ascending`] values of channel block
    /// `blk`) reaches.
    pub fn count_reached(
        &self,
        v: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        blk: IntValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        let b = &self.builder;
        let (lanes, t) = (tables.lanes, tables.thresholds);
        let vt = tables.ty.vec_type(lanes as u32);
        let first = b.build_int_mul(blk, self.i64((t * lanes) as i64), "")?;
        let mut count = vt.const_zero();
        for i in 0..t {
            let at = b.build_int_add(first, self.i64((i * lanes) as i64), "")?;
            let bound = self.load_aligned(vt, tables.bounds, at)?;
            let on = b.build_int_compare(IntPredicate::SGE, v, bound, "on")?;
            let on = b.build_int_z_extend(on, vt, "")?;
            count = b.build_int_add(count, on, "count")?;
        }
        Ok(count)
    }

    /// The lanewise larger of `a` and `b` (signed).
    pub fn larger(&self, a: VectorValue<'ctx>, b: VectorValue<'ctx>) -> Built<VectorValue<'ctx>> {
        let more = self
            .builder
            .build_int_compare(IntPredicate::SGT, a, b, "")?;
        Ok(self
            .builder
            .build_select(more, a, b, "larger")?
            .into_vector_value())
    }

    /// [`KernelEmitter::store_levels`] of `count`, channel block `blk` of `tables`.
    pub fn store_block_levels(
        &self,
        count: VectorValue<'ctx>,
        tables: &OutputTables<'ctx>,
        levels: &KernelLevels,
        (out, first, words): (PointerValue<'ctx>, IntValue<'ctx>, usize),
        blk: IntValue<'ctx>,
    ) -> Built<()> {
        let vt = tables.ty.vec_type(tables.lanes as u32);
        let at = self
            .builder
            .build_int_mul(blk, self.i64(tables.lanes as i64), "")?;
        let live = self.load_aligned(vt, tables.live, at)?;
        self.store_levels(count, live, levels, (out, first, words), blk)
    }

    /// The output stage of a block of channels, one per lane of `count` (the thresholds
    /// reached): each lane's level `alpha * count + beta` (0 where the mask `live` is 0, a
    /// padded channel; -1 elsewhere), and per plane the lanes' bits as one integer of as
    /// many bits, stored at integer index `block` of the plane's words (`out[first + plane
    /// * words]` on).
    pub fn store_levels(
        &self,
        count: VectorValue<'ctx>,
        live: VectorValue<'ctx>,
        levels: &KernelLevels,
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
