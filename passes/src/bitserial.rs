//! Bit-serial lowering, part of `lower-xnor-popcount`: a MatMul, Gemm or Conv (any group) of
//! low-bit integers (1 to 4 bit activations; 1 to 4 bit or bipolar weights; plain or scaled)
//! becomes `bitserial_matmul` or `bitserial_conv` times the layer's scale, where a cost model
//! says that beats summing the integers as floats. A backend computes the exact integer dot
//! product as a weighted sum of popcounts over pairs of bit planes.
//!
//! The value is unchanged: a layer on scaled integers is its integer sum times `s_a * s_w[c]`
//! rounded once, and so is the multiply after the integer op. Thresholds reading the value
//! move onto the integers, as after an XNOR layer.
//!
//! # Cost model
//! Per row (a convolution's output position), with `N` outputs, `K` terms, `W = ceil(K / 64)`
//! words and `p = b_a * b_w` plane pairs: bit-serial costs `N * W * p` popcount steps plus `K * b_a` steps to pack the
//! activations' planes; the exact float kernel costs `N * K / 4` four-lane multiply-adds.
//! The step costs were fitted to `bnnc bench` per-step times on the benchmark machine (AMD
//! EPYC Zen 5), forcing each kernel with `bnnc --bit-serial always|never`:
//!
//! | layer (K x N, bits)        | bit-serial | float  |
//! |----------------------------|------------|--------|
//! | tfc_w2a2 first (784x64, 2x2) | 1.9 us   | 2.5 us |
//! | kws hidden (256x256, 3x3)  | 3.5 us     | 6.0 us |
//! | kws last (256x12, 3x3)     | 0.6 us     | 0.3 us |
//! | unsw first (600x64, 2x2)   | 1.6 us     | 3.1 us |
//! | zoo_tfc_1w2a first (784x64, 2 x bipolar) | 1.4 us | 2.8 us |
//! | conv 32 -> 64, 3x3, 6x6, padded (2 x 2) | 48.6 us | 109.5 us |
//!
//! A convolution gathers each window term by term, so both of its kernels take about twice
//! the model's estimate (27.6 and 49.8 us for that layer); the ratio, which decides, holds.
//!
//! ## Grouped convolutions
//! A grouped layer has its own model, per output (position and filter), because its
//! kernels are others: the integer one takes no unrolled route and runs its threshold as a
//! step of its own, while a grouped bit-serial filter reads at least one word per tap and
//! plane pair (one bit of it for a depthwise layer) and fuses the threshold, but writes
//! level planes that a consumer on floats converts back. Bit-serial costs
//! `taps * words * p` popcount steps of `GROUPED_POPCOUNT_STEP` per output, packing
//! `C * b_a` planes per position, and `PLANES_TO_F32` per output where thresholds read it;
//! the integer kernel `GROUPED_INT_OUTPUT` plus `GROUPED_INT_TERM` per term, and a
//! threshold step apart `THRESHOLD_OUTPUT` where thresholds read it. Fitted on Cranelift,
//! forcing each kernel (2-vCPU AMD EPYC, `bnnc bench --runs 500`, the steps around the
//! layer that change counted):
//!
//! | layer (groups, C/group x taps, filters, positions, bits) | bit-serial | integer |
//! |-----------------------------------------------------|------------|---------|
//! | mobilenet_block_ts depthwise (16, 1 x 9, 16, 64, 4 x 4) | 18.4 + 2.8 + 2.2 us | 21.1 + 2.3 us |
//! | conv_groups2 (2, 4 x 9, 8, 256, 4 x 4)             | 38.1 + 5.6 + 4.1 us | 41.6 + 4.5 us |
//!
//! | binary, 4 groups (4, 32 x 9, 128, 256), integer kernel only |  | 1,336.9 + 23.9 us |
//!
//! The integer constants go through the second and third rows. Both 4-bit layers sit near
//! break-even and stay on integers (the model: 24.0 against 20.8 us, 48.0 against 46.1 us;
//! whole models within 5% either way); fewer planes (a 2-bit layer has a quarter of the
//! pairs) or more channels per group make bit-serial clearly faster.
//!
//! Binary grouped layers always lower to XNOR ([`crate::xnor`]): their integer kernel is
//! about ten times slower on every shape measured.

use bnnc_ir::{ElemType, Graph, IntType, IrError, Node, NodeId, Op, Scale, Tensor};

use crate::integers::{replace_by_integers, Integers, WeightScale};
use crate::report::PassReport;
use crate::threshold::channel_shape;

/// Nanoseconds per popcount step (load, and, popcount, add) of the bit-serial kernel.
const POPCOUNT_STEP: f64 = 0.33;
/// Nanoseconds per activation per plane to pack the planes.
const PACK_STEP: f64 = 0.6;
/// Nanoseconds per four-lane multiply-add of the exact float kernel.
const FLOAT_STEP: f64 = 0.3;

