//! Layers that multiply by weights (Conv, Gemm, MatMul) and BatchNormalization.

use bnnc_ir::{ConvAttrs, GemmAttrs, Op};

use super::window::window;
use super::{operand, operands, optional_operand, to_usize, NodeResult, OnnxNode};
use crate::import::Importer;

/// ONNX Conv: x, w, optional bias. The kernel comes from the weight's shape where the
/// `kernel_shape` attribute is absent; `auto_pad` becomes explicit pads.
pub fn conv(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let w = operand(cx, node, 1)?;
    let bias = optional_operand(cx, node, 2)?;
    let w_shape = cx.shape(w);
    if w_shape.len() < 3 {
        return Err(format!(
            "weight of shape {w_shape:?}; a convolution weight has rank 3 or more"
        )
        .into());
    }
    let kernel = w_shape[2..].to_vec();
    if let Some(declared) = node.attrs.ints("kernel_shape")? {
        if !declared
            .iter()
            .map(|&k| usize::try_from(k).ok())
            .eq(kernel.iter().map(|&k| Some(k)))
        {
            return Err(format!(
                "kernel_shape {declared:?} does not match the weight's shape {w_shape:?}"
            )
            .into());
        }
    }
    let x_shape = cx.shape(x);
    if x_shape.len() != kernel.len() + 2 {
        return Err(format!("input of shape {x_shape:?} for a {}-d kernel", kernel.len()).into());
    }
    let window = window(&node.attrs, &kernel, &x_shape[2..])?;
    let group = to_usize(node.attrs.int_or("group", 1)?, "group")?;
    if group == 0 {
        return Err("group is 0".into());
    }
    let attrs = ConvAttrs {
        kernel,
        strides: window.strides,
        dilations: window.dilations,
        pads: window.pads,
        group,
    };
    let mut inputs = vec![x, w];
    inputs.extend(bias);
    cx.add_node(node, Op::Conv(attrs), &inputs)
}

/// ONNX Gemm: a, b, optional c.
pub fn gemm(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let attrs = GemmAttrs {
        alpha: node.attrs.float_or("alpha", 1.0)?,
        beta: node.attrs.float_or("beta", 1.0)?,
        trans_a: node.attrs.flag_or("transA", false)?,
        trans_b: node.attrs.flag_or("transB", false)?,
    };
    let mut inputs = vec![operand(cx, node, 0)?, operand(cx, node, 1)?];
    inputs.extend(optional_operand(cx, node, 2)?);
    cx.add_node(node, Op::Gemm(attrs), &inputs)
}

/// ONNX MatMul: a, b.
pub fn matmul(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 2)?;
    if super::finn_lowered::product_of_windows(cx, node, inputs[0], inputs[1])? {
        return Ok(());
    }
    cx.add_node(node, Op::MatMul, &inputs)
}

/// ONNX BatchNormalization in inference form: x, scale, bias, mean, variance, one result.
pub fn batch_norm(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if node.used_outputs() > 1 || node.output(0).is_none() {
        return Err(
            "training-mode BatchNormalization (running statistics as results) is not supported"
                .into(),
        );
    }
    if node.attrs.flag_or("training_mode", false)? {
        return Err("training_mode = 1 is not supported".into());
    }
    // Before opset 9, `spatial = 0` meant statistics per element, not per channel.
    if node.attrs.int_or("spatial", 1)? != 1 {
        return Err("spatial = 0 (statistics per element, opsets 7 and 8) is not supported".into());
    }
    let epsilon = node.attrs.float_or("epsilon", 1e-5)?;
    let inputs = operands(cx, node, 5)?;
    cx.add_node(node, Op::BatchNorm { epsilon }, &inputs)
}
