//! Host code: plain C for the float work before and after the hardware.
//!
//! `NAME_preprocess` runs the plan's `pre` program on one sample, exactly as the interpreter
//! does (the shared operations are in `bnnc_host_ops.h`), and gives the top's input: the
//! integers of the hardware's input tensor in stream order. `NAME_postprocess` turns the top's
//! output integers back into the interpreter's values and runs the `post` program.
//! `NAME_pack_input` / `NAME_unpack_output` convert between those integers and the bytes of
//! the AXI-Stream beats. The same files serve the HLS and the Verilog designs.

use std::collections::HashMap;
use std::fmt::Write;

use bnnc_ir::broadcast;
use bnnc_ir::interp::{integer_first, quant_range};
use bnnc_ir::summation_order::{conv_route, segments, ConvRoute, Segment, Threading};
use bnnc_ir::{BinaryOp, ConvAttrs, Graph, Node, NodeId, Op, RoundingMode, TensorType, ValueId};

use crate::plan::{Decode, Encoding, Plan, Port};
use crate::PlanError;

/// The shared operations every host file includes.
pub const HOST_OPS_H: &str = include_str!("bnnc_host_ops.h");

/// IR nodes the host runs, in order.
#[derive(Clone, Debug, Default)]
pub struct HostProgram {
    pub nodes: Vec<NodeId>,
}

/// The host files of a plan.
#[derive(Clone, Debug)]
pub struct HostCode {
    /// `NAME_host.h`.
    pub header: String,
    /// `NAME_host.c`.
    pub source: String,
}

/// A C float literal that reads back as exactly `v`.
pub fn c_float(v: f32) -> String {
    if v.is_nan() {
        "NAN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "INFINITY" } else { "-INFINITY" }.into()
    } else {
        format!("{v:?}f")
    }
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// `segments` with any columns of `0..n` they leave out summed in one slice, as the
/// interpreter sums a position outside every segment.
fn covering(mut segments: Vec<Segment>, n: usize, k: usize) -> Vec<Segment> {
    segments.sort_by_key(|s| s.start);
    let mut covered = Vec::with_capacity(segments.len());
    let mut at = 0;
    for s in segments {
        if s.start > at {
            covered.push(Segment {
                start: at,
                end: s.start,
                stride_k: k,
            });
        }
        at = at.max(s.end);
        covered.push(s);
    }
    if at < n {
        covered.push(Segment {
            start: at,
            end: n,
            stride_k: k,
        });
    }
    covered
}

/// Row-major strides of a tensor of shape `operand` broadcast to `shape` (0 on broadcast
/// axes), for `node`'s error if it does not broadcast.
fn broadcast_strides(
    node: &Node,
    operand: &[usize],
    shape: &[usize],
) -> Result<Vec<usize>, PlanError> {
    broadcast::strides(operand, shape).map_err(|e| PlanError::node(node, e.to_string()))
}

fn c_list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Emits the body of one host function.
struct Emitter<'g> {
    graph: &'g Graph,
    /// `static const` tables.
    tables: String,
    /// Statements.
    body: String,
    /// The C expression of each value's data.
    vars: HashMap<ValueId, String>,
    /// Buffers to allocate: name and floats.
    buffers: Vec<(String, usize)>,
    prefix: &'static str,
    tables_made: usize,
}

impl<'g> Emitter<'g> {
    fn new(graph: &'g Graph, prefix: &'static str) -> Self {
        Emitter {
            graph,
            tables: String::new(),
            body: String::new(),
            vars: HashMap::new(),
            buffers: Vec::new(),
            prefix,
            tables_made: 0,
        }
    }

    fn table<T: std::fmt::Display>(&mut self, ty: &str, values: &[T]) -> String {
        self.tables_made += 1;
        let name = format!("{}_t{}", self.prefix, self.tables_made);
        let values = if values.is_empty() {
            "0".to_string()
        } else {
            c_list(values)
        };
        let _ = writeln!(
            self.tables,
            "static const {ty} {name}[{}] = {{{values}}};",
            values.split(", ").count()
        );
        name
    }

    fn float_table(&mut self, values: &[f32]) -> String {
        let text: Vec<String> = values.iter().map(|&v| c_float(v)).collect();
        self.table("float", &text)
    }

    fn sizes(&mut self, values: &[usize]) -> String {
        self.table("size_t", values)
    }

    fn buffer(&mut self, v: ValueId) -> String {
        let name = format!("v{}", v.index());
        self.buffers
            .push((name.clone(), numel(&self.graph.value(v).ty.shape).max(1)));
        self.vars.insert(v, name.clone());
        name
    }

