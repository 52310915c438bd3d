//! `bnnc inspect`: what a model computes, layer by layer.

use std::fmt::Write;

use bnnc_ir::{ElemType, Graph, NodeId, Op, ValueDef, ValueId};

/// One layer: a node that computes on the network's data.
struct Layer {
    node: String,
    op: &'static str,
    shape: Vec<usize>,
    inputs: Vec<ElemType>,
    weights: Option<ElemType>,
    outputs: Vec<ElemType>,
    macs: u64,
    weight_bits: u64,
}

impl Layer {
    /// A linear layer's arithmetic as `w<bits>a<bits>` (see
    /// [`bnnc_passes::precision::precision`]).
    fn precision(&self) -> Option<String> {
        let (w, a) = (self.weights.as_ref()?, self.inputs.first()?);
        Some(bnnc_passes::precision::precision(w, a))
    }
}

/// The layers in execution order. Nodes computed from constants only (weight quantizers)
/// are not layers: their results show as the weights of the layer that uses them.
fn layers(graph: &Graph) -> Vec<Layer> {
    let constant = constant_values(graph);
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    order
        .into_iter()
        .filter(|&n| !graph.node(n).outputs.iter().all(|v| constant[v.index()]))
        .map(|n| layer(graph, n, &constant))
        .collect()
}

/// The whole inspection as one JSON object: `model`, `inputs`, `ops` (a count per op kind,
/// named as in the IR text), `layers` and `totals`.
pub fn json_report(graph: &Graph) -> serde_json::Value {
    let layers = layers(graph);
    let ops: serde_json::Map<String, serde_json::Value> = bnnc_passes::manager::op_counts(graph)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    let types = |t: &[ElemType]| t.iter().map(|e| e.to_string()).collect::<Vec<_>>();
    let json_layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "node": l.node,
                "op": l.op,
                "output_shape": l.shape,
                "input_types": types(&l.inputs),
                "weight_type": l.weights.as_ref().map(|w| w.to_string()),
                "output_types": types(&l.outputs),
                "precision": l.precision(),
                "macs": l.macs,
                "weight_bits": l.weight_bits,
            })
        })
        .collect();
    let inputs: Vec<serde_json::Value> = graph
        .inputs()
        .iter()
        .map(|&v| serde_json::json!({"name": graph.value(v).name, "type": graph.value(v).ty.to_string()}))
        .collect();
    serde_json::json!({
        "model": graph.name,
        "inputs": inputs,
        "ops": ops,
        "layers": json_layers,
        "totals": {
            "layers": layers.len(),
            "macs": layers.iter().map(|l| l.macs).sum::<u64>(),
            "weight_bits": layers.iter().map(|l| l.weight_bits).sum::<u64>(),
        },
    })
}

