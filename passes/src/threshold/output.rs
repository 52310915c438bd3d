//! The float output of each level, as an affine map when one reproduces every output exactly
//! in f32, otherwise as a table of values.

use super::chain::ChannelChain;

/// The quantizer's float output for each level of a [`ThresholdTable`](super::ThresholdTable).
///
/// Per-channel vectors have length 1 (every channel the same) or one entry per channel.
#[derive(Clone, Debug, PartialEq)]
pub enum LevelOutput {
    /// The output of level `k` on channel `c` is `out_scale[c] * k + out_bias[c]`, a multiply
    /// then an add in f32 (as `Op::Threshold` computes it), and equals the quantizer's output
    /// for every level. Bipolar, Sign and MultiThreshold outputs are always affine (a bipolar
    /// scale above `f32::MAX / 2` aside), and so is Quant with a power-of-two scale and an
    /// integer zero point.
    Affine {
        out_scale: Vec<f32>,
        out_bias: Vec<f32>,
    },
    /// No affine map is exact in f32 (a Quant whose scale is not a power of two, where
    /// `scale * k + bias` and `(q - zero_point) * scale` round differently). `values` is
    /// row-major `(rows, levels)` with `rows` 1 or the number of channels: the output of level
    /// `k` on channel `c` is `values[c * levels + k]` (row 0 when there is one row).
    Values { values: Vec<f32> },
}

impl LevelOutput {
    /// The output of `level` on `channel`, where `levels` is the table's number of levels.
    ///
    /// Panics if `channel` or `level` is beyond what the table holds.
    pub fn value(&self, channel: usize, level: usize, levels: usize) -> f32 {
        let at = |v: &[f32]| v[if v.len() == 1 { 0 } else { channel }];
        match self {
            LevelOutput::Affine {
                out_scale,
                out_bias,
            } => at(out_scale) * level as f32 + at(out_bias),
            LevelOutput::Values { values } => {
                let row = if values.len() == levels { 0 } else { channel };
                values[row * levels + level]
            }
        }
    }

    /// The affine map, if the outputs are affine.
    pub fn affine(&self) -> Option<(&[f32], &[f32])> {
        match self {
            LevelOutput::Affine {
                out_scale,
                out_bias,
            } => Some((out_scale, out_bias)),
            LevelOutput::Values { .. } => None,
        }
    }
}

/// The outputs of every level of every chain: affine if some exact affine map exists for
/// every channel, else values. Outputs are compared with `==`, which takes the two zeros as
/// equal (see the module docs on the sign of zero).
pub(super) fn level_output(chains: &[ChannelChain], levels: usize) -> LevelOutput {
    let mut maps = Vec::with_capacity(chains.len());
    for chain in chains {
        let values: Vec<f32> = (0..levels).map(|k| chain.output(k)).collect();
        let Some(&first) = values.first() else {
            return LevelOutput::Values { values };
        };
        // The quantizer's own spacing, then the spacing of the first two outputs; the bias is
        // the output of level 0 either way (`scale * 0 + bias` is `bias` up to zero's sign).
        let spacing = values.get(1).map_or(1.0, |&second| second - first);
        let exact = |scale: f32| {
            values
                .iter()
                .enumerate()
                .all(|(k, &v)| scale * k as f32 + first == v)
        };
        match [chain.output_step(), spacing]
            .into_iter()
            .find(|&s| exact(s))
        {
            Some(scale) => maps.push((scale, first)),
            None => return values_table(chains, levels),
        }
    }
    let (out_scale, out_bias) = maps.into_iter().unzip();
    LevelOutput::Affine {
        out_scale: shared(out_scale, same_bits),
        out_bias: shared(out_bias, same_bits),
    }
}

/// Every chain's outputs, one row per channel, or one row when all are the same.
fn values_table(chains: &[ChannelChain], levels: usize) -> LevelOutput {
    let rows: Vec<Vec<f32>> = chains
        .iter()
        .map(|chain| (0..levels).map(|k| chain.output(k)).collect())
        .collect();
    let same_row = |a: &Vec<f32>, b: &Vec<f32>| a.iter().zip(b).all(|(x, y)| same_bits(x, y));
    LevelOutput::Values {
        values: shared(rows, same_row).concat(),
    }
}

/// Bit equality, so that -0 and +0 stay apart when per-channel entries merge into one.
fn same_bits(a: &f32, b: &f32) -> bool {
    a.to_bits() == b.to_bits()
}

/// `per_channel` as its first entry alone if every entry is the `same` as it.
fn shared<T>(mut per_channel: Vec<T>, same: impl Fn(&T, &T) -> bool) -> Vec<T> {
    if let Some((first, rest)) = per_channel.split_first() {
        if rest.iter().all(|x| same(first, x)) {
            per_channel.truncate(1);
        }
    }
    per_channel
}
