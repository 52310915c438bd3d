//! `cleanup`: constant folding, removal of identities and dead nodes, merging of reshapes,
//! folding of transposes, biases split off layers of scaled integers.
//!
//! Every rewrite here is exact: a folded constant is what the interpreter would compute at run
//! time, `x * 1` and `x / 1` are `x` bit for bit, a reshape of a reshape is one reshape, so
//! is a transpose of a transpose one transpose (or a reshape when it moves only unit axes), and a
//! layer of scaled integers joins its bias to its scaled sum as an Add after it would, and an
//! integer matrix product sums the same products whichever order its rows of weights are in.
//! (`x + 0` is left alone: it turns -0 into +0.)

use bnnc_ir::interp::integer_first;
use bnnc_ir::{BinaryOp, ElemType, Graph, IrError, NodeId, Op, Scale, Tensor, TensorType, ValueId};

use crate::report::PassReport;
use crate::threshold::channel_shape;

/// Runs the cleanup rewrites until none applies.
pub fn cleanup(graph: &mut Graph) -> Result<PassReport, IrError> {
    let mut report = PassReport::default();
    loop {
        let before = report.changes.len();
        fold_constants(graph, &mut report)?;
        remove_identities(graph, &mut report)?;
        merge_reshapes(graph, &mut report)?;
        fold_transposes(graph, &mut report)?;
        crate::layout::cancel_transposes(graph, &mut report)?;
        fold_flattened_transposes_into_weights(graph, &mut report)?;
        split_biases(graph, &mut report)?;
        let dead = graph.remove_dead_nodes();
        if dead > 0 {
            report.note(format!("removed {dead} unused nodes"));
        }
        if report.changes.len() == before {
            return Ok(report);
        }
    }
}

/// Nodes whose operands are all constants become constants (weight quantizers become
/// quantized constants: `bipolar_quant(w)` is a `bipolar` tensor).
fn fold_constants(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let order = graph.topo_order()?;
    let mut folded = 0;
    for n in order {
        let node = graph.node(n).clone();
        let Some(operands) = node
            .inputs
            .iter()
            .map(|&v| graph.const_data(v).cloned())
            .collect::<Option<Vec<Tensor>>>()
        else {
            continue;
        };
        let refs: Vec<&Tensor> = operands.iter().collect();
        // With the operands' types, as the interpreter runs the node: scaled integers of a
        // linear op are summed integer-first, and the constant must hold that value.
        let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        let out0 = node
            .outputs
            .first()
            .map(|&v| graph.value(v).ty.shape.clone());
        let results = bnnc_ir::interp::eval_typed(&node.op, &refs, &types, out0.as_deref())
            .map_err(|reason| IrError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                reason,
            })?;
        for (&out, data) in node.outputs.iter().zip(results) {
            let value = graph.value(out).clone();
            let c = graph.add_const(value.name.clone(), Some(value.ty.elem.clone()), data)?;
            graph.replace_uses(out, c)?;
        }
        graph.remove_node(n);
        folded += 1;
    }
    if folded > 0 {
        report.note(format!("folded {folded} nodes of constants into constants"));
    }
    Ok(())
}

/// `x * 1`, `x / 1` and reshapes to the same shape are `x`.
fn remove_identities(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n);
        let x = node.inputs[0];
        let identity = match &node.op {
            Op::Binary(BinaryOp::Mul | BinaryOp::Div) => is_scalar_one(graph, node.inputs[1]),
            Op::Reshape { shape } => graph.value(x).ty.shape == *shape,
            _ => false,
        };
        let out = node.outputs[0];
        // The result keeps its type only when `x` has it (a Mul by 1 of an integer is f32).
        if identity && graph.value(x).ty == graph.value(out).ty {
            let name = node.name.clone();
            graph.replace_uses(out, x)?;
            graph.remove_node(n);
            report.note(format!("removed identity `{name}`"));
        }
    }
    Ok(())
}

fn is_scalar_one(graph: &Graph, v: ValueId) -> bool {
    graph
        .const_data(v)
        .is_some_and(|t| t.len() == 1 && t.to_f64_vec()[0] == 1.0)
}