/// The per-layer table with totals.
pub fn layer_table(graph: &Graph) -> String {
    let layers = layers(graph);
    let header = [
        "node",
        "op",
        "output shape",
        "input",
        "weights",
        "output",
        "precision",
        "MACs",
        "weight bits",
    ];
    let rows: Vec<[String; 9]> = layers
        .iter()
        .map(|l| {
            [
                l.node.clone(),
                l.op.to_string(),
                format!("{:?}", l.shape),
                join_types(&l.inputs),
                l.weights.as_ref().map_or("-".into(), ElemType::to_string),
                join_types(&l.outputs),
                l.precision().unwrap_or_else(|| "-".into()),
                count_or_dash(l.macs),
                count_or_dash(l.weight_bits),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let inputs: Vec<String> = graph
        .inputs()
        .iter()
        .map(|&v| format!("{}: {}", graph.value(v).name, graph.value(v).ty))
        .collect();
    let _ = writeln!(out, "model {} ({})", graph.name, inputs.join(", "));
    let mut line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Counts align right, text left.
            if i >= 7 {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    let bits: u64 = layers.iter().map(|l| l.weight_bits).sum();
    let _ = writeln!(
        out,
        "total: {} layers, {} MACs, {} weight bits ({:.1} KiB packed)",
        layers.len(),
        group_thousands(macs),
        group_thousands(bits),
        bits as f64 / 8.0 / 1024.0
    );
    out
}

/// Which values depend on constants only.
fn constant_values(graph: &Graph) -> Vec<bool> {
    let mut constant: Vec<bool> = graph
        .values()
        .map(|(_, d)| matches!(d.def, ValueDef::Const(_)))
        .collect();
    for n in graph.topo_order().unwrap_or_default() {
        let node = graph.node(n);
        let all = node.inputs.iter().all(|v| constant[v.index()]);
        for v in &node.outputs {
            constant[v.index()] = all;
        }
    }
    constant
}

fn layer(graph: &Graph, n: NodeId, constant: &[bool]) -> Layer {
    let node = graph.node(n);
    let ty = |v: ValueId| graph.value(v).ty.clone();
    let data: Vec<ValueId> = node
        .inputs
        .iter()
        .copied()
        .filter(|v| !constant[v.index()])
        .collect();
    // The weights of a linear layer are its constant second operand; a layer's other constant
    // operands (scales, thresholds, BatchNorm statistics) are parameters, not weights.
    let weight = if node.op.is_linear_layer() {
        node.inputs.get(1).copied().filter(|v| constant[v.index()])
    } else {
        None
    };
    let out = ty(node.outputs[0]);
    // A lowered XNOR layer's packed words hold one bipolar weight per bit of each filter's
    // reduction (the padding bits of a last word are not weights).
    let weights = weight.map(|w| match node.op {
        Op::XnorConv(_) | Op::XnorMatMul => {
            let filters = ty(w).shape.first().copied().unwrap_or(0);
            (ElemType::BIPOLAR, (filters * reduction(graph, n)) as u64)
        }
        _ => (ty(w).elem, ty(w).numel() as u64),
    });
    Layer {
        node: node.name.clone(),
        op: node.op.name(),
        shape: out.shape,
        inputs: data.iter().map(|&v| ty(v).elem).collect(),
        weights: weights.as_ref().map(|(elem, _)| elem.clone()),
        outputs: node.outputs.iter().map(|&v| ty(v).elem).collect(),
        macs: macs(graph, n),
        weight_bits: weights.map_or(0, |(elem, count)| count * u64::from(elem.bits())),
    }
}

/// The products each output of linear layer `n` sums.
fn reduction(graph: &Graph, n: NodeId) -> usize {
    let node = graph.node(n);
    let shape = |i: usize| graph.value(node.inputs[i]).ty.shape.clone();
    match &node.op {
        // x (N, C, ...), packed weights (M, K..., words): a group's C / group channels
        // times the taps.
        Op::XnorConv(attrs) => {
            let w = shape(1);
            let taps: usize = w[1..w.len().saturating_sub(1)].iter().product();
            shape(0).get(1).copied().unwrap_or(0) / attrs.group.max(1) * taps
        }
        Op::Conv(_) | Op::BitSerialConv { .. } => shape(1).iter().skip(1).product(),
        Op::Gemm(g) => {
            let a = shape(0);
            let k = if g.trans_a { a.first() } else { a.get(1) };
            k.copied().unwrap_or(0)
        }
        Op::MatMul | Op::XnorMatMul | Op::BitSerialMatMul { .. } => {
            shape(0).last().copied().unwrap_or(0)
        }
        _ => 0,
    }
}

fn join_types(types: &[ElemType]) -> String {
    let names: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// Binary multiply-accumulates of one run of the graph: those of its XNOR-popcount and
/// bit-serial layers ([`node_binary_macs`]).
pub fn binary_macs(graph: &Graph) -> u64 {
    graph.node_ids().map(|n| node_binary_macs(graph, n)).sum()
}

/// Binary multiply-accumulates of one run of node `n`: an XNOR-popcount layer's MACs, a
/// bit-serial layer's MACs times its plane pairs (each pair is one AND-popcount per bit),
/// 0 for anything else.
pub fn node_binary_macs(graph: &Graph, n: NodeId) -> u64 {
    let node = graph.node(n);
    match node.op {
        Op::XnorConv(_) | Op::XnorMatMul => macs(graph, n),
        Op::BitSerialConv { .. } | Op::BitSerialMatMul { .. } => {
            let planes = |v: bnnc_ir::ValueId| match graph.value(v).ty.elem.int_type() {
                Some(bnnc_ir::IntType::Bipolar) => 1,
                Some(t) => t.planes().map_or(0, |(p, _)| p as u64),
                None => 0,
            };
            macs(graph, n) * planes(node.inputs[0]) * planes(node.inputs[1])
        }
        _ => 0,
    }
}

/// Multiply-accumulates of one run of a linear layer.
fn macs(graph: &Graph, n: NodeId) -> u64 {
    let out_numel = graph.value(graph.node(n).outputs[0]).ty.numel() as u64;
    out_numel * reduction(graph, n) as u64
}

fn count_or_dash(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        group_thousands(n)
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('_');
        }
        out.push(c);
    }
    out
}

/// `bnnc inspect --target CPU`: the native schedule, one step per line, with its kernel and
/// the storage and place of each operand and result.
pub fn storage_plan_table(plan: &bnnc_cranelift::StoragePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<44} {:<46} operands -> results", "step", "kernel");
    for step in &plan.steps {
        let _ = writeln!(
            out,
            "{:<44} {:<46} {} -> {}",
            step.label,
            step.kernel,
            step.operands.join(", "),
            step.results.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "{} steps, {} KiB of scratch per call",
        plan.steps.len(),
        plan.scratch_bytes.div_ceil(1024)
    );
    out
}

/// The storage plan as one JSON object: `steps` (`step`, `kernel`, `operands`, `results`)
/// and `scratch_bytes`.
pub fn storage_plan_json(plan: &bnnc_cranelift::StoragePlan) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = plan
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "step": s.label,
                "kernel": s.kernel,
                "operands": s.operands,
                "results": s.results,
            })
        })
        .collect();
    serde_json::json!({ "steps": steps, "scratch_bytes": plan.scratch_bytes })
}