    /// The data of value `v`: a buffer, the input, or a constant's table.
    fn data(&mut self, v: ValueId, node: &Node) -> Result<String, PlanError> {
        if let Some(name) = self.vars.get(&v) {
            return Ok(name.clone());
        }
        let Some(t) = self.graph.const_data(v) else {
            return Err(PlanError::node(
                node,
                format!(
                    "operand '{}' is not computed on the host",
                    self.graph.value(v).name
                ),
            ));
        };
        let name = self.float_table(&t.to_f32_vec());
        self.vars.insert(v, name.clone());
        Ok(name)
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.value(v).ty.shape.clone()
    }

    fn line(&mut self, text: String) {
        self.body.push_str("  ");
        self.body.push_str(&text);
        self.body.push('\n');
    }

    fn node(&mut self, n: NodeId) -> Result<(), PlanError> {
        let node = self.graph.node(n).clone();
        let out = node.outputs[0];
        let shape = self.shape(out);
        let count = numel(&shape);
        let rank = shape.len();
        let unsupported =
            || PlanError::node(&node, "the host code has no C version of this op yet");
        self.line(format!("/* {} ({}) */", node.name, node.op.name()));
        match &node.op {
            Op::Reshape { .. } => {
                let x = self.data(node.inputs[0], &node)?;
                self.vars.insert(out, x);
            }
            Op::Binary(op) => {
                let a = self.data(node.inputs[0], &node)?;
                let b = self.data(node.inputs[1], &node)?;
                let y = self.buffer(out);
                let exponent = match (op, self.graph.const_data(node.inputs[1])) {
                    (BinaryOp::Pow, Some(t)) if t.len() == 1 => Some(t.to_f32_vec()[0]),
                    _ => None,
                };
                if let Some(e @ (2.0 | 3.0)) = exponent {
                    self.line(format!("bnnc_pow_small({count}, {a}, {}, {y});", e as i32));
                } else {
                    let code = match op {
                        BinaryOp::Add => "BNNC_ADD",
                        BinaryOp::Sub => "BNNC_SUB",
                        BinaryOp::Mul => "BNNC_MUL",
                        BinaryOp::Div => "BNNC_DIV",
                        BinaryOp::Pow => "BNNC_POW",
                        BinaryOp::Min | BinaryOp::Max => return Err(unsupported()),
                    };
                    let s = self.sizes(&shape);
                    let sa = broadcast_strides(&node, &self.shape(node.inputs[0]), &shape)?;
                    let sb = broadcast_strides(&node, &self.shape(node.inputs[1]), &shape)?;
                    let (sa, sb) = (self.sizes(&sa), self.sizes(&sb));
                    self.line(format!(
                        "bnnc_binary({code}, {count}, {rank}, {s}, {a}, {sa}, {b}, {sb}, {y});"
                    ));
                }
            }
            Op::Relu | Op::Sign => {
                let x = self.data(node.inputs[0], &node)?;
                let y = self.buffer(out);
                let f = if node.op == Op::Relu {
                    "bnnc_relu"
                } else {
                    "bnnc_sign"
                };
                self.line(format!("{f}({count}, {x}, {y});"));
            }
            Op::Clip { min, max } => {
                let x = self.data(node.inputs[0], &node)?;
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_clip({count}, {x}, {}, {}, {y});",
                    c_float(*min),
                    c_float(*max)
                ));
            }
            Op::Quant(attrs) => {
                let x = self.data(node.inputs[0], &node)?;
                let s = self.data(node.inputs[1], &node)?;
                let z = self.data(node.inputs[2], &node)?;
                let bits = self
                    .graph
                    .const_data(node.inputs[3])
                    .map(|t| t.to_f32_vec())
                    .filter(|b| b.len() == 1 && b[0].fract() == 0.0 && (1.0..=32.0).contains(&b[0]))
                    .ok_or_else(|| {
                        PlanError::node(
                            &node,
                            "the bit width must be one constant integer in 1..=32",
                        )
                    })?[0] as u32;
                let (min, max) = quant_range(attrs.signed, attrs.narrow, bits);
                let bipolar = bits == 1 && attrs.signed;
                let dims = self.sizes(&shape);
                let ss = broadcast_strides(&node, &self.shape(node.inputs[1]), &shape)?;
                let zs = broadcast_strides(&node, &self.shape(node.inputs[2]), &shape)?;
                let (ss, zs) = (self.sizes(&ss), self.sizes(&zs));
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_quant({count}, {rank}, {dims}, {x}, {s}, {ss}, {z}, {zs}, {}, {}, {}, {}, {y});",
                    i32::from(bipolar),
                    c_float(min),
                    c_float(max),
                    rounding(attrs.rounding)
                ));
            }
            Op::BipolarQuant => {
                let x = self.data(node.inputs[0], &node)?;
                let s = self.data(node.inputs[1], &node)?;
                let dims = self.sizes(&shape);
                let ss = broadcast_strides(&node, &self.shape(node.inputs[1]), &shape)?;
                let ss = self.sizes(&ss);
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_bipolar_quant({count}, {rank}, {dims}, {x}, {s}, {ss}, {y});"
                ));
            }
            Op::MultiThreshold(attrs) => {
                let x = self.data(node.inputs[0], &node)?;
                let t = self.data(node.inputs[1], &node)?;
                let &[rows, levels] = self.shape(node.inputs[1]).as_slice() else {
                    return Err(PlanError::node(&node, "thresholds must be (C, N)"));
                };
                let d = match node.inputs.get(2) {
                    Some(&d) => self.data(d, &node)?,
                    None => "NULL".into(),
                };
                let axis = attrs.channel_axis;
                let channels = *shape.get(axis).ok_or_else(unsupported)?;
                let inner = numel(&shape[axis + 1..]);
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_multithreshold({count}, {inner}, {channels}, {x}, {t}, {rows}, {levels}, {d}, {}, {}, {y});",
                    c_float(attrs.out_scale),
                    c_float(attrs.out_bias)
                ));
            }
            Op::QuantizeLinear { axis, out: int } => {
                let (x, s, z, len, inner) = self.linear_quant_operands(&node, *axis, &shape)?;
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_quantize_linear({count}, {inner}, {len}, {x}, {s}, {z}, {}, {}, {y});",
                    c_float(int.min() as f32),
                    c_float(int.max() as f32)
                ));
            }
            Op::DequantizeLinear { axis } => {
                let (x, s, z, len, inner) = self.linear_quant_operands(&node, *axis, &shape)?;
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_dequantize_linear({count}, {inner}, {len}, {x}, {s}, {z}, {y});"
                ));
            }
            Op::Transpose { perm } => {
                let x = self.data(node.inputs[0], &node)?;
                let in_shape = self.shape(node.inputs[0]);
                let mut in_strides = vec![1usize; in_shape.len()];
                for a in (0..in_shape.len().saturating_sub(1)).rev() {
                    in_strides[a] = in_strides[a + 1] * in_shape[a + 1];
                }
                let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
                let (dims, st) = (self.sizes(&shape), self.sizes(&strides));
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_permute({count}, {rank}, {dims}, {st}, {x}, {y});"
                ));
            }
            Op::Softmax { axis, coerce_2d } => {
                let x = self.data(node.inputs[0], &node)?;
                let (outer, len, inner) = if *coerce_2d {
                    (numel(&shape[..*axis]), numel(&shape[*axis..]), 1)
                } else {
                    (
                        numel(&shape[..*axis]),
                        shape[*axis],
                        numel(&shape[*axis + 1..]),
                    )
                };
                let y = self.buffer(out);
                self.line(format!("bnnc_softmax({outer}, {len}, {inner}, {x}, {y});"));
            }
            Op::TopK {
                k, axis, largest, ..
            } => {
                let x = self.data(node.inputs[0], &node)?;
                let in_shape = self.shape(node.inputs[0]);
                let (outer, len, inner) = (
                    numel(&in_shape[..*axis]),
                    in_shape[*axis],
                    numel(&in_shape[*axis + 1..]),
                );
                let values = self.buffer(node.outputs[0]);
                let indices = self.buffer(node.outputs[1]);
                self.line(format!(
                    "bnnc_topk({outer}, {len}, {inner}, {k}, {}, {x}, {values}, {indices});",
                    i32::from(*largest)
                ));
            }
            Op::ReduceMean { axes, .. } => {
                let x = self.data(node.inputs[0], &node)?;
                let in_shape = self.shape(node.inputs[0]);
                let reduced = |a: usize| axes.is_empty() || axes.contains(&a);
                let total: usize = (0..in_shape.len())
                    .filter(|&a| reduced(a))
                    .map(|a| in_shape[a])
                    .product();
                let first = (0..in_shape.len())
                    .find(|&a| reduced(a))
                    .unwrap_or(in_shape.len());
                let trailing = (first..in_shape.len()).all(reduced);
                let y = self.buffer(out);
                if trailing && total > 0 {
                    self.line(format!(
                        "bnnc_reduce_mean_trailing({}, {total}, {x}, {y});",
                        numel(&in_shape) / total
                    ));
                } else {
                    let kept: Vec<usize> = in_shape
                        .iter()
                        .enumerate()
                        .map(|(a, &d)| if reduced(a) { 1 } else { d })
                        .collect();
                    let strides = broadcast_strides(&node, &kept, &in_shape)?;
                    let (dims, st) = (self.sizes(&in_shape), self.sizes(&strides));
                    self.line(format!(
                        "bnnc_reduce_mean_general({}, {}, {total}, {}, {dims}, {st}, {x}, {y});",
                        numel(&in_shape),
                        numel(&kept),
                        in_shape.len()
                    ));
                }
            }
            Op::GlobalAveragePool => {
                let x = self.data(node.inputs[0], &node)?;
                let in_shape = self.shape(node.inputs[0]);
                let planes = numel(&in_shape[..2.min(in_shape.len())]);
                let plane = numel(in_shape.get(2..).unwrap_or(&[]));
                let y = self.buffer(out);
                self.line(format!(
                    "bnnc_global_average_pool({planes}, {plane}, {x}, {y});"
                ));
            }
            Op::Gemm(attrs) => self.gemm(&node, attrs)?,
            Op::MatMul => self.matmul(&node)?,
            Op::Conv(attrs) => self.conv(&node, attrs)?,
            _ => return Err(unsupported()),
        }
        Ok(())
    }

    /// The data, scale and zero point (or `NULL`) of a QuantizeLinear or DequantizeLinear,
    /// with the scale's length and the elements per index of its axis.
    fn linear_quant_operands(
        &mut self,
        node: &Node,
        axis: usize,
        shape: &[usize],
    ) -> Result<(String, String, String, usize, usize), PlanError> {
        let (x, s) = (
            self.data(node.inputs[0], node)?,
            self.data(node.inputs[1], node)?,
        );
        let z = match node.inputs.get(2) {
            Some(&z) => self.data(z, node)?,
            None => "NULL".into(),
        };
        let len = numel(&self.shape(node.inputs[1]));
        let inner = if len == 1 {
            1
        } else {
            numel(shape.get(axis + 1..).unwrap_or(&[]))
        };
        Ok((x, s, z, len, inner))
    }

    /// ONNX Conv on floats, through the kernel MLAS picks (as the interpreter's `conv`): per
    /// batch and group, every output position's patch is gathered (zeros at padded taps),
    /// then the route's product sums them in the interpreter's order; the bias follows.
    fn conv(&mut self, node: &Node, attrs: &ConvAttrs) -> Result<(), PlanError> {
        let (in_shape, w_shape) = (self.shape(node.inputs[0]), self.shape(node.inputs[1]));
        let out = node.outputs[0];
        let out_shape = self.shape(out);
        let types: Vec<&TensorType> = node
            .inputs
            .iter()
            .map(|&v| &self.graph.value(v).ty)
            .collect();
        // The interpreter sums such a layer's integers first, then scales them: not a float
        // product (the hardware takes those layers).
        if integer_first(&node.op, &types, &out_shape).is_some() {
            return Err(PlanError::node(
                node,
                "the host code computes float convolutions, not sums of scaled integers",
            ));
        }
        let (batch, channels, m) = (in_shape[0], in_shape[1], w_shape[0]);
        let group = attrs.group.max(1);
        let (cg, mg) = (channels / group, m / group);
        let taps = numel(&attrs.kernel);
        let k = cg * taps;
        let (in_plane, n) = (numel(&in_shape[2..]), numel(&out_shape[2..]));
        let x = self.data(node.inputs[0], node)?;
        let w = self.data(node.inputs[1], node)?;
        let y = self.buffer(out);
        if k == 0 || n == 0 {
            let count = numel(&out_shape);
            self.line(format!(
                "for (size_t i = 0; i < {count}; i++) {y}[i] = 0.0f;"
            ));
        } else {
            // A padded tap reads offset `in_plane`, which the gather turns into 0.
            let offsets: Vec<usize> = attrs
                .window()
                .tap_offsets(&in_shape[2..], &out_shape[2..])
                .into_iter()
                .map(|o| o.unwrap_or(in_plane))
                .collect();
            let offsets = self.sizes(&offsets);
            let route = conv_route(attrs, &in_shape, cg, mg, n, k);
            // The General route's product reads the patches as columns (k x n), the others as
            // rows (one patch per position), except the one filter's M = 1 kernel.
            let columns = matches!(route, ConvRoute::General(_) | ConvRoute::SingleFilter);
            let patches = format!("v{}_patches", out.index());
            self.buffers.push((patches.clone(), k * n));
            let (w_g, y_g) = (
                format!("{w} + g * {}", mg * k),
                format!("{y} + (b * {m} + g * {mg}) * {n}"),
            );
            let product = match route {
                ConvRoute::General(threading) => {
                    let table: Vec<usize> = covering(segments(mg, n, k, threading, true), n, k)
                        .iter()
                        .flat_map(|s| [s.start, s.end, s.stride_k])
                        .collect();
                    let count = table.len() / 3;
                    let table = self.sizes(&table);
                    let acc = format!("v{}_acc", out.index());
                    self.buffers.push((acc.clone(), mg * n));
                    format!("bnnc_matmul_2d({w_g}, {patches}, {mg}, {k}, {n}, {count}, {table}, 1.0f, 0, {acc}, {y_g});")
                }
                ConvRoute::SingleFilter => {
                    format!("bnnc_m1_rows({w_g}, {patches}, {k}, {n}, NULL, {y_g});")
                }
                ConvRoute::FullWidthRows => {
                    format!("bnnc_m1_transposed({w_g}, {patches}, {k}, {n}, NULL, {y_g});")
                }
                ConvRoute::SinglePosition => {
                    format!("bnnc_m1_transposed({patches}, {w_g}, {k}, {mg}, NULL, {y_g});")
                }
            };
            self.line(format!("for (size_t b = 0; b < {batch}; b++)"));
            self.line(format!("  for (size_t g = 0; g < {group}; g++) {{"));
            self.line(format!(
                "    bnnc_patches({x} + (b * {channels} + g * {cg}) * {in_plane}, {cg}, {in_plane}, {taps}, {n}, {offsets}, {}, {patches});",
                i32::from(columns)
            ));
            self.line(format!("    {product}"));
            self.line("  }".into());
        }
        if let Some(&bias) = node.inputs.get(2) {
            let bias_len = numel(&self.shape(bias)).max(1);
            let bias = self.data(bias, node)?;
            self.line(format!(
                "for (size_t i = 0; i < {}; i++) {y}[i] += {bias}[(i / {}) % {bias_len}];",
                numel(&out_shape),
                n.max(1)
            ));
        }
        Ok(())
    }

    /// ONNX Gemm on floats, through the kernel MLAS picks (as the interpreter's `gemm`).
    fn gemm(&mut self, node: &Node, attrs: &bnnc_ir::GemmAttrs) -> Result<(), PlanError> {
        let (a_shape, b_shape) = (self.shape(node.inputs[0]), self.shape(node.inputs[1]));
        let (&[ar, ac], &[br, bc]) = (a_shape.as_slice(), b_shape.as_slice()) else {
            return Err(PlanError::node(node, "Gemm operands must be matrices"));
        };
        let (m, k) = if attrs.trans_a { (ac, ar) } else { (ar, ac) };
        let n = if attrs.trans_b { br } else { bc };
        let a = self.data(node.inputs[0], node)?;
        let b = self.data(node.inputs[1], node)?;
        let out = node.outputs[0];
        let out_shape = self.shape(out);
        let start = match node.inputs.get(2).filter(|_| attrs.beta != 0.0) {
            Some(&c) => {
                let cv = self.data(c, node)?;
                let strides = broadcast_strides(node, &self.shape(c), &out_shape)?;
                let (dims, st) = (self.sizes(&out_shape), self.sizes(&strides));
                let name = format!("v{}_start", out.index());
                self.buffers.push((name.clone(), (m * n).max(1)));
                let times = if attrs.beta == 1.0 {
                    String::new()
                } else {
                    format!("{} * ", c_float(attrs.beta))
                };
                self.line(format!(
                    "for (size_t i = 0; i < {}; i++) {name}[i] = {times}{cv}[bnnc_index(i, 2, {dims}, {st})];",
                    m * n
                ));
                Some(name)
            }
            None => None,
        };
        let y = self.buffer(out);
        let c = start.clone().unwrap_or_else(|| "NULL".into());
        let m1 = attrs.alpha == 1.0 && (start.is_none() || attrs.beta == 1.0);
        if m1 && m == 1 && !attrs.trans_a {
            let f = if attrs.trans_b {
                "bnnc_m1_transposed"
            } else {
                "bnnc_m1_rows"
            };
            self.line(format!("{f}({a}, {b}, {k}, {n}, {c}, {y});"));
        } else if m1 && n == 1 && !attrs.trans_b {
            let f = if attrs.trans_a {
                "bnnc_m1_rows"
            } else {
                "bnnc_m1_transposed"
            };
            self.line(format!("{f}({b}, {a}, {k}, {m}, {c}, {y});"));
        } else {
            let a = if attrs.trans_a {
                self.transposed(node.inputs[0], &a, ar, ac)
            } else {
                a
            };
            let b = if attrs.trans_b {
                self.transposed(node.inputs[1], &b, br, bc)
            } else {
                b
            };
            self.general_product(out, &a, &b, (m, k, n), !attrs.trans_a, attrs.alpha, start);
        }
        Ok(())
    }

    /// `rows x cols` data transposed (a table for a constant).
    fn transposed(&mut self, v: ValueId, data: &str, rows: usize, cols: usize) -> String {
        if let Some(t) = self.graph.const_data(v) {
            let x = t.to_f32_vec();
            let mut y = vec![0f32; x.len()];
            for r in 0..rows {
                for c in 0..cols {
                    y[c * rows + r] = x[r * cols + c];
                }
            }
            return self.float_table(&y);
        }
        let name = format!("v{}_t", v.index());
        self.buffers.push((name.clone(), (rows * cols).max(1)));
        let (dims, st) = (self.sizes(&[cols, rows]), self.sizes(&[1, cols]));
        self.line(format!(
            "bnnc_permute({}, 2, {dims}, {st}, {data}, {name});",
            rows * cols
        ));
        name
    }

    #[allow(clippy::too_many_arguments)]
    fn general_product(
        &mut self,
        out: ValueId,
        a: &str,
        b: &str,
        (m, k, n): (usize, usize, usize),
        expand_k: bool,
        alpha: f32,
        start: Option<String>,
    ) {
        let segs = segments(m, n, k, Threading::Gemm, expand_k);
        let flat: Vec<usize> = segs
            .iter()
            .flat_map(|s| [s.start, s.end, s.stride_k])
            .collect();
        let table = self.sizes(&flat);
        let acc = format!("v{}_acc", out.index());
        self.buffers.push((acc.clone(), (m * n).max(1)));
        let y = self.vars[&out].clone();
        if let Some(s) = &start {
            self.line(format!("memcpy({y}, {s}, {} * sizeof(float));", m * n));
        }
        self.line(format!(
            "bnnc_matmul_2d({a}, {b}, {m}, {k}, {n}, {}, {table}, {}, {}, {acc}, {y});",
            segs.len(),
            c_float(alpha),
            i32::from(start.is_some())
        ));
    }

    /// ONNX MatMul on floats with a matrix or vector B (as the interpreter's `matmul_nd`).
    fn matmul(&mut self, node: &Node) -> Result<(), PlanError> {
        let (a_shape, b_shape) = (self.shape(node.inputs[0]), self.shape(node.inputs[1]));
        let (a, b) = (
            self.data(node.inputs[0], node)?,
            self.data(node.inputs[1], node)?,
        );
        let out = node.outputs[0];
        let y = self.buffer(out);
        let k = *a_shape
            .last()
            .ok_or_else(|| PlanError::node(node, "a scalar operand"))?;
        match b_shape.len() {
            1 => {
                let rows = numel(&a_shape) / k.max(1);
                self.line(format!(
                    "for (size_t r = 0; r < {rows}; r++) bnnc_m1_rows({a} + r * {k}, {b}, {k}, 1, NULL, {y} + r);"
                ));
            }
            2 => {
                let (m, n) = (numel(&a_shape[..a_shape.len() - 1]), b_shape[1]);
                if m == 1 {
                    self.line(format!("bnnc_m1_rows({a}, {b}, {k}, {n}, NULL, {y});"));
                } else if n == 1 {
                    self.line(format!(
                        "bnnc_m1_transposed({b}, {a}, {k}, {m}, NULL, {y});"
                    ));
                } else {
                    self.general_product(out, &a, &b, (m, k, n), true, 1.0, None);
                }
            }
            _ => {
                return Err(PlanError::node(
                    node,
                    "batched matrix products on the host are not supported yet",
                ))
            }
        }
        Ok(())
    }

    /// The function: allocations, statements, frees.
    fn function(&self, signature: &str, tail: &str) -> String {
        let mut f = String::new();
        let _ = writeln!(f, "{signature} {{");
        for (name, len) in &self.buffers {
            let _ = writeln!(
                f,
                "  float *{name} = (float *)malloc({len} * sizeof(float));"
            );
        }
        if !self.buffers.is_empty() {
            let any_null = self
                .buffers
                .iter()
                .map(|(n, _)| format!("!{n}"))
                .collect::<Vec<_>>()
                .join(" || ");
            let _ = writeln!(
                f,
                "  int status = 0;\n  if ({any_null}) {{\n    status = 3;\n    goto done;\n  }}"
            );
        } else {
            let _ = writeln!(f, "  int status = 0;");
        }
        f.push_str(&self.body);
        f.push_str(tail);
        if !self.buffers.is_empty() {
            f.push_str("done:\n");
        }
        for (name, _) in &self.buffers {
            let _ = writeln!(f, "  free({name});");
        }
        f.push_str("  return status;\n}\n");
        f
    }
}

