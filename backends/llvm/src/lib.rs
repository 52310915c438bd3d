//! bnnc's LLVM backend: the XNOR-popcount convolutions, compiled by LLVM (through inkwell)
//! for vectors wider than Cranelift's 128 bits: eight filters per 512-bit `vpopcntq` under
//! AVX-512 VPOPCNTDQ, NEON's `cnt` on aarch64. The Cranelift backend offers these kernels
//! ([`bnnc_cranelift::KernelProvider`]), calls them from its own code, and the two objects are
//! linked into one library.
//!
//! Needs LLVM 16 (Debian: `llvm-16-dev`; `LLVM_SYS_160_PREFIX=/usr/lib/llvm-16`).

use bnnc_cranelift::{Int16ConvKernel, KernelProvider, PlaneConvKernel, XnorConvKernel};
use bnnc_runtime::packing::words;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::types::VectorType;
use inkwell::values::{FunctionValue, IntValue, PointerValue, VectorValue};
use inkwell::{AddressSpace, IntPredicate, OptimizationLevel};

/// Filters per vector: eight 64-bit lanes.
const LANES: usize = 8;

/// The most `i16` elements of an input image the first-layer kernel converts onto its
/// stack (64 KiB: within any thread's stack).
const MAX_STACK_IMAGE: usize = 32 * 1024;

/// Up to this many blocks of filters, a kernel's block loop is unrolled.
const UNROLLED_BLOCKS: usize = 8;

/// Integer thresholds beyond any dot product (as in the Cranelift kernels).
const BEYOND: i64 = 1 << 40;

/// Collects the kernels offered while the Cranelift backend compiles a graph, then compiles
/// them into one object ([`LlvmKernels::finish`]).
pub struct LlvmKernels {
    triple: String,
    cpu: String,
    features: String,
    kernels: Vec<XnorConvKernel>,
    plane_kernels: Vec<PlaneConvKernel>,
    int16_kernels: Vec<Int16ConvKernel>,
}

impl LlvmKernels {
    /// Kernels for `triple` (an LLVM triple such as `x86_64-unknown-linux-gnu`) on `cpu`
    /// (`native` for this machine, else an LLVM CPU name such as `x86-64-v4`).
    pub fn new(triple: &str, cpu: &str) -> Result<LlvmKernels, String> {
        Target::initialize_x86(&InitializationConfig::default());
        Target::initialize_aarch64(&InitializationConfig::default());
        let (cpu, features) = if cpu == "native" {
            (
                TargetMachine::get_host_cpu_name().to_string(),
                TargetMachine::get_host_cpu_features().to_string(),
            )
        } else {
            (cpu.to_string(), String::new())
        };
        Target::from_triple(&TargetTriple::create(triple)).map_err(|e| e.to_string())?;
        Ok(LlvmKernels {
            triple: triple.to_string(),
            cpu,
            features,
            kernels: Vec::new(),
            plane_kernels: Vec::new(),
            int16_kernels: Vec::new(),
        })
    }

