//! Lowering the hardware part of a graph to layers and streams.
//!
//! One IR node becomes one layer, except:
//! - a linear layer takes the nodes `fuse-output-stages` fused after it into its output
//!   stage, and a convolution gets a sliding-window generator before it;
//! - a reshape is nothing (a stream keeps each element's row-major index);
//! - multiplying an integer tensor by the scale its result type names is nothing either
//!   (the integers are the same; only their value changes);
//! - a tensor read by several layers gets a layer that duplicates its stream.
//!
//! Everything numeric is decided here, exactly: weights as integers in stream order,
//! thresholds as integers found by evaluating the interpreter's f32 comparison on every
//! candidate, accumulator widths from the weights.

use std::collections::HashMap;

use bnnc_ir::broadcast;
use bnnc_ir::integer_threshold::integer_threshold;
use bnnc_ir::{
    packing, ElemType, Graph, Node, NodeId, Op, PoolAttrs, Scale, Tensor, ThresholdAttrs, ValueId,
};

use crate::partition::{float_sums_scale, Partition};
use crate::plan::{
    Decode, ElementOp, Elementwise, Encoding, FusedPool, Layer, LayerKind, Mac, Mvau, Operand,
    Pool, Port, Stream, StreamId, ThresholdLayer, Thresholds, Window, WindowGeometry,
};
use crate::PlanError;

/// A hardware tensor: its stream and the values of its integers.
#[derive(Clone, Debug)]
struct Hw {
    stream: StreamId,
    decode: Decode,
}

/// Layers and streams of the hardware part, with the ports.
pub(crate) struct Lowered {
    pub streams: Vec<Stream>,
    pub layers: Vec<Layer>,
    pub input: Port,
    pub output: Port,
}

struct Lowering<'g> {
    graph: &'g Graph,
    streams: Vec<Stream>,
    layers: Vec<Layer>,
    values: HashMap<ValueId, Hw>,
}

/// Lowers `part.hardware`.
pub(crate) fn lower(graph: &Graph, part: &Partition) -> Result<Lowered, PlanError> {
    let mut l = Lowering {
        graph,
        streams: Vec::new(),
        layers: Vec::new(),
        values: HashMap::new(),
    };
    let input_ty = &graph.value(part.input).ty;
    let (pixels, channels) = geometry(&input_ty.shape).ok_or_else(|| PlanError::Graph {
        graph: graph.name.clone(),
        reason: format!(
            "the hardware's input '{}' has shape {:?}; streams take (1, C, ...)",
            graph.value(part.input).name,
            input_ty.shape
        ),
    })?;
    let stream = l.stream(
        &graph.value(part.input).name,
        Encoding::of_elem(&input_ty.elem),
        pixels,
        channels,
    );
    let decode =
        scaled_decode(&input_ty.elem, &input_ty.shape, channels, pixels).map_err(|reason| {
            PlanError::Graph {
                graph: graph.name.clone(),
                reason,
            }
        })?;
    l.values.insert(
        part.input,
        Hw {
            stream,
            decode: decode.clone(),
        },
    );
    let input = Port {
        stream,
        value: part.input,
        decode,
    };
    for &n in &part.hardware {
        if !graph.node(n).fused {
            l.node(n)?;
        }
    }
    let out = l.hw(part.output, None)?;
    let output = Port {
        stream: out.stream,
        value: part.output,
        decode: out.decode,
    };
    let mut lowered = Lowered {
        streams: l.streams,
        layers: l.layers,
        input,
        output,
    };
    insert_duplicates(&mut lowered);
    Ok(lowered)
}

/// `(pixels, channels)` of a tensor `(1, C, spatial...)` streamed in natural order.
fn geometry(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [1, c, rest @ ..] => Some((rest.iter().product(), *c)),
        _ => None,
    }
}

/// The most weights a grouped convolution may have as the dense layer the plan makes of it
/// (zeros outside its groups): a bound on memory, since the expansion multiplies the model's
/// weights by the groups.
const MAX_GROUPED_WEIGHTS: usize = 1 << 22;

/// A window of one or two spatial axes as a 2-D one: a 1-D window is a row of an image one
/// pixel high. `kernel, strides, dilations, pads` as ONNX gives them; `None` for 3-D ones.
fn window_2d(
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[usize],
) -> Option<[[usize; 2]; 3]> {
    match kernel.len() {
        2 => Some([
            [kernel[0], kernel[1]],
            [strides[0], strides[1]],
            [dilations[0], dilations[1]],
        ]),
        1 => Some([[1, kernel[0]], [1, strides[0]], [1, dilations[0]]]),
        _ => None,
    }
    .filter(|_| pads.len() == 2 * kernel.len())
}

/// ONNX pads (begins, then ends) of one or two spatial axes as top, left, bottom, right.
fn pads_2d(pads: &[usize]) -> [usize; 4] {
    match pads {
        [l, r] => [0, *l, 0, *r],
        [t, l, b, r] => [*t, *l, *b, *r],
        _ => [0; 4],
    }
}

/// The channels and extent of an image `(1, C, H, W)`, or of a sequence `(1, C, L)` as an
/// image one pixel high.
fn image_2d(shape: &[usize]) -> Option<(usize, [usize; 2])> {
    match shape {
        [1, c, h, w] => Some((*c, [*h, *w])),
        [1, c, l] => Some((*c, [1, *l])),
        _ => None,
    }
}

