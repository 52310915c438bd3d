//! What every kernel is built with: the module and builder ([`KernelEmitter`]), counted
//! loops, constant tables, vector loads, splats and popcounts.

use inkwell::attributes::AttributeLoc;
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{IntType, VectorType};
use inkwell::values::{
    BasicValue, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue, VectorValue,
};
use inkwell::{AddressSpace, IntPredicate};

/// Filters per vector of the popcount kernels: eight 64-bit lanes.
pub(crate) const LANES: usize = 8;

/// Integer thresholds beyond any dot product (as in the Cranelift kernels): a padded
/// filter's "never".
pub(crate) const BEYOND: i64 = 1 << 40;

/// What building an instruction returns.
pub(crate) type Built<T> = Result<T, BuilderError>;

/// Builds kernels into one module. Each kernel's module (`xnor`, `planes`, `int16`) adds
/// its function through an `impl` block of its own.
pub(crate) struct KernelEmitter<'ctx, 'm> {
    pub context: &'ctx Context,
    pub module: &'m Module<'ctx>,
    pub builder: Builder<'ctx>,
    /// Whether the target has AVX-512 VNNI's byte dot products (`vpdpbusd`).
    pub vnni: bool,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// An `i64` constant.
    pub fn i64(&self, v: i64) -> IntValue<'ctx> {
        self.context.i64_type().const_int(v as u64, true)
    }

    /// `<8 x i64>`: eight filters' dot products, one per lane.
    pub fn v8(&self) -> VectorType<'ctx> {
        self.context.i64_type().vec_type(LANES as u32)
    }

    /// `void symbol(const void *x, void *out)`, exported, with the builder at its entry:
    /// the function, `x` and `out`. Every kernel has this signature, and probes its stack.
    pub fn kernel_function(
        &self,
        symbol: &str,
    ) -> (FunctionValue<'ctx>, PointerValue<'ctx>, PointerValue<'ctx>) {
        let ptr = self.context.ptr_type(AddressSpace::default());
        let fn_ty = self
            .context
            .void_type()
            .fn_type(&[ptr.into(), ptr.into()], false);
        let function = self
            .module
            .add_function(symbol, fn_ty, Some(Linkage::External));
        // Kernels keep images on the stack: touch each page of a large frame in turn, so that
        // a thread's guard page stops an overflow rather than being stepped over.
        let probe = self
            .context
            .create_string_attribute("probe-stack", "inline-asm");
        function.add_attribute(AttributeLoc::Function, probe);
        let entry = self.context.append_basic_block(function, "entry");
        self.builder.position_at_end(entry);
        let x = function.get_nth_param(0).expect("x").into_pointer_value();
        let out = function.get_nth_param(1).expect("out").into_pointer_value();
        (function, x, out)
    }

    /// A private constant array of `ty` in the module (each value truncated to its
    /// width), aligned for vector loads; returns its address.
    pub fn table(&self, name: &str, ty: IntType<'ctx>, values: &[i64]) -> PointerValue<'ctx> {
        let consts: Vec<IntValue> = values
            .iter()
            .map(|&v| ty.const_int(v as u64, true))
            .collect();
        let array = ty.const_array(&consts);
        let global = self.module.add_global(array.get_type(), None, name);
        global.set_initializer(&array);
        global.set_constant(true);
        global.set_linkage(Linkage::Private);
        global.set_alignment(64);
        global.as_pointer_value()
    }

    /// `for i in 0..n { body(i) }` on an i64 counter.
    pub fn counted(
        &self,
        function: FunctionValue<'ctx>,
        n: usize,
        body: &mut dyn FnMut(IntValue<'ctx>) -> Built<()>,
    ) -> Built<()> {
        let entry = self.builder.get_insert_block().expect("positioned");
        let head = self.context.append_basic_block(function, "loop");
        let exit = self.context.append_basic_block(function, "done");
        self.builder.build_unconditional_branch(head)?;
        self.builder.position_at_end(head);
        let i = self.builder.build_phi(self.context.i64_type(), "i")?;
        i.add_incoming(&[(&self.i64(0), entry)]);
        let iv = i.as_basic_value().into_int_value();
        body(iv)?;
        let next = self.builder.build_int_add(iv, self.i64(1), "next")?;
        let latch = self.builder.get_insert_block().expect("positioned");
        i.add_incoming(&[(&next, latch)]);
        let more =
            self.builder
                .build_int_compare(IntPredicate::ULT, next, self.i64(n as i64), "more")?;
        self.builder.build_conditional_branch(more, head, exit)?;
        self.builder.position_at_end(exit);
        Ok(())
    }

    /// The address of element `index` of an i64 array.
    pub fn gep_i64(
        &self,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Built<PointerValue<'ctx>> {
        // SAFETY (of the generated code): every index stays inside its tensor (see callers).
        unsafe {
            self.builder
                .build_in_bounds_gep(self.context.i64_type(), base, &[index], "at")
        }
    }

    /// Element `index` of an i64 array.
    pub fn load_i64(
        &self,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Built<IntValue<'ctx>> {
        let at = self.gep_i64(base, index)?;
        let ty = self.context.i64_type();
        Ok(self.builder.build_load(ty, at, "w")?.into_int_value())
    }

    /// The vector of `ty` at element `index` of a table of its lanes, which starts at a
    /// multiple of 64 bytes (table rows are whole vectors).
    pub fn load_aligned(
        &self,
        ty: VectorType<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        let elem = ty.get_element_type().into_int_type();
        // SAFETY (of the generated code): every index stays inside its table (see callers).
        let at = unsafe {
            self.builder
                .build_in_bounds_gep(elem, base, &[index], "at")?
        };
        let load = self.builder.build_load(ty, at, "v")?.into_vector_value();
        load.as_instruction()
            .expect("a load is an instruction")
            .set_alignment(64)
            .expect("valid alignment");
        Ok(load)
    }

    /// The `<8 x i64>` at element `index` of an i64 table.
    pub fn load_v8(
        &self,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        self.load_aligned(self.v8(), base, index)
    }

    /// `v` in each of `lanes` lanes (a vector of `v`'s type).
    pub fn splat(&self, v: IntValue<'ctx>, lanes: usize) -> Built<VectorValue<'ctx>> {
        let ty = v.get_type().vec_type(lanes as u32);
        let undef = ty.get_undef();
        let zero = self.context.i32_type().const_zero();
        let one = self.builder.build_insert_element(undef, v, zero, "one")?;
        let mask = self.context.i32_type().vec_type(lanes as u32).const_zero();
        self.builder.build_shuffle_vector(one, undef, mask, "splat")
    }

    /// The constant `v` in every lane of `ty`.
    pub fn const_splat(&self, ty: VectorType<'ctx>, v: i64) -> VectorValue<'ctx> {
        let c = ty
            .get_element_type()
            .into_int_type()
            .const_int(v as u64, true);
        VectorType::const_vector(&vec![c; ty.get_size() as usize])
    }

    /// `v` negated in the lanes where `mask` is -1 (descending channels), as
    /// `(v ^ mask) - mask`: cheaper than multiplying 64-bit lanes by the sign.
    pub fn signed(
        &self,
        v: VectorValue<'ctx>,
        mask: VectorValue<'ctx>,
    ) -> Built<VectorValue<'ctx>> {
        let flipped = self.builder.build_xor(v, mask, "")?;
        self.builder.build_int_sub(flipped, mask, "v")
    }

    /// The integer of a first layer's f32 input `v`, `v / scale` (a power of two), as an
    /// `i32`: clamped to `range` (where every value of the input's type lies) while a float,
    /// so that a loop of these converts whole vectors, then truncated (it is an integer).
    pub fn input_integer(
        &self,
        v: FloatValue<'ctx>,
        scale: f32,
        (lo, hi): (i64, i64),
    ) -> Built<IntValue<'ctx>> {
        let f32t = self.context.f32_type();
        let b = &self.builder;
        let clamp = |name: &str, a: FloatValue<'ctx>, bound: i64| -> Built<FloatValue<'ctx>> {
            let f = Intrinsic::find(name)
                .expect("the intrinsic exists")
                .get_declaration(self.module, &[f32t.into()])
                .expect("an f32 intrinsic");
            let bound = f32t.const_float(bound as f64);
            Ok(b.build_call(f, &[a.into(), bound.into()], "")?
                .try_as_basic_value()
                .left()
                .expect("the intrinsic returns a value")
                .into_float_value())
        };
        let q = b.build_float_mul(v, f32t.const_float(f64::from(1.0 / scale)), "q")?;
        let q = clamp("llvm.maxnum", q, lo)?;
        let q = clamp("llvm.minnum", q, hi)?;
        b.build_float_to_signed_int(q, self.context.i32_type(), "qi")
    }

    /// `llvm.ctpop` of `v`, an integer or a vector of integers: the bits set, per lane.
    pub fn popcount<V: BasicValue<'ctx>>(&self, v: V) -> Built<BasicValueEnum<'ctx>> {
        let v = v.as_basic_value_enum();
        let ctpop = Intrinsic::find("llvm.ctpop")
            .expect("llvm.ctpop exists")
            .get_declaration(self.module, &[v.get_type()])
            .expect("ctpop of an integer type");
        Ok(self
            .builder
            .build_call(ctpop, &[v.into()], "p")?
            .try_as_basic_value()
            .left()
            .expect("ctpop returns a value"))
    }
}

/// `m` filters' rows of `per_filter` words as blocks of [`LANES`] filters, the lane
/// innermost (`[block][i][lane]`): one vector load gives word `i` of eight filters. The
/// lanes past `m` in the last block are zeros.
pub(crate) fn filters_in_lanes(weights: &[u64], m: usize, per_filter: usize) -> Vec<i64> {
    let mut lanes = vec![0i64; m.div_ceil(LANES) * per_filter * LANES];
    for f in 0..m {
        for i in 0..per_filter {
            lanes[((f / LANES) * per_filter + i) * LANES + f % LANES] =
                weights[f * per_filter + i] as i64;
        }
    }
    lanes
}
