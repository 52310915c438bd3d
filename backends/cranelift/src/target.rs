//! Targets and CPU feature levels: which machine code may assume which instructions.
//! Ahead-of-time builds detect nothing: the features come from `--cpu`.

use std::str::FromStr;

use cranelift_codegen::isa::{self, OwnedTargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use target_lexicon::{Architecture, Triple};

use crate::BackendError;

/// The instruction set level code may assume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpu {
    /// The CPU bnnc runs on (host target only).
    Native,
    /// The architecture's baseline (x86-64 v1: SSE2; aarch64: Armv8-A).
    Generic,
    /// x86-64-v2: SSE4.2, POPCNT.
    X86_64V2,
    /// x86-64-v3: AVX2, FMA, BMI.
    X86_64V3,
    /// x86-64-v4: AVX-512 (F, VL, DQ, BW).
    X86_64V4,
}

impl FromStr for Cpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Cpu, String> {
        Ok(match s {
            "native" => Cpu::Native,
            "generic" | "baseline" => Cpu::Generic,
            "x86-64-v2" => Cpu::X86_64V2,
            "x86-64-v3" => Cpu::X86_64V3,
            "x86-64-v4" => Cpu::X86_64V4,
            _ => {
                return Err(format!(
                "unknown CPU '{s}' (expected native, generic, x86-64-v2, x86-64-v3 or x86-64-v4)"
            ))
            }
        })
    }
}

/// Parses `x86_64`, `aarch64` or a full target triple.
pub fn parse_target(target: &str) -> Result<Triple, BackendError> {
    let full = match target {
        "x86_64" => "x86_64-unknown-linux-gnu",
        "aarch64" => "aarch64-unknown-linux-gnu",
        other => other,
    };
    let triple = Triple::from_str(full)
        .map_err(|e| BackendError::Target(format!("'{target}' is not a target triple: {e}")))?;
    match triple.architecture {
        Architecture::X86_64 | Architecture::Aarch64(_) => Ok(triple),
        arch => Err(BackendError::Target(format!(
            "architecture {arch} is not supported (x86_64 and aarch64 are)"
        ))),
    }
}

/// Whether `triple` is the machine bnnc runs on.
pub fn is_host(triple: &Triple) -> bool {
    triple.architecture == Triple::host().architecture
}

/// Cranelift's ISA for `triple` with `cpu`'s features.
pub(crate) fn isa(triple: &Triple, cpu: Cpu) -> Result<OwnedTargetIsa, BackendError> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| {
        flags
            .set(k, v)
            .map_err(|e| BackendError::Target(format!("setting {k}: {e}")))
    };
    // The kernels are scheduled by hand: Cranelift's e-graph mid-end would compute the pure
    // parts of an unrolled popcount chain where its sum is used, after all of its loads,
    // and spill them (measured: CNV's XNOR layers 1.5x slower).
    set(&mut flags, "opt_level", "none")?;
    // A shared library's code must be position independent.
    set(&mut flags, "is_pic", "true")?;
    // Kernels keep up to a few hundred KiB on the stack (splat activations, nibble images,
    // counts): probing each page in turn makes a caller's too-small thread stack fault on
    // its guard page, never write past it into other memory.
    set(&mut flags, "enable_probestack", "true")?;
    set(&mut flags, "probestack_strategy", "inline")?;
    let flags = settings::Flags::new(flags);
    let mut builder = if cpu == Cpu::Native {
        if !is_host(triple) {
            return Err(BackendError::Target(format!(
                "--cpu native describes this machine, not {triple}; pick a CPU level"
            )));
        }
        cranelift_native::builder_with_options(true)
            .map_err(|e| BackendError::Target(e.to_string()))?
    } else {
        isa::lookup(triple.clone()).map_err(|e| BackendError::Target(e.to_string()))?
    };
    let features: Vec<&str> = match (triple.architecture, cpu) {
        (Architecture::X86_64, Cpu::X86_64V2) => V2.to_vec(),
        (Architecture::X86_64, Cpu::X86_64V3) => [V2.as_slice(), &V3].concat(),
        (Architecture::X86_64, Cpu::X86_64V4) => [V2.as_slice(), &V3, &V4].concat(),
        (_, Cpu::Native | Cpu::Generic) => Vec::new(),
        (arch, level) => {
            return Err(BackendError::Target(format!(
                "--cpu {level:?} is an x86-64 level; the target is {arch}"
            )))
        }
    };
    for f in features {
        builder
            .enable(f)
            .map_err(|e| BackendError::Target(format!("{f}: {e}")))?;
    }
    builder
        .finish(flags)
        .map_err(|e| BackendError::Target(e.to_string()))
}

