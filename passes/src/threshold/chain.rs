//! The float chain between an integer accumulator and a quantizer, and its evaluation for one
//! channel in f32 exactly as `bnnc_ir::interp` evaluates the ops it came from.
//!
//! The interpreter's kernels are private to `bnnc-ir`, so their arithmetic is restated here
//! operation for operation (same operands, same order, every step rounded to f32, no fused
//! multiply-add); the tests compare it with `bnnc_ir::interp::eval` bit for bit.

use super::constants::{divisor, finite, Monotonicity, PerChannel};
use super::quantizer::{ChainQuantizer, Quantizer};
use super::FoldError;

/// One step of the float chain, evaluated in f32 exactly as `bnnc_ir::interp` evaluates the op
/// it came from.
#[derive(Clone, Debug, PartialEq)]
pub enum ChainStep {
    /// `x * m[c]` (`Op::Binary(Mul)` with the value first).
    Mul(PerChannel),
    /// `x / d[c]` (`Op::Binary(Div)` with the value first); a zero divisor does not fold.
    Div(PerChannel),
    /// `x + a[c]` (`Op::Binary(Add)` with the value first).
    Add(PerChannel),
    /// `x - s[c]` (`Op::Binary(Sub)` with the value first).
    Sub(PerChannel),
    /// `s[c] - x` (`Op::Binary(Sub)` with the constant first): reverses the direction.
    SubFrom(PerChannel),
    /// `Op::BatchNorm` in inference, as the interpreter (and onnxruntime) computes it:
    /// `inv = 1 / sqrt(var + eps)`, `s = inv * gamma`, `t = beta - mean * s`, `y = x * s + t`,
    /// each step rounded to f32.
    BatchNorm {
        gamma: PerChannel,
        beta: PerChannel,
        mean: PerChannel,
        var: PerChannel,
        epsilon: f32,
    },
    /// `Op::Relu` as the interpreter computes it: `x > 0 ? x : +0` (so -0 and NaN give +0).
    /// Non-decreasing; it may make a channel constant, which the search sees in the values.
    Relu,
}

impl ChainStep {
    /// The step's name in errors.
    fn name(&self) -> &'static str {
        match self {
            ChainStep::Mul(_) => "mul",
            ChainStep::Div(_) => "div",
            ChainStep::Add(_) => "add",
            ChainStep::Sub(_) => "sub",
            ChainStep::SubFrom(_) => "sub from",
            ChainStep::BatchNorm { .. } => "batchnorm",
            ChainStep::Relu => "relu",
        }
    }

    /// The step with its constants for one channel (derived in f32 as the interpreter derives
    /// them), or the error naming step `index`.
    fn resolve(&self, index: usize, channel: usize, channels: usize) -> Result<Step, FoldError> {
        let name = self.name();
        let param = |p: &'static str| move || format!("step {index} ({name}) {p}");
        let get = |v: &PerChannel, p: &'static str| v.get(&param(p), channel, channels);
        Ok(match self {
            ChainStep::Mul(m) => Step::Mul(get(m, "multiplier")?),
            ChainStep::Div(d) => {
                Step::Div(divisor(get(d, "divisor")?, channel, &param("divisor"))?)
            }
            ChainStep::Add(a) => Step::Add(get(a, "addend")?),
            ChainStep::Sub(s) => Step::Sub(get(s, "subtrahend")?),
            ChainStep::SubFrom(s) => Step::SubFrom(get(s, "minuend")?),
            ChainStep::BatchNorm {
                gamma,
                beta,
                mean,
                var,
                epsilon,
            } => {
                let (gamma, beta) = (get(gamma, "gamma")?, get(beta, "beta")?);
                let (mean, var) = (get(mean, "mean")?, get(var, "variance")?);
                let epsilon = finite(*epsilon, channel, &param("epsilon"))?;
                // Exactly the interpreter's arithmetic (onnxruntime's order).
                let (s, t) =
                    bnnc_ir::interp::batchnorm_scale_shift(gamma, beta, mean, var, epsilon);
                // A negative var + eps, or var + eps = 0, shows up here as NaN or infinity.
                let s = finite(s, channel, &param("scale 1/sqrt(var + eps) * gamma"))?;
                let t = finite(t, channel, &param("shift beta - mean * scale"))?;
                Step::ScaleShift { s, t }
            }
            ChainStep::Relu => Step::Relu,
        })
    }
}

/// A step with its constants resolved for one channel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Mul(f32),
    Div(f32),
    Add(f32),
    Sub(f32),
    SubFrom(f32),
    /// BatchNorm folded as the interpreter folds it: `x * s + t`.
    ScaleShift {
        s: f32,
        t: f32,
    },
    Relu,
}

