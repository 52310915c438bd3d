//! `fold-input-quantizer-to-threshold`: a monotone chain of elementwise float ops from a float
//! value (a network's input, or a float layer's output) down to a low-bit quantizer becomes
//! one MultiThreshold on the float value, with thresholds found exactly.
//!
//! ```text
//! q = Quantizer(step_n(.. step_1(x)))   ==>   q = MultiThreshold(x, T) {out_scale, out_bias}
//! ```
//! QCDQ and Brevitas exports quantize a network's float input this way (`x * a - b`, then
//! QuantizeLinear, Clip and DequantizeLinear, or a QONNX Quant). Run as written, each element
//! takes a divide and a rounding per quantizer, then a conversion to bit planes; as
//! thresholds it takes a compare per level.
//!
//! # Exactness
//! The thresholds come from the interpreter itself: the chain's nodes are evaluated by
//! `bnnc_ir::interp::eval_typed` (what the interpreter runs) on candidate inputs, and each
//! threshold is the least float, in IEEE order, whose output exceeds the level below. Every
//! element is searched at once (its own candidates in its own place of one tensor), so
//! per-channel constants are exact too. No closed form is trusted.
//!
//! Precondition: every step is non-decreasing on every non-NaN float, proven from the op and
//! the signs of its constants (Mul and Div by finite positive constants, Add and Sub of
//! finite constants with the value first, Relu, Clip, QuantizeLinear, DequantizeLinear and
//! Quant with finite positive scales); IEEE rounding keeps order and these steps make no NaN
//! from a non-NaN. The search's answer is checked again on probe inputs (each threshold, the
//! float below it, both zeros and both ends) before the rewrite.
//!
//! Guarantee: the result verifies and computes the interpreter's outputs for every non-NaN
//! input, but for the sign of a zero output (the MultiThreshold gives +0 where a quantizer
//! may give -0; values compare equal, as [`crate::threshold`] documents). Chains whose
//! elements differ in their number of levels, whose levels are not evenly spaced in f32, or
//! with more than [`MAX_INPUT_LEVELS`] levels stay as they are (an 8-bit input layer is
//! quantized faster than counted).

use std::collections::HashMap;

use bnnc_ir::interp::eval_typed;
use bnnc_ir::{
    BinaryOp, ElemType, Graph, IrError, NodeId, Op, Tensor, TensorType, ThresholdAttrs, ValueId,
};

use crate::report::PassReport;

/// The most levels a folded chain may have (4-bit activations): beyond that, counting
/// thresholds costs more than quantizing.
pub const MAX_INPUT_LEVELS: usize = 16;

/// The most elements of one sample the pass checks its thresholds on (a 256x256 RGB image):
/// it runs the chain twice per level and four times more on a tensor of them. (The search
/// itself runs on one element per distinct combination of the chain's constants.)
const MAX_SEARCHED_ELEMENTS: usize = 3 * 256 * 256;

