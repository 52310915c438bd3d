//! Transposes across elementwise regions: a connected region of elementwise nodes and
//! transposes computes the same values in any one axis order, so it runs in the order that
//! needs the fewest transposes at its edges.
//!
//! tf2onnx writes a Keras model's NHWC ops between NCHW convolutions with a transpose on
//! either side of each, and QKeras' quantizers are graphs of many such ops: a single
//! quantized ReLU held ten transposes of its 800 values. FINN's NHWC thresholds between NCHW
//! layers are the same pattern, once.
//!
//! Exact: a transpose only moves elements, an elementwise node computes each element from
//! the elements at the same place in its operands, and a constant operand is transposed with
//! them; a threshold's or a linear quantizer's axis follows its axis.

use std::collections::{HashMap, HashSet, VecDeque};

use bnnc_ir::{interp, ElemType, Graph, IrError, NodeId, Op, ThresholdAttrs, ValueId};

use crate::report::PassReport;

/// An axis order: `order[i]` is the axis of the region's own order that a value holds as
/// its axis `i`. A transpose by `perm` of a value in `order` holds `then(order, perm)`.
type Order = Vec<usize>;

/// The order a value of order `a` is in after `transpose(perm)`: its axis `i` is `a[perm[i]]`.
fn then(a: &[usize], perm: &[usize]) -> Order {
    perm.iter().map(|&p| a[p]).collect()
}

fn inverse(p: &[usize]) -> Order {
    let mut inv = vec![0; p.len()];
    for (i, &x) in p.iter().enumerate() {
        inv[x] = i;
    }
    inv
}

/// The transpose taking a value in order `from` to order `to`.
fn moving(from: &[usize], to: &[usize]) -> Order {
    then(&inverse(from), to)
}

fn is_identity(p: &[usize]) -> bool {
    p.iter().enumerate().all(|(i, &x)| i == x)
}

/// How a node takes part in a region.
enum Role {
    Transpose(Order),
    /// An elementwise node: `runtime` are its operands computed at run time (each of its
    /// result's shape); constant operands broadcast against them (`broadcast`), or are
    /// indexed along an axis attribute (thresholds, QuantizeLinear's parameters).
    Elementwise {
        runtime: Vec<usize>,
        broadcast: bool,
    },
}

fn role(graph: &Graph, n: NodeId) -> Option<Role> {
    let node = graph.node(n);
    if let Op::Transpose { perm } = &node.op {
        return Some(Role::Transpose(perm.clone()));
    }
    if node.outputs.len() != 1 {
        return None;
    }
    let shape = &graph.value(node.outputs[0]).ty.shape;
    let (any_operand_runtime, broadcast) = match node.op {
        Op::Binary(_) | Op::Compare(_) => (true, true),
        Op::Relu | Op::Sign | Op::Abs | Op::Round | Op::Clip { .. } => (false, true),
        Op::BipolarQuant | Op::Quant(_) | Op::Trunc(_) => (false, true),
        Op::MultiThreshold(_)
        | Op::Threshold(_)
        | Op::QuantizeLinear { .. }
        | Op::DequantizeLinear { .. } => (false, false),
        _ => return None,
    };
    let mut runtime = Vec::new();
    for (i, &v) in node.inputs.iter().enumerate() {
        match graph.const_data(v) {
            Some(c) if broadcast && c.shape().len() > shape.len() => return None,
            Some(_) => {}
            None if (i == 0 || any_operand_runtime) && graph.value(v).ty.shape == *shape => {
                runtime.push(i)
            }
            None => return None,
        }
    }
    (!runtime.is_empty()).then_some(Role::Elementwise { runtime, broadcast })
}

/// A connected region: its nodes in topological order (and as a set), and every value's
/// order.
struct Region {
    nodes: Vec<NodeId>,
    inside: HashSet<NodeId>,
    order: HashMap<ValueId, Order>,
}

