//! The IR's text form: one value or op per line, types inline, large constants summarized.
//!
//! ```text
//! graph tfc (%global_in: f32[1,1,28,28]) {
//!   %w: f32[64,784] = const [0.0123, -0.0456, 0.0789, 0.0012, .. 50176 values, fnv 9c1e..]
//!   %wq: bipolar[64,784] = bipolar_quant %w, %s                     ; BipolarQuant_0
//!   %acc: i11[1,64] = gemm %x, %wq {alpha=1.0, beta=1.0, trans_b}    ; Gemm_0
//!   return %logits
//! }
//! ```
//! Snapshot tests compare this text, so it is deterministic: constants in value order, nodes
//! in the topological order `Graph::topo_order` gives, floats in Rust's shortest round-trip form.
//!
//! [`print_graph_full`] writes every constant and per-channel scale in full, so that
//! [`parse_graph`] reads the graph back: `print_graph(&parse_graph(&print_graph_full(g))?)`
//! is `print_graph(g)`. Filetests (`tests/filetests/`) are written in this form.

mod parse;

use std::fmt::{self, Write};

use crate::graph::{Graph, ValueDef, ValueId};
use crate::op::Op;
use crate::tensor::{Tensor, TensorData};
use crate::types::{ElemType, Scale, TensorType};

pub use parse::{parse_graph, ParseError};

/// How much of the graph's data the text holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Large constants summarized (a preview, the count and a hash) and per-channel scales as
    /// their count: short enough to read and to snapshot.
    #[default]
    Summary,
    /// Every constant element and per-channel scale written out, and node names quoted where a
    /// line could not hold them as they are: the form [`parse_graph`] reads back.
    Full,
}

/// Constants with at most this many elements are printed in full.
const FULL_CONST_LEN: usize = 8;
/// Leading elements shown of a larger constant.
const CONST_PREVIEW_LEN: usize = 4;

/// Prints the whole graph.
pub fn print_graph(graph: &Graph) -> String {
    let mut out = String::new();
    write_graph(&mut out, graph).expect("writing to a String cannot fail");
    out
}

/// Prints the whole graph with every constant in full, for [`parse_graph`].
pub fn print_graph_full(graph: &Graph) -> String {
    let mut out = String::new();
    write_graph_with(&mut out, graph, Detail::Full).expect("writing to a String cannot fail");
    out
}

/// Writes the whole graph to `out`, constants summarized.
pub fn write_graph(out: &mut impl Write, graph: &Graph) -> fmt::Result {
    write_graph_with(out, graph, Detail::Summary)
}

/// Writes the whole graph to `out` with the given detail.
pub fn write_graph_with(out: &mut impl Write, graph: &Graph, detail: Detail) -> fmt::Result {
    let ty = |v: ValueId| TypeText(&graph.value(v).ty, detail);
    write!(out, "graph {} (", name_token(&graph.name))?;
    for (i, &v) in graph.inputs().iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write!(out, "{}: {}", value_token(graph, v), ty(v))?;
    }
    out.write_str(") {\n")?;
    // Constants no node uses any more (after a pass folded their users away) are not shown.
    let mut used = vec![false; graph.num_values()];
    for n in graph.node_ids() {
        for v in &graph.node(n).inputs {
            used[v.index()] = true;
        }
    }
    for v in graph.outputs() {
        used[v.index()] = true;
    }
    for (v, data) in graph.values().filter(|(v, _)| used[v.index()]) {
        if let ValueDef::Const(t) = &data.def {
            writeln!(
                out,
                "  {}: {} = const {}",
                value_token(graph, v),
                ty(v),
                ConstText(t, detail)
            )?;
        }
    }
    // A graph with a cycle still prints (in insertion order), so the verifier's error can be
    // shown next to the text that caused it.
    let order = graph
        .topo_order()
        .unwrap_or_else(|_| graph.node_ids().collect());
    for n in order {
        let node = graph.node(n);
        out.write_str("  ")?;
        for (i, &r) in node.outputs.iter().enumerate() {
            if i > 0 {
                out.write_str(", ")?;
            }
            write!(out, "{}: {}", value_token(graph, r), ty(r))?;
        }
        out.write_str(if node.fused { " = fused " } else { " = " })?;
        out.write_str(node.op.name())?;
        for (i, &a) in node.inputs.iter().enumerate() {
            out.write_str(if i == 0 { " " } else { ", " })?;
            out.write_str(&value_token(graph, a))?;
        }
        let attrs = op_attrs(&node.op, detail);
        if !attrs.is_empty() {
            write!(out, " {{{}}}", attrs.join(", "))?;
        }
        writeln!(out, "  ; {}", node_name_text(&node.name, detail))?;
    }
    out.write_str("  return")?;
    for (i, &v) in graph.outputs().iter().enumerate() {
        out.write_str(if i == 0 { " " } else { ", " })?;
        out.write_str(&value_token(graph, v))?;
    }
    out.write_str("\n}\n")
}

