//! [`KernelBuilder`]: a Cranelift function builder with the few idioms every kernel uses
//! (counted loops, addressing, read-only tables).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{
    BlockArg, InstBuilder, InstructionData, MemFlagsData, Opcode, Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{DataDescription, DataId, Linkage, Module};
use cranelift_object::ObjectModule;

use crate::target::{ByteDot, ByteShuffle};

/// A loop's trip count.
#[derive(Clone, Copy)]
enum Bound {
    /// Known at compile time (positive).
    Known(usize),
    /// In a register.
    Runtime(Value),
}

/// Builds one kernel function: parameters are pointers, the body is straight-line code and
/// counted loops.
pub(crate) struct KernelBuilder<'a, 'm> {
    pub b: FunctionBuilder<'a>,
    module: &'m mut ObjectModule,
    tables: &'m mut Vec<DataId>,
    params: Vec<Value>,
    /// Whether vector fused multiply-adds are instructions of the target (not a libcall
    /// per lane): exact sums then take them too.
    pub vector_fma: bool,
    /// The target's byte dot product, if it has one ([`KernelBuilder::dot_bytes`]).
    pub byte_dot: Option<ByteDot>,
    /// The target's byte table lookup, if it has one ([`KernelBuilder::shuffle_bytes`]).
    pub byte_shuffle: Option<ByteShuffle>,
}

/// Memory flags for the kernels' stores: never trapping (the schedule only hands out
/// in-bounds buffers), and not assumed aligned (vectors start at any column).
pub(crate) fn mem() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags for bitcasts between vector types: lanes in little-endian order.
pub(crate) fn little_endian() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Memory flags for loads (not `readonly`: the kernels place their loads themselves).
pub(crate) fn mem_load() -> MemFlagsData {
    mem()
}

impl<'a, 'm> KernelBuilder<'a, 'm> {
    pub fn new(
        b: FunctionBuilder<'a>,
        module: &'m mut ObjectModule,
        tables: &'m mut Vec<DataId>,
        params: Vec<Value>,
    ) -> Self {
        KernelBuilder {
            b,
            module,
            tables,
            params,
            vector_fma: false,
            byte_dot: None,
            byte_shuffle: None,
        }
    }

    /// `acc + x * w` on vectors of exact sums: fused where the target has it, a multiply
    /// and an add otherwise (the same value either way, every partial sum being exact). `w`
    /// goes first, for x86 overwrites the first operand: pass the one read only once.
    pub fn exact_multiply_add(&mut self, x: Value, w: Value, acc: Value) -> Value {
        if self.vector_fma {
            self.b.ins().fma(w, x, acc)
        } else {
            let p = self.b.ins().fmul(w, x);
            self.b.ins().fadd(acc, p)
        }
    }

    /// `acc + ` the four products of each `i32` lane's bytes: `a`'s unsigned, `w`'s signed
    /// (`i8x16` both, `acc` `i32x4`). Written as the tree Cranelift folds into one
    /// `vpdpbusd` (the tree alone is exact, and slow); on [`ByteDot::Pmaddubsw`], the weights
    /// must be within [`crate::target::PMADDUBSW_WEIGHTS`]. Panics without a byte dot: the
    /// kernels ask [`KernelBuilder::byte_dot`] first.
    pub fn dot_bytes(&mut self, acc: Value, a: Value, w: Value) -> Value {
        let ins = &mut self.b;
        let sum = match self.byte_dot.expect("a byte dot product") {
            ByteDot::Vnni => {
                let mut half = |high: bool| {
                    let (wl, al) = if high {
                        (ins.ins().swiden_high(w), ins.ins().uwiden_high(a))
                    } else {
                        (ins.ins().swiden_low(w), ins.ins().uwiden_low(a))
                    };
                    let p = ins.ins().imul(wl, al);
                    let (pl, ph) = (ins.ins().swiden_low(p), ins.ins().swiden_high(p));
                    ins.ins().iadd_pairwise(pl, ph)
                };
                let (lo, hi) = (half(false), half(true));
                self.b.ins().iadd_pairwise(lo, hi)
            }
            ByteDot::Pmaddubsw => {
                let pairs = ins.ins().x86_pmaddubsw(w, a);
                let (pl, ph) = (ins.ins().swiden_low(pairs), ins.ins().swiden_high(pairs));
                ins.ins().iadd_pairwise(pl, ph)
            }
        };
        self.b.ins().iadd(sum, acc)
    }

