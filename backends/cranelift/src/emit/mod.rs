//! Cranelift code for a [`Schedule`]: one function per step, a function running one sample
//! through the steps, and the ABI functions ([`bnnc_runtime::abi`]).

mod bitserial;
mod builder;
mod convert;
mod count_planes;
mod elementwise;
mod head;
mod linear;
mod lookup_conv;
mod movement;
mod operand;
mod pool;
mod threshold;
mod window;
mod xnor;

use bnnc_ir::{Graph, Op};
use bnnc_runtime::abi;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{
    AbiParam, Block, BlockArg, InstBuilder, Signature, UserFuncName, Value,
};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataId, FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};

pub(crate) use bitserial::on_lookups;
pub(crate) use builder::KernelBuilder;
pub(crate) use linear::on_byte_dots;
pub(crate) use operand::Operand;

use crate::schedule::{elementwise_op, Place, Schedule, Step, StepKind};
use crate::BackendError;

/// What the object is built for and named.
pub(crate) struct ObjectSpec<'a> {
    pub name: &'a str,
    /// The element type of `NAME_run`'s input buffer.
    pub input_type: abi::InputType,
    pub input_len: usize,
    pub output_len: usize,
    /// Whether to export `NAME_profile` as well.
    pub profile: bool,
    /// Scalar popcounts only ([`crate::Options::scalar_popcount`]).
    pub scalar_popcount: bool,
    /// The function whose CLIF to print ([`crate::Options::dump_clif`]).
    pub dump_clif: Option<&'a str>,
}

/// Bytes allocated beyond the scratch buffer: room to align it to 64 bytes, and for vector
/// loads that read a word past the end of a buffer.
const SCRATCH_SLACK: i64 = 128;

/// Compiles the scheduled graph into an object file's bytes.
pub(crate) fn emit_object(
    graph: &Graph,
    schedule: &Schedule,
    isa: OwnedTargetIsa,
    spec: &ObjectSpec<'_>,
    provider: &mut dyn crate::KernelProvider,
) -> Result<Vec<u8>, BackendError> {
    let mut e = Emitter::new(isa, spec.name, !spec.scalar_popcount)?;
    e.dump_clif = spec.dump_clif.map(str::to_string);
    // Steps another code generator takes: their functions call its kernels.
    for (i, step) in schedule.steps.iter().enumerate() {
        // An unfused XNOR layer: its sums.
        if let StepKind::Node(n) = step.kind {
            let node = graph.node(n);
            if matches!(node.op, Op::XnorConv(_) | Op::XnorMatMul) {
                let symbol = format!("{}_kernel{i}", spec.name);
                let acc = crate::stage::OutputStage::Acc;
                if let Some(kernel) = xnor::conv_kernel(graph, node, &acc, None, symbol)? {
                    if provider.xnor_conv(&kernel) {
                        e.external.insert(i, kernel.symbol);
                    }
                }
            }
        }
        if let StepKind::Fused {
            linear,
            threshold,
            pool,
            ref stage,
        } = step.kind
        {
            let symbol = format!("{}_kernel{i}", spec.name);
            let t = graph.node(threshold);
            let pool = pool.map(|p| crate::stage::BitPool::after(graph, t, graph.node(p)));
            let node = graph.node(linear);
            if let Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } = node.op {
                if let Some(kernel) = bitserial::plane_kernel(graph, node, stage, pool, symbol)? {
                    if provider.plane_conv(&kernel) {
                        e.external.insert(i, kernel.symbol);
                    }
                }
            } else if let Op::Conv(attrs) = &node.op {
                if let Some(kernel) = linear::int16_kernel(graph, node, attrs, stage, symbol) {
                    if provider.int16_conv(&kernel) {
                        e.external.insert(i, kernel.symbol);
                    }
                }
            } else if let Some(kernel) = xnor::conv_kernel(graph, node, stage, pool, symbol)? {
                if provider.xnor_conv(&kernel) {
                    e.external.insert(i, kernel.symbol);
                }
            }
        }
    }
    let mut step_fns = Vec::with_capacity(schedule.steps.len());
    for (i, step) in schedule.steps.iter().enumerate() {
        step_fns.push(e.step(graph, i, step)?);
    }
    let sample = e.sample_fn(schedule, &step_fns, false)?;
    e.abi_fns(spec, schedule.scratch_bytes, sample)?;
    if spec.profile {
        let profiled = e.sample_fn(schedule, &step_fns, true)?;
        e.profile_fn(spec, schedule.scratch_bytes, profiled)?;
    }
    e.finish()
}