fn rounding(mode: RoundingMode) -> &'static str {
    match mode {
        RoundingMode::HalfEven => "BNNC_HALF_EVEN",
        RoundingMode::Ceil => "BNNC_CEIL",
        RoundingMode::Floor => "BNNC_FLOOR",
        RoundingMode::Up => "BNNC_UP",
        RoundingMode::Down => "BNNC_DOWN",
        RoundingMode::HalfUp => "BNNC_HALF_UP",
        RoundingMode::HalfDown => "BNNC_HALF_DOWN",
    }
}

/// The C expression of slot `j`'s entry of a per-slot table (one entry: for all).
fn per_slot(e: &mut Emitter<'_>, values: &[f32]) -> String {
    if values.len() == 1 {
        c_float(values[0])
    } else {
        format!("{}[j]", e.float_table(values))
    }
}

/// The host files of `plan`.
pub fn host_code(plan: &Plan) -> Result<HostCode, PlanError> {
    let graph = &plan.graph;
    let name = &plan.name;
    let upper = name.to_ascii_uppercase();
    let input = graph.inputs()[0];
    let output = graph.outputs()[0];
    let in_len = numel(&graph.value(input).ty.shape);
    let out_len = numel(&graph.value(output).ty.shape);
    let (hw_in, hw_out) = (plan.input_stream(), plan.output_stream());

    // Before: the input, the pre program, the integers in stream order.
    let mut pre = Emitter::new(graph, "pre");
    pre.vars.insert(input, "input".into());
    for &n in &plan.pre.nodes {
        pre.node(n)?;
    }
    let boundary = pre.data(
        plan.input.value,
        graph.node(
            plan.pre
                .nodes
                .first()
                .copied()
                .unwrap_or_else(|| first_hw_node(plan)),
        ),
    )?;
    let Decode::Scaled(scales) = &plan.input.decode else {
        return Err(PlanError::Graph {
            graph: graph.name.clone(),
            reason: "the hardware's input is not integers".into(),
        });
    };
    let scale = per_slot(&mut pre, scales);
    pre.line("/* to the top's integers, in stream order */".to_string());
    pre.line(format!(
        "for (size_t s = 0; s < {n}; s++) {{\n    size_t j = s % {c};\n    (void)j;\n    hw_input[s] = (int32_t)roundf({boundary}[j * {p} + s / {c}] / {scale});\n  }}",
        n = hw_in.elements(),
        c = hw_in.channels,
        p = hw_in.pixels
    ));
    let pre_fn = pre.function(
        &format!("int {name}_preprocess(const float *input, int32_t *hw_input)"),
        "",
    );

    // After: the values of the top's integers, the post program, the output.
    let mut post = Emitter::new(graph, "post");
    let v = post.buffer(plan.output.value);
    let decoded = decode_expr(&mut post, &plan.output, hw_out.encoding);
    post.line("/* the values of the top's integers, from stream order */".to_string());
    post.line(format!(
        "for (size_t s = 0; s < {n}; s++) {{\n    size_t j = s % {c};\n    int32_t h = hw_output[s];\n    (void)j;\n    {v}[j * {p} + s / {c}] = {decoded};\n  }}",
        n = hw_out.elements(),
        c = hw_out.channels,
        p = hw_out.pixels
    ));
    for &n in &plan.post.nodes {
        post.node(n)?;
    }
    let result = post.data(
        output,
        graph.node(
            plan.post
                .nodes
                .last()
                .copied()
                .unwrap_or_else(|| first_hw_node(plan)),
        ),
    )?;
    let tail = format!("  memcpy(output, {result}, {out_len} * sizeof(float));\n");
    let post_fn = post.function(
        &format!("int {name}_postprocess(const int32_t *hw_output, float *output)"),
        &tail,
    );

    let bipolar = |e: Encoding| i32::from(e == Encoding::Bipolar);
    let signed = |e: Encoding| i32::from(matches!(e, Encoding::Int { signed: true, .. }));
    let beat_bytes = |s: &crate::plan::Stream| s.port_bits() / 8;
    let header = format!(
        r#"/* Host code of {name}'s dataflow design, generated by bnnc: the float work before and
 * after the hardware, as bnnc's interpreter computes it, and the AXI-Stream beats. */
#ifndef {upper}_HOST_H
#define {upper}_HOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {upper}_INPUT_LEN {in_len}        /* float32 elements of one input sample */
#define {upper}_OUTPUT_LEN {out_len}       /* float32 elements of one output sample */
#define {upper}_HW_INPUT_LEN {hw_in_len}     /* integers of the top's input frame */
#define {upper}_HW_OUTPUT_LEN {hw_out_len}    /* integers of the top's output frame */
#define {upper}_HW_INPUT_BITS {in_bits}      /* bits per input element */
#define {upper}_HW_INPUT_LANES {in_lanes}     /* input elements per beat */
#define {upper}_HW_INPUT_BEAT_BYTES {in_bytes}
#define {upper}_HW_OUTPUT_BITS {out_bits}
#define {upper}_HW_OUTPUT_LANES {out_lanes}
#define {upper}_HW_OUTPUT_BEAT_BYTES {out_bytes}

/* One sample to the top's input integers (stream order); 0, or 3 out of memory. */
int {name}_preprocess(const float *input, int32_t *hw_input);
/* The top's output integers (f32 outputs as their bits) to one output sample; 0, or 3. */
int {name}_postprocess(const int32_t *hw_output, float *output);
/* Integers to beats of {in_bytes} bytes (element 0 in the lowest bits), and back. */
void {name}_pack_input(const int32_t *hw_input, uint8_t *beats);
void {name}_unpack_output(const uint8_t *beats, int32_t *hw_output);

#ifdef __cplusplus
}}
#endif