/// Folds every chain it can (see the module docs).
pub fn fold_input_quantizer_to_threshold(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    // Each value's readers as a first operand, where a chain from it may begin.
    let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for n in graph.node_ids() {
        if let Some(&x) = graph.node(n).inputs.first() {
            readers.entry(x).or_default().push(n);
        }
    }
    for start in chain_starts(graph) {
        for first in readers.remove(&start).unwrap_or_default() {
            // A rewrite removes only its chain's last node, never another chain's first;
            // checked all the same, as `graph.node` of a removed node would panic.
            if !graph.contains_node(first) {
                continue;
            }
            let (chain, ends) = chain_from(graph, start, first);
            // The longest chain that folds: a later step may spoil it (a per-channel
            // DequantizeLinear's levels, say) where the quantizer before it folds.
            let mut kept = None;
            for &len in ends.iter().rev() {
                let chain = &chain[..len];
                let last = chain[len - 1];
                match search(graph, start, chain) {
                    Ok(found) => {
                        let name = graph.node(last).name.clone();
                        rewrite(graph, start, last, found)?;
                        report.note(format!(
                            "folded `{name}` and the {} before it into thresholds on `{}`",
                            plural(len - 1, "step"),
                            graph.value(start).name
                        ));
                        kept = None;
                        break;
                    }
                    Err(reason) => {
                        let q = graph.value(graph.node(last).outputs[0]);
                        let note = format!(
                            "kept `{}` ({}) as a quantizer: {reason}",
                            graph.node(last).name,
                            q.ty.elem
                        );
                        kept.get_or_insert(note);
                    }
                }
            }
            if let Some(note) = kept {
                report.note(note);
            }
        }
    }
    if graph.remove_dead_nodes() > 0 {
        report.note("removed the nodes the thresholds replaced");
    }
    Ok(report)
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The f32 values a chain may start from: graph inputs and results of ops that are not
/// chain steps (a chain starts where the steps start, not halfway).
fn chain_starts(graph: &Graph) -> Vec<ValueId> {
    let mut starts: Vec<ValueId> = graph.inputs().to_vec();
    for n in graph.node_ids() {
        let node = graph.node(n);
        if step_operand(graph, n).is_none() {
            starts.extend(node.outputs.iter().copied());
        }
    }
    starts.retain(|&v| graph.value(v).ty.elem == ElemType::F32);
    starts
}

/// The longest run of steps from `first` (a step reading `start`), each later one the only
/// user of the value before it, and the lengths at which it ends in a low-bit quantizer (a
/// step whose result is an integer type), shortest first.
fn chain_from(graph: &Graph, start: ValueId, first: NodeId) -> (Vec<NodeId>, Vec<usize>) {
    let (mut chain, mut ends) = (Vec::new(), Vec::new());
    let (mut node, mut at) = (Some(first), start);
    while let Some(n) = node.filter(|&n| step_operand(graph, n) == Some(at)) {
        chain.push(n);
        at = graph.node(n).outputs[0];
        if graph.value(at).ty.elem.int_type().is_some() {
            ends.push(chain.len());
        }
        node = graph.only_user(at);
    }
    (chain, ends)
}

/// The operand a chain step transforms, if node `n` is a step: an elementwise op that is
/// non-decreasing on every non-NaN float, its other operands constants of the kind that
/// keeps it so (module docs).
fn step_operand(graph: &Graph, n: NodeId) -> Option<ValueId> {
    let node = graph.node(n);
    let konst = |i: usize| -> Option<Vec<f32>> {
        let v = *node.inputs.get(i)?;
        Some(graph.const_data(v)?.to_f32_vec())
    };
    let finite = |c: &[f32]| c.iter().all(|x| x.is_finite());
    let positive = |c: &[f32]| c.iter().all(|&x| x.is_finite() && x > 0.0);
    let ok = match &node.op {
        Op::Binary(BinaryOp::Mul | BinaryOp::Div) => konst(1).is_some_and(|c| positive(&c)),
        Op::Binary(BinaryOp::Add | BinaryOp::Sub) => konst(1).is_some_and(|c| finite(&c)),
        Op::Relu => true,
        Op::Clip { min, max } => min <= max,
        Op::QuantizeLinear { .. } | Op::DequantizeLinear { .. } => {
            konst(1).is_some_and(|s| positive(&s))
                && (node.inputs.len() < 3 || konst(2).is_some_and(|z| finite(&z)))
        }
        Op::Quant(_) => {
            konst(1).is_some_and(|s| positive(&s))
                && konst(2).is_some_and(|z| finite(&z))
                && konst(3).is_some()
        }
        _ => false,
    };
    // The chain's value is the first operand; each result has the value's shape (a
    // constant operand broadcasts into it, never the other way).
    let x = *node.inputs.first()?;
    let same_shape = graph.value(node.outputs[0]).ty.shape == graph.value(x).ty.shape;
    (ok && same_shape && graph.const_data(x).is_none()).then_some(x)
}

/// What the search found: thresholds `(rows, n)` for channel axis 1 (one row when every
/// element shares them), and the affine map from a count to the output.
struct Found {
    rows: usize,
    thresholds: Vec<f32>,
    out_scale: f32,
    out_bias: f32,
}

/// A float's place in IEEE order over the non-NaN floats (-0 just below +0).
fn key(x: f32) -> i64 {
    let magnitude = i64::from(x.to_bits() & 0x7fff_ffff);
    if x.is_sign_negative() {
        -magnitude - 1
    } else {
        magnitude
    }
}

/// The float at place `k` (inverse of [`key`]).
fn of_key(k: i64) -> f32 {
    if k < 0 {
        f32::from_bits((-k - 1) as u32 | 0x8000_0000)
    } else {
        f32::from_bits(k as u32)
    }
}

/// The chain's outputs for inputs `x` (one sample of `start`'s shape), as the interpreter
/// computes them node by node.
fn evaluate(
    graph: &Graph,
    chain: &[NodeId],
    shape: &[usize],
    x: Vec<f32>,
) -> Result<Vec<f32>, String> {
    let mut value = Tensor::f32(shape.to_vec(), x);
    for &n in chain {
        let node = graph.node(n);
        let mut operands: Vec<&Tensor> = vec![&value];
        for &v in &node.inputs[1..] {
            operands.push(
                graph
                    .const_data(v)
                    .ok_or("a step's operand is not constant")?,
            );
        }
        let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let out = &graph.value(node.outputs[0]).ty.shape;
        let result = eval_typed(&node.op, &operands, &types, Some(out))?;
        value = result.into_iter().next().ok_or("a step gave no result")?;
    }
    Ok(value.to_f32_vec())
}

/// Every element's thresholds, found by bisection on IEEE order (see the module docs).
fn search(graph: &Graph, start: ValueId, chain: &[NodeId]) -> Result<Found, String> {
    let shape = graph.value(start).ty.shape.clone();
    let numel: usize = shape.iter().product();
    let last = graph.node(*chain.last().expect("a chain has a node"));
    let out = graph.value(last.outputs[0]).ty.elem.int_type();
    if out.is_some_and(|t| t.max().saturating_sub(t.min()) >= MAX_INPUT_LEVELS as i64) {
        return Err(format!("it has more than {MAX_INPUT_LEVELS} levels"));
    }
    if shape.len() < 2 {
        return Err("its value has no channel axis".into());
    }
    if numel > MAX_SEARCHED_ELEMENTS {
        return Err(format!(
            "its value has more than {MAX_SEARCHED_ELEMENTS} elements to search"
        ));
    }
    // The search runs on one element per distinct combination of the chain's constants
    // (`reduced`); the check after it, on every element.
    let reduced = search_shape(graph, chain, &shape);
    let eval_all = |x: Vec<f32>| evaluate(graph, chain, &shape, x);
    let eval = |x: Vec<f32>| evaluate(graph, chain, &reduced, x);
    let numel_all = numel;
    let numel: usize = reduced.iter().product();
    // The domain's ends: the infinities if the chain takes them, else the finite extremes
    // (the interpreter then refuses infinite inputs itself).
    let (lo, hi) = match (
        eval(vec![f32::NEG_INFINITY; numel]),
        eval(vec![f32::INFINITY; numel]),
    ) {
        (Ok(_), Ok(_)) => (f32::NEG_INFINITY, f32::INFINITY),
        _ => (f32::MIN, f32::MAX),
    };
    let y_lo = eval(vec![lo; numel])?;
    let y_hi = eval(vec![hi; numel])?;
    if y_lo.iter().chain(&y_hi).any(|y| y.is_nan()) {
        return Err("the chain gives NaN at an end of the float range".into());
    }
    // Per element: the thresholds so far, the level reached, and the search's bounds.
    let mut thresholds: Vec<Vec<f32>> = vec![Vec::new(); numel];
    let mut level = y_lo.clone();
    let mut values: Vec<Vec<f32>> = y_lo.iter().map(|&y| vec![y]).collect();
    let mut below: Vec<i64> = vec![key(lo); numel];
    loop {
        let active: Vec<bool> = (0..numel).map(|e| level[e] < y_hi[e]).collect();
        if !active.contains(&true) {
            break;
        }
        if values.iter().any(|v| v.len() >= MAX_INPUT_LEVELS) {
            return Err(format!("it has more than {MAX_INPUT_LEVELS} levels"));
        }
        // Invariant per active element: output(below) <= level < output(above).
        let mut above: Vec<i64> = vec![key(hi); numel];
        loop {
            let mids: Vec<Option<i64>> = (0..numel)
                .map(|e| {
                    (active[e] && above[e] - below[e] > 1)
                        .then(|| below[e] + (above[e] - below[e]) / 2)
                })
                .collect();
            if mids.iter().all(Option::is_none) {
                break;
            }
            let x = mids.iter().map(|m| m.map_or(0.0, of_key)).collect();
            let y = eval(x)?;
            for e in 0..numel {
                if let Some(m) = mids[e] {
                    if y[e] > level[e] {
                        above[e] = m;
                    } else {
                        below[e] = m;
                    }
                }
            }
        }
        let x = (0..numel)
            .map(|e| if active[e] { of_key(above[e]) } else { 0.0 })
            .collect();
        let y = eval(x)?;
        for e in (0..numel).filter(|&e| active[e]) {
            thresholds[e].push(of_key(above[e]));
            values[e].push(y[e]);
            level[e] = y[e];
            below[e] = above[e];
        }
    }
    let n = thresholds[0].len();
    if n == 0 || thresholds.iter().any(|t| t.len() != n) {
        return Err(
            "it has one level only, or its elements differ in their number of levels".into(),
        );
    }
    // The outputs must be `out_scale * count + out_bias` in f32, as MultiThreshold gives them.
    let (out_bias, out_scale) = (values[0][0], values[0][1] - values[0][0]);
    let affine = values.iter().all(|v| {
        v.iter()
            .enumerate()
            .all(|(k, &y)| out_scale * k as f32 + out_bias == y)
    });
    if !affine {
        return Err("its levels are not evenly spaced in f32".into());
    }
    // Every element's thresholds: those of its place in the reduced shape.
    let thresholds: Vec<Vec<f32>> = (0..numel_all)
        .map(|e| thresholds[reduced_index(&shape, &reduced, e)].clone())
        .collect();
    let (rows, table) = per_channel_rows(&shape, &thresholds)
        .ok_or("its thresholds vary within a channel (axis 1)")?;
    let found = Found {
        rows,
        thresholds: table,
        out_scale,
        out_bias,
    };
    check(&found, &shape, &thresholds, &eval_all)?;
    Ok(found)
}

/// The smallest shape the chain's constants broadcast over: `shape`'s extent on every axis
/// along which some constant varies (right-aligned, as broadcasting aligns them; along
/// `axis` for QuantizeLinear's and DequantizeLinear's per-axis vectors), 1 elsewhere.
fn search_shape(graph: &Graph, chain: &[NodeId], shape: &[usize]) -> Vec<usize> {
    let rank = shape.len();
    let mut reduced = vec![1; rank];
    for &n in chain {
        let node = graph.node(n);
        let per_axis = match node.op {
            Op::QuantizeLinear { axis, .. } | Op::DequantizeLinear { axis } => Some(axis),
            _ => None,
        };
        for &v in &node.inputs[1..] {
            let c = &graph.value(v).ty.shape;
            match (per_axis, c.as_slice()) {
                (Some(axis), [k]) if *k > 1 && axis < rank => reduced[axis] = shape[axis],
                _ => {
                    for (i, &k) in c.iter().rev().enumerate() {
                        if k > 1 && i < rank {
                            reduced[rank - 1 - i] = shape[rank - 1 - i];
                        }
                    }
                }
            }
        }
    }
    reduced
}

/// The row-major index in `reduced` of element `e` of `shape` (its coordinates, 0 on the
/// axes `reduced` keeps at extent 1).
fn reduced_index(shape: &[usize], reduced: &[usize], mut e: usize) -> usize {
    let mut coords = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        coords[i] = e % shape[i];
        e /= shape[i];
    }
    coords
        .iter()
        .zip(reduced)
        .fold(0, |at, (&c, &r)| at * r + if r == 1 { 0 } else { c })
}

