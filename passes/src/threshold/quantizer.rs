//! The quantizer ending a chain: from the chain's f32 result to a level and the level's
//! output, as `bnnc_ir::interp` computes QONNX BipolarQuant and Quant, ONNX Sign and FINN
//! MultiThreshold (the interpreter's kernels are private to `bnnc-ir`, so their arithmetic is
//! restated here; the tests compare the two bit for bit).

use bnnc_ir::RoundingMode;

use super::constants::{divisor, finite, Monotonicity, PerChannel};
use super::FoldError;

/// Most levels a quantizer may have: a 16-bit Quant. Every level index is then exact in f32,
/// and a table of `levels - 1` thresholds per channel stays a reasonable size.
pub const MAX_LEVELS: usize = 1 << 16;

/// The quantizer ending the chain: maps the chain's f32 result to a level `0..levels`,
/// non-decreasing in its input (except a Quant with a negative scale, which divides by it).
#[derive(Clone, Debug, PartialEq)]
pub enum ChainQuantizer {
    /// QONNX BipolarQuant: level 1 if `x >= 0` else 0; the outputs are `-scale` and `+scale`.
    Bipolar { scale: PerChannel },
    /// ONNX Sign: levels 0, 1, 2 for `x < 0`, `x == 0`, `x > 0` (outputs -1, 0, +1).
    Sign,
    /// QONNX Quant (IntQuant): `y = x / scale + zero_point`, clamped to the integer range and
    /// rounded with `rounding`, or, when `bits == 1 && signed`, bipolar (`y >= 0 ? 1 : -1`).
    /// The level is the integer minus the range's minimum (for the bipolar case, 0 for -1 and
    /// 1 for +1); the output is `(integer - zero_point) * scale`.
    Quant {
        scale: PerChannel,
        zero_point: PerChannel,
        bits: u8,
        signed: bool,
        narrow: bool,
        rounding: RoundingMode,
    },
    /// FINN MultiThreshold on the float: `level = #{i : x >= T[c][i]}`, output
    /// `out_scale * level + out_bias`. `thresholds` holds one row per channel, or one row for
    /// all; every row has the same length.
    MultiThreshold {
        thresholds: Vec<Vec<f32>>,
        out_scale: f32,
        out_bias: f32,
    },
}

impl ChainQuantizer {
    /// The number of levels (distinct outputs counted by index) for a tensor of `channels`
    /// channels, checking the parameters that decide it.
    pub fn levels(&self, channels: usize) -> Result<usize, FoldError> {
        let levels = match self {
            ChainQuantizer::Bipolar { .. } => 2,
            ChainQuantizer::Sign => 3,
            ChainQuantizer::Quant {
                bits,
                signed,
                narrow,
                ..
            } => {
                let (min, max) = quant_range(*bits, *signed, *narrow)?;
                // `min <= max` for every width of 1..=16 bits.
                usize::try_from(max - min + 1).map_err(|_| FoldError::Quantizer {
                    reason: format!("the integer range [{min}, {max}] is empty"),
                })?
            }
            ChainQuantizer::MultiThreshold { thresholds, .. } => {
                let rows = thresholds.len();
                if rows != 1 && rows != channels {
                    return Err(FoldError::ChannelCount {
                        what: "multithreshold rows".into(),
                        len: rows,
                        channels,
                    });
                }
                let n = thresholds.first().map_or(0, Vec::len);
                if let Some(row) = thresholds.iter().position(|r| r.len() != n) {
                    return Err(FoldError::Quantizer {
                        reason: format!(
                            "multithreshold row {row} has {} thresholds, row 0 has {n}",
                            thresholds[row].len()
                        ),
                    });
                }
                n + 1
            }
        };
        if levels > MAX_LEVELS {
            return Err(FoldError::Quantizer {
                reason: format!("{levels} levels, at most {MAX_LEVELS} fold"),
            });
        }
        Ok(levels)
    }
}

/// QONNX's `min_int` and `max_int` for a Quant that is not bipolar, limited to 16 bits so that
/// every level is exact in f32 and the table stays small.
fn quant_range(bits: u8, signed: bool, narrow: bool) -> Result<(i64, i64), FoldError> {
    if bits == 1 && signed {
        // The bipolar special case: -1 and +1 as levels 0 and 1.
        return Ok((0, 1));
    }
    if !(1..=16).contains(&bits) {
        return Err(FoldError::Quantizer {
            reason: format!("a Quant of {bits} bits (1 to 16 fold)"),
        });
    }
    let b = u32::from(bits);
    Ok(match (signed, narrow) {
        (true, false) => (-(1i64 << (b - 1)), (1i64 << (b - 1)) - 1),
        (true, true) => (-(1i64 << (b - 1)) + 1, (1i64 << (b - 1)) - 1),
        (false, false) => (0, (1i64 << b) - 1),
        (false, true) => (0, (1i64 << b) - 2),
    })
}

/// A quantizer with its parameters resolved for one channel.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Quantizer {
    Bipolar {
        scale: f32,
    },
    Sign,
    Quant {
        scale: f32,
        zero_point: f32,
        /// The integer range as f32 (exact: at most 16 bits).
        min: f32,
        max: f32,
        bipolar: bool,
        rounding: RoundingMode,
    },
    MultiThreshold {
        thresholds: Vec<f32>,
        out_scale: f32,
        out_bias: f32,
    },
}