#endif
"#,
        hw_in_len = hw_in.elements(),
        hw_out_len = hw_out.elements(),
        in_bits = hw_in.encoding.bits(),
        in_lanes = hw_in.lanes,
        in_bytes = beat_bytes(hw_in),
        out_bits = hw_out.encoding.bits(),
        out_lanes = hw_out.lanes,
        out_bytes = beat_bytes(hw_out),
    );
    let mut source = format!(
        "/* Host code of {name}'s dataflow design, generated by bnnc. Compile with -ffp-contract=off. */\n#include <math.h>\n#include <stdlib.h>\n#include <string.h>\n\n#include \"bnnc_host_ops.h\"\n#include \"{name}_host.h\"\n\n"
    );
    source.push_str(&pre.tables);
    source.push_str(&post.tables);
    source.push('\n');
    source.push_str(&pre_fn);
    source.push('\n');
    source.push_str(&post_fn);
    let _ = write!(
        source,
        "\nvoid {name}_pack_input(const int32_t *hw_input, uint8_t *beats) {{\n  bnnc_pack_beats(hw_input, {}, {}, {}, {}, beats);\n}}\n\nvoid {name}_unpack_output(const uint8_t *beats, int32_t *hw_output) {{\n  bnnc_unpack_beats(beats, {}, {}, {}, {}, {}, hw_output);\n}}\n",
        hw_in.elements(),
        hw_in.encoding.bits(),
        hw_in.lanes,
        bipolar(hw_in.encoding),
        hw_out.elements(),
        hw_out.encoding.bits(),
        hw_out.lanes,
        signed(hw_out.encoding),
        bipolar(hw_out.encoding),
    );
    Ok(HostCode { header, source })
}

