//! How far each fuzz target takes a model, and what it may answer.
//!
//! An untrusted model may be refused at any stage, with an error that says why; it may never
//! panic, abort or allocate without bound. A model the interpreter runs both as imported and
//! after the passes must give the same answers both ways (integers exactly, floats within
//! rounding), and native code must give the optimized interpreter's bits: a disagreement is a
//! miscompilation and panics like a crash, so libFuzzer keeps the input.

use bnnc::Tuning;
use bnnc_ir::{ElemType, Graph, Tensor};
use bnnc_passes::FirstLastPolicy;

/// The last stage a target runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Decode, import and verify.
    Import,
    /// Also the pass pipeline, and the interpreter before and after it.
    Optimize,
    /// Also native code generation with Cranelift (an object, not linked) and the FPGA
    /// dataflow plan.
    Compile,
    /// Also a native library (Cranelift, and LLVM when built with it) linked, loaded and run,
    /// whose outputs must be the optimized interpreter's bits. Slower: each run links.
    Native,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 4] = [
        Stage::Import,
        Stage::Optimize,
        Stage::Compile,
        Stage::Native,
    ];

    /// The stage's fuzz target (and corpus folder) name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Import => "import",
            Stage::Optimize => "optimize",
            Stage::Compile => "compile",
            Stage::Native => "native",
        }
    }
}

/// What a model came to.
#[derive(Debug)]
pub enum Outcome {
    /// It went through every step of the stage.
    Accepted,
    /// A step refused it; the error as bnnc prints it.
    Refused(String),
}

/// Inputs up to this many elements are interpreted; larger ones would make each execution too
/// slow to fuzz (the interpreter's own limits are tested in `frontend-onnx/tests/untrusted.rs`).
const MAX_INTERPRETED_INPUT: usize = 1 << 16;

/// Runs `bytes` through `stage`. Panics on a finding: an error without a message, or the passes
/// changing a network's answers.
pub fn run(stage: Stage, bytes: &[u8]) -> Outcome {
    match run_steps(stage, bytes) {
        Ok(()) => Outcome::Accepted,
        Err(e) => {
            let message = format!("{e:#}");
            assert!(!message.trim().is_empty(), "an error without a message");
            Outcome::Refused(message)
        }
    }
}

fn run_steps(stage: Stage, bytes: &[u8]) -> anyhow::Result<()> {
    const LABEL: &str = "the fuzzed model";
    let imported = bnnc::stages::import_bytes(bytes, LABEL)?;
    if stage == Stage::Import {
        return Ok(());
    }
    let optimized = bnnc::stages::optimize(
        LABEL,
        imported.clone(),
        FirstLastPolicy::default(),
        &Tuning::default(),
        &mut |_| {},
    )?;
    check_answers(&imported, &optimized);
    if stage == Stage::Optimize {
        return Ok(());
    }
    if stage == Stage::Native {
        return check_native(&optimized);
    }
    let options = bnnc::native::options(
        std::env::consts::ARCH,
        None,
        "fuzz".into(),
        &Tuning::default(),
    )?;
    bnnc::native::compile(&optimized, &options, bnnc::native::Codegen::Cranelift)?;
    let fpga = bnnc::fpga::FpgaArgs {
        part: bnnc_dataflow::DEFAULT_PART.into(),
        clock_ns: 10.0,
        fps: None,
        folding: None,
    };
    bnnc::fpga::plan(&optimized, "fuzz", &fpga)?;
    Ok(())
}

/// The code generators native code is checked with.
const CODEGENS: &[bnnc::native::Codegen] = if cfg!(feature = "llvm") {
    &[
        bnnc::native::Codegen::Cranelift,
        bnnc::native::Codegen::Llvm,
    ]
} else {
    &[bnnc::native::Codegen::Cranelift]
};

/// Builds, loads and runs `optimized` natively; where the interpreter runs it, native code
/// must give its bits.
fn check_native(optimized: &Graph) -> anyhow::Result<()> {
    let inputs = inputs_of(optimized);
    let want = inputs
        .as_ref()
        .and_then(|x| bnnc_ir::interp::run(optimized, x).ok());
    for &codegen in CODEGENS {
        let loaded = bnnc::native::load(
            optimized,
            &Tuning::default(),
            bnnc::native::LoadOptions {
                name: "fuzz".into(),
                codegen,
                profile: false,
                dir: None,
            },
        )?;
        let (Some(inputs), Some(want)) = (&inputs, &want) else {
            continue;
        };
        // The native ABI's one input (load refuses graphs without it).
        let got = loaded.model.run_batch(&inputs[0].to_f32_vec())?;
        let want = want[0].to_f32_vec();
        // Bit for bit, but NaN is NaN: its sign and payload are the instruction's, not the
        // semantics'.
        let bits = |v: &[f32]| {
            v.iter()
                .map(|x| {
                    if x.is_nan() {
                        f32::NAN.to_bits()
                    } else {
                        x.to_bits()
                    }
                })
                .collect::<Vec<_>>()
        };
        assert!(
            bits(&got) == bits(&want),
            "native code ({codegen:?}) computes {got:?}, the interpreter {want:?}"
        );
    }
    Ok(())
}

/// Interprets both graphs on the same inputs; where both run, their outputs must agree.
fn check_answers(imported: &Graph, optimized: &Graph) {
    let Some(inputs) = inputs_of(imported) else {
        return;
    };
    let (Ok(before), Ok(after)) = (
        bnnc_ir::interp::run(imported, &inputs),
        bnnc_ir::interp::run(optimized, &inputs),
    ) else {
        return;
    };
    assert_eq!(
        before.len(),
        after.len(),
        "the passes changed the outputs' count"
    );
    for (k, (a, b)) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            a.shape(),
            b.shape(),
            "the passes changed output {k}'s shape"
        );
        let integer = imported.value(imported.outputs()[k]).ty.elem != ElemType::F32;
        let (a, b) = (a.to_f32_vec(), b.to_f32_vec());
        let scale = a
            .iter()
            .filter(|v| v.is_finite())
            .fold(1e-6f32, |m, v| m.max(v.abs()));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            let same = p.to_bits() == q.to_bits()
                || p == q
                || (p.is_nan() && q.is_nan())
                || (!integer && (p - q).abs() <= 1e-5 * scale);
            assert!(
                same,
                "the passes changed output {k} at {i}: {p} before, {q} after"
            );
        }
    }
}

/// Deterministic inputs for every graph input: a grid of 1/16 in [-2, 2) for floats, values in
/// range for integer types; `None` if they would be too large to fuzz quickly.
fn inputs_of(graph: &Graph) -> Option<Vec<Tensor>> {
    let mut total = 0usize;
    graph
        .inputs()
        .iter()
        .map(|&v| {
            let ty = &graph.value(v).ty;
            let n = ty.numel();
            total = total.checked_add(n)?;
            if total > MAX_INTERPRETED_INPUT {
                return None;
            }
            let data = (0..n)
                .map(|i| match ty.elem.int_type() {
                    Some(bnnc_ir::IntType::Bipolar) => [1.0, -1.0][i % 2],
                    Some(t) => {
                        let (lo, hi) = (t.min().max(-8), t.max().min(8));
                        (lo + (i as i64 * 7919) % (hi - lo + 1)) as f32
                    }
                    None => ((i * 37) % 64) as f32 / 16.0 - 2.0,
                })
                .collect();
            Some(Tensor::f32(ty.shape.clone(), data))
        })
        .collect()
}