/// Nanoseconds per popcount step (one word of one plane pair) of a grouped bit-serial
/// filter, on vectors.
const GROUPED_POPCOUNT_STEP: f64 = 0.13;
/// Nanoseconds per activation per plane to pack a grouped layer's planes.
const GROUPED_PACK_STEP: f64 = 0.68;
/// Nanoseconds per output to convert a grouped bit-serial layer's level planes to f32.
const PLANES_TO_F32: f64 = 2.0;
/// Nanoseconds per output of the exact integer kernel on a grouped convolution, and per
/// term of its sum.
const GROUPED_INT_OUTPUT: f64 = 17.4;
const GROUPED_INT_TERM: f64 = 0.081;
/// Nanoseconds per output of a threshold step apart from its layer (a bit-serial layer runs
/// it in its output stage).
const THRESHOLD_OUTPUT: f64 = 2.2;

/// The widest planes taken: beyond 4 bits the plane pairs outnumber the float work.
const MAX_BITS: u8 = 4;

/// Which low-bit layers become bit-serial.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BitSerial {
    /// Those the measured cost model prefers bit-serial.
    #[default]
    CostModel,
    /// Every one that can (to measure the cost model).
    Always,
    /// None.
    Never,
}

/// Lowers the low-bit matrix products `choice` makes bit-serial.
pub fn lower_bit_serial(
    graph: &mut Graph,
    choice: BitSerial,
    report: &mut PassReport,
) -> Result<(), IrError> {
    let forced = match choice {
        BitSerial::CostModel => None,
        BitSerial::Always => Some(true),
        BitSerial::Never => Some(false),
    };
    let nodes: Vec<NodeId> = graph.node_ids().collect();
    for n in nodes {
        if !graph.contains_node(n) {
            continue;
        }
        let node = graph.node(n).clone();
        let Some(plan) = plan(graph, &node) else {
            continue;
        };
        let (bs, fl) = (plan.bit_serial_ns, plan.float_ns);
        if !forced.unwrap_or(bs < fl) {
            report.note(format!(
                "`{}` ({}) stays on integers: bit-serial {bs:.0} ns against {fl:.0} ns",
                node.name,
                node.op.name()
            ));
            continue;
        }
        let w_name = graph.value(node.inputs[1]).name.clone();
        let weights = graph.add_const(
            format!("{w_name}.integers"),
            Some(ElemType::Int(plan.w_int)),
            plan.weights,
        )?;
        let what = format!(
            "is now {}, {} plane pairs: {bs:.0} ns against {fl:.0} ns on the exact kernel",
            plan.op.name(),
            plan.pairs
        );
        let integers = Integers {
            op: plan.op,
            operands: &[node.inputs[0], weights],
            suffix: "planes",
            scales: &plan.scales,
        };
        replace_by_integers(graph, n, integers, &what, report)?;
    }
    Ok(())
}

struct Plan {
    /// `bitserial_matmul` or `bitserial_conv`.
    op: Op,
    /// The weights' integers (`(K, N)`, or `(M, C, KH, KW)` for a convolution), and their
    /// type.
    weights: Tensor,
    w_int: IntType,
    /// `s_a * s_w[c]`: the value is the integer times these.
    scales: WeightScale,
    pairs: usize,
    bit_serial_ns: f64,
    float_ns: f64,
}

/// The planes of an integer type: unsigned, or two's complement, of at most [`MAX_BITS`].
fn planes(t: IntType) -> Option<usize> {
    t.planes()
        .map(|(count, _)| count)
        .filter(|&count| count <= usize::from(MAX_BITS))
}