/// The scales of a (scaled) integer tensor per stream slot, or an error naming why not.
fn scaled_decode(
    elem: &ElemType,
    shape: &[usize],
    channels: usize,
    pixels: usize,
) -> Result<Decode, String> {
    match elem {
        ElemType::F32 => Ok(Decode::Float),
        ElemType::Int(_) => Ok(Decode::Scaled(vec![1.0])),
        ElemType::Scaled(_, Scale::Tensor(s)) => Ok(Decode::Scaled(vec![*s])),
        ElemType::Scaled(_, Scale::Channel { axis, values }) => {
            let slots = slot_indices(shape, pixels, channels, *axis)?;
            Ok(Decode::Scaled(slots.iter().map(|&c| values[c]).collect()))
        }
    }
}

/// For each slot of a stream of `pixels x channels` carrying a tensor of `shape`: the
/// element's index along `axis`, the same in every pixel (or an error).
fn slot_indices(
    shape: &[usize],
    pixels: usize,
    channels: usize,
    axis: usize,
) -> Result<Vec<usize>, String> {
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let extent = *shape.get(axis).ok_or("axis out of range")?;
    let index_of = |s: usize| {
        let flat = (s % channels) * pixels + s / channels;
        (flat / inner.max(1)) % extent.max(1)
    };
    let slots: Vec<usize> = (0..channels).map(index_of).collect();
    for s in channels..pixels * channels {
        if index_of(s) != slots[s % channels] {
            return Err(format!(
                "its index along axis {axis} changes from pixel to pixel in the stream"
            ));
        }
    }
    Ok(slots)
}

/// A constant broadcast against a tensor of `shape`, per slot of its stream (one value when
/// all are equal), or an error when it varies within a slot.
fn slot_constant(
    c: &Tensor,
    shape: &[usize],
    pixels: usize,
    channels: usize,
) -> Result<Vec<f32>, String> {
    let data = c.to_f32_vec();
    let c_shape = c.shape();
    let strides = broadcast::strides(c_shape, shape)
        .map_err(|_| format!("a constant of shape {c_shape:?} against {shape:?}"))?;
    let value_at = |flat: usize| data[broadcast::source_index(flat, shape, &strides)];
    let slots: Vec<f32> = (0..channels)
        .map(|j| value_at(j * pixels))
        .collect::<Vec<_>>();
    for s in 0..pixels * channels {
        let flat = (s % channels) * pixels + s / channels;
        if value_at(flat).to_bits() != slots[s % channels].to_bits() {
            return Err(format!(
                "the constant of shape {c_shape:?} varies within a channel of the stream"
            ));
        }
    }
    if slots.iter().all(|v| v.to_bits() == slots[0].to_bits()) {
        return Ok(vec![slots.first().copied().unwrap_or(0.0)]);
    }
    Ok(slots)
}

impl<'g> Lowering<'g> {
    fn stream(
        &mut self,
        name: &str,
        encoding: Encoding,
        pixels: usize,
        channels: usize,
    ) -> StreamId {
        self.streams.push(Stream {
            name: name.to_string(),
            encoding,
            pixels,
            channels,
            lanes: 1,
        });
        self.streams.len() - 1
    }

    /// The hardware tensor of `v`.
    fn hw(&self, v: ValueId, user: Option<&Node>) -> Result<Hw, PlanError> {
        self.values.get(&v).cloned().ok_or_else(|| {
            let reason = format!(
                "its operand '{}' is not computed in hardware",
                self.graph.value(v).name
            );
            match user {
                Some(node) => PlanError::node(node, reason),
                None => PlanError::Graph {
                    graph: self.graph.name.clone(),
                    reason,
                },
            }
        })
    }

    fn push(
        &mut self,
        name: String,
        nodes: Vec<String>,
        kind: LayerKind,
        inputs: Vec<StreamId>,
        outputs: Vec<StreamId>,
    ) {
        let mut unique = name.clone();
        let mut k = 1;
        while self.layers.iter().any(|l| l.name == unique) {
            k += 1;
            unique = format!("{name}.{k}");
        }
        self.layers.push(Layer {
            name: unique,
            nodes,
            kind,
            inputs,
            outputs,
        });
    }

    fn node(&mut self, n: NodeId) -> Result<(), PlanError> {
        let node = self.graph.node(n);
        match &node.op {
            Op::Conv(_) | Op::XnorConv(_) | Op::BitSerialConv { .. } => self.conv(n),
            Op::Gemm(_) | Op::MatMul | Op::XnorMatMul | Op::BitSerialMatMul { .. } => {
                self.matrix(n)
            }
            Op::Threshold(attrs) => self.threshold(node, attrs),
            Op::MaxPool(attrs) => self.pool(node, attrs, &[]),
            Op::MinMaxPool { attrs, min } => self.pool(node, attrs, min),
            Op::Reshape { .. } => {
                let hw = self.hw(node.inputs[0], Some(node))?;
                self.values.insert(node.outputs[0], hw);
                Ok(())
            }
            Op::Binary(_)
            | Op::Relu
            | Op::Sign
            | Op::Clip { .. }
            | Op::BipolarQuant
            | Op::Quant(_) => {
                if !self.rescale(node)? {
                    self.elementwise(node)?;
                }
                Ok(())
            }
            _ => Err(PlanError::node(
                node,
                "the dataflow plan has no hardware layer for this op",
            )),
        }
    }