/// The region around `seed`, or `None` if its values' orders disagree (a transpose on one
/// path between two values and not on another).
fn region(
    graph: &Graph,
    seed: NodeId,
    roles: &HashMap<NodeId, Role>,
    users: &HashMap<ValueId, Vec<NodeId>>,
    position: &HashMap<NodeId, usize>,
    seen: &mut HashSet<NodeId>,
) -> Option<Region> {
    let rank = graph.value(graph.node(seed).outputs[0]).ty.shape.len();
    let mut order: HashMap<ValueId, Order> = HashMap::new();
    let mut consistent = true;
    let mut nodes = Vec::new();
    let mut queue = VecDeque::from([seed]);
    seen.insert(seed);
    order.insert(graph.node(seed).outputs[0], (0..rank).collect());
    while let Some(n) = queue.pop_front() {
        nodes.push(n);
        let node = graph.node(n);
        let out = node.outputs[0];
        let mut values = vec![out];
        // Orders flow both ways; a node is settled once its output has an order.
        let known = |order: &HashMap<ValueId, Order>, v: ValueId| order.get(&v).cloned();
        match &roles[&n] {
            Role::Transpose(perm) => {
                let x = node.inputs[0];
                values.push(x);
                match (known(&order, x), known(&order, out)) {
                    (Some(a), Some(b)) => consistent &= then(&a, perm) == b,
                    (Some(a), None) => {
                        order.insert(out, then(&a, perm));
                    }
                    (None, Some(b)) => {
                        order.insert(x, then(&b, &inverse(perm)));
                    }
                    (None, None) => unreachable!("a region node is reached through a value"),
                }
            }
            Role::Elementwise { runtime, .. } => {
                let a = runtime
                    .iter()
                    .map(|&i| node.inputs[i])
                    .chain([out])
                    .find_map(|v| known(&order, v))
                    .expect("a region node is reached through a value");
                for v in runtime.iter().map(|&i| node.inputs[i]).chain([out]) {
                    values.push(v);
                    match order.get(&v) {
                        Some(b) => consistent &= *b == a,
                        None => {
                            order.insert(v, a.clone());
                        }
                    }
                }
            }
        }
        for v in values {
            let producer = graph.producer(v);
            for m in producer
                .into_iter()
                .chain(users.get(&v).into_iter().flatten().copied())
            {
                if roles.contains_key(&m) && seen.insert(m) {
                    queue.push_back(m);
                }
            }
        }
    }
    if !consistent {
        return None;
    }
    nodes.sort_by_key(|n| position[n]);
    let inside = nodes.iter().copied().collect();
    Some(Region {
        nodes,
        inside,
        order,
    })
}

/// Runs every region whose edges need fewer transposed elements in another order (or as
/// many, all after the region instead of before or inside it) in that order.
pub(crate) fn cancel_transposes(graph: &mut Graph, report: &mut PassReport) -> Result<(), IrError> {
    let mut roles = HashMap::new();
    let mut users: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
    for n in graph.node_ids() {
        for &v in &graph.node(n).inputs {
            users.entry(v).or_default().push(n);
        }
        if let Some(r) = role(graph, n) {
            roles.insert(n, r);
        }
    }
    // Regions are disjoint: rebuilding one leaves the others' nodes, and this order of
    // them, as they were. They are rebuilt in it, so that the IR comes out the same on
    // every run.
    let order = graph.topo_order()?;
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let seeds: Vec<NodeId> = order
        .into_iter()
        .filter(|n| matches!(roles.get(n), Some(Role::Transpose(_))))
        .collect();
    let mut seen = HashSet::new();
    for seed in seeds {
        if seen.contains(&seed) {
            continue;
        }
        let Some(region) = region(graph, seed, &roles, &users, &position, &mut seen) else {
            continue;
        };
        relayout(graph, &region, &roles, &users, report)?;
    }
    Ok(())
}

/// The region's edges: values it reads that it does not compute, and values it computes that
/// others read (or the graph returns).
fn edges(
    graph: &Graph,
    region: &Region,
    users: &HashMap<ValueId, Vec<NodeId>>,
) -> (Vec<ValueId>, Vec<ValueId>) {
    let inside = &region.inside;
    let mut reads = Vec::new();
    let mut results = Vec::new();
    for &n in &region.nodes {
        let node = graph.node(n);
        for &v in &node.inputs {
            let computed_here = graph.producer(v).is_some_and(|p| inside.contains(&p));
            if region.order.contains_key(&v) && !computed_here && !reads.contains(&v) {
                reads.push(v);
            }
        }
        let out = node.outputs[0];
        let read_outside = users
            .get(&out)
            .is_some_and(|us| us.iter().any(|u| !inside.contains(u)));
        if read_outside || graph.outputs().contains(&out) {
            results.push(out);
        }
    }
    (reads, results)
}

fn relayout(
    graph: &mut Graph,
    region: &Region,
    roles: &HashMap<NodeId, Role>,
    users: &HashMap<ValueId, Vec<NodeId>>,
    report: &mut PassReport,
) -> Result<(), IrError> {
    let (reads, results) = edges(graph, region, users);
    let numel = |v: &ValueId| graph.value(*v).ty.numel();
    // (transposed elements, of which before or inside the region): now, and in each order
    // one of its edges holds.
    let inside = &region.inside;
    let now = region
        .nodes
        .iter()
        .filter(|n| matches!(roles[n], Role::Transpose(_)))
        .fold((0, 0), |(all, early), &n| {
            let out = graph.node(n).outputs[0];
            let last = !users
                .get(&out)
                .is_some_and(|us| us.iter().any(|u| inside.contains(u)));
            let e = numel(&out);
            (all + e, early + if last { 0 } else { e })
        });
    let cost = |frame: &Order| {
        let before: usize = reads
            .iter()
            .filter(|v| region.order[v] != *frame)
            .map(numel)
            .sum();
        let after: usize = results
            .iter()
            .filter(|v| region.order[v] != *frame)
            .map(numel)
            .sum();
        (before + after, before)
    };
    let Some((frame, best)) = reads
        .iter()
        .chain(&results)
        .map(|v| region.order[v].clone())
        .map(|f| {
            let c = cost(&f);
            (f, c)
        })
        .min_by_key(|(_, c)| *c)
    else {
        return Ok(());
    };
    if best >= now {
        return Ok(());
    }
    let mut added: Vec<NodeId> = Vec::new();
    // A region that cannot be rebuilt (a node whose type would change) stays as it is: this
    // is an optimization, and the nodes it added go.
    match rebuild(graph, region, roles, &reads, &results, &frame, &mut added) {
        Ok(Some(replacements)) => {
            for (old, new) in replacements {
                let name = graph.value(old).name.clone();
                graph.replace_uses(old, new)?;
                graph.rename_value(new, name);
            }
            let name = &graph.node(region.nodes[0]).name;
            report.note(format!(
                "`{name}`: {} elementwise nodes and transposes run in one axis order, transposing {} elements instead of {}",
                region.nodes.len(),
                best.0,
                now.0
            ));
        }
        Ok(None) | Err(_) => {
            for n in added {
                graph.remove_node(n);
            }
        }
    }
    Ok(())
}