    /// Lane `i` of the result is byte `indices[i]` of `table` (`i8x16` both), for indices
    /// below 16. Panics without a byte lookup: the kernels ask
    /// [`KernelBuilder::byte_shuffle`] first.
    pub fn shuffle_bytes(&mut self, table: Value, indices: Value) -> Value {
        match self.byte_shuffle.expect("a byte table lookup") {
            ByteShuffle::Pshufb => self.b.ins().x86_pshufb(table, indices),
            ByteShuffle::Swizzle => self.b.ins().swizzle(table, indices),
        }
    }

    /// `v` in every lane of an `i8x16`.
    pub fn splat_i8(&mut self, v: i64) -> Value {
        let b = self.b.ins().iconst(cranelift_codegen::ir::types::I8, v);
        self.b.ins().splat(cranelift_codegen::ir::types::I8X16, b)
    }

    /// `v` in every lane of an `i16x8`.
    pub fn splat_i16(&mut self, v: i64) -> Value {
        let b = self.b.ins().iconst(cranelift_codegen::ir::types::I16, v);
        self.b.ins().splat(cranelift_codegen::ir::types::I16X8, b)
    }

    pub fn finish(self) -> FunctionBuilder<'a> {
        self.b
    }

    /// Kernel parameter `i` (a pointer).
    pub fn param(&self, i: usize) -> Value {
        self.params[i]
    }

    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn iconst32(&mut self, v: i32) -> Value {
        self.b.ins().iconst(I32, i64::from(v))
    }

    pub fn fconst(&mut self, v: f32) -> Value {
        self.b.ins().f32const(v)
    }

    /// The value of the `i64` `v`, if a constant defines it. The kernels are compiled
    /// without Cranelift's mid-end (see [`crate::target`]), so nothing folds constants after
    /// them: the builder folds the ones it can see.
    pub fn known(&self, v: Value) -> Option<i64> {
        let dfg = &self.b.func.dfg;
        if dfg.value_type(v) != I64 {
            return None;
        }
        match dfg.insts[dfg.value_def(v).inst()?] {
            InstructionData::UnaryImm {
                opcode: Opcode::Iconst,
                imm,
            } => Some(imm.bits()),
            _ => None,
        }
    }

    /// `v * k` for an `i64` `v`, folded when `v` is known or `k` is 1.
    pub fn mul_imm(&mut self, v: Value, k: i64) -> Value {
        match self.known(v) {
            Some(c) => self.iconst(c.wrapping_mul(k)),
            None if k == 1 => v,
            None => self.b.ins().imul_imm_s(v, k),
        }
    }

    /// `v + k` for an `i64` `v`, folded when `v` is known or `k` is 0.
    pub fn add_imm(&mut self, v: Value, k: i64) -> Value {
        match self.known(v) {
            Some(c) => self.iconst(c.wrapping_add(k)),
            None if k == 0 => v,
            None => self.b.ins().iadd_imm_s(v, k),
        }
    }

    /// `base + index * scale + offset` in bytes (a known `index` folds into the offset).
    pub fn addr(&mut self, base: Value, index: Value, scale: i64, offset: i64) -> Value {
        if let Some(i) = self.known(index) {
            return self.add_imm(base, i.wrapping_mul(scale).wrapping_add(offset));
        }
        let scaled = self.mul_imm(index, scale);
        let a = self.b.ins().iadd(base, scaled);
        self.add_imm(a, offset)
    }

    /// `ptr + offset` as a base and a displacement: a constant added to `ptr` moves into the
    /// displacement (while it fits the instruction's 32 bits).
    fn displaced(&self, ptr: Value, offset: i64) -> (Value, i32) {
        let dfg = &self.b.func.dfg;
        if let Some(inst) = dfg.value_def(ptr).inst() {
            if let InstructionData::Binary {
                opcode: Opcode::Iadd,
                args: [a, b],
            } = dfg.insts[inst]
            {
                let split = match (self.known(a), self.known(b)) {
                    (_, Some(k)) => Some((a, k)),
                    (Some(k), _) => Some((b, k)),
                    _ => None,
                };
                if let Some((base, k)) = split {
                    if let Ok(d) = i32::try_from(k.wrapping_add(offset)) {
                        return (base, d);
                    }
                }
            }
        }
        (ptr, offset as i32)
    }

    /// A load from an operand or a table (read-only while the kernel runs).
    pub fn load(&mut self, ty: Type, ptr: Value, offset: i64) -> Value {
        let (ptr, d) = self.displaced(ptr, offset);
        self.b.ins().load(ty, mem_load(), ptr, d)
    }

    /// Lanes of two `f32x4`: lane `i` of the result is lane `lanes[i]` of `a` (0..4) or of
    /// `b` (4..8).
    pub fn shuffle_f32x4(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        use cranelift_codegen::ir::types::{F32X4, I8X16};
        use cranelift_codegen::ir::{ConstantData, Endianness};
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes: Vec<u8> = lanes
            .iter()
            .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
            .collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let (a, b) = (
            self.b.ins().bitcast(I8X16, little, a),
            self.b.ins().bitcast(I8X16, little, b),
        );
        let shuffled = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(F32X4, little, shuffled)
    }

    /// A load from an address aligned to the type's size (tables of vectors): x86 can then
    /// fold it into the instruction that uses it.
    pub fn load_aligned(&mut self, ty: Type, ptr: Value, offset: i64) -> Value {
        let (ptr, d) = self.displaced(ptr, offset);
        self.b.ins().load(ty, MemFlagsData::trusted(), ptr, d)
    }

    /// The address of `bytes` of this call's stack, 16-byte aligned.
    pub fn stack(&mut self, bytes: u32) -> Value {
        use cranelift_codegen::ir::{StackSlotData, StackSlotKind};
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            bytes,
            4,
        ));
        self.b.ins().stack_addr(I64, slot, 0)
    }

    pub fn store(&mut self, v: Value, ptr: Value, offset: i64) {
        let (ptr, d) = self.displaced(ptr, offset);
        self.b.ins().store(mem(), v, ptr, d);
    }

    /// `ptr[index]` for 4-byte elements.
    pub fn load_at(&mut self, ty: Type, ptr: Value, index: Value) -> Value {
        let a = self.addr(ptr, index, i64::from(ty.bytes()), 0);
        self.load(ty, a, 0)
    }

    pub fn store_at(&mut self, v: Value, ptr: Value, index: Value) {
        let bytes = self.b.func.dfg.value_type(v).bytes();
        let a = self.addr(ptr, index, i64::from(bytes), 0);
        self.store(v, a, 0);
    }

    /// A read-only table in the object's data, 64-byte aligned; returns its address.
    pub fn table(&mut self, bytes: Vec<u8>) -> Value {
        let id = self
            .module
            .declare_anonymous_data(false, false)
            .expect("anonymous data never clashes");
        let mut desc = DataDescription::new();
        desc.define(bytes.into_boxed_slice());
        desc.set_align(64);
        self.module
            .define_data(id, &desc)
            .expect("fresh data is defined once");
        self.tables.push(id);
        let gv = self.module.declare_data_in_func(id, self.b.func);
        self.b.ins().symbol_value(I64, gv)
    }

    pub fn table_f32(&mut self, v: &[f32]) -> Value {
        self.table(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    pub fn table_i32(&mut self, v: &[i32]) -> Value {
        self.table(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    pub fn table_u64(&mut self, v: &[u64]) -> Value {
        self.table(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    /// `for i in 0..n { body(i) }` with `i: i64`; nothing when `n == 0`.
    pub fn for_range(&mut self, n: usize, mut body: impl FnMut(&mut Self, Value)) {
        if n == 1 {
            let zero = self.iconst(0);
            body(self, zero);
            return;
        }
        self.fold_range(n, Vec::new(), |kb, i, state| {
            body(kb, i);
            state
        });
    }

    /// `body(start)` for each run of four of a row's `n >= 4` elements: `0, 4, 8, ...`, the
    /// last run ending at `n` and overlapping the one before when 4 does not divide `n`
    /// (its elements are computed again, the same way).
    pub fn for_quads(&mut self, n: usize, mut body: impl FnMut(&mut Self, Value)) {
        debug_assert!(n >= 4, "a row of {n} elements has no run of four");
        self.for_range(n.div_ceil(4), |kb, b| {
            let start = kb.b.ins().imul_imm_s(b, 4);
            let last = kb.iconst((n - 4) as i64);
            let start = kb.b.ins().umin(start, last);
            body(kb, start);
        });
    }

    /// Like [`Self::for_range`], carrying `init` through the iterations:
    /// `state = body(i, state)`; returns the final state.
    pub fn fold_range(
        &mut self,
        n: usize,
        init: Vec<Value>,
        body: impl FnMut(&mut Self, Value, Vec<Value>) -> Vec<Value>,
    ) -> Vec<Value> {
        if n == 0 {
            return init;
        }
        self.counted_loop(Bound::Known(n), init, body)
    }

    /// `for i in 0..n` with `n` known only at run time (possibly 0), carrying `init`
    /// through the iterations: `state = body(i, state)`; returns the final state.
    pub fn fold_dynamic(
        &mut self,
        n: Value,
        init: Vec<Value>,
        body: impl FnMut(&mut Self, Value, Vec<Value>) -> Vec<Value>,
    ) -> Vec<Value> {
        self.counted_loop(Bound::Runtime(n), init, body)
    }

    /// The loop of [`Self::fold_range`] and [`Self::fold_dynamic`]: a header block taking
    /// the counter and the state, entered at 0 (after a test for `n == 0` when `n` is known
    /// only at run time, a known `n` being positive).
    fn counted_loop(
        &mut self,
        n: Bound,
        init: Vec<Value>,
        mut body: impl FnMut(&mut Self, Value, Vec<Value>) -> Vec<Value>,
    ) -> Vec<Value> {
        let head = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(head, I64);
        let types: Vec<Type> = init
            .iter()
            .map(|&v| self.b.func.dfg.value_type(v))
            .collect();
        let state: Vec<Value> = types
            .iter()
            .map(|&t| self.b.append_block_param(head, t))
            .collect();
        let out: Vec<Value> = types
            .iter()
            .map(|&t| self.b.append_block_param(exit, t))
            .collect();
        let args = |first: Option<Value>, rest: &[Value]| -> Vec<BlockArg> {
            first
                .into_iter()
                .chain(rest.iter().copied())
                .map(BlockArg::Value)
                .collect()
        };
        let zero = self.iconst(0);
        let start = args(Some(zero), &init);
        match n {
            Bound::Known(_) => {
                self.b.ins().jump(head, &start);
            }
            Bound::Runtime(n) => {
                let any = self.b.ins().icmp_imm_s(IntCC::NotEqual, n, 0);
                self.b
                    .ins()
                    .brif(any, head, &start, exit, &args(None, &init));
            }
        }
        self.b.switch_to_block(head);
        let next_state = body(self, i, state);
        let next = self.b.ins().iadd_imm_s(i, 1);
        let more = match n {
            Bound::Known(n) => self
                .b
                .ins()
                .icmp_imm_s(IntCC::UnsignedLessThan, next, n as i64),
            Bound::Runtime(n) => self.b.ins().icmp(IntCC::UnsignedLessThan, next, n),
        };
        let again = args(Some(next), &next_state);
        let done = args(None, &next_state);
        self.b.ins().brif(more, head, &again, exit, &done);
        self.b.seal_block(head);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        out
    }

    /// `cond ? a : b` for f32 values from an integer condition.
    pub fn select(&mut self, cond: Value, a: Value, b: Value) -> Value {
        self.b.ins().select(cond, a, b)
    }

    /// An i32 value as f32 (exact below 2^24).
    pub fn i32_to_f32(&mut self, v: Value) -> Value {
        self.b.ins().fcvt_from_sint(F32, v)
    }
}

impl KernelBuilder<'_, '_> {
    /// Calls a C function of the platform's libraries (`expf`, ...) with scalar arguments.
    pub fn call_c(&mut self, name: &str, params: &[Type], ret: Type, args: &[Value]) -> Value {
        let mut sig = self.module.make_signature();
        sig.params.extend(
            params
                .iter()
                .map(|&t| cranelift_codegen::ir::AbiParam::new(t)),
        );
        sig.returns.push(cranelift_codegen::ir::AbiParam::new(ret));
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .expect("C library functions are declared with one signature");
        let f = self.module.declare_func_in_func(id, self.b.func);
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }
}

impl KernelBuilder<'_, '_> {
    /// Calls a C function returning nothing.
    pub fn call_c_void(&mut self, name: &str, params: &[Type], args: &[Value]) {
        let mut sig = self.module.make_signature();
        sig.params.extend(
            params
                .iter()
                .map(|&t| cranelift_codegen::ir::AbiParam::new(t)),
        );
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .expect("C library functions are declared with one signature");
        let f = self.module.declare_func_in_func(id, self.b.func);
        self.b.ins().call(f, args);
    }

    /// A reference to a function of this module, to call it.
    pub fn import_local(&mut self, f: cranelift_module::FuncId) -> cranelift_codegen::ir::FuncRef {
        self.module.declare_func_in_func(f, self.b.func)
    }

    /// Calls a function of this module.
    pub fn call_local(&mut self, f: cranelift_module::FuncId, args: &[Value]) {
        let r = self.import_local(f);
        self.b.ins().call(r, args);
    }
}