    /// The stream of a convolution's input, checked to be its operand's pixels.
    fn spatial_input(&self, node: &Node) -> Result<(Hw, [usize; 2], usize), PlanError> {
        let x = node.inputs[0];
        let hw = self.hw(x, Some(node))?;
        let shape = &self.graph.value(x).ty.shape;
        let stream = &self.streams[hw.stream];
        match image_2d(shape) {
            Some((c, [h, w])) if stream.pixels == h * w && stream.channels == c => Ok((hw, [h, w], c)),
            Some(_) => Err(PlanError::node(
                node,
                "its operand was reshaped from another tensor: the stream does not hold its pixels",
            )),
            None => Err(PlanError::node(
                node,
                format!(
                    "the dataflow plan takes 1-D and 2-D images ((1, C, L), (1, C, H, W)), not {shape:?}"
                ),
            )),
        }
    }

    /// The channels and extent of a node's `(1, C, H, W)` (or `(1, C, L)`) result.
    fn image_result(&self, node: &Node) -> Result<(usize, [usize; 2]), PlanError> {
        let shape = &self.graph.value(node.outputs[0]).ty.shape;
        image_2d(shape).ok_or_else(|| PlanError::node(node, format!("result of shape {shape:?}")))
    }

    /// Conv, xnor_conv, bitserial_conv: a window generator and a matrix-vector unit.
    fn conv(&mut self, n: NodeId) -> Result<(), PlanError> {
        let node = self.graph.node(n);
        let attrs = match &node.op {
            Op::Conv(a) | Op::XnorConv(a) | Op::BitSerialConv { attrs: a, .. } => a,
            _ => unreachable!("conv() is called on convolutions"),
        };
        let Some([kernel, stride, dilation]) =
            window_2d(&attrs.kernel, &attrs.strides, &attrs.dilations, &attrs.pads)
        else {
            return Err(PlanError::node(
                node,
                "the dataflow plan takes 1-D and 2-D convolutions",
            ));
        };
        if node.inputs.len() > 2 {
            return Err(PlanError::node(
                node,
                "a bias must be split off the layer first (the cleanup pass does)",
            ));
        }
        let (x, in_hw, c) = self.spatial_input(node)?;
        let (m, [oh, ow]) = self.image_result(node)?;
        let [kh, kw] = kernel;
        let group = attrs.group.max(1);
        if c % group != 0 || m % group != 0 {
            return Err(PlanError::node(
                node,
                format!("{group} groups do not divide {c} channels and {m} filters"),
            ));
        }
        let (cg, mg) = (c / group, m / group);
        let dense = m * kh * kw * c;
        if group > 1 && dense > MAX_GROUPED_WEIGHTS {
            return Err(PlanError::node(
                node,
                format!(
                    "{group} groups as one dense layer would hold {dense} weights (at most \
                     {MAX_GROUPED_WEIGHTS}); the plan has no vector unit for grouped layers yet"
                ),
            ));
        }
        // (M, C / group, KH, KW) as integers.
        let (w, mut weight) = self.conv_weights(node, m, cg, kh, kw)?;
        // A grouped convolution is the dense one whose filters hold zeros outside their group
        // (a block-diagonal matrix): exact, at `group` times a vector unit's multiplies.
        if group > 1 && weight == Encoding::Bipolar {
            weight = Encoding::Int {
                bits: 2,
                signed: true,
            };
        }
        let mut weights = Vec::with_capacity(m * kh * kw * c);
        for f in 0..m {
            for ky in 0..kh {
                for kx in 0..kw {
                    for ch in 0..c {
                        weights.push(if ch / cg == f / mg {
                            w[((f * cg + ch % cg) * kh + ky) * kw + kx]
                        } else {
                            0
                        });
                    }
                }
            }
        }
        let geometry = WindowGeometry {
            channels: c,
            in_hw,
            out_hw: [oh, ow],
            kernel,
            stride,
            dilation,
            pads: pads_2d(&attrs.pads),
        };
        let input = self.streams[x.stream].encoding;
        let padded = geometry.pads.iter().any(|&p| p > 0);
        let windowed = match input {
            Encoding::Bipolar if padded => Encoding::Int {
                bits: 2,
                signed: true,
            },
            e => e,
        };
        let win_stream = self.stream(
            &format!("{}.window", node.name),
            windowed,
            oh * ow,
            kh * kw * c,
        );
        self.push(
            format!("{}.window", node.name),
            vec![node.name.clone()],
            LayerKind::Window(Window {
                geometry,
                input,
                output: windowed,
                simd: 1,
            }),
            vec![x.stream],
            vec![win_stream],
        );
        self.mvau(n, win_stream, weights, weight, kh * kw * c, m, [oh, ow])
    }

    /// The `(M, C, KH, KW)` weights of a convolution as integers (C: a group's channels), and
    /// their encoding.
    fn conv_weights(
        &self,
        node: &Node,
        m: usize,
        c: usize,
        kh: usize,
        kw: usize,
    ) -> Result<(Vec<i64>, Encoding), PlanError> {
        let w = node.inputs[1];
        let data = self
            .graph
            .const_data(w)
            .ok_or_else(|| PlanError::node(node, "the weights must be constant"))?;
        match &node.op {
            Op::XnorConv(_) => {
                let values = packing::unpack_conv_weights(data, c);
                Ok((
                    values.iter().map(|&v| v as i64).collect(),
                    Encoding::Bipolar,
                ))
            }
            _ => {
                let ints = weight_integers(self.graph, node, w, 0)?;
                if ints.len() != m * c * kh * kw {
                    return Err(PlanError::node(node, "weights of an unexpected shape"));
                }
                Ok((ints, weight_encoding(self.graph, node, w)?))
            }
        }
    }

