//! Quantizers: QONNX Quant, BipolarQuant and Trunc, FINN MultiThreshold, and the standard
//! QuantizeLinear / DequantizeLinear / Clip of QCDQ models.
//!
//! Quantizers are never folded, not even on constant weights: the passes read the
//! quantization they express (the bit width a weight is rounded to, the range a Clip narrows
//! an int8 container to).

use bnnc_ir::{IntType, Op, QuantAttrs, RoundingMode, ThresholdAttrs, TruncAttrs};

use super::{normalize_axis, operand, operands, optional_operand, NodeResult, OnnxNode};
use crate::datatype::parse_finn_datatype;
use crate::import::{Binding, Importer};
use crate::shape_fold::single_f32;
use crate::tensor_data::DataType;

/// The `rounding_mode` attribute.
fn rounding_mode(node: &OnnxNode, default: &str) -> NodeResult<RoundingMode> {
    let name = node.attrs.string_or("rounding_mode", default)?;
    RoundingMode::from_qonnx(name).ok_or_else(|| format!("unknown rounding_mode `{name}`").into())
}

/// QONNX Quant (IntQuant): x, scale, zero point, bit width.
pub fn quant(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let attrs = QuantAttrs {
        signed: node.attrs.flag_or("signed", true)?,
        narrow: node.attrs.flag_or("narrow", false)?,
        rounding: rounding_mode(node, "ROUND")?,
    };
    let operands = operands(cx, node, 4)?;
    cx.add_node(node, Op::Quant(attrs), &operands)
}

/// QONNX BipolarQuant: x, scale.
pub fn bipolar_quant(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let operands = operands(cx, node, 2)?;
    cx.add_node(node, Op::BipolarQuant, &operands)
}

/// QONNX Trunc. v1 takes x, scale, zero point, input bit width, output bit width; v2 inserts
/// the output scale before the output bit width, and the IR takes it last.
pub fn trunc(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let v2 = match node.inputs.len() {
        5 => false,
        6 => true,
        n => return Err(format!("has {n} operands; Trunc v1 takes 5, v2 takes 6").into()),
    };
    let attrs = TruncAttrs {
        rounding: rounding_mode(node, "FLOOR")?,
        signed: node.attrs.flag_or("signed", true)?,
        narrow: node.attrs.flag_or("narrow", false)?,
        v2,
    };
    let mut operands = operands(cx, node, node.inputs.len())?;
    if v2 {
        // ONNX: x, scale, zp, in_bw, out_scale, out_bw. IR: x, scale, zp, in_bw, out_bw, out_scale.
        operands.swap(4, 5);
    }
    cx.add_node(node, Op::Trunc(attrs), &operands)
}

/// FINN MultiThreshold: x, thresholds.
pub fn multi_threshold(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let operands = operands(cx, node, 2)?;
    let out_dtype = node
        .attrs
        .string("out_dtype")?
        .ok_or("attribute `out_dtype` is missing")?;
    let out_type = parse_finn_datatype(out_dtype)?;
    let layout = node.attrs.string_or("data_layout", "NCHW")?;
    let rank = cx.shape(operands[0]).len();
    // Channels come first after the batch (NCHW, NC) unless the layout ends with them (NHWC).
    let channel_axis = if layout.ends_with('C') {
        rank.checked_sub(1)
            .ok_or("a rank-0 input has no channel axis")?
    } else {
        1
    };
    let attrs = ThresholdAttrs {
        out_scale: node.attrs.float_or("out_scale", 1.0)?,
        out_bias: node.attrs.float_or("out_bias", 0.0)?,
        out_type,
        channel_axis,
    };
    cx.add_node(node, Op::MultiThreshold(attrs), &operands)
}

/// The axis of per-axis scales: the `axis` attribute (default 1) normalized against the input's
/// rank. With one scale for the whole tensor the axis means nothing, and an input of rank
/// below 2 gets 0 rather than an error.
fn quantization_axis(
    cx: &Importer,
    node: &OnnxNode,
    x: Binding,
    scale: Binding,
) -> NodeResult<usize> {
    let axis = node.attrs.int_or("axis", 1)?;
    let rank = cx.shape(x).len();
    let per_tensor = cx.shape(scale).iter().product::<usize>() <= 1;
    match normalize_axis(axis, rank) {
        Ok(a) => Ok(a),
        Err(_) if per_tensor => Ok(0),
        Err(reason) => Err(reason.into()),
    }
}