fn plan(graph: &Graph, node: &Node) -> Option<Plan> {
    let (a, w) = (
        &graph.value(*node.inputs.first()?).ty,
        &graph.value(*node.inputs.get(1)?).ty,
    );
    let w_data = graph.const_data(node.inputs[1])?;
    let out = &graph.value(node.outputs[0]).ty.shape;
    // A grouped convolution's groups and taps (1 and 1 otherwise).
    let (groups, taps) = match &node.op {
        Op::Conv(attrs) => (attrs.group.max(1), attrs.kernel.iter().product::<usize>()),
        _ => (1, 1),
    };
    // The layer's shape: the weights' output-channel axis, whether they are (N, K) (Gemm's
    // trans_b), the outputs N and terms K per position, the positions, and the op.
    let (w_axis, trans_b, n, k, positions, op) = match &node.op {
        // Rows of K: the kernels read a matrix (a batched MatMul keeps its integer sums).
        Op::MatMul if w.shape.len() == 2 && a.shape.len() == 2 => {
            let (k, n) = (w.shape[0], w.shape[1]);
            let op = Op::BitSerialMatMul { a_scale: 0.0 };
            (1, false, n, k, a.numel() / k.max(1), op)
        }
        Op::Gemm(g) if node.inputs.len() == 2 && g.alpha == 1.0 && !g.trans_a => {
            let (k, n) = if g.trans_b {
                (w.shape[1], w.shape[0])
            } else {
                (w.shape[0], w.shape[1])
            };
            let op = Op::BitSerialMatMul { a_scale: 0.0 };
            (
                usize::from(!g.trans_b),
                g.trans_b,
                n,
                k,
                a.numel() / k.max(1),
                op,
            )
        }
        // Any number of spatial axes with one group (the plane kernels take windows of 1 to
        // 3 axes alike); grouped ones in 2-D, where the grouped kernels are.
        Op::Conv(attrs)
            if node.inputs.len() == 2 && (out.len() == 4 || attrs.group <= 1 && out.len() >= 3) =>
        {
            let k = w.shape[1..].iter().product();
            let op = Op::BitSerialConv {
                attrs: attrs.clone(),
                a_scale: 0.0,
            };
            let positions = out[0] * out[2..].iter().product::<usize>();
            (0, false, w.shape[0], k, positions, op)
        }
        _ => return None,
    };
    let (a_int, a_scale) = match &a.elem {
        ElemType::Int(t) => (*t, 1.0),
        ElemType::Scaled(t, Scale::Tensor(s)) => (*t, *s),
        _ => return None,
    };
    let (w_int, w_scales) = match &w.elem {
        ElemType::Int(t) => (*t, vec![1.0]),
        ElemType::Scaled(t, Scale::Tensor(s)) => (*t, vec![*s]),
        ElemType::Scaled(t, Scale::Channel { axis, values }) if *axis == w_axis => {
            (*t, values.to_vec())
        }
        _ => return None,
    };
    // Bipolar weights are one plane (`w = 2b - 1`, see the kernel).
    let pw = match w_int {
        IntType::Bipolar => 1,
        t => planes(t)?,
    };
    let pa = planes(a_int)?;
    // The weights' integers, checked to be what the type says: (K, N) for a matrix product,
    // (M, C, KH, KW) as they are for a convolution.
    let values = w_data.to_f32_vec();
    let inner: usize = w.shape[w_axis + 1..].iter().product();
    let mut weights = vec![0f32; values.len()];
    for (i, &v) in values.iter().enumerate() {
        let j = (i / inner.max(1)) % w.shape[w_axis];
        let s = w_scales[j % w_scales.len()];
        let q = (v / s).round();
        if q * s != v || !w_int.contains(f64::from(q)) {
            return None;
        }
        let at = if trans_b {
            // (N, K) to (K, N).
            (i % k) * n + i / k
        } else {
            i
        };
        weights[at] = q;
    }
    let weights_shape = match op {
        Op::BitSerialConv { .. } => w.shape.clone(),
        _ => vec![k, n],
    };
    let scales = WeightScale {
        values: w_scales.iter().map(|s| a_scale * s).collect(),
        shape: match (w_scales.len(), &op) {
            (1, _) => Vec::new(),
            (_, Op::BitSerialConv { .. }) => channel_shape(n, out.len()),
            _ => vec![n],
        },
    };
    let op = match op {
        Op::BitSerialConv { attrs, .. } => Op::BitSerialConv { attrs, a_scale },
        _ => Op::BitSerialMatMul { a_scale },
    };
    let positions = positions as f64;
    // Grouped ±1 weights run as two planes (signed 2-bit integers, see the kernels).
    let pairs = pa
        * if groups > 1 && w_int == IntType::Bipolar {
            2
        } else {
            pw
        };
    let (bit_serial_ns, float_ns) = if groups > 1 {
        // Per output: a word per tap and plane pair at least (see "Grouped convolutions").
        let group_channels = k / taps.max(1);
        let words = (taps * group_channels.div_ceil(64)) as f64;
        let outputs = positions * n as f64;
        let thresholded = graph
            .only_user(node.outputs[0])
            .is_some_and(|u| matches!(graph.node(u).op, Op::Threshold(_)));
        let channels = (group_channels * groups) as f64;
        let (threshold, planes_out) = if thresholded {
            (THRESHOLD_OUTPUT, PLANES_TO_F32)
        } else {
            (0.0, 0.0)
        };
        let bit_serial = outputs * (words * pairs as f64 * GROUPED_POPCOUNT_STEP + planes_out)
            + positions * channels * pa as f64 * GROUPED_PACK_STEP;
        let integer = outputs * (GROUPED_INT_OUTPUT + GROUPED_INT_TERM * k as f64 + threshold);
        (bit_serial, integer)
    } else {
        let words = k.div_ceil(64) as f64;
        let bit_serial = positions
            * (n as f64 * words * pairs as f64 * POPCOUNT_STEP + (k * pa) as f64 * PACK_STEP);
        (
            bit_serial,
            positions * n as f64 * k as f64 / 4.0 * FLOAT_STEP,
        )
    };
    Some(Plan {
        op,
        weights: Tensor::f32(weights_shape, weights),
        w_int,
        scales,
        pairs,
        bit_serial_ns,
        float_ns,
    })
}