/// A module being filled with functions.
pub(crate) struct Emitter {
    /// Whether `popcnt.i8x16` and pairwise widening adds lower well (SSSE3 or better, or
    /// aarch64's CNT).
    simd_popcount: bool,
    /// Whether vector fused multiply-adds are instructions.
    vector_fma: bool,
    /// The target's byte dot product, if any.
    byte_dot: Option<crate::target::ByteDot>,
    /// The target's byte table lookup, if any.
    byte_shuffle: Option<crate::target::ByteShuffle>,
    module: ObjectModule,
    fctx: FunctionBuilderContext,
    tables: Vec<DataId>,
    /// Steps computed by another code generator's kernel: the symbol to call.
    external: std::collections::HashMap<usize, String>,
    /// The function whose CLIF to print, if any.
    pub dump_clif: Option<String>,
}

fn codegen_error(function: &str, err: impl std::fmt::Display) -> BackendError {
    BackendError::Codegen {
        function: function.to_string(),
        reason: err.to_string(),
    }
}

impl Emitter {
    /// An emitter for `isa`; `vector_popcount` allows the vector popcount kernels where
    /// the CPU has them (they won on every XNOR layer shape measured, 1.6-2x, BENCHMARKS.md;
    /// `bnnc --xnor-popcount scalar` turns them off to measure that again).
    pub fn new(
        isa: OwnedTargetIsa,
        name: &str,
        vector_popcount: bool,
    ) -> Result<Emitter, BackendError> {
        let simd_popcount = vector_popcount && crate::target::simd_popcount(&*isa);
        let vector_fma = crate::target::vector_fma(&*isa);
        let byte_dot = crate::target::byte_dot(&*isa);
        let byte_shuffle = crate::target::byte_shuffle(&*isa);
        let builder = ObjectBuilder::new(isa, name, cranelift_module::default_libcall_names())
            .map_err(|e| BackendError::Target(e.to_string()))?;
        Ok(Emitter {
            simd_popcount,
            vector_fma,
            byte_dot,
            byte_shuffle,
            module: ObjectModule::new(builder),
            fctx: FunctionBuilderContext::new(),
            tables: Vec::new(),
            external: std::collections::HashMap::new(),
            dump_clif: None,
        })
    }

