//! ONNX ops that only rearrange elements, written as the IR's Reshape, Transpose and Concat:
//! DepthToSpace and SpaceToDepth (a reshape, a permutation, a reshape), and nearest-neighbour
//! Resize / Upsample by whole factors (each element repeated: Concats of copies). Every
//! backend that runs those three ops runs these exactly.

use bnnc_ir::Op;

use super::{const_operand, operand, operands, optional_operand, to_usize, NodeResult, OnnxNode};
use crate::import::{Binding, Importer};
use crate::shape_fold::int_values;

/// The largest block size of DepthToSpace and SpaceToDepth.
const MAX_BLOCK: usize = 1 << 16;

/// The `(N, C, H, W)` input of a block rearrangement and its block size.
fn blocks(cx: &Importer, node: &OnnxNode, x: Binding) -> NodeResult<([usize; 4], usize)> {
    let &[n, c, h, w] = cx.shape(x) else {
        return Err(format!("the input has shape {:?}, not (N, C, H, W)", cx.shape(x)).into());
    };
    let b = to_usize(node.attrs.int_or("blocksize", 0)?, "the block size")?;
    // Bounded so that the shape arithmetic (b * b, h * b) cannot overflow; no real block
    // comes near it.
    if b == 0 || b > MAX_BLOCK {
        return Err(format!("the block size {b} is not in 1..={MAX_BLOCK}").into());
    }
    Ok(([n, c, h, w], b))
}

/// Reshape, Transpose by `perm`, Reshape to `out`: the steps of a block rearrangement.
fn rearrange(
    cx: &mut Importer,
    node: &OnnxNode,
    x: Binding,
    split: Vec<usize>,
    perm: Vec<usize>,
    out: Vec<usize>,
) -> NodeResult {
    let split = cx.add_step(node, "split", Op::Reshape { shape: split }, &[x])?;
    let moved = cx.add_step(node, "permute", Op::Transpose { perm }, &[split])?;
    cx.add_node(node, Op::Reshape { shape: out }, &[moved])
}

/// ONNX DepthToSpace: `DCR` (depth, column, row: the default) or `CRD` order of the channels.
pub fn depth_to_space(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operands(cx, node, 1)?[0];
    let ([n, c, h, w], b) = blocks(cx, node, x)?;
    if c % (b * b) != 0 {
        return Err(format!("{c} channels are not a multiple of {b}x{b}").into());
    }
    let c_out = c / (b * b);
    let out = vec![n, c_out, h * b, w * b];
    match node.attrs.string_or("mode", "DCR")? {
        "DCR" => rearrange(
            cx,
            node,
            x,
            vec![n, b, b, c_out, h, w],
            vec![0, 3, 4, 1, 5, 2],
            out,
        ),
        "CRD" => rearrange(
            cx,
            node,
            x,
            vec![n, c_out, b, b, h, w],
            vec![0, 1, 4, 2, 5, 3],
            out,
        ),
        other => Err(format!("mode `{other}` is not DCR or CRD").into()),
    }
}

/// ONNX SpaceToDepth.
pub fn space_to_depth(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operands(cx, node, 1)?[0];
    let ([n, c, h, w], b) = blocks(cx, node, x)?;
    if h % b != 0 || w % b != 0 {
        return Err(format!("a {h}x{w} image is not made of {b}x{b} blocks").into());
    }
    let split = vec![n, c, h / b, b, w / b, b];
    let out = vec![n, c * b * b, h / b, w / b];
    rearrange(cx, node, x, split, vec![0, 3, 5, 1, 2, 4], out)
}

/// The largest whole factor [`resize`] repeats by: each copy is an operand of a Concat.
const MAX_REPEAT: usize = 4096;