    /// Gemm, MatMul, xnor_matmul, bitserial_matmul on a `(1, K)` operand.
    fn matrix(&mut self, n: NodeId) -> Result<(), PlanError> {
        let node = self.graph.node(n);
        let x = self.hw(node.inputs[0], Some(node))?;
        let a_shape = &self.graph.value(node.inputs[0]).ty.shape;
        let [1, k] = a_shape[..] else {
            return Err(PlanError::node(
                node,
                format!("the dataflow plan takes matrix products of one row, not {a_shape:?}"),
            ));
        };
        let out_shape = &self.graph.value(node.outputs[0]).ty.shape;
        let [1, m] = out_shape[..] else {
            return Err(PlanError::node(
                node,
                format!("result of shape {out_shape:?}"),
            ));
        };
        let w = node.inputs[1];
        // (K, M) row-major as integers.
        let (w_km, weight): (Vec<i64>, Encoding) = match &node.op {
            Op::XnorMatMul => {
                let data = self
                    .graph
                    .const_data(w)
                    .ok_or_else(|| PlanError::node(node, "the weights must be constant"))?;
                let values = packing::unpack_matrix_weights(data, k);
                (
                    values.iter().map(|&v| v as i64).collect(),
                    Encoding::Bipolar,
                )
            }
            Op::Gemm(g) => {
                if g.trans_a || g.alpha != 1.0 {
                    return Err(PlanError::node(
                        node,
                        "the dataflow plan takes Gemm with alpha 1 and A not transposed",
                    ));
                }
                if node.inputs.len() > 2 && g.beta != 0.0 {
                    return Err(PlanError::node(
                        node,
                        "a bias must be split off the layer first (the cleanup pass does)",
                    ));
                }
                let ints = weight_integers(self.graph, node, w, usize::from(!g.trans_b))?;
                let km = if g.trans_b {
                    transpose(&ints, m, k)
                } else {
                    ints
                };
                (km, weight_encoding(self.graph, node, w)?)
            }
            _ => {
                if self.graph.value(w).ty.shape.len() != 2 {
                    return Err(PlanError::node(node, "the weights must be a matrix"));
                }
                (
                    weight_integers(self.graph, node, w, 1)?,
                    weight_encoding(self.graph, node, w)?,
                )
            }
        };
        if w_km.len() != k * m {
            return Err(PlanError::node(node, "weights of an unexpected shape"));
        }
        let stream = &self.streams[x.stream];
        let weights: Vec<i64> = (0..m)
            .flat_map(|col| (0..k).map(move |s| (col, s)))
            .map(|(col, s)| w_km[stream.flat_index(s) * m + col])
            .collect();
        self.mvau(n, x.stream, weights, weight, k, m, [1, 1])
    }