    /// The object file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, BackendError> {
        self.module
            .finish()
            .emit()
            .map_err(|err| BackendError::Link(err.to_string()))
    }

    pub fn signature(&self, params: usize, ret: Option<cranelift_codegen::ir::Type>) -> Signature {
        let mut sig = self.module.make_signature();
        sig.params.extend((0..params).map(|_| AbiParam::new(I64)));
        sig.returns.extend(ret.map(AbiParam::new));
        sig
    }

    /// Defines function `name` whose body `body` builds from its parameters.
    pub fn define(
        &mut self,
        name: &str,
        linkage: Linkage,
        sig: Signature,
        body: impl FnOnce(
            &mut KernelBuilder,
        ) -> Result<Option<cranelift_codegen::ir::Value>, BackendError>,
    ) -> Result<FuncId, BackendError> {
        let id = self
            .module
            .declare_function(name, linkage, &sig)
            .map_err(|err| codegen_error(name, err))?;
        let frontend_config = self.module.target_config();
        let mut ctx = Context::new();
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let params = b.block_params(entry).to_vec();
            let mut kb = KernelBuilder::new(b, &mut self.module, &mut self.tables, params);
            kb.vector_fma = self.vector_fma;
            kb.byte_dot = self.byte_dot;
            kb.byte_shuffle = self.byte_shuffle;
            let ret = body(&mut kb)?;
            let mut b = kb.finish();
            match ret {
                Some(v) => b.ins().return_(&[v]),
                None => b.ins().return_(&[]),
            };
            b.seal_all_blocks();
            b.finalize(frontend_config);
        }
        self.module
            .define_function(id, &mut ctx)
            .map_err(|err| codegen_error(name, format!("{err:?}")))?;
        // A debugging aid: `bnnc --dump-clif bnnc_step4` prints that function's CLIF.
        if self.dump_clif.as_deref() == Some(name) {
            eprintln!("{}", ctx.func.display());
        }
        Ok(id)
    }

    /// One step as a function of its operand and result pointers.
    fn step(&mut self, graph: &Graph, index: usize, step: &Step) -> Result<FuncId, BackendError> {
        let simd = self.simd_popcount;
        let external = self.external.get(&index).cloned();
        let arity = step.params().count();
        let sig = self.signature(arity, None);
        let name = format!("bnnc_step{index}");
        self.define(&name, Linkage::Local, sig, |kb| {
            let operands: Vec<Operand> = step
                .operands
                .iter()
                .enumerate()
                .map(|(i, placed)| Operand::of_step(graph, step, i, placed, kb.param(i)))
                .collect();
            let results: Vec<Operand> = step
                .results
                .iter()
                .enumerate()
                .map(|(j, &(_, storage))| {
                    Operand::result(graph, step, j, storage, kb.param(step.operands.len() + j))
                })
                .collect();
            match &step.kind {
                StepKind::Convert => convert::convert(kb, &operands[0], &results[0]),
                StepKind::Fused { .. } | StepKind::Node(_) if external.is_some() => {
                    let symbol = external.as_deref().expect("checked");
                    kb.call_c_void(symbol, &[I64, I64], &[operands[0].ptr, results[0].ptr]);
                    Ok(())
                }
                StepKind::Fused {
                    linear,
                    threshold,
                    pool,
                    stage,
                } => {
                    let (node, t) = (graph.node(*linear), graph.node(*threshold));
                    let pool = pool.map(|p| crate::stage::BitPool::after(graph, t, graph.node(p)));
                    match &node.op {
                        Op::BitSerialConv { attrs, .. } => bitserial::conv(
                            kb,
                            node,
                            attrs,
                            &operands,
                            &results[0],
                            stage,
                            pool,
                            simd,
                        ),
                        Op::BitSerialMatMul { .. } => {
                            bitserial::matmul(kb, node, &operands, &results[0], stage, simd)
                        }
                        Op::Conv(attrs) => {
                            linear::conv_int16_bits(kb, node, attrs, &operands, &results[0], stage)
                        }
                        Op::XnorConv(attrs) => {
                            xnor::conv(kb, node, attrs, &operands, &results[0], stage, simd, pool)
                        }
                        _ => xnor::matmul_as_conv(kb, node, &operands, &results[0], stage, simd),
                    }
                }
                StepKind::Chain { nodes, reads } => {
                    let mut links = Vec::with_capacity(nodes.len());
                    for &n in nodes {
                        links.push(chain_link(kb, graph, nodes, reads, &operands, n)?);
                    }
                    let inputs = operands
                        .iter()
                        .map(|o| elementwise::Input::of(kb, o))
                        .collect();
                    elementwise::chain(kb, inputs, &links, &results[0]);
                    Ok(())
                }
                StepKind::Node(n) => {
                    let node = graph.node(*n);
                    let unsupported = |reason: &str| Err(BackendError::unsupported(node, reason));
                    match &node.op {
                        elementwise_op!() => {
                            elementwise::elementwise(kb, node, &operands, &results[0])
                        }
                        Op::Threshold(attrs) | Op::MultiThreshold(attrs) => {
                            threshold::threshold(kb, node, attrs, &operands, &results[0])
                        }
                        Op::XnorMatMul => xnor::matmul_as_conv(
                            kb,
                            node,
                            &operands,
                            &results[0],
                            &crate::stage::OutputStage::Acc,
                            simd,
                        ),
                        Op::BitSerialMatMul { .. } => bitserial::matmul(
                            kb,
                            node,
                            &operands,
                            &results[0],
                            &crate::stage::OutputStage::Acc,
                            simd,
                        ),
                        Op::BitSerialConv { attrs, .. } => bitserial::conv(
                            kb,
                            node,
                            attrs,
                            &operands,
                            &results[0],
                            &crate::stage::OutputStage::Acc,
                            None,
                            simd,
                        ),
                        Op::XnorConv(attrs) => xnor::conv(
                            kb,
                            node,
                            attrs,
                            &operands,
                            &results[0],
                            &crate::stage::OutputStage::Acc,
                            simd,
                            None,
                        ),
                        Op::Conv(attrs) => {
                            let workspace = step.workspace.map(|_| kb.param(arity - 1));
                            linear::conv(kb, node, attrs, &operands, &results[0], workspace)
                        }
                        Op::Gemm(attrs) => linear::gemm(kb, node, attrs, &operands, &results[0]),
                        Op::MatMul => linear::matmul(kb, node, &operands, &results[0]),
                        Op::MaxPool(attrs) => {
                            pool::max_pool(kb, node, attrs, &[], &operands[0], &results[0])
                        }
                        Op::MinMaxPool { attrs, min } => {
                            pool::max_pool(kb, node, attrs, min, &operands[0], &results[0])
                        }
                        Op::ReduceMean { axes, .. } => {
                            pool::reduce_mean(kb, node, axes, &operands[0], &results[0])
                        }
                        Op::AveragePool(attrs) => {
                            pool::average_pool(kb, node, attrs, &operands[0], &results[0])
                        }
                        Op::Pad { pads, value } => {
                            movement::pad(kb, node, pads, *value, &operands[0], &results[0])
                        }
                        Op::Transpose { perm } => {
                            movement::transpose(kb, node, perm, &operands[0], &results[0])
                        }
                        Op::Concat { axis } => {
                            movement::concat(kb, node, *axis, &operands, &results[0])
                        }
                        Op::GlobalAveragePool => {
                            pool::global_average_pool(kb, node, &operands[0], &results[0])
                        }
                        Op::Softmax { axis, coerce_2d } => {
                            head::softmax(kb, node, *axis, *coerce_2d, &operands[0], &results[0])
                        }
                        Op::TopK {
                            k, axis, largest, ..
                        } => head::top_k(kb, node, (*k, *axis, *largest), &operands[0], &results),
                        Op::Reshape { .. } => unsupported("internal: reshapes are views"),
                        // Every op has an arm: a new op must say what native code does with it.
                    }
                }
            }?;
            Ok(None)
        })
    }

    /// `sample(input, output, scratch)`: every step once.
    /// `sample(input, output, scratch)`, or with `profile`
    /// `sample(input, output, scratch, step_ns)` adding each step's nanoseconds to
    /// `step_ns[i]` (CLOCK_MONOTONIC around every call).
    fn sample_fn(
        &mut self,
        schedule: &Schedule,
        steps: &[FuncId],
        profile: bool,
    ) -> Result<FuncId, BackendError> {
        let sig = self.signature(3 + usize::from(profile), None);
        let name = if profile {
            "bnnc_sample_profiled"
        } else {
            "bnnc_sample"
        };
        let step_sigs: Vec<usize> = schedule.steps.iter().map(|s| s.params().count()).collect();
        self.define(name, Linkage::Local, sig, |kb| {
            let (input, output, scratch) = (kb.param(0), kb.param(1), kb.param(2));
            let timespec = profile.then(|| kb.stack(16));
            let now = |kb: &mut KernelBuilder| {
                let ts = timespec.expect("profiling has a timespec");
                let clock = kb.iconst32(1); // CLOCK_MONOTONIC
                kb.call_c("clock_gettime", &[I32, I64], I32, &[clock, ts]);
                let sec = kb.load(I64, ts, 0);
                let nsec = kb.load(I64, ts, 8);
                let ns = kb.b.ins().imul_imm_s(sec, 1_000_000_000);
                kb.b.ins().iadd(ns, nsec)
            };
            for (i, (step, (&f, &arity))) in schedule
                .steps
                .iter()
                .zip(steps.iter().zip(&step_sigs))
                .enumerate()
            {
                let start = profile.then(|| now(kb));
                let mut args = Vec::with_capacity(arity);
                for place in step.params() {
                    args.push(match place {
                        None => kb.iconst(0),
                        Some(Place::Input) => input,
                        Some(Place::Output) => output,
                        Some(Place::Scratch(off)) => kb.b.ins().iadd_imm_s(scratch, off as i64),
                    });
                }
                kb.call_local(f, &args);
                if let Some(start) = start {
                    let end = now(kb);
                    let took = kb.b.ins().isub(end, start);
                    let times = kb.param(3);
                    let sum = kb.load(I64, times, (i * 8) as i64);
                    let sum = kb.b.ins().iadd(sum, took);
                    kb.store(sum, times, (i * 8) as i64);
                }
            }
            Ok(None)
        })
    }

    /// `int32_t NAME_profile(const float *input, float *output, uint64_t *step_ns)`: one
    /// sample, adding each step's time to `step_ns` (one entry per step of the schedule).
    fn profile_fn(
        &mut self,
        spec: &ObjectSpec<'_>,
        scratch_bytes: usize,
        sample: FuncId,
    ) -> Result<(), BackendError> {
        let sig = self.signature(3, Some(I32));
        self.define(
            &abi::symbol(spec.name, "profile"),
            Linkage::Export,
            sig,
            |kb| {
                let (input, output, times) = (kb.param(0), kb.param(1), kb.param(2));
                let done = kb.b.create_block();
                let code = kb.b.append_block_param(done, I32);
                let (raw, scratch) = alloc_scratch(kb, done, scratch_bytes);
                kb.call_local(sample, &[input, output, scratch, times]);
                kb.call_c_void("free", &[I64], &[raw]);
                let zero = kb.iconst32(abi::RUN_OK);
                kb.b.ins().jump(done, &[BlockArg::Value(zero)]);
                kb.b.switch_to_block(done);
                kb.b.seal_block(done);
                Ok(Some(code))
            },
        )?;
        Ok(())
    }

    /// `NAME_input_len`, `NAME_output_len`, `NAME_input_type` and `NAME_run`.
    fn abi_fns(
        &mut self,
        spec: &ObjectSpec<'_>,
        scratch_bytes: usize,
        sample: FuncId,
    ) -> Result<(), BackendError> {
        for (function, len) in [
            ("input_len", spec.input_len),
            ("output_len", spec.output_len),
        ] {
            let sig = self.signature(0, Some(I64));
            self.define(
                &abi::symbol(spec.name, function),
                Linkage::Export,
                sig,
                |kb| Ok(Some(kb.iconst(len as i64))),
            )?;
        }
        let sig = self.signature(0, Some(I32));
        self.define(
            &abi::symbol(spec.name, "input_type"),
            Linkage::Export,
            sig,
            |kb| Ok(Some(kb.iconst32(spec.input_type.code()))),
        )?;
        // A buffer of another type than float32 is converted one sample at a time into a
        // float32 sample after the scratch memory, which the steps then read as their input.
        let converted = spec.input_type != abi::InputType::F32;
        let staging = scratch_bytes.next_multiple_of(64);
        let scratch_bytes = if converted {
            staging + spec.input_len * 4
        } else {
            scratch_bytes
        };
        let in_bytes = (spec.input_len * spec.input_type.bytes()) as i64;
        let mut sig = self.signature(4, Some(I32));
        sig.params[0] = AbiParam::new(I64);
        let (in_len, out_len) = (spec.input_len as i64, spec.output_len as i64);
        self.define(&abi::symbol(spec.name, "run"), Linkage::Export, sig, |kb| {
            let (input, input_len, output, output_len) =
                (kb.param(0), kb.param(1), kb.param(2), kb.param(3));
            let done = kb.b.create_block();
            let code = kb.b.append_block_param(done, I32);
            let fail = |kb: &mut KernelBuilder, bad, c| exit_if(kb, done, bad, c);
            // input_len must be a positive multiple of the sample size.
            let zero = kb.b.ins().icmp_imm_s(IntCC::Equal, input_len, 0);
            fail(kb, zero, abi::RUN_BAD_INPUT_LEN);
            let samples = kb.b.ins().udiv_imm_s(input_len, in_len);
            let whole = kb.b.ins().imul_imm_s(samples, in_len);
            let partial = kb.b.ins().icmp(IntCC::NotEqual, whole, input_len);
            fail(kb, partial, abi::RUN_BAD_INPUT_LEN);
            // output_len must hold exactly as many samples (no overflow: samples <= input_len).
            let per_sample = kb.iconst(out_len);
            let (want, overflow) = kb.b.ins().umul_overflow(samples, per_sample);
            fail(kb, overflow, abi::RUN_BAD_OUTPUT_LEN);
            let wrong = kb.b.ins().icmp(IntCC::NotEqual, want, output_len);
            fail(kb, wrong, abi::RUN_BAD_OUTPUT_LEN);
            let (raw, scratch) = alloc_scratch(kb, done, scratch_bytes);
            // samples >= 1 here.
            kb.fold_dynamic(samples, Vec::new(), |kb, s, state| {
                let mut in_ptr = kb.addr(input, s, in_bytes, 0);
                if converted {
                    let to = kb.b.ins().iadd_imm_s(scratch, staging as i64);
                    convert_input(kb, spec.input_type, in_ptr, to, spec.input_len);
                    in_ptr = to;
                }
                let out_ptr = kb.addr(output, s, out_len * 4, 0);
                kb.call_local(sample, &[in_ptr, out_ptr, scratch]);
                state
            });
            kb.call_c_void("free", &[I64], &[raw]);
            let ok = kb.iconst32(abi::RUN_OK);
            kb.b.ins().jump(done, &[BlockArg::Value(ok)]);
            kb.b.switch_to_block(done);
            kb.b.seal_block(done);
            Ok(Some(code))
        })?;
        Ok(())
    }
}