/// `transpose(transpose(x))` is one transpose, and a transpose that moves only axes of extent
/// 1 keeps every element's place in memory: it is a reshape, free (and gone when the shape
/// does not change). Either replaces the node only when its result keeps its type.
fn fold_transposes(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        if !graph.contains_node(n) {
            continue;
        }
        let node = graph.node(n).clone();
        let Op::Transpose { perm } = &node.op else {
            continue;
        };
        let x = node.inputs[0];
        let inner = graph.producer(x).and_then(|p| match &graph.node(p).op {
            Op::Transpose { perm } => Some((graph.node(p).inputs[0], perm.clone())),
            _ => None,
        });
        let shape = &graph.value(x).ty.shape;
        let moved: Vec<usize> = perm.iter().copied().filter(|&a| shape[a] != 1).collect();
        let (op, operand, what) = match inner {
            // y[i] = x[inner[outer[i]]].
            Some((source, inner)) => (
                Op::Transpose {
                    perm: perm.iter().map(|&i| inner[i]).collect(),
                },
                source,
                "merged the transpose before it",
            ),
            None if moved.windows(2).all(|w| w[0] < w[1]) => (
                Op::Reshape {
                    shape: graph.value(node.outputs[0]).ty.shape.clone(),
                },
                x,
                "moves only axes of extent 1: now a reshape",
            ),
            None => continue,
        };
        let name = node.name.clone();
        let out = graph.add_node(name.clone(), op, &[operand], vec![format!("{name}.folded")])?[0];
        if graph.value(out).ty != graph.value(node.outputs[0]).ty {
            graph.remove_node(graph.producer(out).expect("a node result"));
            continue;
        }
        graph.replace_node(n, out)?;
        report.note(format!("`{name}` {what}"));
    }
    Ok(())
}

/// `matmul(reshape(transpose(x)), W)` is `matmul(reshape(x), W')`, W' holding W's rows in
/// `x`'s order, where the product sums integers (its result is typed as integers, so the order
/// of its terms cannot change it). Keras flattens images channels-last: QONNX's converter writes
/// a transpose to NHWC before every Flatten, which a stream of pixels (the dataflow plan) or a
/// kernel reading channels-first images would otherwise have to carry out at run time.
fn fold_flattened_transposes_into_weights(
    graph: &mut Graph,
    report: &mut PassReport,
) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n).clone();
        // The axis of W that the product sums over.
        let k_axis = match &node.op {
            Op::MatMul => 0,
            Op::Gemm(g) if !g.trans_a => usize::from(g.trans_b),
            _ => continue,
        };
        let (a, w) = (node.inputs[0], node.inputs[1]);
        // Up from the product's operand: pointwise steps (which commute with any order of
        // the elements), then the flatten, each the only user of what it reads.
        let mut at = (a, n);
        let reshape = loop {
            let Some(p) = graph
                .producer(at.0)
                .filter(|_| graph.only_user(at.0) == Some(at.1))
            else {
                break None;
            };
            match graph.node(p).op {
                Op::Reshape { .. } => break Some(p),
                _ if pointwise(graph, graph.node(p)) => at = (graph.node(p).inputs[0], p),
                _ => break None,
            }
        };
        let Some(reshape) = reshape else {
            continue;
        };
        let t = graph.node(reshape).inputs[0];
        let Some(transpose) = graph
            .producer(t)
            .filter(|_| graph.only_user(t) == Some(reshape))
        else {
            continue;
        };
        let Op::Transpose { perm } = &graph.node(transpose).op else {
            continue;
        };
        let x = graph.node(transpose).inputs[0];
        let [1, k] = graph.value(graph.node(reshape).outputs[0]).ty.shape[..] else {
            continue;
        };
        let Some(values) = graph.const_data(w).and_then(Tensor::as_f32) else {
            continue;
        };
        let values = values.to_vec();
        let w_ty = graph.value(w).ty.clone();
        let per_row_scale = matches!(&w_ty.elem, ElemType::Scaled(_, Scale::Channel { axis, .. }) if *axis == k_axis);
        if w_ty.shape.len() != 2
            || w_ty.shape[k_axis] != k
            || per_row_scale
            || graph.value(node.outputs[0]).ty.elem.int_type().is_none()
        {
            continue;
        }
        // source[i]: the flat index in x of the transposed tensor's element i.
        let iota = Tensor::i64(graph.value(x).ty.shape.clone(), (0..k as i64).collect());
        let op = Op::Transpose { perm: perm.clone() };
        let source = bnnc_ir::interp::eval(&op, &[&iota])
            .map_err(|reason| IrError::Node {
                node: graph.node(transpose).name.clone(),
                op: op.name(),
                reason,
            })?
            .remove(0)
            .to_i64_vec();
        let cols = w_ty.shape[1];
        let mut permuted = values.clone();
        for (i, &s) in source.iter().enumerate() {
            let s = s as usize;
            if k_axis == 0 {
                permuted[s * cols..(s + 1) * cols]
                    .copy_from_slice(&values[i * cols..(i + 1) * cols]);
            } else {
                for row in 0..w_ty.shape[0] {
                    permuted[row * cols + s] = values[row * cols + i];
                }
            }
        }
        let w_name = format!("{}.in_flatten_order", graph.value(w).name);
        let w2 = graph.add_const(
            w_name,
            Some(w_ty.elem.clone()),
            Tensor::f32(w_ty.shape.clone(), permuted),
        )?;
        // The flatten reads `x` as it lies (the same shape and type); the weights follow.
        graph.set_operand(reshape, 0, x);
        graph.set_operand(n, 1, w2);
        report.note(format!(
            "`{}`: the transpose `{}` before its flatten became the order of its weights' rows",
            node.name,
            graph.node(transpose).name
        ));
    }
    Ok(())
}