    /// The matrix-vector unit of linear node `n` reading `input`, with its fused stages.
    #[allow(clippy::too_many_arguments)]
    fn mvau(
        &mut self,
        n: NodeId,
        input: StreamId,
        weights: Vec<i64>,
        weight: Encoding,
        mw: usize,
        mh: usize,
        out_hw: [usize; 2],
    ) -> Result<(), PlanError> {
        let node = self.graph.node(n);
        let in_enc = self.streams[input].encoding;
        let mac = match (in_enc, weight) {
            (Encoding::Bipolar, Encoding::Bipolar) => Mac::Xnor,
            (Encoding::Int { .. }, Encoding::Bipolar) => Mac::IntByBipolar,
            (Encoding::Bipolar, Encoding::Int { .. }) => Mac::BipolarByInt,
            (Encoding::Int { .. }, Encoding::Int { .. }) => Mac::Multiply,
            _ => {
                return Err(PlanError::node(
                    node,
                    "hardware layers multiply integers, not f32",
                ))
            }
        };
        let (amin, amax) = in_enc.range().expect("integer encodings have ranges");
        // The exact range of every sum.
        let (mut lo, mut hi) = (0i64, 0i64);
        for row in weights.chunks(mw.max(1)) {
            let (mut rlo, mut rhi) = (0i64, 0i64);
            for &w in row {
                let (p, q) = (amin * w, amax * w);
                rlo += p.min(q);
                rhi += p.max(q);
            }
            lo = lo.min(rlo);
            hi = hi.max(rhi);
        }
        if lo.abs().max(hi.abs()) > 1 << 24 {
            return Err(PlanError::node(
                node,
                "its sums may pass 2^24, where the interpreter's f32 sums stop being exact",
            ));
        }
        let acc_value = node.outputs[0];
        let acc_ty = &self.graph.value(acc_value).ty;
        let acc_decode = if acc_ty.elem == ElemType::F32 {
            // Float sums, exactly the integers times this (partial sums within 2^24 units,
            // checked above); the partition leaves other float layers to the host.
            let scale = float_sums_scale(self.graph, node).ok_or_else(|| {
                PlanError::node(node, "its sums are f32: a float layer, not in hardware")
            })?;
            Decode::Scaled(vec![scale])
        } else {
            scaled_decode(&acc_ty.elem, &acc_ty.shape, mh, out_hw[0] * out_hw[1])
                .map_err(|r| PlanError::node(node, r))?
        };
        let mut nodes = vec![node.name.clone()];
        let mut out_value = acc_value;
        let mut decode = acc_decode.clone();
        let mut thresholds = None;
        let mut pool = None;
        let mut acc = Encoding::covering(lo, hi);
        let mut out_pixels = out_hw[0] * out_hw[1];
        if let Some(t) = self.fused_after(acc_value) {
            let tnode = self.graph.node(t);
            let Op::Threshold(attrs) = &tnode.op else {
                return Err(PlanError::node(
                    tnode,
                    "only thresholds are fused into a layer",
                ));
            };
            let (th, level) = self.integer_thresholds(
                tnode,
                attrs,
                &acc_decode,
                mh,
                out_hw[0] * out_hw[1],
                lo,
                hi,
            )?;
            // The thresholds must fit the accumulator too.
            let (tlo, thi) = th
                .values
                .iter()
                .fold((lo, hi), |(a, b), &t| (a.min(t), b.max(t)));
            acc = Encoding::covering(tlo, thi);
            nodes.push(tnode.name.clone());
            out_value = tnode.outputs[0];
            decode = level;
            thresholds = Some(th);
            if let Some(p) = self.fused_after(out_value) {
                let pnode = self.graph.node(p);
                let (attrs, min) = match &pnode.op {
                    Op::MaxPool(a) => (a, &[][..]),
                    Op::MinMaxPool { attrs, min } => (attrs, &min[..]),
                    _ => {
                        return Err(PlanError::node(
                            pnode,
                            "only pools are fused after a threshold",
                        ))
                    }
                };
                let (_, [ph, pw]) = self.image_result(pnode)?;
                let take_min = pool_directions(pnode, &decode, min, mh)?;
                let Some([kernel, ..]) =
                    window_2d(&attrs.kernel, &attrs.strides, &attrs.dilations, &attrs.pads)
                else {
                    return Err(PlanError::node(
                        pnode,
                        "the dataflow plan takes 1-D and 2-D pools",
                    ));
                };
                pool = Some(FusedPool {
                    in_hw: out_hw,
                    kernel,
                    out_hw: [ph, pw],
                    take_min,
                });
                nodes.push(pnode.name.clone());
                out_value = pnode.outputs[0];
                out_pixels = ph * pw;
            }
        }
        let mvau = Mvau {
            mw,
            mh,
            pixels: out_hw[0] * out_hw[1],
            out_hw,
            mac,
            input: in_enc,
            weight,
            weights,
            acc,
            thresholds,
            pool,
            pe: 1,
            simd: 1,
        };
        let out = self.stream(
            &self.graph.value(out_value).name.clone(),
            mvau.output(),
            out_pixels,
            mh,
        );
        self.push(
            node.name.clone(),
            nodes,
            LayerKind::Mvau(mvau),
            vec![input],
            vec![out],
        );
        self.values.insert(
            out_value,
            Hw {
                stream: out,
                decode,
            },
        );
        Ok(())
    }

    /// The node `fuse-output-stages` put after value `v`, if any.
    fn fused_after(&self, v: ValueId) -> Option<NodeId> {
        let user = self.graph.only_user(v)?;
        self.graph.node(user).fused.then_some(user)
    }

    /// Integer thresholds of threshold node `t` on integers whose values `decode` gives
    /// (`rows` slots, accumulators in `lo..=hi`), and the value of its result.
    #[allow(clippy::too_many_arguments)]
    fn integer_thresholds(
        &self,
        t: &Node,
        attrs: &ThresholdAttrs,
        decode: &Decode,
        rows: usize,
        pixels: usize,
        lo: i64,
        hi: i64,
    ) -> Result<(Thresholds, Decode), PlanError> {
        let in_shape = &self.graph.value(t.inputs[0]).ty.shape;
        let table = self
            .graph
            .const_data(t.inputs[1])
            .ok_or_else(|| PlanError::node(t, "the thresholds must be constant"))?
            .to_f32_vec();
        let &[trows, levels] = self.graph.value(t.inputs[1]).ty.shape.as_slice() else {
            return Err(PlanError::node(t, "thresholds must be (C, N)"));
        };
        let directions = match t.inputs.get(2) {
            None => None,
            Some(&d) => Some(
                self.graph
                    .const_data(d)
                    .ok_or_else(|| PlanError::node(t, "the directions must be constant"))?
                    .to_f32_vec(),
            ),
        };
        // Thresholds the same for every index need no index: any stream order takes them.
        let uniform = || {
            table.chunks(levels.max(1)).all(|r| r == &table[..levels])
                && directions
                    .as_ref()
                    .is_none_or(|d| d.iter().all(|&x| x == d[0]))
        };
        let slots = match slot_indices(in_shape, pixels, rows, attrs.channel_axis) {
            Ok(slots) => slots,
            Err(_) if uniform() => vec![0; rows],
            Err(reason) => return Err(PlanError::node(t, reason)),
        };
        let mut values = Vec::with_capacity(rows * levels);
        let mut descending = Vec::with_capacity(rows);
        for (slot, &c) in slots.iter().enumerate() {
            let row = if trows == 1 { 0 } else { c };
            let value_desc = directions.as_ref().is_some_and(|d| d[c] < 0.0);
            let grows = decode
                .increasing(slot)
                .ok_or_else(|| PlanError::node(t, "thresholds on f32 values in hardware"))?;
            let int_desc = value_desc == grows;
            for &th in &table[row * levels..(row + 1) * levels] {
                let reached = |k: i64| {
                    let v = decode.value(k, slot);
                    if value_desc {
                        v <= th
                    } else {
                        v >= th
                    }
                };
                values.push(integer_threshold(reached, lo, hi, int_desc));
            }
            descending.push(int_desc);
        }
        let (output, step, offset) = threshold_levels(self.graph, t, attrs, levels)?;
        Ok((
            Thresholds {
                levels,
                values,
                descending,
                step,
                offset,
                output,
            },
            Decode::Level {
                out_scale: attrs.out_scale,
                out_bias: attrs.out_bias,
                step,
                offset,
            },
        ))
    }

