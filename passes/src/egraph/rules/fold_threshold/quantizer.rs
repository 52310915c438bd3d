//! The quantizers a chain may end in, recognized among an e-class's nodes and described for
//! [`fold_chain`](crate::threshold::fold_chain).

use bnnc_ir::{IntType, Op, RoundingMode, Tensor, TensorType};
use egg::Id;

use crate::egraph::analysis::{constant, value_type, BnnEGraph};
use crate::egraph::language::BnnLang;
use crate::threshold::{per_channel, ChainQuantizer, PerChannel};

/// The ops (by IR name) whose classes may hold the top of a quantizer.
pub const QUANTIZER_KINDS: &[&str] = &[
    "bipolar_quant",
    "sign",
    "quant",
    "multithreshold",
    "dequantize_linear",
];

/// A quantizer found in a class: the value it quantizes, and what it computes.
#[derive(Debug)]
pub struct QuantizerMatch {
    /// The class of the quantized value: the top of the chain.
    pub operand: Id,
    /// The quantizer, or why the fold cannot describe it.
    pub quantizer: Result<ChainQuantizer, String>,
}

/// The quantizer `node` is the top of, if it is one.
pub fn recognize(egraph: &BnnEGraph, node: &BnnLang) -> Option<QuantizerMatch> {
    let BnnLang::Op(key, ch) = node else {
        return None;
    };
    let op = key.op();
    match op {
        Op::BipolarQuant | Op::Sign | Op::Quant(_) | Op::MultiThreshold(_) => {
            Some(QuantizerMatch {
                operand: *ch.first()?,
                quantizer: describe(egraph, op, ch),
            })
        }
        Op::DequantizeLinear { axis } => qcdq(egraph, *axis, ch),
        _ => None,
    }
}

/// A constant operand of a quantizer, or the reason it is not one.
fn const_operand<'a>(
    egraph: &'a BnnEGraph,
    ch: &[Id],
    i: usize,
    what: &str,
) -> Result<&'a Tensor, String> {
    ch.get(i)
        .and_then(|&c| constant(egraph, c))
        .map(|t| &**t)
        .ok_or_else(|| format!("the quantizer's {what} is not a constant"))
}

fn operand_type<'a>(egraph: &'a BnnEGraph, ch: &[Id]) -> Result<&'a TensorType, String> {
    ch.first()
        .and_then(|&x| value_type(egraph, x))
        .ok_or_else(|| "the quantizer's operand has no type".to_string())
}

/// QONNX BipolarQuant and Quant, ONNX Sign, FINN MultiThreshold.
fn describe(egraph: &BnnEGraph, op: &Op, ch: &[Id]) -> Result<ChainQuantizer, String> {
    let x = operand_type(egraph, ch)?;
    match op {
        Op::BipolarQuant => {
            let scale = const_operand(egraph, ch, 1, "scale")?;
            Ok(ChainQuantizer::Bipolar {
                scale: per_channel(scale, &x.shape, "scale")?,
            })
        }
        Op::Sign => Ok(ChainQuantizer::Sign),
        Op::Quant(attrs) => {
            let scale = const_operand(egraph, ch, 1, "scale")?;
            let zero_point = const_operand(egraph, ch, 2, "zero point")?;
            let bits = match const_operand(egraph, ch, 3, "bit width")?.to_f64_vec()[..] {
                [b] if b.fract() == 0.0 && (1.0..=16.0).contains(&b) => b as u8,
                ref b => return Err(format!("bit width {b:?} is not one integer in 1..=16")),
            };
            Ok(ChainQuantizer::Quant {
                scale: per_channel(scale, &x.shape, "scale")?,
                zero_point: per_channel(zero_point, &x.shape, "zero point")?,
                bits,
                signed: attrs.signed,
                narrow: attrs.narrow,
                rounding: attrs.rounding,
            })
        }
        Op::MultiThreshold(attrs) => {
            if attrs.channel_axis != 1 {
                return Err(format!(
                    "multithreshold on channel axis {} (the chain's channels are axis 1)",
                    attrs.channel_axis
                ));
            }
            let t = const_operand(egraph, ch, 1, "thresholds")?;
            let &[_, n] = t.shape() else {
                return Err(format!("thresholds of shape {:?}", t.shape()));
            };
            let values = t.to_f32_vec();
            let thresholds = if n == 0 {
                vec![Vec::new()]
            } else {
                values.chunks(n).map(<[f32]>::to_vec).collect()
            };
            Ok(ChainQuantizer::MultiThreshold {
                thresholds,
                out_scale: attrs.out_scale,
                out_bias: attrs.out_bias,
            })
        }
        _ => Err(format!("{} is not a quantizer", op.name())),
    }
}

/// ONNX's quantizer written with standard ops ("QCDQ"):
/// `DequantizeLinear(Clip(QuantizeLinear(x, s, 0)), s, 0)`, the Clip optional.
///
/// With zero points of zero and integer clip bounds it is exactly a QONNX Quant of scale `s`
/// rounding half to even: QuantizeLinear rounds `x / s` and then clamps to its integer type
/// and Clip to its bounds, Quant clamps `x / s` and then rounds, and clamping to integer
/// bounds commutes with a monotone rounding that keeps integers. So the level range must be
/// a Quant's, `[-2^(b-1) (+1 if narrow), 2^(b-1) - 1]` or `[0, 2^b - 1 (-1 if narrow)]`.
fn qcdq(egraph: &BnnEGraph, dq_axis: usize, dq: &[Id]) -> Option<QuantizerMatch> {
    let q = *dq.first()?;
    let ql = quantize_linear_below(egraph, q)?;
    Some(QuantizerMatch {
        operand: *ql.operands.first()?,
        quantizer: qcdq_as_quant(egraph, &ql, dq_axis, dq),
    })
}