/// Node `n` of an elementwise chain as a [`elementwise::Link`]: where its operands computed at
/// run time come from (the step's `reads`, whose parameters are `operands`, or earlier nodes
/// of the chain), and its op on them.
fn chain_link(
    kb: &mut KernelBuilder,
    graph: &bnnc_ir::Graph,
    nodes: &[bnnc_ir::NodeId],
    reads: &[bnnc_ir::ValueId],
    operands: &[Operand],
    n: bnnc_ir::NodeId,
) -> Result<elementwise::Link, BackendError> {
    use elementwise::Source;
    let node = graph.node(n);
    let read = |v: bnnc_ir::ValueId| reads.iter().position(|&r| r == v);
    let source =
        |v: bnnc_ir::ValueId| match nodes.iter().position(|&m| graph.node(m).outputs[0] == v) {
            Some(i) => Source::Node(i),
            None => Source::Read(read(v).expect("a chain reads what it does not compute")),
        };
    // A read's pointer is its parameter; the others' (constants, embedded, and results
    // within the chain, never loaded) do not matter.
    let node_operands: Vec<Operand> = node
        .inputs
        .iter()
        .map(|&v| {
            let (storage, ptr) = match read(v) {
                Some(i) => (operands[i].storage, operands[i].ptr),
                None => (crate::schedule::Storage::F32, operands[0].ptr),
            };
            Operand::new(graph, v, storage, ptr)
        })
        .collect();
    let x = match graph.const_data(node.inputs[0]) {
        Some(_) => Source::Const(elementwise::Input::of(kb, &node_operands[0])),
        None => source(node.inputs[0]),
    };
    let y = match node.op {
        Op::Binary(_) | Op::Compare(_) => node
            .inputs
            .get(1)
            .filter(|&&v| graph.const_data(v).is_none())
            .map(|&v| source(v)),
        _ => None,
    };
    Ok(elementwise::Link {
        op: elementwise::pointwise(kb, node, &node_operands)?,
        x,
        y,
    })
}