    /// A threshold on its own.
    fn threshold(&mut self, node: &Node, attrs: &ThresholdAttrs) -> Result<(), PlanError> {
        let x = self.hw(node.inputs[0], Some(node))?;
        let stream = self.streams[x.stream].clone();
        let (lo, hi) = stream
            .encoding
            .range()
            .ok_or_else(|| PlanError::node(node, "thresholds on f32 values in hardware"))?;
        let (th, level) = self.integer_thresholds(
            node,
            attrs,
            &x.decode,
            stream.channels,
            stream.pixels,
            lo,
            hi,
        )?;
        let out = self.stream(
            &self.graph.value(node.outputs[0]).name.clone(),
            th.output,
            stream.pixels,
            stream.channels,
        );
        self.push(
            node.name.clone(),
            vec![node.name.clone()],
            LayerKind::Threshold(ThresholdLayer {
                input: stream.encoding,
                thresholds: th,
                channels: stream.channels,
                lanes: 1,
            }),
            vec![x.stream],
            vec![out],
        );
        self.values.insert(
            node.outputs[0],
            Hw {
                stream: out,
                decode: level,
            },
        );
        Ok(())
    }

    /// A max-pool (min on the `min` channels) on its own.
    fn pool(&mut self, node: &Node, attrs: &PoolAttrs, min: &[bool]) -> Result<(), PlanError> {
        let Some([kernel, stride, dilation]) =
            window_2d(&attrs.kernel, &attrs.strides, &attrs.dilations, &attrs.pads)
        else {
            return Err(PlanError::node(
                node,
                "the dataflow plan takes 1-D and 2-D pools",
            ));
        };
        let (x, in_hw, c) = self.spatial_input(node)?;
        let encoding = self.streams[x.stream].encoding;
        if encoding == Encoding::F32 {
            return Err(PlanError::node(
                node,
                "max-pools on f32 values are not in hardware",
            ));
        }
        let (_, [oh, ow]) = self.image_result(node)?;
        let take_min = pool_directions(node, &x.decode, min, c)?;
        let geometry = WindowGeometry {
            channels: c,
            in_hw,
            out_hw: [oh, ow],
            kernel,
            stride,
            dilation,
            pads: pads_2d(&attrs.pads),
        };
        let out = self.stream(
            &self.graph.value(node.outputs[0]).name.clone(),
            encoding,
            oh * ow,
            c,
        );
        self.push(
            node.name.clone(),
            vec![node.name.clone()],
            LayerKind::Pool(Pool {
                geometry,
                encoding,
                take_min,
                lanes: 1,
            }),
            vec![x.stream],
            vec![out],
        );
        self.values.insert(
            node.outputs[0],
            Hw {
                stream: out,
                decode: x.decode,
            },
        );
        Ok(())
    }

    /// An integer tensor times the scale its result type names: the same integers.
    fn rescale(&mut self, node: &Node) -> Result<bool, PlanError> {
        let Op::Binary(bnnc_ir::BinaryOp::Mul) = node.op else {
            return Ok(false);
        };
        let (x, c) = match (
            self.graph.const_data(node.inputs[0]),
            self.graph.const_data(node.inputs[1]),
        ) {
            (None, Some(c)) => (node.inputs[0], c),
            (Some(c), None) => (node.inputs[1], c),
            _ => return Ok(false),
        };
        let Some(hw) = self.values.get(&x).cloned() else {
            return Ok(false);
        };
        let (in_ty, out_ty) = (
            &self.graph.value(x).ty,
            &self.graph.value(node.outputs[0]).ty,
        );
        let plain = matches!(&hw.decode, Decode::Scaled(s) if s.iter().all(|&s| s == 1.0));
        if !plain || in_ty.elem.int_type() != out_ty.elem.int_type() || in_ty.shape != out_ty.shape
        {
            return Ok(false);
        }
        let stream = &self.streams[hw.stream];
        let Ok(scales) = slot_constant(c, &out_ty.shape, stream.pixels, stream.channels) else {
            return Ok(false);
        };
        let Ok(Decode::Scaled(typed)) =
            scaled_decode(&out_ty.elem, &out_ty.shape, stream.channels, stream.pixels)
        else {
            return Ok(false);
        };
        let same = (0..stream.channels)
            .all(|j| scales[j % scales.len()].to_bits() == typed[j % typed.len()].to_bits());
        if !same {
            return Ok(false);
        }
        self.values.insert(
            node.outputs[0],
            Hw {
                stream: hw.stream,
                decode: Decode::Scaled(scales),
            },
        );
        Ok(true)
    }

