//! bnnc's LLVM backend: the XNOR-popcount, bit-serial and first-layer convolutions, compiled
//! by LLVM (through inkwell) for vectors wider than Cranelift's 128 bits: eight filters per
//! 512-bit `vpopcntq` under AVX-512 VPOPCNTDQ, NEON's `cnt` on aarch64, 32 filters per `i16`
//! vector. The Cranelift backend offers these kernels ([`bnnc_cranelift::KernelProvider`]),
//! calls them from its own code, and the two objects are linked into one library.
//!
//! One module per kernel (`xnor`, `planes`, `amx`, `int16`, `vnni`), over what they share:
//! `emitter` (the module being built: loops, tables, vector loads, splats, popcounts),
//! `window` (the index of an output pixel and of a window's taps) and `levels` (the output
//! stage storing levels as bit planes).
//!
//! Needs LLVM 16 (Debian: `llvm-16-dev`; `LLVM_SYS_160_PREFIX=/usr/lib/llvm-16`).

mod amx;
mod emitter;
mod first_layer;
mod int16;
mod levels;
mod planes;
mod vnni;
mod window;
mod xnor;

use bnnc_cranelift::{Int16ConvKernel, KernelProvider, PlaneConvKernel, XnorConvKernel};
use inkwell::context::Context;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple,
};
use inkwell::OptimizationLevel;

use amx::TileLayer;
use emitter::KernelEmitter;
use int16::MAX_STACK_IMAGE;

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

    /// Whether the features known of the target include every one of `wanted`: this
    /// machine's for `--cpu native`, none for a named CPU (whose kernels then take the
    /// paths every CPU of its level has).
    fn has_features(&self, wanted: &[&str]) -> bool {
        let features: Vec<&str> = self.features.split(',').collect();
        wanted.iter().all(|f| features.contains(f))
    }

    /// Whether no kernel was taken (then there is no object to link).
    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty() && self.plane_kernels.is_empty() && self.int16_kernels.is_empty()
    }

    /// The object file defining every kernel taken.
    pub fn finish(self) -> Result<KernelObject, String> {
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
            vnni: self.has_features(&["+avx512f", "+avx512bw", "+avx512vnni"]),
        };
        let amx = self.has_features(&["+amx-tile", "+amx-int8"]);
        let mut on_tiles = 0;
        let tiled = |layer| if amx { with_plan(layer) } else { None };
        for kernel in &self.kernels {
            match tiled(TileLayer::of_xnor(kernel)) {
                Some((layer, plan)) => {
                    on_tiles += 1;
                    emitter.amx_conv(&layer, &plan, |symbol| {
                        emitter.xnor_conv(&XnorConvKernel {
                            symbol,
                            ..kernel.clone()
                        })
                    })
                }
                None => emitter.xnor_conv(kernel),
            }
            .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        for kernel in &self.plane_kernels {
            match tiled(TileLayer::of_planes(kernel)) {
                Some((layer, plan)) => {
                    on_tiles += 1;
                    emitter.amx_conv(&layer, &plan, |symbol| {
                        emitter.plane_conv(&PlaneConvKernel {
                            symbol,
                            ..kernel.clone()
                        })
                    })
                }
                None => emitter.plane_conv(kernel),
            }
            .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        for kernel in &self.int16_kernels {
            if emitter.vnni && vnni::vnni_applies(kernel) {
                emitter.vnni_conv(kernel)
            } else {
                emitter.int16_conv(kernel)
            }
            .map_err(|e| format!("{}: {e}", kernel.symbol))?;
        }
        module.verify().map_err(|e| e.to_string())?;
        module
            .run_passes("default<O3>", &machine, PassBuilderOptions::create())
            .map_err(|e| e.to_string())?;
        let buffer = machine
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| e.to_string())?;
        Ok(KernelObject {
            bytes: buffer.as_slice().to_vec(),
            on_tiles,
        })
    }
}

/// `layer` and the plan of its computation on tiles, where it has one.
fn with_plan(layer: Option<TileLayer<'_>>) -> Option<(TileLayer<'_>, amx::AmxPlan)> {
    let layer = layer?;
    amx::amx_plan(&layer).map(|plan| (layer, plan))
}

/// The kernels' object file, and how they run.
pub struct KernelObject {
    pub bytes: Vec<u8>,
    /// How many XNOR and bit-serial kernels run on AMX tiles (`amx.rs`), the machine
    /// permitting.
    pub on_tiles: usize,
}

impl KernelProvider for LlvmKernels {
    fn xnor_conv(&mut self, kernel: &XnorConvKernel) -> bool {
        self.kernels.push(kernel.clone());
        true
    }

    fn plane_conv(&mut self, kernel: &PlaneConvKernel) -> bool {
        // The bipolar weights' activation total runs over every channel: grouped layers
        // are offered with integer weights (see `PlaneConvKernel`), never so.
        if kernel.groups > 1 && kernel.bipolar_weights {
            return false;
        }
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
