//! Which convolutions run on `i16` lanes: the 8-bit first layer of a binary network, its
//! integers small enough that `i16` sums are exact. The schedule decides on it (a fused
//! threshold only where this kernel runs it) and the kernels read the same decision, so it
//! lives below both.

use bnnc_ir::{ConvAttrs, ElemType, Graph, Node};

/// Integers and a power-of-two scale: `(bits, scale)` of an `iN` or `iN*2^e` type.
pub(crate) fn int_pow2(elem: &ElemType) -> Option<(u8, f32)> {
    elem.exact_scaled().map(|(t, s)| (t.bits(), s))
}

/// The weights of a Conv as integers of its weight type's scale, if they are small.
pub(crate) fn int16_weights(graph: &Graph, node: &Node) -> Option<Vec<i16>> {
    let w = node.inputs.get(1)?;
    let (_, scale) = int_pow2(&graph.value(*w).ty.elem)?;
    small_integers(&graph.const_data(*w)?.to_f32_vec(), scale)
}

/// `data / scale` as integers of at most 7 bits, if every one is.
pub(crate) fn small_integers(data: &[f32], scale: f32) -> Option<Vec<i16>> {
    data.iter()
        .map(|&v| {
            let q = v / scale;
            (q.fract() == 0.0 && q.abs() <= 127.0).then_some(q as i16)
        })
        .collect()
}

/// Whether the `i16` kernel computes this Conv: integer input and weights with
/// power-of-two scales, a sum that fits 15 bits (so bounds clamped to i16 stay beyond it),
/// no bias, no padding, one group.
pub(crate) fn int16_applies(graph: &Graph, node: &Node, attrs: &ConvAttrs) -> bool {
    let ty = |i: usize| node.inputs.get(i).map(|&v| &graph.value(v).ty);
    let (Some(x), Some(out)) = (ty(0), Some(&graph.value(node.outputs[0]).ty)) else {
        return false;
    };
    let input_small = int_pow2(&x.elem).is_some_and(|(bits, _)| bits <= 15);
    let out_small = int_pow2(&out.elem).is_some_and(|(bits, _)| bits <= 15);
    input_small
        && out_small
        && node.inputs.len() == 2
        && attrs.group == 1
        && x.shape.len() == 4
        && attrs.pads.iter().all(|&p| p == 0)
        && int16_weights(graph, node).is_some()
}