    /// Elementwise f32 arithmetic on streams (and constants).
    fn elementwise(&mut self, node: &Node) -> Result<(), PlanError> {
        let out_ty = self.graph.value(node.outputs[0]).ty.clone();
        // The streams read, and the elementwise layer this node joins, if it is the only
        // reader of one whose result it takes.
        let mut geometry: Option<(usize, usize)> = None;
        let mut joined: Option<usize> = None;
        for &v in &node.inputs {
            if self.graph.const_data(v).is_some() {
                continue;
            }
            let hw = self.hw(v, Some(node))?;
            let s = &self.streams[hw.stream];
            if self.graph.value(v).ty.shape != out_ty.shape {
                return Err(PlanError::node(
                    node,
                    "operands of different shapes in hardware",
                ));
            }
            match geometry {
                None => geometry = Some((s.pixels, s.channels)),
                Some(g) if g != (s.pixels, s.channels) => {
                    return Err(PlanError::node(
                        node,
                        "operands streamed in different orders",
                    ))
                }
                _ => {}
            }
            let producer = self.layers.iter().position(|l| {
                matches!(l.kind, LayerKind::Elementwise(_)) && l.outputs == [hw.stream]
            });
            if joined.is_none() && self.graph.only_user(v).is_some() {
                joined = producer;
            }
        }
        let Some((pixels, channels)) = geometry else {
            return Err(PlanError::node(node, "no operand is computed in hardware"));
        };
        let (mut layer, mut e) = match joined {
            Some(i) => {
                // Joining: the layer moves after the producers of this node's operands.
                let layer = self.layers.remove(i);
                let LayerKind::Elementwise(e) = layer.kind.clone() else {
                    unreachable!("joined layers are elementwise")
                };
                (layer, e)
            }
            None => (
                Layer {
                    name: node.name.clone(),
                    nodes: Vec::new(),
                    kind: LayerKind::Duplicate { lanes: 1 },
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                },
                Elementwise {
                    inputs: Vec::new(),
                    ops: Vec::new(),
                    output: Encoding::F32,
                    output_scale: vec![1.0],
                    channels,
                    lanes: 1,
                },
            ),
        };
        let joined_stream = layer.outputs.first().copied();
        let mut operands = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            if let Some(c) = self.graph.const_data(v) {
                let c = slot_constant(c, &out_ty.shape, pixels, channels)
                    .map_err(|r| PlanError::node(node, r))?;
                operands.push(Operand::Const(c));
                continue;
            }
            let hw = self.hw(v, Some(node))?;
            if Some(hw.stream) == joined_stream {
                operands.push(Operand::Op(e.ops.len() - 1));
            } else {
                operands.push(Operand::Input(e.inputs.len()));
                e.inputs
                    .push((self.streams[hw.stream].encoding, hw.decode.clone()));
                layer.inputs.push(hw.stream);
            }
        }
        let constant = |i: usize| match operands.get(i) {
            Some(Operand::Const(c)) if c.len() == 1 => Some(c[0]),
            _ => None,
        };
        let op = match &node.op {
            Op::Binary(b)
                if !matches!(
                    b,
                    bnnc_ir::BinaryOp::Pow | bnnc_ir::BinaryOp::Min | bnnc_ir::BinaryOp::Max
                ) =>
            {
                ElementOp::Binary(*b, operands[0].clone(), operands[1].clone())
            }
            Op::Relu => ElementOp::Relu(operands[0].clone()),
            Op::Sign => ElementOp::Sign(operands[0].clone()),
            Op::Clip { min, max } => ElementOp::Clip(operands[0].clone(), *min, *max),
            Op::BipolarQuant => ElementOp::BipolarQuant(operands[0].clone(), operands[1].clone()),
            Op::Quant(attrs) => {
                let bits = constant(3)
                    .filter(|b| b.fract() == 0.0 && (1.0..=32.0).contains(b))
                    .ok_or_else(|| {
                        PlanError::node(
                            node,
                            "the bit width must be one constant integer in 1..=32",
                        )
                    })?;
                let (min, max) =
                    bnnc_ir::interp::quant_range(attrs.signed, attrs.narrow, bits as u32);
                ElementOp::Quant {
                    x: operands[0].clone(),
                    scale: operands[1].clone(),
                    zero: operands[2].clone(),
                    min,
                    max,
                    bipolar: bits == 1.0 && attrs.signed,
                    rounding: attrs.rounding,
                }
            }
            _ => {
                return Err(PlanError::node(
                    node,
                    "the dataflow plan has no hardware layer for this op",
                ))
            }
        };
        e.ops.push(op);
        e.output = Encoding::of_elem(&out_ty.elem);
        let decode = match scaled_decode(&out_ty.elem, &out_ty.shape, channels, pixels) {
            Ok(Decode::Scaled(s)) => {
                e.output_scale = s.clone();
                Decode::Scaled(s)
            }
            Ok(d) => {
                e.output_scale = vec![1.0];
                d
            }
            Err(r) => return Err(PlanError::node(node, r)),
        };
        let out = self.stream(
            &self.graph.value(node.outputs[0]).name.clone(),
            e.output,
            pixels,
            channels,
        );
        layer.nodes.push(node.name.clone());
        layer.outputs = vec![out];
        layer.kind = LayerKind::Elementwise(e);
        self.push(
            layer.name.clone(),
            layer.nodes,
            layer.kind,
            layer.inputs,
            layer.outputs,
        );
        self.values.insert(
            node.outputs[0],
            Hw {
                stream: out,
                decode,
            },
        );
        Ok(())
    }
}

