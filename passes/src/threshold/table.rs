//! The folded form: integer thresholds per channel and the output of each level.

use super::output::LevelOutput;

/// Integer thresholds equal to a monotone float chain and its quantizer, for every
/// accumulator of the range given to [`fold_chain`](super::fold_chain).
///
/// For channel `c`, the level of an accumulator `acc` is `#{i : acc >= T[c][i]}` on an
/// ascending channel and `#{i : acc <= T[c][i]}` on a descending one. Entry `k - 1` of a row is
/// the boundary of level `k`: the smallest accumulator reaching level `k` (ascending) or the
/// largest (descending), so ascending rows are non-decreasing and descending rows
/// non-increasing. A level reached by every accumulator of the range has the threshold
/// `acc_min` (ascending) or `acc_max` (descending); a level never reached has `acc_max + 1`
/// or `acc_min - 1`. Constant channels are written ascending.
///
/// This is `Op::Threshold`'s convention: `thresholds` is its `(C, levels - 1)` operand and
/// `descending` its directions (`-1` where true).
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdTable {
    /// The number of channels.
    pub channels: usize,
    /// The number of levels `n` of the quantizer; every row has `n - 1` thresholds.
    pub levels: usize,
    /// Row-major `(channels, levels - 1)`.
    pub thresholds: Vec<i64>,
    /// Per channel: whether the level falls as the accumulator grows.
    pub descending: Vec<bool>,
    /// The float output of each level, matching the quantizer's outputs.
    pub output: LevelOutput,
}

impl ThresholdTable {
    /// The thresholds of `channel`. Panics if `channel >= self.channels`.
    pub fn row(&self, channel: usize) -> &[i64] {
        let n = self.levels - 1;
        &self.thresholds[channel * n..(channel + 1) * n]
    }

    /// The level the table gives `acc` on `channel` (the count formula).
    /// Panics if `channel >= self.channels`.
    pub fn level(&self, channel: usize, acc: i64) -> usize {
        let row = self.row(channel);
        if self.descending[channel] {
            row.iter().filter(|&&t| acc <= t).count()
        } else {
            row.iter().filter(|&&t| acc >= t).count()
        }
    }

    /// The float output the table gives `acc` on `channel`.
    /// Panics if `channel >= self.channels`.
    pub fn output_at(&self, channel: usize, acc: i64) -> f32 {
        self.output
            .value(channel, self.level(channel, acc), self.levels)
    }
}