/// Adds the region's nodes computing in order `frame`, with the transposes its edges need;
/// returns each result's replacement, or `None` (the added nodes listed in `added`) if a
/// replacement's type would differ.
fn rebuild(
    graph: &mut Graph,
    region: &Region,
    roles: &HashMap<NodeId, Role>,
    reads: &[ValueId],
    results: &[ValueId],
    frame: &[usize],
    added: &mut Vec<NodeId>,
) -> Result<Option<Vec<(ValueId, ValueId)>>, IrError> {
    let mut in_frame: HashMap<ValueId, ValueId> = HashMap::new();
    let transpose = |graph: &mut Graph, v: ValueId, perm: Order, added: &mut Vec<NodeId>| {
        if is_identity(&perm) {
            return Ok(v);
        }
        let name = graph.value(v).name.clone();
        let t = graph.add_node(
            format!("{name}.transposed"),
            Op::Transpose { perm },
            &[v],
            vec![format!("{name}.transposed")],
        )?[0];
        added.extend(graph.producer(t));
        Ok::<_, IrError>(t)
    };
    for &v in reads {
        let t = transpose(graph, v, moving(&region.order[&v], frame), added)?;
        in_frame.insert(v, t);
    }
    for &n in &region.nodes {
        let node = graph.node(n).clone();
        let out = node.outputs[0];
        let Role::Elementwise { runtime, broadcast } = &roles[&n] else {
            in_frame.insert(out, in_frame[&node.inputs[0]]);
            continue;
        };
        let to_frame = moving(&region.order[&out], frame);
        let rank = to_frame.len();
        let mut inputs = Vec::with_capacity(node.inputs.len());
        for (i, &v) in node.inputs.iter().enumerate() {
            if runtime.contains(&i) {
                inputs.push(in_frame[&v]);
                continue;
            }
            let c = graph
                .const_data(v)
                .expect("a region node's other operands are constants");
            if !broadcast || c.len() == 1 {
                inputs.push(v);
                continue;
            }
            // A broadcast constant of lower rank gains leading unit axes, then moves with
            // the runtime operands.
            let mut shape = vec![1; rank - c.shape().len()];
            shape.extend_from_slice(c.shape());
            let plain = matches!(graph.value(v).ty.elem, ElemType::F32 | ElemType::I64);
            let moved = c.clone().reshaped(shape).filter(|_| plain).and_then(|c| {
                interp::eval(
                    &Op::Transpose {
                        perm: to_frame.clone(),
                    },
                    &[&c],
                )
                .ok()
            });
            let Some([k]) = moved.as_deref() else {
                return Ok(None);
            };
            let name = format!("{}.transposed", graph.value(v).name);
            inputs.push(graph.add_const(name, None, k.clone())?);
        }
        // An axis attribute names an axis of the first operand, which moves.
        let axis = |a: usize| inverse(&to_frame)[a];
        let op = match node.op.clone() {
            Op::MultiThreshold(t) => Op::MultiThreshold(ThresholdAttrs {
                channel_axis: axis(t.channel_axis),
                ..t
            }),
            Op::Threshold(t) => Op::Threshold(ThresholdAttrs {
                channel_axis: axis(t.channel_axis),
                ..t
            }),
            Op::QuantizeLinear { axis: a, out } => Op::QuantizeLinear { axis: axis(a), out },
            Op::DequantizeLinear { axis: a } => Op::DequantizeLinear { axis: axis(a) },
            op => op,
        };
        let name = graph.value(out).name.clone();
        let y = graph.add_node(
            node.name.clone(),
            op,
            &inputs,
            vec![format!("{name}.moved")],
        )?[0];
        added.extend(graph.producer(y));
        in_frame.insert(out, y);
    }
    let mut replacements = Vec::with_capacity(results.len());
    for &v in results {
        let back = moving(frame, &region.order[&v]);
        let r = transpose(graph, in_frame[&v], back, added)?;
        if graph.value(r).ty != graph.value(v).ty {
            return Ok(None);
        }
        replacements.push((v, r));
    }
    Ok(Some(replacements))
}