    /// Whether no kernel was taken (then there is no object to link).
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty() && self.plane_kernels.is_empty() && self.int16_kernels.is_empty()
    }

    /// The object file defining every kernel taken.
    pub fn finish(self) -> Result<Vec<u8>, String> {
        let context = Context::create();
        let module = context.create_module("bnnc_llvm_kernels");
        let triple = TargetTriple::create(&self.triple);
        let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
        let machine = target
            .create_target_machine(
                &triple,
                &self.cpu,
                &self.features,
                OptimizationLevel::Aggressive,
                RelocMode::PIC,
                CodeModel::Default,
            )
            .ok_or_else(|| format!("LLVM has no target machine for {}", self.triple))?;
        module.set_triple(&triple);
        module.set_data_layout(&machine.get_target_data().get_data_layout());
        let emitter = KernelEmitter {
            context: &context,
            module: &module,
            builder: context.create_builder(),
        };
        for kernel in &self.kernels {
            emitter
                .xnor_conv(kernel)
                .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        for kernel in &self.plane_kernels {
            emitter
                .plane_conv(kernel)
                .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        for kernel in &self.int16_kernels {
            emitter
                .int16_conv(kernel)
                .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        module.verify().map_err(|e| e.to_string())?;
        module
            .run_passes("default<O3>", &machine, PassBuilderOptions::create())
            .map_err(|e| e.to_string())?;
        let buffer = machine
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| e.to_string())?;
        Ok(buffer.as_slice().to_vec())
    }
}

impl KernelProvider for LlvmKernels {
    fn xnor_conv(&mut self, kernel: &XnorConvKernel) -> bool {
        self.kernels.push(kernel.clone());
        true
    }

    fn plane_conv(&mut self, kernel: &PlaneConvKernel) -> bool {
        self.plane_kernels.push(kernel.clone());
        true
    }

    fn int16_conv(&mut self, kernel: &Int16ConvKernel) -> bool {
        // The kernel keeps an image's integers on the stack: small images only (Cranelift's
        // kernel takes the others).
        let (_, c, h, w) = kernel.input;
        if c * h * w > MAX_STACK_IMAGE {
            return false;
        }
        self.int16_kernels.push(kernel.clone());
        true
    }
}

type Built<T> = std::result::Result<T, inkwell::builder::BuilderError>;

struct KernelEmitter<'ctx, 'm> {
    context: &'ctx Context,
    module: &'m Module<'ctx>,
    builder: Builder<'ctx>,
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    fn i64(&self, v: i64) -> IntValue<'ctx> {
        self.context.i64_type().const_int(v as u64, true)
    }

    fn v8(&self) -> VectorType<'ctx> {
        self.context.i64_type().vec_type(LANES as u32)
    }

    /// A private constant array of i64 in the module; returns its address.
    fn table(&self, name: &str, values: &[i64]) -> PointerValue<'ctx> {
        let ty = self.context.i64_type();
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
    fn counted(
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

    fn load_i64(&self, base: PointerValue<'ctx>, index: IntValue<'ctx>) -> Built<IntValue<'ctx>> {
        let ty = self.context.i64_type();
        // SAFETY (of the generated code): every index stays inside its tensor (see callers).
        let at = unsafe { self.builder.build_in_bounds_gep(ty, base, &[index], "at")? };
        Ok(self.builder.build_load(ty, at, "w")?.into_int_value())
    }

    fn load_v8(&self, base: PointerValue<'ctx>, index: IntValue<'ctx>) -> Built<VectorValue<'ctx>> {
        let ty = self.context.i64_type();
        let at = unsafe { self.builder.build_in_bounds_gep(ty, base, &[index], "at")? };
        let load = self
            .builder
            .build_load(self.v8(), at, "v")?
            .into_vector_value();
        // Table rows of eight i64 start at multiples of 64 bytes.
        load.as_instruction()
            .expect("a load is an instruction")
            .set_alignment(64)
            .expect("valid alignment");
        Ok(load)
    }

    fn splat(&self, v: IntValue<'ctx>) -> Built<VectorValue<'ctx>> {
        let undef = self.v8().get_undef();
        let one = self.builder.build_insert_element(
            undef,
            v,
            self.context.i32_type().const_zero(),
            "one",
        )?;
        let mask = self.context.i32_type().vec_type(LANES as u32).const_zero();
        self.builder.build_shuffle_vector(one, undef, mask, "splat")
    }

    /// One fused XNOR convolution: per output pixel, eight filters per vector over every
    /// tap and word; each vector of dot products compared with eight thresholds gives a
    /// byte of the pixel's packed bits.
    fn xnor_conv(&self, k: &XnorConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (oh, ow) = k.output;
        let (nw, taps, wo) = (words(c), kh * kw, words(m));
        let blocks = m.div_ceil(LANES);
        let per_filter = taps * nw;
        // Weights as [block][tap][word][lane]; padded filters are zeros with "never" bounds.
        let mut wt = vec![0i64; blocks * per_filter * LANES];
        for f in 0..m {
            for i in 0..per_filter {
                wt[((f / LANES) * per_filter + i) * LANES + f % LANES] =
                    k.weights[f * per_filter + i] as i64;
            }
        }
        // Signs as masks: -1 for a descending channel, 0 otherwise (see `signed`).
        let mut sign: Vec<i64> = k.sign.iter().map(|&s| if s < 0 { -1 } else { 0 }).collect();
        let mut bound = k.bound.clone();
        sign.resize(blocks * LANES, 0);
        bound.resize(blocks * LANES, BEYOND);
        let name = &k.symbol;
        let wt = self.table(&format!("{name}.weights"), &wt);
        let sign = self.table(&format!("{name}.sign"), &sign);
        let bound = self.table(&format!("{name}.bound"), &bound);

        let ptr = self.context.ptr_type(AddressSpace::default());
        let fn_ty = self
            .context
            .void_type()
            .fn_type(&[ptr.into(), ptr.into()], false);
        let function = self
            .module
            .add_function(name, fn_ty, Some(Linkage::External));
        let entry = self.context.append_basic_block(function, "entry");
        self.builder.position_at_end(entry);
        let x = function.get_nth_param(0).expect("x").into_pointer_value();
        let out = function.get_nth_param(1).expect("out").into_pointer_value();
        let ctpop = Intrinsic::find("llvm.ctpop").expect("llvm.ctpop exists");
        let ctpop = ctpop
            .get_declaration(self.module, &[self.v8().into()])
            .expect("ctpop of <8 x i64>");
        let b = &self.builder;
        let k_total = self.i64((c * taps) as i64);
        // The pixels written: the pooled ones (zeroed first, then ORed into), or every one.
        let ((ph, pw), (out_h, out_w)) = match k.pool {
            Some(p) => (p.window, p.pooled),
            None => ((1, 1), (oh, ow)),
        };
        if k.pool.is_some() {
            self.counted(function, batch * out_h * out_w * wo, &mut |i| {
                let dst =
                    unsafe { b.build_in_bounds_gep(self.context.i64_type(), out, &[i], "z")? };
                b.build_store(dst, self.i64(0))?;
                Ok(())
            })?;
        }
        self.counted(function, batch, &mut |n| {
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    // Input words of every tap (row-major taps, words within).
                    let mut tap_words = Vec::with_capacity(per_filter);
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = b.build_int_add(
                                b.build_int_mul(oy, self.i64(k.strides.0 as i64), "")?,
                                self.i64((ky * k.dilations.0) as i64),
                                "iy",
                            )?;
                            let ix = b.build_int_add(
                                b.build_int_mul(ox, self.i64(k.strides.1 as i64), "")?,
                                self.i64((kx * k.dilations.1) as i64),
                                "ix",
                            )?;
                            let row = b.build_int_add(
                                b.build_int_mul(n, self.i64(h as i64), "")?,
                                iy,
                                "",
                            )?;
                            let pixel = b.build_int_add(
                                b.build_int_mul(row, self.i64(w as i64), "")?,
                                ix,
                                "pixel",
                            )?;
                            let first = b.build_int_mul(pixel, self.i64(nw as i64), "")?;
                            for word in 0..nw {
                                let at = b.build_int_add(first, self.i64(word as i64), "")?;
                                tap_words.push(self.splat(self.load_i64(x, at)?)?);
                            }
                        }
                    }
                    let (py, px) = if k.pool.is_some() {
                        (
                            b.build_int_unsigned_div(oy, self.i64(ph as i64), "py")?,
                            b.build_int_unsigned_div(ox, self.i64(pw as i64), "px")?,
                        )
                    } else {
                        (oy, ox)
                    };
                    let opix = b.build_int_add(
                        b.build_int_mul(
                            b.build_int_add(
                                b.build_int_mul(n, self.i64(out_h as i64), "")?,
                                py,
                                "",
                            )?,
                            self.i64(out_w as i64),
                            "",
                        )?,
                        px,
                        "opix",
                    )?;
                    let out_first = b.build_int_mul(opix, self.i64(wo as i64), "")?;
                    // The byte of packed bits of block `blk` of eight filters.
                    let block_byte = |blk: IntValue<'ctx>| -> Built<IntValue<'ctx>> {
                        let first =
                            b.build_int_mul(blk, self.i64((per_filter * LANES) as i64), "")?;
                        let mut acc = self.v8().const_zero();
                        for (i, &xs) in tap_words.iter().enumerate() {
                            let at = b.build_int_add(first, self.i64((i * LANES) as i64), "")?;
                            let wv = self.load_v8(wt, at)?;
                            let d = b.build_xor(xs, wv, "d")?;
                            let p = b
                                .build_call(ctpop, &[d.into()], "p")?
                                .try_as_basic_value()
                                .left()
                                .expect("ctpop returns a value")
                                .into_vector_value();
                            acc = b.build_int_add(acc, p, "acc")?;
                        }
                        let kv = self.splat(k_total)?;
                        let twice = b.build_int_add(acc, acc, "twice")?;
                        let dot = b.build_int_sub(kv, twice, "dot")?;
                        let lanes = b.build_int_mul(blk, self.i64(LANES as i64), "")?;
                        let s = self.load_v8(sign, lanes)?;
                        let bd = self.load_v8(bound, lanes)?;
                        let v = self.signed(dot, s)?;
                        let on = b.build_int_compare(IntPredicate::SGE, v, bd, "on")?;
                        Ok(b.build_bit_cast(on, self.context.i8_type(), "byte")?
                            .into_int_value())
                    };
                    if blocks <= UNROLLED_BLOCKS {
                        let mut word = self.i64(0);
                        for blk in 0..blocks {
                            let byte = block_byte(self.i64(blk as i64))?;
                            let byte = b.build_int_z_extend(byte, self.context.i64_type(), "")?;
                            let shifted =
                                b.build_left_shift(byte, self.i64(((blk % 8) * 8) as i64), "")?;
                            word = b.build_or(word, shifted, "word")?;
                            if blk % 8 == 7 || blk + 1 == blocks {
                                let at =
                                    b.build_int_add(out_first, self.i64((blk / 8) as i64), "")?;
                                let dst = self.gep_i64(out, at)?;
                                if k.pool.is_some() {
                                    let old = b
                                        .build_load(self.context.i64_type(), dst, "old")?
                                        .into_int_value();
                                    word = b.build_or(old, word, "pooled")?;
                                }
                                b.build_store(dst, word)?;
                                word = self.i64(0);
                            }
                        }
                        return Ok(());
                    }
                    // Many blocks: a loop storing a byte each, whose code fits the caches;
                    // the bytes of the last word past the blocks must read 0.
                    if k.pool.is_none() && blocks % 8 != 0 {
                        let last = b.build_int_add(out_first, self.i64((wo - 1) as i64), "")?;
                        b.build_store(self.gep_i64(out, last)?, self.i64(0))?;
                    }
                    let base = self.gep_i64(out, out_first)?;
                    self.counted(function, blocks, &mut |blk| {
                        let mut byte = block_byte(blk)?;
                        let dst = unsafe {
                            b.build_in_bounds_gep(self.context.i8_type(), base, &[blk], "dst")?
                        };
                        if k.pool.is_some() {
                            let old = b
                                .build_load(self.context.i8_type(), dst, "old")?
                                .into_int_value();
                            byte = b.build_or(old, byte, "pooled")?;
                        }
                        b.build_store(dst, byte)?;
                        Ok(())
                    })?;
                    Ok(())
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }

    /// The address of element `index` of an i64 array.
    fn gep_i64(
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

    /// `v` negated in the lanes where `mask` is -1 (descending channels), as
    /// `(v ^ mask) - mask`: cheaper than multiplying 64-bit lanes by the sign.
    fn signed(&self, v: VectorValue<'ctx>, mask: VectorValue<'ctx>) -> Built<VectorValue<'ctx>> {
        let flipped = self.builder.build_xor(v, mask, "")?;
        self.builder.build_int_sub(flipped, mask, "v")
    }

    /// A splat constant vector.
    fn splat_const(&self, v: i64) -> VectorValue<'ctx> {
        VectorType::const_vector(&[self.i64(v); LANES])
    }

    /// One fused bit-serial convolution: per output pixel (pooled pixel), a loop over
    /// blocks of eight filters, one per 64-bit lane; per block, every tap's activation
    /// planes (splat) against the filters' planes, `vpopcntq` of each pair's AND added into
    /// one accumulator per pair weight; the counts of thresholds reached (the largest over
    /// the pool's window), and each level's bits stored a byte (eight channels) at a time.
    fn plane_conv(&self, k: &PlaneConvKernel) -> Built<()> {
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (nw, taps, wo) = (words(c), kh * kw, words(m));
        let (pa, pw) = (k.a_places.len(), k.w_places.len());
        let blocks = m.div_ceil(LANES);
        let per_filter = taps * nw * pw;
        // Weights as [block][tap][word][plane][lane]; padded filters are zeros.
        let mut wt = vec![0i64; blocks * per_filter * LANES];
        for f in 0..m {
            for i in 0..per_filter {
                wt[((f / LANES) * per_filter + i) * LANES + f % LANES] =
                    k.weights[f * per_filter + i] as i64;
            }
        }
        let t = k.levels.thresholds;
        // Sign masks [block][lane] (see `signed`); bounds [block][threshold][lane]; live
        // [block][lane] (0 for padded filters, whose levels must store no bits).
        let mut sign = vec![0i64; blocks * LANES];
        let mut bounds = vec![BEYOND; blocks * t * LANES];
        let mut live = vec![0i64; blocks * LANES];
        for f in 0..m {
            sign[f] = if k.levels.sign[f] < 0 { -1 } else { 0 };
            live[f] = 1;
            for i in 0..t {
                bounds[((f / LANES) * t + i) * LANES + f % LANES] = k.levels.bounds[f * t + i];
            }
        }
        let name = &k.symbol;
        let wt = self.table(&format!("{name}.weights"), &wt);
        let sign = self.table(&format!("{name}.sign"), &sign);
        let bounds = self.table(&format!("{name}.bounds"), &bounds);
        let live = self.table(&format!("{name}.live"), &live);

        let ptr = self.context.ptr_type(AddressSpace::default());
        let fn_ty = self
            .context
            .void_type()
            .fn_type(&[ptr.into(), ptr.into()], false);
        let function = self
            .module
            .add_function(name, fn_ty, Some(Linkage::External));
        let entry = self.context.append_basic_block(function, "entry");
        self.builder.position_at_end(entry);
        let x = function.get_nth_param(0).expect("x").into_pointer_value();
        let out = function.get_nth_param(1).expect("out").into_pointer_value();
        let ctpop = Intrinsic::find("llvm.ctpop").expect("llvm.ctpop exists");
        let ctpop = ctpop
            .get_declaration(self.module, &[self.v8().into()])
            .expect("ctpop of <8 x i64>");
        let scalar_ctpop = Intrinsic::find("llvm.ctpop")
            .expect("llvm.ctpop exists")
            .get_declaration(self.module, &[self.context.i64_type().into()])
            .expect("ctpop of i64");
        let b = &self.builder;
        let popcount = |v: VectorValue<'ctx>| -> Built<VectorValue<'ctx>> {
            Ok(b.build_call(ctpop, &[v.into()], "p")?
                .try_as_basic_value()
                .left()
                .expect("ctpop returns a value")
                .into_vector_value())
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
        self.counted(function, batch, &mut |n| {
            self.counted(function, out_h, &mut |py| {
                self.counted(function, out_w, &mut |px| {
                    // The pixel's output words, zeroed: the blocks store bytes into them.
                    let opix = b.build_int_add(
                        b.build_int_mul(
                            b.build_int_add(
                                b.build_int_mul(n, self.i64(out_h as i64), "")?,
                                py,
                                "",
                            )?,
                            self.i64(out_w as i64),
                            "",
                        )?,
                        px,
                        "opix",
                    )?;
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
                            let mut firsts = Vec::with_capacity(taps);
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = b.build_int_add(
                                        b.build_int_mul(oy, self.i64(k.strides.0 as i64), "")?,
                                        self.i64((ky * k.dilations.0) as i64),
                                        "iy",
                                    )?;
                                    let ix = b.build_int_add(
                                        b.build_int_mul(ox, self.i64(k.strides.1 as i64), "")?,
                                        self.i64((kx * k.dilations.1) as i64),
                                        "ix",
                                    )?;
                                    let row = b.build_int_add(
                                        b.build_int_mul(n, self.i64(h as i64), "")?,
                                        iy,
                                        "",
                                    )?;
                                    let pixel = b.build_int_add(
                                        b.build_int_mul(row, self.i64(w as i64), "")?,
                                        ix,
                                        "pixel",
                                    )?;
                                    firsts.push(b.build_int_mul(
                                        pixel,
                                        self.i64((pa * nw) as i64),
                                        "",
                                    )?);
                                }
                            }
                            // With bipolar weights, sum_p place_p * popcount(A_p).
                            let total = if k.bipolar_weights {
                                let mut total = self.i64(0);
                                for &first in &firsts {
                                    for (p, &place) in k.a_places.iter().enumerate() {
                                        for word in 0..nw {
                                            let at = b.build_int_add(
                                                first,
                                                self.i64((p * nw + word) as i64),
                                                "",
                                            )?;
                                            let a = self.load_i64(x, at)?;
                                            let cnt = b
                                                .build_call(scalar_ctpop, &[a.into()], "c")?
                                                .try_as_basic_value()
                                                .left()
                                                .expect("ctpop returns a value")
                                                .into_int_value();
                                            let wc = b.build_int_mul(cnt, self.i64(place), "")?;
                                            total = b.build_int_add(total, wc, "total")?;
                                        }
                                    }
                                }
                                Some(self.splat(total)?)
                            } else {
                                None
                            };
                            windows.push((firsts, total));
                        }
                    }
                    self.counted(function, blocks, &mut |blk| {
                        let wbase =
                            b.build_int_mul(blk, self.i64((per_filter * LANES) as i64), "")?;
                        let lanes = b.build_int_mul(blk, self.i64(LANES as i64), "")?;
                        let mut best: Option<VectorValue<'ctx>> = None;
                        for (firsts, total) in &windows {
                            let mut acc = vec![self.v8().const_zero(); weights.len()];
                            for (tap, &first) in firsts.iter().enumerate() {
                                for word in 0..nw {
                                    let mut a = Vec::with_capacity(pa);
                                    for p in 0..pa {
                                        let at = b.build_int_add(
                                            first,
                                            self.i64((p * nw + word) as i64),
                                            "",
                                        )?;
                                        a.push(self.splat(self.load_i64(x, at)?)?);
                                    }
                                    for q in 0..pw {
                                        let i = (tap * nw + word) * pw + q;
                                        let at = b.build_int_add(
                                            wbase,
                                            self.i64((i * LANES) as i64),
                                            "",
                                        )?;
                                        let wv = self.load_v8(wt, at)?;
                                        for (p, &ap) in a.iter().enumerate() {
                                            let both = b.build_and(ap, wv, "both")?;
                                            let cnt = popcount(both)?;
                                            let cl = pair_class[q * pa + p];
                                            acc[cl] = b.build_int_add(acc[cl], cnt, "acc")?;
                                        }
                                    }
                                }
                            }
                            let mut dot = self.v8().const_zero();
                            for (cl, &wgt) in weights.iter().enumerate() {
                                let term = b.build_int_mul(acc[cl], self.splat_const(wgt), "")?;
                                dot = b.build_int_add(dot, term, "dot")?;
                            }
                            if let Some(total) = total {
                                let twice = b.build_int_add(dot, dot, "")?;
                                dot = b.build_int_sub(twice, *total, "dot")?;
                            }
                            let s = self.load_v8(sign, lanes)?;
                            let v = self.signed(dot, s)?;
                            let mut count = self.v8().const_zero();
                            for i in 0..t {
                                let at = b.build_int_add(
                                    b.build_int_mul(blk, self.i64((t * LANES) as i64), "")?,
                                    self.i64((i * LANES) as i64),
                                    "",
                                )?;
                                let bd = self.load_v8(bounds, at)?;
                                let on = b.build_int_compare(IntPredicate::SGE, v, bd, "on")?;
                                let on = b.build_int_z_extend(on, self.v8(), "")?;
                                count = b.build_int_add(count, on, "count")?;
                            }
                            best = Some(match best {
                                None => count,
                                Some(prev) => {
                                    let more =
                                        b.build_int_compare(IntPredicate::SGT, count, prev, "")?;
                                    b.build_select(more, count, prev, "best")?
                                        .into_vector_value()
                                }
                            });
                        }
                        let count = best.expect("a window");
                        let live = self.load_v8(live, lanes)?;
                        self.store_levels(count, live, &k.levels, (out, out_first, wo), blk)?;
                        Ok(())
                    })
                })
            })
        })?;
        self.builder.build_return(None)?;
        Ok(())
    }

    /// The output stage of a block of channels, one per lane of `count` (the thresholds
    /// reached): each lane's level `alpha * count + beta` (0 where `live` is 0, a padded
    /// channel), and per plane the lanes' bits as one integer of as many bits, stored at
    /// integer index `block` of the plane's words (`out[first + plane * words]` on).
    fn store_levels(
        &self,
        count: VectorValue<'ctx>,
        live: VectorValue<'ctx>,
        levels: &bnnc_cranelift::KernelLevels,
        (out, first, words): (PointerValue<'ctx>, IntValue<'ctx>, usize),
        block: IntValue<'ctx>,
    ) -> Built<()> {
        let b = &self.builder;
        let ty = count.get_type();
        let lanes = ty.get_size();
        let elem = ty.get_element_type().into_int_type();
        let splat = |v: i64| {
            let c = elem.const_int(v as u64, true);
            VectorType::const_vector(&vec![c; lanes as usize])
        };
        let scaled = b.build_int_mul(count, splat(levels.alpha), "")?;
        let level = b.build_int_add(scaled, splat(levels.beta), "level")?;
        let level = b.build_int_mul(level, live, "")?;
        let bits_ty = self.context.custom_width_int_type(lanes);
        for r in 0..levels.planes {
            let shifted = b.build_right_shift(level, splat(r as i64), false, "")?;
            let bit = b.build_and(shifted, splat(1), "")?;
            let on = b.build_int_compare(IntPredicate::NE, bit, ty.const_zero(), "")?;
            let bits = b.build_bit_cast(on, bits_ty, "bits")?.into_int_value();
            // Integer `block` of plane r's words (little-endian words).
            let word0 = b.build_int_add(first, self.i64((r * words) as i64), "")?;
            let base = self.gep_i64(out, word0)?;
            let dst = unsafe { b.build_in_bounds_gep(bits_ty, base, &[block], "dst")? };
            b.build_store(dst, bits)?;
        }
        Ok(())
    }

    /// The first layer on small integers: per output pixel, the window's integers (the f32
    /// input times `1 / in_scale`, converted saturating as Cranelift's kernel does), each
    /// splat and multiplied by a vector of 32 filters' `i16` weights; then
    /// [`KernelEmitter::store_levels`] on the counts of thresholds reached.
    fn int16_conv(&self, k: &Int16ConvKernel) -> Built<()> {
        const WIDE: usize = 32;
        let (batch, c, h, w) = k.input;
        let (m, kh, kw) = k.filters;
        let (oh, ow) = k.output;
        let (taps, wo) = (c * kh * kw, words(m));
        let blocks = m.div_ceil(WIDE);
        let t = k.levels.thresholds;
        let i16t = self.context.i16_type();
        let vt = i16t.vec_type(WIDE as u32);
        let clamp = |v: i64| v.clamp(-32768, 32767) as u64;
        // Weights [tap][block][lane]; signs and live [block][lane]; bounds
        // [block][threshold][lane]. Padded filters: weight 0, "never", not live.
        let mut wt = vec![0u64; taps * blocks * WIDE];
        let mut sign = vec![1u64; blocks * WIDE];
        let mut live = vec![0u64; blocks * WIDE];
        let mut bounds = vec![32767u64; blocks * t * WIDE];
        for f in 0..m {
            for tap in 0..taps {
                wt[(tap * blocks + f / WIDE) * WIDE + f % WIDE] =
                    k.weights[f * taps + tap] as i64 as u64;
            }
            sign[f] = clamp(k.levels.sign[f]);
            live[f] = 1;
            for i in 0..t {
                bounds[((f / WIDE) * t + i) * WIDE + f % WIDE] = clamp(k.levels.bounds[f * t + i]);
            }
        }
        let table = |name: &str, values: &[u64]| {
            let consts: Vec<IntValue> = values.iter().map(|&v| i16t.const_int(v, true)).collect();
            let array = i16t.const_array(&consts);
            let global =
                self.module
                    .add_global(array.get_type(), None, &format!("{}.{name}", k.symbol));
            global.set_initializer(&array);
            global.set_constant(true);
            global.set_linkage(Linkage::Private);
            global.set_alignment(64);
            global.as_pointer_value()
        };
        let (wt, sign, live, bounds) = (
            table("weights", &wt),
            table("sign", &sign),
            table("live", &live),
            table("bounds", &bounds),
        );
        let ptr = self.context.ptr_type(AddressSpace::default());
        let fn_ty = self
            .context
            .void_type()
            .fn_type(&[ptr.into(), ptr.into()], false);
        let function = self
            .module
            .add_function(&k.symbol, fn_ty, Some(Linkage::External));
        let entry = self.context.append_basic_block(function, "entry");
        self.builder.position_at_end(entry);
        let x = function.get_nth_param(0).expect("x").into_pointer_value();
        let out = function.get_nth_param(1).expect("out").into_pointer_value();
        let f32t = self.context.f32_type();
        let to_int = Intrinsic::find("llvm.fptosi.sat")
            .expect("llvm.fptosi.sat exists")
            .get_declaration(self.module, &[self.context.i32_type().into(), f32t.into()])
            .expect("fptosi.sat i32 of f32");
        let b = &self.builder;
        let load_vec = |base: PointerValue<'ctx>, index: usize| -> Built<VectorValue<'ctx>> {
            let at = unsafe { b.build_in_bounds_gep(i16t, base, &[self.i64(index as i64)], "at")? };
            let v = b.build_load(vt, at, "v")?.into_vector_value();
            v.as_instruction()
                .expect("a load")
                .set_alignment(64)
                .expect("valid alignment");
            Ok(v)
        };
        let inv = f32t.const_float(f64::from(1.0 / k.in_scale));
        let pixel_words = k.levels.planes * wo;
        // One image's integers, converted once (not once per tap of every window).
        let image_len = c * h * w;
        let image = b.build_array_alloca(i16t, self.i64(image_len as i64), "image")?;
        self.counted(function, batch, &mut |n| {
            let first = b.build_int_mul(n, self.i64(image_len as i64), "")?;
            self.counted(function, image_len, &mut |i| {
                let at = b.build_int_add(first, i, "")?;
                let src = unsafe { b.build_in_bounds_gep(f32t, x, &[at], "src")? };
                let v = b.build_load(f32t, src, "x")?.into_float_value();
                let q = b.build_float_mul(v, inv, "q")?;
                let q = b
                    .build_call(to_int, &[q.into()], "qi")?
                    .try_as_basic_value()
                    .left()
                    .expect("fptosi.sat returns a value")
                    .into_int_value();
                let q = b.build_int_truncate(q, i16t, "q16")?;
                let dst = unsafe { b.build_in_bounds_gep(i16t, image, &[i], "dst")? };
                b.build_store(dst, q)?;
                Ok(())
            })?;
            self.counted(function, oh, &mut |oy| {
                self.counted(function, ow, &mut |ox| {
                    let opix = b.build_int_add(
                        b.build_int_mul(
                            b.build_int_add(b.build_int_mul(n, self.i64(oh as i64), "")?, oy, "")?,
                            self.i64(ow as i64),
                            "",
                        )?,
                        ox,
                        "opix",
                    )?;
                    let first = b.build_int_mul(opix, self.i64(pixel_words as i64), "")?;
                    for i in 0..pixel_words {
                        let at = b.build_int_add(first, self.i64(i as i64), "")?;
                        b.build_store(self.gep_i64(out, at)?, self.i64(0))?;
                    }
                    let y0 = b.build_int_mul(oy, self.i64(k.strides.0 as i64), "")?;
                    let x0 = b.build_int_mul(ox, self.i64(k.strides.1 as i64), "")?;
                    let mut acc = vec![vt.const_zero(); blocks];
                    for tap in 0..taps {
                        let (ch, ky, kx) = (tap / (kh * kw), tap / kw % kh, tap % kw);
                        let row = b.build_int_add(
                            y0,
                            self.i64((ch * h + ky * k.dilations.0) as i64),
                            "",
                        )?;
                        let at = b.build_int_add(
                            b.build_int_mul(row, self.i64(w as i64), "")?,
                            b.build_int_add(x0, self.i64((kx * k.dilations.1) as i64), "")?,
                            "",
                        )?;
                        let src = unsafe { b.build_in_bounds_gep(i16t, image, &[at], "src")? };
                        let q = b.build_load(i16t, src, "q")?.into_int_value();
                        let undef = vt.get_undef();
                        let one = b.build_insert_element(
                            undef,
                            q,
                            self.context.i32_type().const_zero(),
                            "",
                        )?;
                        let mask = self.context.i32_type().vec_type(WIDE as u32).const_zero();
                        let qs = b.build_shuffle_vector(one, undef, mask, "qs")?;
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