/// A QuantizeLinear found under a DequantizeLinear, with the Clip between them, if any.
struct QuantizeLinearMatch {
    axis: usize,
    out: IntType,
    operands: Vec<Id>,
    /// The Clip's bounds (infinite when there is no Clip).
    clip: (f32, f32),
}

/// The QuantizeLinear computing class `q`, directly or through one Clip.
fn quantize_linear_below(egraph: &BnnEGraph, q: Id) -> Option<QuantizeLinearMatch> {
    let direct = |class: Id, clip: (f32, f32)| {
        egraph[class]
            .nodes
            .iter()
            .find_map(|node| match (node.as_op(), node) {
                (Some(Op::QuantizeLinear { axis, out }), BnnLang::Op(_, ch)) => {
                    Some(QuantizeLinearMatch {
                        axis: *axis,
                        out: *out,
                        operands: ch.clone(),
                        clip,
                    })
                }
                _ => None,
            })
    };
    direct(q, (f32::NEG_INFINITY, f32::INFINITY)).or_else(|| {
        egraph[q]
            .nodes
            .iter()
            .find_map(|node| match (node.as_op(), node) {
                (Some(Op::Clip { min, max }), BnnLang::Op(_, ch)) if ch.len() == 1 => {
                    direct(ch[0], (*min, *max))
                }
                _ => None,
            })
    })
}

/// The QONNX Quant a QCDQ triple computes, or why it is not one.
fn qcdq_as_quant(
    egraph: &BnnEGraph,
    ql: &QuantizeLinearMatch,
    dq_axis: usize,
    dq: &[Id],
) -> Result<ChainQuantizer, String> {
    let scale = const_operand(egraph, &ql.operands, 1, "QuantizeLinear scale")?;
    let dq_scale = const_operand(egraph, dq, 1, "DequantizeLinear scale")?;
    if scale != dq_scale {
        return Err("QuantizeLinear and DequantizeLinear scales differ".to_string());
    }
    for (ch, what) in [
        (&ql.operands[..], "QuantizeLinear"),
        (dq, "DequantizeLinear"),
    ] {
        if ch.len() > 2 {
            let zp = const_operand(egraph, ch, 2, "zero point")?;
            if zp.to_f64_vec().iter().any(|&z| z != 0.0) {
                return Err(format!("{what} has a nonzero zero point"));
            }
        }
    }
    if scale.len() != 1 && (ql.axis != 1 || dq_axis != 1) {
        return Err(format!(
            "per-axis scale on axis {}, the chain's channels are axis 1",
            ql.axis
        ));
    }
    // Clip bounds beyond the integer type do not narrow it; others must be integers.
    let bound = |b: f32, int_bound: i64, narrower: fn(i64, i64) -> i64| {
        if b.is_infinite() || b.abs() >= 1e15 {
            Ok(int_bound)
        } else if b.fract() == 0.0 {
            Ok(narrower(b as i64, int_bound))
        } else {
            Err(format!("clip bound {b} is not an integer"))
        }
    };
    let lo = bound(ql.clip.0, ql.out.min(), i64::max)?;
    let hi = bound(ql.clip.1, ql.out.max(), i64::min)?;
    let (bits, signed, narrow) = quant_form(lo, hi).ok_or_else(|| {
        format!("levels [{lo}, {hi}] are not the range of a Quant of 1 to 16 bits")
    })?;
    Ok(ChainQuantizer::Quant {
        scale: PerChannel(scale.to_f32_vec()),
        zero_point: PerChannel::scalar(0.0),
        bits,
        signed,
        narrow,
        rounding: RoundingMode::HalfEven,
    })
}

/// The Quant (bits, signed, narrow) whose integer range is `[lo, hi]`; 1-bit signed is left
/// out (QONNX makes it bipolar, which no clipped integer range is).
fn quant_form(lo: i64, hi: i64) -> Option<(u8, bool, bool)> {
    (1..=16u8).find_map(|b| {
        let p = 1i64 << b;
        let h = 1i64 << (b - 1);
        if b >= 2 && (lo, hi) == (-h, h - 1) {
            Some((b, true, false))
        } else if b >= 2 && (lo, hi) == (-h + 1, h - 1) {
            Some((b, true, true))
        } else if (lo, hi) == (0, p - 1) {
            Some((b, false, false))
        } else if b >= 2 && (lo, hi) == (0, p - 2) {
            Some((b, false, true))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::quant_form;

    #[test]
    fn quant_ranges() {
        assert_eq!(quant_form(-1, 1), Some((2, true, true)));
        assert_eq!(quant_form(-2, 1), Some((2, true, false)));
        assert_eq!(quant_form(0, 1), Some((1, false, false)));
        assert_eq!(quant_form(0, 6), Some((3, false, true)));
        assert_eq!(quant_form(-3, 5), None);
    }
}