/// Converts `len` elements of type `ty` at `from` to float32 at `to`, rounding to nearest as
/// ONNX's Cast to float (and numpy's `astype`) does; a bool is 1 when its byte is not 0.
fn convert_input(kb: &mut KernelBuilder, ty: abi::InputType, from: Value, to: Value, len: usize) {
    use abi::InputType as T;
    use cranelift_codegen::ir::types::F32;
    let bytes = ty.bytes() as i64;
    kb.for_range(len, |kb, i| {
        let at = kb.addr(from, i, bytes, 0);
        let flags = builder::mem_load();
        // The element as an integer: 8 and 16 bit ones extended to i32 (then exact as
        // signed), uint32 zero-extended to i64.
        let int = match ty {
            T::F32 => kb.load(F32, at, 0),
            T::U8 | T::Bool => kb.b.ins().uload8(I32, flags, at, 0),
            T::I8 => kb.b.ins().sload8(I32, flags, at, 0),
            T::U16 => kb.b.ins().uload16(I32, flags, at, 0),
            T::I16 => kb.b.ins().sload16(I32, flags, at, 0),
            T::I32 => kb.load(I32, at, 0),
            T::U32 => kb.b.ins().uload32(flags, at, 0),
            T::I64 | T::U64 => kb.load(I64, at, 0),
        };
        let v = match ty {
            T::F32 => int,
            T::Bool => {
                let set = kb.b.ins().icmp_imm_s(IntCC::NotEqual, int, 0);
                let set = kb.b.ins().uextend(I32, set);
                kb.b.ins().fcvt_from_sint(F32, set)
            }
            T::U64 => kb.b.ins().fcvt_from_uint(F32, int),
            _ => kb.b.ins().fcvt_from_sint(F32, int),
        };
        kb.store_at(v, to, i);
    });
}

