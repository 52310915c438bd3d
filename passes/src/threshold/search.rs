//! The search: for one channel, the accumulator values where the level changes.
//!
//! The level is a monotone function of the accumulator (see [`ChannelChain::monotonicity`]),
//! so the accumulators reaching level `k` form a prefix or a suffix of the range, and one
//! binary search per level boundary finds where it starts. Evaluating the chain itself, rather
//! than solving `x * s + t >= 0` in closed form, is what makes the thresholds exact: the
//! closed form is only right up to float rounding.

use super::chain::ChannelChain;
use super::constants::Monotonicity;
use super::FoldError;

/// The widest accumulator magnitude accepted: the range must lie in
/// `[-ACC_LIMIT, ACC_LIMIT]`. It leaves room for the "never" sentinels one past either end
/// and for midpoints, with a margin for callers that add small offsets to thresholds.
pub const ACC_LIMIT: i64 = 1 << 62;

/// A checked accumulator range `[min, max]` and its sentinels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AccRange {
    min: i64,
    max: i64,
}

impl AccRange {
    pub(super) fn new(min: i64, max: i64) -> Result<Self, FoldError> {
        let err = |reason: &str| FoldError::Range {
            acc_min: min,
            acc_max: max,
            reason: reason.into(),
        };
        if min > max {
            return Err(err("the range is empty"));
        }
        if min < -ACC_LIMIT || max > ACC_LIMIT {
            return Err(err("the range reaches beyond +-2^62"));
        }
        Ok(AccRange { min, max })
    }

    /// The ascending threshold no accumulator of the range reaches (`acc >= max + 1` never
    /// holds). Cannot overflow: `max <= ACC_LIMIT`.
    fn never_ascending(self) -> i64 {
        self.max + 1
    }

    /// The descending threshold no accumulator of the range reaches (`acc <= min - 1`).
    fn never_descending(self) -> i64 {
        self.min - 1
    }
}

/// One channel's row of thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ChannelRow {
    pub(super) descending: bool,
    /// `levels - 1` thresholds: entry `k - 1` is where level `k` begins, so the row is
    /// non-decreasing when ascending and non-increasing when descending.
    pub(super) thresholds: Vec<i64>,
}

/// The level of `acc`, or the error for a NaN there.
fn level_at(chain: &ChannelChain, acc: i64) -> Result<usize, FoldError> {
    chain.level(acc).ok_or_else(|| FoldError::NotMonotone {
        channel: chain.channel(),
        reason: format!("the chain computes NaN at accumulator {acc}"),
    })
}

/// `floor((a + b) / 2)` without overflow.
fn floor_midpoint(a: i64, b: i64) -> i64 {
    // The midpoint lies between a and b, so it fits in i64 again.
    ((i128::from(a) + i128::from(b)) >> 1) as i64
}

/// `ceil((a + b) / 2)` without overflow.
fn ceil_midpoint(a: i64, b: i64) -> i64 {
    ((i128::from(a) + i128::from(b) + 1) >> 1) as i64
}

/// The thresholds of `chain` over `range`.
///
/// The direction comes from the values: the levels at the two ends of the range. Where the
/// chain does not compute NaN, every step is monotone in the direction
/// [`ChannelChain::monotonicity`] predicts; and since a monotone step maps the range between
/// its ends, an infinity that could meet a zero multiplier (the only way to NaN with finite
/// constants) inside the range also shows at an end. So NaN-free ends prove the whole range
/// NaN-free and monotone, and ends that disagree with the predicted direction are reported
/// rather than trusted.
pub(super) fn channel_row(chain: &ChannelChain, range: AccRange) -> Result<ChannelRow, FoldError> {
    let levels = chain.levels();
    let at_min = level_at(chain, range.min)?;
    let at_max = level_at(chain, range.max)?;
    let predicted = chain.monotonicity();
    let contradiction = |seen: &str| FoldError::NotMonotone {
        channel: chain.channel(),
        reason: format!(
            "the level goes from {at_min} at {} to {at_max} at {} ({seen}), but the signs of \
             the steps make the chain {predicted:?}",
            range.min, range.max
        ),
    };
    let boundaries = 1..levels;
    if at_min == at_max {
        // A monotone function equal at both ends is constant: each level is reached always
        // or never. Written ascending, as Op::Threshold's default.
        let thresholds = boundaries
            .map(|k| {
                if k <= at_min {
                    range.min
                } else {
                    range.never_ascending()
                }
            })
            .collect();
        return Ok(ChannelRow {
            descending: false,
            thresholds,
        });
    }
    let descending = at_min > at_max;
    match (descending, predicted) {
        (false, Monotonicity::NonDecreasing) | (true, Monotonicity::NonIncreasing) => {}
        (false, _) => return Err(contradiction("rising")),
        (true, _) => return Err(contradiction("falling")),
    }
    let mut thresholds = Vec::with_capacity(levels - 1);
    if descending {
        // Level >= k holds on a prefix [min, T_k]. Each prefix lies within the previous one,
        // so the previous threshold bounds the search.
        let mut upper = range.max;
        for k in boundaries {
            let t = if k <= at_max {
                range.max
            } else if k > at_min {
                range.never_descending()
            } else {
                // Invariant: level(a) >= k, the answer lies in [a, b].
                let (mut a, mut b) = (range.min, upper);
                while a < b {
                    let m = ceil_midpoint(a, b);
                    if level_at(chain, m)? >= k {
                        a = m;
                    } else {
                        b = m - 1;
                    }
                }
                upper = a;
                a
            };
            thresholds.push(t);
        }
    } else {
        // Level >= k holds on a suffix [T_k, max], each within the previous one.
        let mut lower = range.min;
        for k in boundaries {
            let t = if k <= at_min {
                range.min
            } else if k > at_max {
                range.never_ascending()
            } else {
                // Invariant: level(b) >= k, the answer lies in [a, b].
                let (mut a, mut b) = (lower, range.max);
                while a < b {
                    let m = floor_midpoint(a, b);
                    if level_at(chain, m)? >= k {
                        b = m;
                    } else {
                        a = m + 1;
                    }
                }
                lower = b;
                b
            };
            thresholds.push(t);
        }
    }
    Ok(ChannelRow {
        descending,
        thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_do_not_overflow() {
        assert_eq!(floor_midpoint(-ACC_LIMIT, ACC_LIMIT), 0);
        assert_eq!(floor_midpoint(i64::MAX - 1, i64::MAX), i64::MAX - 1);
        assert_eq!(ceil_midpoint(i64::MAX - 1, i64::MAX), i64::MAX);
        assert_eq!(floor_midpoint(-3, -2), -3);
        assert_eq!(ceil_midpoint(-3, -2), -2);
    }

    #[test]
    fn ranges() {
        assert!(AccRange::new(1, 0).is_err());
        assert!(AccRange::new(-ACC_LIMIT - 1, 0).is_err());
        assert!(AccRange::new(0, i64::MAX).is_err());
        let r = AccRange::new(-ACC_LIMIT, ACC_LIMIT).unwrap();
        assert_eq!(r.never_ascending(), ACC_LIMIT + 1);
        assert_eq!(r.never_descending(), -ACC_LIMIT - 1);
    }
}