/// Whether `node` computes each element from the element of its first operand alone, its
/// other operands single constants: it commutes with any reordering of the elements.
fn pointwise(graph: &Graph, node: &bnnc_ir::Node) -> bool {
    let single = |v: &ValueId| graph.const_data(*v).is_some_and(|c| c.len() == 1);
    match node.op {
        Op::Binary(_) | Op::BipolarQuant | Op::Quant(_) => node.inputs[1..].iter().all(single),
        Op::Relu | Op::Sign => true,
        _ => false,
    }
}

/// `reshape(reshape(x))` is one reshape of `x`.
fn merge_reshapes(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n);
        let Op::Reshape { .. } = node.op else {
            continue;
        };
        let Some(producer) = graph.producer(node.inputs[0]) else {
            continue;
        };
        if !matches!(graph.node(producer).op, Op::Reshape { .. }) {
            continue;
        }
        let inner_input = graph.node(producer).inputs[0];
        let name = node.name.clone();
        graph.set_operand(n, 0, inner_input);
        report.note(format!("merged the reshape before `{name}` into it"));
    }
    Ok(())
}

/// Whether a layer whose sum is exact in f32 (integers times a power-of-two scale, as
/// QKeras' quantizers give) stays exact with its constant bias: every bias value is a multiple
/// of the sum's scale and every partial sum, bias included, stays within f32's exact integers.
/// The sum and bias are then the same bits in any order, so the bias can follow the sum.
fn exact_with_bias(graph: &Graph, op: &Op, inputs: &[ValueId]) -> bool {
    const F32_EXACT_LIMIT: f64 = 16_777_216.0; // 2^24
    let Some(bias) = graph.const_data(inputs[2]) else {
        return false;
    };
    let types: Vec<&TensorType> = inputs[..2].iter().map(|&v| &graph.value(v).ty).collect();
    let consts: Vec<_> = inputs[..2].iter().map(|&v| graph.const_data(v)).collect();
    let Ok(sum) = bnnc_ir::infer::infer_output_types(op, &types, &consts) else {
        return false;
    };
    let Some((int, scale)) = sum[0].elem.exact_scaled() else {
        return false;
    };
    let bound = (int.min() as f64).abs().max(int.max() as f64);
    bias.to_f32_vec().iter().all(|&b| {
        let units = f64::from(b) / f64::from(scale);
        units.fract() == 0.0 && units.abs() + bound <= F32_EXACT_LIMIT
    })
}

/// A Conv's constant bias, or a Gemm's C (alpha and beta 1), on a layer of scaled integers
/// becomes an Add after the layer: the interpreter joins it to the scaled sum in just that
/// way ([`bnnc_ir::interp::IntegerFirst`]), or, on power-of-two scales, exactly in any order
/// ([`exact_with_bias`]); the sum alone is an accumulator that thresholds fold.
fn split_biases(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        let node = graph.node(n).clone();
        let takes_bias = match &node.op {
            Op::Conv(_) => node.inputs.len() == 3,
            Op::Gemm(g) => node.inputs.len() == 3 && g.alpha == 1.0 && g.beta == 1.0,
            _ => false,
        };
        if !takes_bias {
            continue;
        }
        let out = node.outputs[0];
        let out_ty = graph.value(out).ty.clone();
        let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        if integer_first(&node.op, &types, &out_ty.shape).is_none()
            && !exact_with_bias(graph, &node.op, &node.inputs)
        {
            continue;
        }
        let mut bias = node.inputs[2];
        if let Op::Conv(_) = node.op {
            let Some(data) = graph.const_data(bias) else {
                continue;
            };
            let shape = channel_shape(data.len(), out_ty.shape.len());
            let values = data.to_f32_vec();
            let name = format!("{}.channels", graph.value(bias).name);
            bias = graph.add_const(name, None, Tensor::f32(shape, values))?;
        }
        let out_name = graph.value(out).name.clone();
        let sum = graph.add_node(
            node.name.clone(),
            node.op.clone(),
            &node.inputs[..2],
            vec![format!("{out_name}.sum")],
        )?[0];
        let biased = graph.add_node(
            format!("{}.bias", node.name),
            Op::Binary(BinaryOp::Add),
            &[sum, bias],
            vec![format!("{out_name}.biased")],
        )?[0];
        graph.replace_node(n, biased)?;
        report.note(format!(
            "split the bias off `{}` ({}): an add after its scaled sum",
            node.name,
            node.op.name()
        ));
    }
    Ok(())
}