/// The integer type of a QuantizeLinear output stored as `data_type`.
fn quantized_type(data_type: DataType) -> NodeResult<IntType> {
    match data_type {
        DataType::Int8 | DataType::Uint8 | DataType::Int16 | DataType::Uint16 => Ok(data_type
            .int_type()
            .ok_or("internal error: an integer type without a range")?),
        other => Err(format!(
            "quantizing to {other:?} is not supported (int8, uint8, int16, uint16 are)"
        )
        .into()),
    }
}

/// ONNX QuantizeLinear: x, scale, optional zero point. The output type is the zero point's
/// ONNX type (uint8 when there is none, or `output_dtype` from opset 21).
pub fn quantize_linear(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if node.attrs.int_or("block_size", 0)? != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    // Opset 25: `precision` picks the type x / scale is computed in; 0 means the input's, the
    // float32 the interpreter uses.
    if node.attrs.int_or("precision", 0)? != 0 {
        return Err("a computation `precision` other than the input's is not supported".into());
    }
    let x = operand(cx, node, 0)?;
    let scale = operand(cx, node, 1)?;
    let axis = quantization_axis(cx, node, x, scale)?;
    let zero_point = optional_operand(cx, node, 2)?;
    let out = match zero_point {
        Some(zp) => {
            if cx.const_data(zp).is_none() {
                return Err("the zero point (operand 2) must be a constant".into());
            }
            quantized_type(
                cx.const_data_type(zp)
                    .ok_or("the zero point's integer type is unknown")?,
            )?
        }
        None => match node.attrs.int_or("output_dtype", 0)? {
            0 => IntType::Unsigned(8),
            code => {
                let data_type = i32::try_from(code).ok().and_then(DataType::from_code);
                quantized_type(
                    data_type.ok_or_else(|| format!("output_dtype {code} is not supported"))?,
                )?
            }
        },
    };
    let mut inputs = vec![x, scale];
    inputs.extend(zero_point);
    cx.add_node(node, Op::QuantizeLinear { axis, out }, &inputs)
}

/// ONNX DequantizeLinear: q, scale, optional zero point (0 when omitted).
pub fn dequantize_linear(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if node.attrs.int_or("block_size", 0)? != 0 {
        return Err("blocked quantization (block_size) is not supported".into());
    }
    // Opset 23: `output_dtype` 0 means the scale's type; float32 (1) is the same here.
    if !matches!(node.attrs.int_or("output_dtype", 0)?, 0 | 1) {
        return Err("an `output_dtype` other than float32 is not supported".into());
    }
    let q = operand(cx, node, 0)?;
    let scale = operand(cx, node, 1)?;
    let axis = quantization_axis(cx, node, q, scale)?;
    let mut inputs = vec![q, scale];
    inputs.extend(optional_operand(cx, node, 2)?);
    cx.add_node(node, Op::DequantizeLinear { axis }, &inputs)
}

/// ONNX Clip with constant bounds: attributes `min` / `max` before opset 11, optional operands
/// from 11 on; a missing bound is infinite.
pub fn clip(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let (min, max) = if cx.opset < 11 {
        (
            node.attrs.float_or("min", f32::NEG_INFINITY)?,
            node.attrs.float_or("max", f32::INFINITY)?,
        )
    } else {
        let bound = |i: usize, what: &str, default: f32| -> NodeResult<f32> {
            match super::const_operand(cx, node, i, what)? {
                None => Ok(default),
                Some(t) => Ok(single_f32(t).map_err(|e| format!("{what}: {e}"))?),
            }
        };
        (
            bound(1, "the lower bound", f32::NEG_INFINITY)?,
            bound(2, "the upper bound", f32::INFINITY)?,
        )
    };
    cx.add_node(node, Op::Clip { min, max }, &[x])
}