/// Which slots a pool takes the minimum of: the `min` channels of a MinMaxPool, flipped
/// where the integers fall as the values rise.
fn pool_directions(
    node: &Node,
    decode: &Decode,
    min: &[bool],
    channels: usize,
) -> Result<Vec<bool>, PlanError> {
    (0..channels)
        .map(|c| {
            let grows = decode.increasing(c).ok_or_else(|| {
                PlanError::node(node, "max-pools on f32 values are not in hardware")
            })?;
            Ok(min.get(c).copied().unwrap_or(false) == grows)
        })
        .collect()
}

/// The integers of a threshold's results: `offset + step * count`, checked against the
/// interpreter's `out_scale * count + out_bias` for every count.
fn threshold_levels(
    graph: &Graph,
    t: &Node,
    attrs: &ThresholdAttrs,
    levels: usize,
) -> Result<(Encoding, i64, i64), PlanError> {
    let elem = &graph.value(t.outputs[0]).ty.elem;
    let (int, scale) = match elem {
        ElemType::Int(i) => (*i, 1.0),
        ElemType::Scaled(i, Scale::Tensor(s)) => (*i, *s),
        _ => {
            return Err(PlanError::node(
                t,
                format!("a threshold result of type {elem}"),
            ))
        }
    };
    let integer = |count: usize| -> Option<i64> {
        let v = attrs.out_scale * count as f32 + attrs.out_bias;
        let i = (f64::from(v) / f64::from(scale)).round();
        (int.contains(i) && (i as f32 * scale).to_bits() == v.to_bits()).then_some(i as i64)
    };
    let bad = || PlanError::node(t, "its levels are not integers of its type at even steps");
    let offset = integer(0).ok_or_else(bad)?;
    let step = if levels == 0 {
        1
    } else {
        integer(1).ok_or_else(bad)? - offset
    };
    for count in 0..=levels {
        if integer(count) != Some(offset + step * count as i64) {
            return Err(bad());
        }
    }
    Ok((Encoding::of_int(int), step, offset))
}

/// The weights of a layer as integers: each value divided by its scale (one, or one per
/// index along `axis`), checked to be exactly `int * scale`.
fn weight_integers(
    graph: &Graph,
    node: &Node,
    w: ValueId,
    axis: usize,
) -> Result<Vec<i64>, PlanError> {
    let data = graph
        .const_data(w)
        .ok_or_else(|| PlanError::node(node, "the weights must be constant"))?;
    let ty = &graph.value(w).ty;
    let shape = &ty.shape;
    let values = data.to_f32_vec();
    let scales: Vec<f32> = match &ty.elem {
        ElemType::Int(_) => vec![1.0],
        ElemType::Scaled(_, Scale::Tensor(s)) => vec![*s],
        ElemType::Scaled(_, Scale::Channel { axis: a, values }) if *a == axis => values.to_vec(),
        ElemType::Scaled(..) => {
            return Err(PlanError::node(
                node,
                "weights scaled along an axis other than the outputs",
            ))
        }
        ElemType::F32 => {
            return Err(PlanError::node(
                node,
                "f32 weights: hardware layers multiply integers",
            ))
        }
    };
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let s = scales[(i / inner.max(1)) % scales.len()];
            let q = (v / s).round();
            if (q * s).to_bits() == v.to_bits() || (q == 0.0 && v == 0.0) {
                Ok(q as i64)
            } else {
                Err(PlanError::node(
                    node,
                    format!("weight {v} is not an integer times its scale {s}"),
                ))
            }
        })
        .collect()
}

/// The encoding of a layer's weights.
fn weight_encoding(graph: &Graph, node: &Node, w: ValueId) -> Result<Encoding, PlanError> {
    graph
        .value(w)
        .ty
        .elem
        .int_type()
        .map(Encoding::of_int)
        .ok_or_else(|| PlanError::node(node, "f32 weights: hardware layers multiply integers"))
}

/// `(M, K)` row-major to `(K, M)`.
fn transpose(v: &[i64], rows: usize, cols: usize) -> Vec<i64> {
    let mut t = vec![0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

/// A stream read by several layers (or a layer and the output) gets a layer copying it.
fn insert_duplicates(l: &mut Lowered) {
    let mut readers: HashMap<StreamId, usize> = HashMap::new();
    for layer in &l.layers {
        for &s in &layer.inputs {
            *readers.entry(s).or_default() += 1;
        }
    }
    *readers.entry(l.output.stream).or_default() += 1;
    let mut shared: Vec<(StreamId, usize)> = readers.into_iter().filter(|&(_, n)| n > 1).collect();
    shared.sort_unstable();
    for (s, n) in shared {
        let copies: Vec<StreamId> = (0..n)
            .map(|i| {
                let mut copy = l.streams[s].clone();
                copy.name = format!("{}.{i}", copy.name);
                l.streams.push(copy);
                l.streams.len() - 1
            })
            .collect();
        let mut next = copies.iter().copied();
        // Readers in order take the copies in order; the output port last.
        for layer in l.layers.iter_mut() {
            for input in layer.inputs.iter_mut().filter(|i| **i == s) {
                *input = next.next().expect("one copy per reader");
            }
        }
        if l.output.stream == s {
            l.output.stream = next.next().expect("one copy per reader");
        }
        let producer = l
            .layers
            .iter()
            .position(|layer| layer.outputs.contains(&s))
            .map_or(0, |p| p + 1);
        let name = format!("{}.dup", l.streams[s].name);
        l.layers.insert(
            producer,
            Layer {
                name,
                nodes: Vec::new(),
                kind: LayerKind::Duplicate { lanes: 1 },
                inputs: vec![s],
                outputs: copies,
            },
        );
    }
}