/// The thresholds as one row for all elements, or one row per channel of axis 1, if the
/// elements agree so.
fn per_channel_rows(shape: &[usize], thresholds: &[Vec<f32>]) -> Option<(usize, Vec<f32>)> {
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    if thresholds.iter().all(|t| same(t, &thresholds[0])) {
        return Some((1, thresholds[0].clone()));
    }
    let channels = *shape.get(1)?;
    let inner: usize = shape[2..].iter().product();
    let channel_of = |e: usize| (e / inner) % channels;
    let agree =
        (0..thresholds.len()).all(|e| same(&thresholds[e], &thresholds[channel_of(e) * inner]));
    agree.then(|| {
        let table = (0..channels)
            .flat_map(|c| thresholds[c * inner].clone())
            .collect();
        (channels, table)
    })
}

/// The MultiThreshold's outputs against the chain's on probes around every threshold.
fn check(
    found: &Found,
    shape: &[usize],
    thresholds: &[Vec<f32>],
    eval: &dyn Fn(Vec<f32>) -> Result<Vec<f32>, String>,
) -> Result<(), String> {
    let numel = thresholds.len();
    let n = thresholds[0].len();
    let mut probes: Vec<Vec<f32>> = vec![vec![0.0; numel], vec![-0.0; numel]];
    for ends in [f32::MIN, f32::MAX] {
        probes.push(vec![ends; numel]);
    }
    for k in 0..n {
        probes.push(thresholds.iter().map(|t| t[k]).collect());
        probes.push(thresholds.iter().map(|t| of_key(key(t[k]) - 1)).collect());
    }
    let inner: usize = shape.get(2..).map_or(1, |s| s.iter().product());
    for x in probes {
        let want = eval(x.clone())?;
        for e in 0..numel {
            let row = if found.rows == 1 {
                0
            } else {
                (e / inner) % found.rows
            };
            let t = &found.thresholds[row * n..(row + 1) * n];
            let count = t.iter().filter(|&&t| x[e] >= t).count();
            let got = found.out_scale * count as f32 + found.out_bias;
            if got != want[e] {
                return Err(format!(
                    "internal: the thresholds give {got} for {}, the chain {}",
                    x[e], want[e]
                ));
            }
        }
    }
    Ok(())
}

