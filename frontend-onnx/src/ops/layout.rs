//! Ops that move data without computing: Reshape and its relatives (Flatten, Squeeze,
//! Unsqueeze, all static reshapes in the IR), Transpose, Pad, Concat, and the aliases
//! Identity and inference-mode Dropout.

use bnnc_ir::types::checked_numel;
use bnnc_ir::{Op, Shape, Tensor};

use super::{
    const_operand, normalize_axes, normalize_axis, operand, operands, optional_operand, to_usize,
    NodeResult, OnnxNode,
};
use crate::import::{default_elem, Binding, Importer};
use crate::shape_fold::{self, int_values, single_f32};

/// The result of `node` is `data` under `shape`: folded for a constant, a Reshape node
/// otherwise.
fn reshape_to(cx: &mut Importer, node: &OnnxNode, data: Binding, shape: Shape) -> NodeResult {
    let out = node.output(0).ok_or("the result is unnamed")?;
    if let Some(t) = cx.const_data(data) {
        let reshaped = t
            .clone()
            .reshaped(shape.clone())
            .ok_or_else(|| format!("cannot reshape {:?} to {shape:?}", t.shape()))?;
        let (elem, data_type) = (cx.elem(data), cx.const_data_type(data));
        return Ok(cx.bind_const(out, reshaped, elem, data_type)?);
    }
    cx.add_node(node, Op::Reshape { shape }, &[data])
}

/// The shape a Reshape to `spec` gives an input of shape `input`: 0 copies the input's extent
/// at that position (unless `allow_zero`, when it is a real 0), and one -1 takes what is left.
pub fn resolve_reshape(input: &[usize], spec: &[i64], allow_zero: bool) -> Result<Shape, String> {
    let total = checked_numel(input).ok_or("the input is too large")?;
    let mut shape = Vec::with_capacity(spec.len());
    let mut inferred = None;
    for (i, &d) in spec.iter().enumerate() {
        let extent = match d {
            -1 if inferred.is_some() => return Err(format!("shape {spec:?} has more than one -1")),
            -1 => {
                inferred = Some(i);
                1
            }
            0 if !allow_zero => *input.get(i).ok_or_else(|| {
                format!(
                    "shape {spec:?} copies extent {i} of an input of rank {}",
                    input.len()
                )
            })?,
            d => to_usize(d, "a target extent")?,
        };
        shape.push(extent);
    }
    if let Some(i) = inferred {
        let known = checked_numel(&shape).ok_or("the target shape is too large")?;
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        shape[i] = total / known;
    }
    if checked_numel(&shape) != Some(total) {
        return Err(format!(
            "cannot reshape {input:?} ({total} elements) to {spec:?}"
        ));
    }
    Ok(shape)
}

/// ONNX Reshape: data, and a shape that must be constant once shape arithmetic is folded.
pub fn reshape(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = operand(cx, node, 0)?;
    let spec = const_operand(cx, node, 1, "the target shape")?
        .ok_or("the target shape (operand 1) is missing")?;
    let spec = int_values(spec)?;
    let allow_zero = node.attrs.flag_or("allowzero", false)?;
    let shape = resolve_reshape(cx.shape(data), &spec, allow_zero)?;
    reshape_to(cx, node, data, shape)
}

/// ONNX Flatten: everything before `axis` (default 1) becomes the first extent, the rest the
/// second.
pub fn flatten(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = operand(cx, node, 0)?;
    let input = cx.shape(data);
    let axis = node.attrs.int_or("axis", 1)?;
    // Unlike other axes, Flatten's may equal the rank.
    let axis = if axis == input.len() as i64 {
        input.len()
    } else {
        normalize_axis(axis, input.len())?
    };
    let outer: usize = input[..axis].iter().product();
    let inner: usize = input[axis..].iter().product();
    reshape_to(cx, node, data, vec![outer, inner])
}

/// The axes of Squeeze / Unsqueeze: an attribute before opset 13, an operand from 13 on.
fn squeeze_axes(cx: &Importer, node: &OnnxNode) -> NodeResult<Option<Vec<i64>>> {
    if cx.opset < 13 {
        Ok(node.attrs.ints("axes")?.map(<[i64]>::to_vec))
    } else {
        Ok(const_operand(cx, node, 1, "the axes")?
            .map(int_values)
            .transpose()?)
    }
}

