//! Exact integer thresholds for a monotone float chain.
//!
//! Between two quantizers, a binary or low-bit layer computes an integer accumulator `acc` in
//! a known range, then a chain of per-channel float ops ([`ChainStep`]: Mul, Div, Add, Sub by
//! constants, BatchNormalization, Relu) and a quantizer ([`ChainQuantizer`]). Per channel, the map
//! from `acc` to the quantizer's level is monotone, so it equals a row of integer thresholds
//! (the project's semantics notes, "Folding BatchNorm (and everything monotone) into
//! thresholds"). [`fold_chain`] computes them; this module is the math only, the passes that
//! rewrite graphs call it.
//!
//! # Exactness
//! The interpreter is the semantics, so no closed form is trusted (`T = ceil(-t / s)` is right
//! only up to float rounding). [`ChannelChain`] evaluates a channel's chain in f32 exactly as
//! `bnnc_ir::interp` evaluates the ops (BatchNorm as `x * s + t` with onnxruntime's
//! `s = 1 / sqrt(var + eps) * gamma`, `t = beta - mean * s`; Quant's clamp-then-round with
//! qonnx's rounding modes), and each threshold is found by binary search on that evaluation:
//! the smallest accumulator of the range reaching the level (ascending), or the largest
//! (descending). `O(channels * levels * log(range))` evaluations, fewer where levels lie
//! outside the range.
//!
//! # Direction
//! With finite constants and nonzero divisors (checked up front: NaN or infinite constants,
//! given or derived, and zero divisors are errors), every step is an IEEE operation whose
//! correct rounding keeps the order, so it is monotone wherever it is not NaN, in the
//! direction of the sign of its factor. The only way to NaN is an intermediate infinity
//! meeting a zero multiplier, and a monotone step's values over the range lie between its
//! values at the ends, so checking both ends of the range for NaN proves the whole range
//! monotone. The direction itself is read from the values, the levels at the two ends
//! (rising: ascending; falling: descending; equal: constant), and cross-checked with the
//! signs of the factors: a disagreement, or NaN at an end, is [`FoldError::NotMonotone`].
//!
//! # Sentinels
//! A level reached by every accumulator of `[acc_min, acc_max]` gets the threshold `acc_min`
//! (ascending) or `acc_max` (descending), "always"; one reached by none gets `acc_max + 1` or
//! `acc_min - 1`, "never". The range must lie within `[-ACC_LIMIT, ACC_LIMIT]` (2^62), so the
//! sentinels and the search's midpoints never overflow. Constant channels (a zero multiplier,
//! gamma = 0) are written ascending, each threshold "always" or "never".
//!
//! # Outputs
//! [`ThresholdTable::output`] gives each level's float output. It is
//! [`LevelOutput::Affine`] (`out_scale[c] * k + out_bias[c]`, vectors of length 1 or C)
//! whenever an affine map reproduces the quantizer's output of every level exactly in f32,
//! checked level by level rather than assumed: always for Bipolar (`2s * k - s`), Sign and
//! MultiThreshold, and for Quant with a power-of-two scale. For a Quant whose scale is not a
//! power of two, `scale * k + bias` and the interpreter's `(q - zero_point) * scale` may round
//! apart; then [`LevelOutput::Values`] lists every level's output instead of failing, and the
//! caller chooses the lowering (a lookup, or the integer level times the scale as a `Scaled`
//! element type).
//!
//! The sign of zero is the one thing a level cannot carry: the interpreter's Quant gives -0
//! or +0 for the integer 0 depending on the sign of the value it rounded (`round(-0.3) = -0`),
//! so within one level both occur. Outputs here give that level +0 and are compared with `==`.
//! Every other output agrees bit for bit.
//!
//! # Accumulators beyond 2^24
//! The chain receives `acc as f32`, as the interpreter holds accumulators; beyond 2^24 that
//! rounds, monotonically, so the table is still exact for the integer `acc`, but an
//! interpreter whose own accumulator already rounded may differ from the integer one.

mod chain;
mod constants;
mod error;
mod output;
mod per_channel;
mod quantizer;
mod search;
mod table;

#[cfg(test)]
mod tests;

pub use chain::{ChainStep, ChannelChain};
pub use constants::{Monotonicity, PerChannel};
pub use error::FoldError;
pub use output::LevelOutput;
pub use per_channel::{channel_shape, per_channel};
pub use quantizer::{ChainQuantizer, MAX_LEVELS};
pub use search::ACC_LIMIT;
pub use table::ThresholdTable;

/// Folds `steps` and `quantizer`, applied to an integer accumulator in `[acc_min, acc_max]`
/// on each of `channels` channels, into integer thresholds that give the same level, and the
/// same output, as the interpreter for every accumulator of the range.
///
/// Errors: per-channel vectors of a length other than 1 or `channels`, NaN or infinite
/// constants (given or derived), zero divisors, a chain that computes NaN over the range, an
/// empty range or one beyond `ACC_LIMIT`, a quantizer of more than [`MAX_LEVELS`] levels.
pub fn fold_chain(
    steps: &[ChainStep],
    quantizer: &ChainQuantizer,
    acc_min: i64,
    acc_max: i64,
    channels: usize,
) -> Result<ThresholdTable, FoldError> {
    let range = search::AccRange::new(acc_min, acc_max)?;
    let levels = quantizer.levels(channels)?;
    let mut chains = Vec::new();
    let mut thresholds = Vec::new();
    let mut descending = Vec::new();
    for channel in 0..channels {
        let chain = ChannelChain::with_levels(steps, quantizer, channel, channels, levels)?;
        let row = search::channel_row(&chain, range)?;
        thresholds.extend(row.thresholds);
        descending.push(row.descending);
        chains.push(chain);
    }
    Ok(ThresholdTable {
        channels,
        levels,
        thresholds,
        descending,
        output: output::level_output(&chains, levels),
    })
}