/// ONNX Resize (and the older Upsample) in `nearest` mode by whole factors, where output
/// index `i` reads input index `i / factor` under the node's coordinate mapping: each element
/// repeated `factor` times along each axis. Other modes and mappings are refused by name.
pub fn resize(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let x = operand(cx, node, 0)?;
    let shape = cx.shape(x).to_vec();
    let rank = shape.len();
    let mode = node.attrs.string_or("mode", "nearest")?;
    if mode != "nearest" {
        return Err(format!("mode `{mode}` is not supported (only `nearest`)").into());
    }
    let upsample = node.op_type == "Upsample";
    let (mapping, rounding) = if upsample {
        ("asymmetric", "floor")
    } else {
        (
            node.attrs
                .string_or("coordinate_transformation_mode", "half_pixel")?,
            node.attrs.string_or("nearest_mode", "round_prefer_floor")?,
        )
    };
    if !upsample && node.attrs.ints("axes")?.is_some() {
        return Err("the `axes` attribute is not supported".into());
    }
    // Scales (Upsample: attribute before opset 9, operand 1 after; Resize: operand 1 before
    // opset 11, operand 2 after) or sizes (Resize, operand 3).
    let scales: Option<Vec<f32>> = if upsample && cx.opset < 9 {
        node.attrs.floats("scales")?.map(<[f32]>::to_vec)
    } else {
        let at = if upsample || cx.opset < 11 { 1 } else { 2 };
        const_operand(cx, node, at, "the scales")?
            .map(|t| t.to_f32_vec())
            .filter(|s| !s.is_empty())
    };
    let sizes = if !upsample && cx.opset >= 11 && optional_operand(cx, node, 3)?.is_some() {
        let t = const_operand(cx, node, 3, "the sizes")?.ok_or("the sizes are missing")?;
        Some(int_values(t)?)
    } else {
        None
    };
    let (out, scales): (Vec<usize>, Vec<f32>) = match (scales, sizes) {
        (Some(s), None) if s.len() == rank => {
            let out = shape
                .iter()
                .zip(&s)
                .map(|(&d, &f)| {
                    if !(f.is_finite() && f > 0.0) {
                        return Err(format!("scale {f}"));
                    }
                    Ok((d as f64 * f as f64).floor() as usize)
                })
                .collect::<Result<_, String>>()?;
            (out, s)
        }
        (None, Some(z)) if z.len() == rank => {
            let out: Vec<usize> = z
                .iter()
                .map(|&d| to_usize(d, "an output size"))
                .collect::<Result<_, _>>()?;
            let s = out
                .iter()
                .zip(&shape)
                .map(|(&o, &d)| o as f32 / d.max(1) as f32)
                .collect();
            (out, s)
        }
        _ => return Err(format!("needs {rank} scales or {rank} sizes").into()),
    };
    // Checked before anything walks the output's extents.
    if bnnc_ir::types::checked_numel(&out).is_none_or(|n| n > crate::MAX_ELEMENTS) {
        return Err(format!(
            "the output shape {out:?} has more than {} elements",
            crate::MAX_ELEMENTS
        )
        .into());
    }
    // Per axis, the whole factor; the node's own mapping must read input `i / factor`.
    let mut factors = Vec::with_capacity(rank);
    for d in 0..rank {
        let (input, output) = (shape[d], out[d]);
        if input == 0 || output % input != 0 {
            return Err(format!(
                "axis {d}: {input} to {output} is not upsampling by a whole factor"
            )
            .into());
        }
        let factor = output / input;
        if factor > MAX_REPEAT {
            return Err(format!(
                "axis {d}: a factor of {factor} is more than bnnc repeats ({MAX_REPEAT})"
            )
            .into());
        }
        for i in 0..output {
            let read = source_index(i, input, output, scales[d], mapping, rounding)?;
            if read != i / factor {
                return Err(format!(
                    "axis {d}: `{mapping}` with `{rounding}` reads input {read} for output {i}, \
                     not a repetition of each element (only those are supported)"
                )
                .into());
            }
        }
        factors.push(factor);
    }
    if factors.iter().all(|&f| f == 1) {
        return cx.add_node(node, Op::Reshape { shape: out }, &[x]);
    }
    // A unit axis after every repeated one, copies concatenated along it, then the result.
    let mut spread = Vec::with_capacity(2 * rank);
    for d in 0..rank {
        spread.push(shape[d]);
        if factors[d] > 1 {
            spread.push(1);
        }
    }
    let mut v = cx.add_step(node, "spread", Op::Reshape { shape: spread }, &[x])?;
    let mut axis = 0;
    for (d, &factor) in factors.iter().enumerate() {
        axis += 1;
        if factor > 1 {
            let copies = vec![v; factor];
            v = cx.add_step(node, &format!("repeat{d}"), Op::Concat { axis }, &copies)?;
            axis += 1;
        }
    }
    cx.add_node(node, Op::Reshape { shape: out }, &[v])
}

/// The input index output `i` reads along one axis (ONNX Resize's coordinate transformation
/// and nearest rounding, in f32 as onnxruntime computes them), clamped to the input.
fn source_index(
    i: usize,
    input: usize,
    output: usize,
    scale: f32,
    mapping: &str,
    rounding: &str,
) -> Result<usize, String> {
    let i = i as f32;
    let x = match mapping {
        "half_pixel" => (i + 0.5) / scale - 0.5,
        "pytorch_half_pixel" if output > 1 => (i + 0.5) / scale - 0.5,
        "pytorch_half_pixel" => 0.0,
        "asymmetric" => i / scale,
        "tf_half_pixel_for_nn" => (i + 0.5) / scale,
        "align_corners" if output > 1 => i * (input as f32 - 1.0) / (output as f32 - 1.0),
        "align_corners" => 0.0,
        other => {
            return Err(format!(
                "coordinate_transformation_mode `{other}` is not supported"
            ))
        }
    };
    let r = match rounding {
        "round_prefer_floor" if x.fract() == 0.5 => x.floor(),
        "round_prefer_ceil" if x.fract() == 0.5 => x.ceil(),
        "round_prefer_floor" | "round_prefer_ceil" => x.round(),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        other => return Err(format!("nearest_mode `{other}` is not supported")),
    };
    Ok((r.max(0.0) as usize).min(input - 1))
}