/// ONNX Squeeze: drops the given axes (each of extent 1), or every axis of extent 1.
pub fn squeeze(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = operand(cx, node, 0)?;
    let input = cx.shape(data).to_vec();
    let shape = match squeeze_axes(cx, node)? {
        Some(axes) if !axes.is_empty() => {
            let axes = normalize_axes(&axes, input.len())?;
            if let Some(&a) = axes.iter().find(|&&a| input[a] != 1) {
                return Err(format!(
                    "cannot squeeze axis {a} of extent {} (shape {input:?})",
                    input[a]
                )
                .into());
            }
            input
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
        _ => input.iter().copied().filter(|&d| d != 1).collect(),
    };
    reshape_to(cx, node, data, shape)
}

/// ONNX Unsqueeze: inserts axes of extent 1 at the given positions of the result.
pub fn unsqueeze(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let data = operand(cx, node, 0)?;
    let input = cx.shape(data).to_vec();
    let axes = squeeze_axes(cx, node)?.ok_or("the axes are missing")?;
    let rank = input.len() + axes.len();
    let axes = normalize_axes(&axes, rank)?;
    let mut rest = input.iter();
    let shape = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect();
    reshape_to(cx, node, data, shape)
}

/// ONNX Transpose: `perm` defaults to reversing the axes.
pub fn transpose(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    let rank = cx.shape(inputs[0]).len();
    let perm = match node.attrs.ints("perm")? {
        None => (0..rank).rev().collect(),
        Some(p) => {
            let perm = p
                .iter()
                .map(|&a| to_usize(a, "a permuted axis"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if !sorted.iter().copied().eq(0..rank) {
                return Err(format!("perm {p:?} is not a permutation of {rank} axes").into());
            }
            perm
        }
    };
    cx.add_node(node, Op::Transpose { perm }, &inputs)
}

/// ONNX Pad, constant mode only: `pads` and `value` are attributes before opset 11 and
/// operands from 11 on (with optional `axes` from 18).
pub fn pad(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let mode = node.attrs.string_or("mode", "constant")?;
    if mode != "constant" {
        return Err(format!("pad mode `{mode}` is not supported (only `constant` is)").into());
    }
    let data = operand(cx, node, 0)?;
    let rank = cx.shape(data).len();
    let (pads, value, axes) = if cx.opset < 11 {
        let pads = node
            .attrs
            .ints("pads")?
            .ok_or("attribute `pads` is missing")?
            .to_vec();
        (pads, node.attrs.float_or("value", 0.0)?, None)
    } else {
        let pads = int_values(
            const_operand(cx, node, 1, "the pads")?.ok_or("the pads (operand 1) are missing")?,
        )?;
        let value = const_operand(cx, node, 2, "the pad value")?
            .map(single_f32)
            .transpose()?
            .unwrap_or(0.0);
        let axes = const_operand(cx, node, 3, "the axes")?
            .map(int_values)
            .transpose()?;
        (pads, value, axes)
    };
    if let Some(&p) = pads.iter().find(|&&p| p < 0) {
        return Err(format!("negative pad {p} (cropping) is not supported").into());
    }
    // The pads of the listed axes (all axes by default): begins, then ends.
    let axes = match axes {
        Some(axes) => axes
            .iter()
            .map(|&a| normalize_axis(a, rank))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!("{} pads for {} axes", pads.len(), axes.len()).into());
    }
    let mut full = vec![0usize; 2 * rank];
    for (k, &axis) in axes.iter().enumerate() {
        full[axis] = to_usize(pads[k], "a pad")?;
        full[axis + rank] = to_usize(pads[k + axes.len()], "a pad")?;
    }
    cx.add_node(node, Op::Pad { pads: full, value }, &[data])
}

/// ONNX Concat: folded when every part is a constant of one data kind (shape vectors).
pub fn concat(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let parts = operands(cx, node, node.inputs.len())?;
    let first = *parts.first().ok_or("nothing to concatenate")?;
    let axis = normalize_axis(
        node.attrs
            .int("axis")?
            .ok_or("attribute `axis` is missing")?,
        cx.shape(first).len(),
    )?;
    let consts: Option<Vec<&Tensor>> = parts.iter().map(|&b| cx.const_data(b)).collect();
    if let Some(consts) = consts {
        let same_kind = consts.iter().all(|t| t.as_f32().is_some())
            || consts.iter().all(|t| t.as_i64().is_some());
        if same_kind {
            let joined = shape_fold::concat(&consts, axis)?;
            let elems: Vec<_> = parts.iter().map(|&b| cx.elem(b)).collect();
            let elem = if elems.windows(2).all(|w| w[0] == w[1]) {
                elems[0].clone()
            } else {
                default_elem(&joined)
            };
            let out = node.output(0).ok_or("the result is unnamed")?;
            return Ok(cx.bind_const(out, joined, elem, None)?);
        }
    }
    cx.add_node(node, Op::Concat { axis }, &parts)
}

/// ONNX Identity: its result is its operand.
pub fn identity(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    let inputs = operands(cx, node, 1)?;
    let out = node.output(0).ok_or("the result is unnamed")?;
    Ok(cx.bind(out, inputs[0])?)
}

/// ONNX Dropout at inference: the identity. The mask result is not supported.
pub fn dropout(cx: &mut Importer, node: &OnnxNode) -> NodeResult {
    if node.output(1).is_some() {
        return Err("the mask result of Dropout is not supported".into());
    }
    let data = operand(cx, node, 0)?;
    if let Some(training) = optional_operand(cx, node, 2)?.and_then(|b| cx.const_data(b)) {
        if single_f32(training)? != 0.0 {
            return Err("training-mode Dropout is not supported".into());
        }
    }
    let out = node.output(0).ok_or("the result is unnamed")?;
    Ok(cx.bind(out, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_specs() {
        assert_eq!(
            resolve_reshape(&[1, 1, 28, 28], &[1, -1], false),
            Ok(vec![1, 784])
        );
        assert_eq!(
            resolve_reshape(&[2, 3, 4], &[0, -1], false),
            Ok(vec![2, 12])
        );
        assert_eq!(
            resolve_reshape(&[2, 3, 4], &[0, 0, 2, 2], false),
            Ok(vec![2, 3, 2, 2])
        );
        assert!(resolve_reshape(&[2, 3, 4], &[0, -1], true).is_err());
        assert!(resolve_reshape(&[2, 3], &[-1, -1], false).is_err());
        assert!(resolve_reshape(&[2, 3], &[4, -1], false).is_err());
        assert!(resolve_reshape(&[2, 3], &[7], false).is_err());
        assert!(resolve_reshape(&[2, 3], &[-2, 3], false).is_err());
        assert_eq!(resolve_reshape(&[0, 3], &[0, 3], true), Ok(vec![0, 3]));
    }
}
