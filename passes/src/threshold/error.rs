//! Why a chain does not fold.

/// Why [`fold_chain`](super::fold_chain) could not turn a chain into integer thresholds. Every
/// variant that concerns one channel names it; `what` names the step and the parameter.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FoldError {
    /// A per-channel vector whose length is neither 1 nor the number of channels.
    #[error("{what} has {len} values for {channels} channels (expected 1 or {channels})")]
    ChannelCount {
        what: String,
        len: usize,
        channels: usize,
    },
    /// A channel index beyond the number of channels.
    #[error("channel {channel} of {channels}")]
    NoSuchChannel { channel: usize, channels: usize },
    /// A constant, given or derived in f32 as the interpreter derives it (BatchNorm's
    /// `1 / sqrt(var + eps) * gamma`), is NaN or infinite.
    #[error("channel {channel}: {what} is {value}, not a finite number")]
    NonFinite {
        channel: usize,
        what: String,
        value: f32,
    },
    /// A divisor (a Div step, a Quant scale) is zero: `x / 0` is NaN at `x = 0`.
    #[error("channel {channel}: {what} is zero")]
    ZeroDivisor { channel: usize, what: String },
    /// The chain is not a monotone function of the accumulator over the range (it computes
    /// NaN somewhere, or the values contradict the signs of the steps).
    #[error("channel {channel}: the chain is not monotone over the accumulator range: {reason}")]
    NotMonotone { channel: usize, reason: String },
    /// The accumulator range is empty or too wide.
    #[error("accumulator range [{acc_min}, {acc_max}]: {reason}")]
    Range {
        acc_min: i64,
        acc_max: i64,
        reason: String,
    },
    /// The quantizer's parameters make no table (a bit width of 0, too many levels, threshold
    /// rows of different lengths).
    #[error("quantizer: {reason}")]
    Quantizer { reason: String },
}