impl Step {
    /// The step in f32, with the operands in the interpreter's order.
    fn apply(self, x: f32) -> f32 {
        match self {
            Step::Mul(m) => x * m,
            Step::Div(d) => x / d,
            Step::Add(a) => x + a,
            Step::Sub(s) => x - s,
            Step::SubFrom(s) => s - x,
            Step::ScaleShift { s, t } => x * s + t,
            // The interpreter's relu, comparison and all: NaN and -0 become +0.
            Step::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
        }
    }

    /// Every step is an IEEE operation with finite constants, and correct rounding is
    /// monotone, so each step is monotone in x on the extended reals wherever it is not NaN;
    /// the sign of its slope is the sign of its factor. Relu (`max(x, 0)`) is non-decreasing.
    fn monotonicity(self) -> Monotonicity {
        match self {
            Step::Mul(f) | Step::Div(f) | Step::ScaleShift { s: f, .. } => Monotonicity::of_sign(f),
            Step::Add(_) | Step::Sub(_) | Step::Relu => Monotonicity::NonDecreasing,
            Step::SubFrom(_) => Monotonicity::NonIncreasing,
        }
    }
}

/// The whole map from accumulator to level for one channel: the steps and the quantizer with
/// their constants resolved and checked (finite, nonzero divisors).
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelChain {
    channel: usize,
    steps: Vec<Step>,
    quantizer: Quantizer,
    levels: usize,
}

impl ChannelChain {
    /// The chain of `channel` (of `channels`).
    pub fn new(
        steps: &[ChainStep],
        quantizer: &ChainQuantizer,
        channel: usize,
        channels: usize,
    ) -> Result<Self, FoldError> {
        let levels = quantizer.levels(channels)?;
        Self::with_levels(steps, quantizer, channel, channels, levels)
    }

    /// [`ChannelChain::new`] for a quantizer whose `levels` for `channels` were computed
    /// already (they check every row of a MultiThreshold: once per table, not per channel).
    pub(super) fn with_levels(
        steps: &[ChainStep],
        quantizer: &ChainQuantizer,
        channel: usize,
        channels: usize,
        levels: usize,
    ) -> Result<Self, FoldError> {
        if channel >= channels {
            return Err(FoldError::NoSuchChannel { channel, channels });
        }
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, s)| s.resolve(i, channel, channels))
            .collect::<Result<_, _>>()?;
        let quantizer = Quantizer::resolve(quantizer, channel, channels)?;
        Ok(ChannelChain {
            channel,
            steps,
            quantizer,
            levels,
        })
    }

    /// The channel this chain computes.
    pub fn channel(&self) -> usize {
        self.channel
    }

    /// The number of levels of the quantizer.
    pub fn levels(&self) -> usize {
        self.levels
    }

    /// The chain's f32 result for `acc`, which enters as the interpreter holds it: an f32
    /// (exact up to 2^24; beyond, rounded to nearest, which keeps the order).
    pub fn value(&self, acc: i64) -> f32 {
        self.steps.iter().fold(acc as f32, |x, s| s.apply(x))
    }

    /// The level the quantizer gives the chain's result for `acc`, or `None` where the chain
    /// computes NaN, at the end or at any step on the way: a Relu turns NaN into +0, which
    /// would hide an infinity meeting a zero multiplier, and the search's proof that NaN-free
    /// ends make a NaN-free range holds step by step.
    pub fn level(&self, acc: i64) -> Option<usize> {
        let mut x = acc as f32;
        for step in &self.steps {
            x = step.apply(x);
            if x.is_nan() {
                return None;
            }
        }
        self.quantizer.level(x)
    }

    /// The level the quantizer gives a chain result `x` (`None` for NaN).
    pub fn level_of_value(&self, x: f32) -> Option<usize> {
        self.quantizer.level(x)
    }

    /// The quantizer's float output for `level`, as the interpreter computes it, with a zero
    /// output as +0.
    pub fn output(&self, level: usize) -> f32 {
        self.quantizer.output(level)
    }

    /// The quantizer's natural distance between consecutive outputs (`scale` for Quant,
    /// `2 * scale` for bipolar outputs, `out_scale` for MultiThreshold, 1 for Sign).
    pub fn output_step(&self) -> f32 {
        self.quantizer.output_step()
    }

    /// The direction the signs of the steps predict for the level as `acc` grows: the product
    /// of the signs of every multiplier, divisor, BatchNorm scale and Quant scale, with a flip
    /// for `SubFrom`. Wherever the chain is not NaN, every step is monotone (IEEE operations
    /// round correctly, and rounding keeps the order), so the level is monotone in this
    /// direction.
    pub fn monotonicity(&self) -> Monotonicity {
        self.steps
            .iter()
            .map(|s| s.monotonicity())
            .chain([self.quantizer.monotonicity()])
            .fold(Monotonicity::NonDecreasing, Monotonicity::then)
    }
}