/// Some node of the hardware part, to name in errors about the boundary.
fn first_hw_node(plan: &Plan) -> NodeId {
    plan.graph
        .producer(plan.output.value)
        .or_else(|| plan.graph.node_ids().next())
        .expect("a planned graph has nodes")
}

/// The C (or C++) expression of the f32 value of integer expression `int` under `decode`,
/// as the interpreter computes it; `scale` gives the expression of a per-slot scale table.
/// `None` for f32 elements, which are their value.
pub fn c_value(
    decode: &Decode,
    int: &str,
    scale: &mut dyn FnMut(&[f32]) -> String,
) -> Option<String> {
    match decode {
        Decode::Scaled(s) => Some(format!("(float)({int}) * {}", scale(s))),
        Decode::Level {
            out_scale,
            out_bias,
            step,
            offset,
        } => Some(format!(
            "{} * (float)(({int} - ({offset})) / ({step})) + {}",
            c_float(*out_scale),
            c_float(*out_bias)
        )),
        Decode::Float => None,
    }
}

/// The C expression of the value of integer `h` in slot `j` of the output port.
fn decode_expr(e: &mut Emitter<'_>, port: &Port, encoding: Encoding) -> String {
    c_value(&port.decode, "h", &mut |s| per_slot(e, s)).unwrap_or_else(|| {
        debug_assert_eq!(encoding, Encoding::F32);
        "bnnc_f32_of_bits(h)".into()
    })
}
