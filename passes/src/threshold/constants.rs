//! The constants of a chain and its quantizer, per channel and checked (finite, nonzero
//! divisors), and the direction a map of them moves in: what the chain and the quantizer
//! both reason with.

use super::FoldError;

/// A per-channel vector of constants: one value for every channel, or one for all (length 1).
#[derive(Clone, Debug, PartialEq)]
pub struct PerChannel(pub Vec<f32>);

impl PerChannel {
    /// One value for every channel.
    pub fn scalar(value: f32) -> Self {
        PerChannel(vec![value])
    }

    /// The number of values: 1, or the number of channels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the vector is empty (which no chain accepts).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `channel`, which must be finite. `what` names the parameter for errors.
    pub(super) fn get(
        &self,
        what: &dyn Fn() -> String,
        channel: usize,
        channels: usize,
    ) -> Result<f32, FoldError> {
        let value = match self.0[..] {
            [v] => Some(v),
            ref all if all.len() == channels => all.get(channel).copied(),
            _ => None,
        };
        let value = value.ok_or_else(|| FoldError::ChannelCount {
            what: what(),
            len: self.0.len(),
            channels,
        })?;
        finite(value, channel, what)
    }
}

/// `value` if it is finite, else the error naming it.
pub(super) fn finite(
    value: f32,
    channel: usize,
    what: &dyn Fn() -> String,
) -> Result<f32, FoldError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(FoldError::NonFinite {
            channel,
            what: what(),
            value,
        })
    }
}

/// `value` if it is a finite nonzero divisor.
pub(super) fn divisor(
    value: f32,
    channel: usize,
    what: &dyn Fn() -> String,
) -> Result<f32, FoldError> {
    if value == 0.0 {
        Err(FoldError::ZeroDivisor {
            channel,
            what: what(),
        })
    } else {
        Ok(value)
    }
}

/// How a function of the accumulator moves as the accumulator grows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monotonicity {
    NonDecreasing,
    NonIncreasing,
    Constant,
}

impl Monotonicity {
    /// The monotonicity of a map whose sign of slope is that of `factor`.
    pub(super) fn of_sign(factor: f32) -> Self {
        if factor > 0.0 {
            Monotonicity::NonDecreasing
        } else if factor < 0.0 {
            Monotonicity::NonIncreasing
        } else {
            Monotonicity::Constant
        }
    }

    /// The monotonicity of `g(f(x))` for `f` of `self` and `g` of `then`.
    pub(super) fn then(self, then: Monotonicity) -> Self {
        use Monotonicity::*;
        match (self, then) {
            (Constant, _) | (_, Constant) => Constant,
            (a, b) if a == b => NonDecreasing,
            _ => NonIncreasing,
        }
    }
}