/// `%name`, quoted when the name has characters other than letters, digits, `_` and `.`.
fn value_token(graph: &Graph, v: ValueId) -> String {
    format!("%{}", name_token(&graph.value(v).name))
}

/// A node's name runs to the end of its line. In full detail a name the parser could not take
/// back as it is (a line break, surrounding spaces, a leading quote) is quoted instead.
fn node_name_text(name: &str, detail: Detail) -> String {
    let awkward =
        name.starts_with('"') || name.trim() != name || name.chars().any(|c| c.is_control());
    if detail == Detail::Full && awkward {
        format!("{name:?}")
    } else {
        name.to_string()
    }
}

fn name_token(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if plain {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The attributes of an op, as `key=value` (or a bare `key` for a true flag).
fn op_attrs(op: &Op, detail: Detail) -> Vec<String> {
    match op {
        Op::Quant(q) => [
            flag(q.signed, "signed"),
            flag(q.narrow, "narrow"),
            Some(format!("rounding={}", q.rounding.name())),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::Trunc(t) => [
            Some(format!("rounding={}", t.rounding.name())),
            flag(t.signed, "signed"),
            flag(t.narrow, "narrow"),
            flag(t.v2, "v2"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::MultiThreshold(t) | Op::Threshold(t) => vec![
            format!("out={}", ElemText(&t.out_type, detail)),
            format!("out_scale={:?}", t.out_scale),
            format!("out_bias={:?}", t.out_bias),
            format!("channel_axis={}", t.channel_axis),
        ],
        Op::QuantizeLinear { axis, out } => vec![format!("axis={axis}"), format!("out={out}")],
        Op::DequantizeLinear { axis } => vec![format!("axis={axis}")],
        Op::Clip { min, max } => vec![format!("min={min:?}"), format!("max={max:?}")],
        Op::Conv(c) | Op::XnorConv(c) => vec![
            format!("kernel={}", list(&c.kernel)),
            format!("strides={}", list(&c.strides)),
            format!("pads={}", list(&c.pads)),
            format!("dilations={}", list(&c.dilations)),
            format!("group={}", c.group),
        ],
        Op::Gemm(g) => [
            Some(format!("alpha={:?}", g.alpha)),
            Some(format!("beta={:?}", g.beta)),
            flag(g.trans_a, "trans_a"),
            flag(g.trans_b, "trans_b"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::BatchNorm { epsilon } => vec![format!("epsilon={epsilon:?}")],
        Op::MaxPool(p) | Op::AveragePool(p) => {
            let mut v = pool_attrs(p);
            if matches!(op, Op::AveragePool(_)) {
                v.extend(flag(p.count_include_pad, "count_include_pad"));
            }
            v
        }
        Op::ReduceMean { axes, keep_dims } => [
            Some(format!("axes={}", list(axes))),
            flag(*keep_dims, "keep_dims"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::Reshape { shape } => vec![format!("shape={}", list(shape))],
        Op::Transpose { perm } => vec![format!("perm={}", list(perm))],
        Op::Pad { pads, value } => vec![format!("pads={}", list(pads)), format!("value={value:?}")],
        Op::Concat { axis } => vec![format!("axis={axis}")],
        Op::BitSerialMatMul { a_scale } => vec![format!("a_scale={a_scale:?}")],
        Op::BitSerialConv { attrs: c, a_scale } => [
            Some(format!("kernel={}", list(&c.kernel))),
            Some(format!("strides={}", list(&c.strides))),
            Some(format!("pads={}", list(&c.pads))),
            Some(format!("dilations={}", list(&c.dilations))),
            // One group (the usual case) is not written, as before groups were lowered.
            (c.group != 1).then(|| format!("group={}", c.group)),
            Some(format!("a_scale={a_scale:?}")),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::MinMaxPool { attrs: p, min } => {
            let mut v = pool_attrs(p);
            let channels: Vec<usize> = (0..min.len()).filter(|&c| min[c]).collect();
            v.push(format!("min_channels={}", list(&channels)));
            v
        }
        Op::Softmax { axis, coerce_2d } => {
            [Some(format!("axis={axis}")), flag(*coerce_2d, "coerce_2d")]
                .into_iter()
                .flatten()
                .collect()
        }
        Op::TopK {
            k,
            axis,
            largest,
            sorted,
        } => [
            Some(format!("k={k}")),
            Some(format!("axis={axis}")),
            flag(*largest, "largest"),
            flag(*sorted, "sorted"),
        ]
        .into_iter()
        .flatten()
        .collect(),
        Op::BipolarQuant
        | Op::MatMul
        | Op::GlobalAveragePool
        | Op::Binary(_)
        | Op::Relu
        | Op::Sign
        | Op::Abs
        | Op::Round
        | Op::Compare(_)
        | Op::XnorMatMul => Vec::new(),
    }
}

/// A bare `name` for a true flag.
fn flag(on: bool, name: &str) -> Option<String> {
    on.then(|| name.to_string())
}

/// `[a,b,c]`.
fn list(v: &[usize]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("[{}]", items.join(","))
}

/// The attributes pools share, in the text form.
fn pool_attrs(p: &crate::op::PoolAttrs) -> Vec<String> {
    let mut v = vec![
        format!("kernel={}", list(&p.kernel)),
        format!("strides={}", list(&p.strides)),
        format!("pads={}", list(&p.pads)),
        format!("dilations={}", list(&p.dilations)),
    ];
    v.extend(flag(p.ceil_mode, "ceil_mode"));
    v
}

/// A tensor type; per-channel scales in full with [`Detail::Full`] (`i8*[0.5, 0.25]@1[1,2]`),
/// else as their count (`i8*[2]@1[1,2]`, the type's `Display`).
struct TypeText<'a>(&'a TensorType, Detail);

impl fmt::Display for TypeText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TypeText(t, detail) = *self;
        write!(f, "{}[", ElemText(&t.elem, detail))?;
        for (i, d) in t.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// An element type, as [`TypeText`] writes it.
struct ElemText<'a>(&'a ElemType, Detail);

impl fmt::Display for ElemText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (ElemType::Scaled(int, Scale::Channel { axis, values }), Detail::Full) => {
                write!(f, "{int}*[")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v:?}")?;
                }
                write!(f, "]@{axis}")
            }
            (e, _) => write!(f, "{e}"),
        }
    }
}

/// A constant's data: in full when small or with [`Detail::Full`], else a preview, the count
/// and a content hash so that a snapshot still changes when any element does.
struct ConstText<'a>(&'a Tensor, Detail);

impl fmt::Display for ConstText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ConstText(t, detail) = *self;
        let n = t.len();
        let shown = if n <= FULL_CONST_LEN || detail == Detail::Full {
            n
        } else {
            CONST_PREVIEW_LEN
        };
        if t.shape().is_empty() {
            return write_elem(f, t, 0);
        }
        f.write_str("[")?;
        for i in 0..shown {
            if i > 0 {
                f.write_str(", ")?;
            }
            write_elem(f, t, i)?;
        }
        if shown < n {
            write!(f, ", .. {n} values, fnv {:016x}", fnv1a(t))?;
        }
        f.write_str("]")
    }
}

fn write_elem(f: &mut fmt::Formatter<'_>, t: &Tensor, i: usize) -> fmt::Result {
    match t.data() {
        TensorData::F32(v) => write!(f, "{:?}", v[i]),
        TensorData::I64(v) => write!(f, "{}", v[i]),
    }
}

/// 64-bit FNV-1a over the elements' little-endian bytes.
fn fnv1a(t: &Tensor) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    match t.data() {
        TensorData::F32(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
        TensorData::I64(v) => v.iter().for_each(|x| eat(&x.to_le_bytes())),
    }
    h
}