/// Puts `MultiThreshold(start, T)` in the place of the chain's last node.
fn rewrite(graph: &mut Graph, start: ValueId, last: NodeId, found: Found) -> Result<(), IrError> {
    let q = graph.node(last).outputs[0];
    let q_name = graph.value(q).name.clone();
    let n = found.thresholds.len() / found.rows;
    let table = graph.add_const(
        format!("{q_name}.thresholds"),
        None,
        Tensor::f32(vec![found.rows, n], found.thresholds),
    )?;
    let attrs = ThresholdAttrs {
        out_scale: found.out_scale,
        out_bias: found.out_bias,
        out_type: graph.value(q).ty.elem.clone(),
        channel_axis: 1,
    };
    let name = format!("{}.threshold", graph.node(last).name);
    let new = graph.add_node(
        name,
        Op::MultiThreshold(attrs),
        &[start, table],
        vec![format!("{q_name}.t")],
    )?[0];
    graph.replace_node(last, new)
}

#[cfg(test)]
mod tests {
    use super::{key, of_key, reduced_index};

    #[test]
    fn keys_follow_ieee_order_and_invert() {
        let floats = [
            f32::NEG_INFINITY,
            f32::MIN,
            -1.5,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        // Strictly rising along IEEE order (-0 just below +0), and neighbours are one apart.
        assert!(floats.windows(2).all(|p| key(p[0]) < key(p[1])));
        assert_eq!(key(-1e-45) + 1, key(-0.0));
        assert_eq!(key(-0.0) + 1, key(0.0));
        assert_eq!(key(0.0) + 1, key(1e-45));
        assert_eq!(key(f32::MAX) + 1, key(f32::INFINITY));
        for &x in &floats {
            assert_eq!(of_key(key(x)).to_bits(), x.to_bits());
        }
    }

    #[test]
    fn elements_map_to_their_place_in_the_reduced_shape() {
        // (1, 3, 2, 2) reduced to its channels.
        let (shape, reduced) = ([1, 3, 2, 2], [1, 3, 1, 1]);
        let got: Vec<usize> = (0..12)
            .map(|e| reduced_index(&shape, &reduced, e))
            .collect();
        assert_eq!(got, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        // (1, 2, 3) reduced to its last axis.
        let got: Vec<usize> = (0..6)
            .map(|e| reduced_index(&[1, 2, 3], &[1, 1, 3], e))
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        // Nothing varies: one element.
        assert_eq!(reduced_index(&[1, 5], &[1, 1], 4), 0);
    }
}