const V2: [&str; 5] = [
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];
const V3: [&str; 6] = [
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];
const V4: [&str; 4] = [
    "has_avx512f",
    "has_avx512vl",
    "has_avx512dq",
    "has_avx512bw",
];

/// Whether vector popcounts (`popcnt.i8x16`) lower to a few instructions: aarch64's CNT,
/// or x86's PSHUFB lookup (SSSE3) or VPOPCNTB (AVX-512 BITALG).
pub(crate) fn simd_popcount(isa: &dyn isa::TargetIsa) -> bool {
    aarch64_or_x86_with(isa, "has_ssse3")
}

/// Whether vector fused multiply-adds are instructions (not a libcall per lane): always on
/// aarch64, with FMA on x86-64.
pub(crate) fn vector_fma(isa: &dyn isa::TargetIsa) -> bool {
    aarch64_or_x86_with(isa, "has_fma")
}

/// How the target sums four byte products into each `i32` lane of a vector, if it has an
/// instruction for it: the exact integer products of 8-bit activations take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteDot {
    /// x86's VNNI `vpdpbusd` (AVX-VNNI, or AVX512-VNNI with VL): unsigned times signed
    /// bytes, four products and the accumulator in one instruction, never saturating.
    Vnni,
    /// SSSE3's `pmaddubsw` (pairs of products into `i16`, saturating) then `pmaddwd` by
    /// ones: exact only while a pair's sum fits `i16`, so for weights within
    /// [`PMADDUBSW_WEIGHTS`].
    Pmaddubsw,
}

/// The largest weight magnitude [`ByteDot::Pmaddubsw`] takes: two products of an unsigned
/// byte and such a weight sum to at most 2 * 255 * 64 = 32,640, inside `i16`.
pub(crate) const PMADDUBSW_WEIGHTS: i32 = 64;

/// The byte dot product `isa` has, if any. (aarch64's `sdot` and `usdot` are not taken:
/// the ahead-of-time aarch64 targets assume neither, and qemu tests what they assume.)
pub(crate) fn byte_dot(isa: &dyn isa::TargetIsa) -> Option<ByteDot> {
    let has = |flag| aarch64_or_x86_with(isa, flag);
    if isa.triple().architecture != Architecture::X86_64 {
        return None;
    }
    if (has("has_avx") && has("has_avx_vnni")) || (has("has_avx512vl") && has("has_avx512vnni")) {
        Some(ByteDot::Vnni)
    } else if has("has_ssse3") {
        Some(ByteDot::Pmaddubsw)
    } else {
        None
    }
}

/// How the target looks sixteen bytes up in a sixteen-byte table with indices below 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ByteShuffle {
    /// SSSE3's `pshufb` (Cranelift's `swizzle` adds a saturating add to zero indices
    /// above 15, which these never are).
    Pshufb,
    /// aarch64's `tbl`, as `swizzle` lowers.
    Swizzle,
}

/// The byte table lookup `isa` has, if any.
pub(crate) fn byte_shuffle(isa: &dyn isa::TargetIsa) -> Option<ByteShuffle> {
    match isa.triple().architecture {
        Architecture::Aarch64(_) => Some(ByteShuffle::Swizzle),
        Architecture::X86_64 if aarch64_or_x86_with(isa, "has_ssse3") => Some(ByteShuffle::Pshufb),
        _ => None,
    }
}

/// True on aarch64 (which has every vector instruction the kernels ask about), and on x86-64
/// where Cranelift's ISA flag `flag` is set.
fn aarch64_or_x86_with(isa: &dyn isa::TargetIsa, flag: &str) -> bool {
    match isa.triple().architecture {
        Architecture::Aarch64(_) => true,
        Architecture::X86_64 => isa
            .isa_flags()
            .iter()
            .any(|f| f.name == flag && f.as_bool() == Some(true)),
        _ => false,
    }
}