/// Jumps to `done` with `code` when `cond` holds; continues in a new block otherwise.
fn exit_if(kb: &mut KernelBuilder, done: Block, cond: Value, code: i32) {
    let ok = kb.b.create_block();
    let code = kb.iconst32(code);
    kb.b.ins()
        .brif(cond, done, &[BlockArg::Value(code)], ok, &[]);
    kb.b.seal_block(ok);
    kb.b.switch_to_block(ok);
}

/// Mallocs the scratch buffer (exiting to `done` with [`abi::RUN_OUT_OF_MEMORY`] on
/// failure): its address to free, and the address aligned to 64 bytes for the buffers'
/// offsets.
fn alloc_scratch(kb: &mut KernelBuilder, done: Block, scratch_bytes: usize) -> (Value, Value) {
    let size = kb.iconst(scratch_bytes.max(64) as i64 + SCRATCH_SLACK);
    let raw = kb.call_c("malloc", &[I64], I64, &[size]);
    let null = kb.b.ins().icmp_imm_s(IntCC::Equal, raw, 0);
    exit_if(kb, done, null, abi::RUN_OUT_OF_MEMORY);
    let bumped = kb.b.ins().iadd_imm_s(raw, 63);
    (raw, kb.b.ins().band_imm_s(bumped, -64))
}