impl Quantizer {
    pub(super) fn resolve(
        q: &ChainQuantizer,
        channel: usize,
        channels: usize,
    ) -> Result<Self, FoldError> {
        let param = |p: &'static str| move || format!("quantizer {p}");
        Ok(match q {
            ChainQuantizer::Bipolar { scale } => Quantizer::Bipolar {
                scale: scale.get(&param("scale"), channel, channels)?,
            },
            ChainQuantizer::Sign => Quantizer::Sign,
            ChainQuantizer::Quant {
                scale,
                zero_point,
                bits,
                signed,
                narrow,
                rounding,
            } => {
                let scale = scale.get(&param("scale"), channel, channels)?;
                let (min, max) = quant_range(*bits, *signed, *narrow)?;
                Quantizer::Quant {
                    scale: divisor(scale, channel, &param("scale"))?,
                    zero_point: zero_point.get(&param("zero point"), channel, channels)?,
                    min: min as f32,
                    max: max as f32,
                    bipolar: *bits == 1 && *signed,
                    rounding: *rounding,
                }
            }
            ChainQuantizer::MultiThreshold {
                thresholds,
                out_scale,
                out_bias,
            } => {
                let row = match &thresholds[..] {
                    [row] => row,
                    rows => rows.get(channel).ok_or_else(|| FoldError::ChannelCount {
                        what: "multithreshold rows".into(),
                        len: rows.len(),
                        channels,
                    })?,
                };
                for &t in row {
                    finite(t, channel, &param("threshold"))?;
                }
                Quantizer::MultiThreshold {
                    thresholds: row.clone(),
                    out_scale: finite(*out_scale, channel, &param("out_scale"))?,
                    out_bias: finite(*out_bias, channel, &param("out_bias"))?,
                }
            }
        })
    }

    /// The level of the chain's result `x`, or `None` if `x` is NaN (which has no place in a
    /// monotone order, whatever level the quantizer would give it).
    pub(super) fn level(&self, x: f32) -> Option<usize> {
        if x.is_nan() {
            return None;
        }
        match self {
            Quantizer::Bipolar { .. } => Some(usize::from(x >= 0.0)),
            Quantizer::Sign => Some(if x < 0.0 {
                0
            } else if x == 0.0 {
                1
            } else {
                2
            }),
            Quantizer::Quant {
                scale,
                zero_point,
                min,
                max,
                bipolar,
                rounding,
            } => {
                let y = x / scale + zero_point;
                if *bipolar {
                    return Some(usize::from(y >= 0.0));
                }
                let q = rounding.apply(clamp(y, *min, *max));
                // q is an integer of [min, max] (the bounds are integers and every mode maps
                // them to themselves), so q - min is exact; NaN fails the comparison.
                let level = q - min;
                (level >= 0.0 && level <= max - min).then_some(level as usize)
            }
            Quantizer::MultiThreshold { thresholds, .. } => {
                Some(thresholds.iter().filter(|&&t| x >= t).count())
            }
        }
    }

    /// The quantizer's float output for `level`, computed as the interpreter computes it (for
    /// Quant, with the integer's zero as +0: see the module docs on the sign of zero).
    pub(super) fn output(&self, level: usize) -> f32 {
        // Levels are below MAX_LEVELS = 2^16: exact in f32.
        let k = level as f32;
        match self {
            Quantizer::Bipolar { scale } => {
                let sign = if level >= 1 { 1.0 } else { -1.0 };
                sign * scale
            }
            Quantizer::Sign => k - 1.0,
            Quantizer::Quant {
                scale,
                zero_point,
                min,
                bipolar,
                ..
            } => {
                let q = if *bipolar {
                    if level >= 1 {
                        1.0
                    } else {
                        -1.0
                    }
                } else {
                    k + min
                };
                (q - zero_point) * scale
            }
            Quantizer::MultiThreshold {
                out_scale,
                out_bias,
                ..
            } => out_scale * k + out_bias,
        }
    }

    /// The natural distance between the outputs of consecutive levels (the first candidate
    /// for an affine output map).
    pub(super) fn output_step(&self) -> f32 {
        match self {
            Quantizer::Bipolar { scale } => 2.0 * scale,
            Quantizer::Sign => 1.0,
            Quantizer::Quant {
                scale,
                bipolar: true,
                ..
            } => 2.0 * scale,
            Quantizer::Quant { scale, .. } => *scale,
            Quantizer::MultiThreshold { out_scale, .. } => *out_scale,
        }
    }

    /// How the level moves as the chain's result grows: every quantizer counts up, except a
    /// Quant, which first divides by its scale.
    pub(super) fn monotonicity(&self) -> Monotonicity {
        match self {
            Quantizer::Quant { scale, .. } => Monotonicity::of_sign(*scale),
            _ => Monotonicity::NonDecreasing,
        }
    }
}

/// `np.where(y > max, max, y)` then `np.where(y < min, min, y)`.
fn clamp(y: f32, min: f32, max: f32) -> f32 {
    let y = if y > max { max } else { y };
    if y < min {
        min
    } else {
        y
    }
}
