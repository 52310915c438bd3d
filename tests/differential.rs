//! A differential fuzzer: random valid quantized networks, built as Brevitas exports look
//! (float weights under Quant / BipolarQuant, BatchNorm, activation quantizers, max-pools,
//! a flattening and a classifier), each run three ways that must agree:
//!
//! - the interpreter on the network as built, and on the optimized network: integer outputs
//!   identical, float outputs within float rounding of the final affine layers;
//! - native code on the optimized network (Cranelift, and the LLVM kernels when built in): the
//!   interpreter's bits exactly;
//! - the FPGA dataflow plan of the optimized network, where it has one, simulated on integers
//!   (`bnnc_dataflow::sim`): the interpreter's values of the hardware's output tensor, bit for
//!   bit (the HLS and Verilog designs are proven against the same plan in `tests/hls.rs` and
//!   `tests/verilog.rs`).
//!
//! `cargo test --test differential` runs a seeded smoke campaign, on this machine and (shorter)
//! with aarch64 code under qemu-aarch64; `cargo test --test differential -- --ignored` a long
//! one. A failing case prints its seed and the network's
//! IR, so that it can be replayed (`case(seed, family, Native::Host)`) and kept as a regression test.
//! Every third seed also builds a grouped network (groups of several channels), from a
//! random stream of its own: the plain networks of every seed are the ones they always were.
//! Half the grouped ones run with every low-bit layer bit-serial (`--bit-serial always`).
//! Wide networks ([`wide_network`]: CNV-sized convolutions, the AMX tile kernels' layers) run
//! in `wide_convolutions_campaign` and every fourth seed of the timed campaign.

mod common;

use bnnc_ir::{
    BinaryOp, CompareOp, ConvAttrs, ElemType, GemmAttrs, Graph, Op, PoolAttrs, QuantAttrs,
    RoundingMode, Tensor, TensorType, ValueId,
};

/// A xorshift generator: the same seed gives the same network on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn floats(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Builds one network; names come from a counter so every value is unique.
struct Builder<'r> {
    graph: Graph,
    rng: &'r mut Rng,
    count: usize,
    /// For a grouped network, the generator of its convolutions' groups: a stream of its
    /// own, so that the plain networks of every seed stay as they were.
    groups: Option<Rng>,
}

impl Builder<'_> {
    fn name(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{what}{}", self.count)
    }

    fn constant(&mut self, shape: Vec<usize>, data: Vec<f32>) -> ValueId {
        let name = self.name("c");
        self.graph
            .add_const(name, None, Tensor::f32(shape, data))
            .unwrap()
    }

    fn scalar(&mut self, v: f32) -> ValueId {
        self.constant(vec![], vec![v])
    }

    fn node(&mut self, op: Op, inputs: &[ValueId]) -> ValueId {
        let name = self.name(op.name());
        let out = format!("{name}_out");
        self.graph.add_node(name, op, inputs, vec![out]).unwrap()[0]
    }

    /// A scale as exporters have them: a power of two, or any positive float.
    fn scale(&mut self) -> f32 {
        if self.rng.coin() {
            2f32.powi(-(self.rng.below(6) as i32))
        } else {
            self.rng.uniform(0.01, 0.5)
        }
    }

    /// A Quant of `x` to `bits` (signed or not, narrow or not), or a BipolarQuant.
    fn quantizer(&mut self, x: ValueId, bits: usize, signed: bool) -> ValueId {
        if bits == 1 && signed {
            let s = self.scalar(1.0);
            return self.node(Op::BipolarQuant, &[x, s]);
        }
        let attrs = QuantAttrs {
            signed,
            narrow: signed && self.rng.coin(),
            rounding: [
                RoundingMode::HalfEven,
                RoundingMode::Floor,
                RoundingMode::Ceil,
            ][self.rng.below(3)],
        };
        let scale = self.scale();
        let (s, z, b) = (
            self.scalar(scale),
            self.scalar(0.0),
            self.scalar(bits as f32),
        );
        self.node(Op::Quant(attrs), &[x, s, z, b])
    }

    /// Float weights of `shape` under a weight quantizer of 1 to 4 bits (or 8).
    fn weights(&mut self, shape: Vec<usize>) -> ValueId {
        let n = shape.iter().product();
        let data = self.rng.floats(n, -1.0, 1.0);
        let w = self.constant(shape, data);
        let bits = [1, 2, 3, 4, 8][self.rng.below(5)];
        self.quantizer(w, bits, true)
    }

    fn batch_norm(&mut self, x: ValueId, channels: usize) -> ValueId {
        let gamma: Vec<f32> = (0..channels)
            .map(|_| {
                // Negative multipliers too: thresholds turn around.
                let g = self.rng.uniform(0.2, 2.0);
                if self.rng.below(5) == 0 {
                    -g
                } else {
                    g
                }
            })
            .collect();
        let beta = self.rng.floats(channels, -1.0, 1.0);
        let mean = self.rng.floats(channels, -2.0, 2.0);
        let var = self.rng.floats(channels, 0.1, 4.0);
        let ops = [gamma, beta, mean, var].map(|p| self.constant(vec![channels], p));
        self.node(
            Op::BatchNorm { epsilon: 1e-5 },
            &[x, ops[0], ops[1], ops[2], ops[3]],
        )
    }

    /// The activation quantizer after a layer: binary, or 2 to 4 bits signed or not.
    fn activation(&mut self, x: ValueId) -> ValueId {
        match self.rng.below(4) {
            0 | 1 => self.quantizer(x, 1, true),
            2 => {
                let bits = 2 + self.rng.below(3);
                self.quantizer(x, bits, false)
            }
            _ => {
                let bits = 2 + self.rng.below(3);
                self.quantizer(x, bits, true)
            }
        }
    }

    /// tf2onnx's form of a QKeras activation before the quantizer (see
    /// `tests/data/qkeras`): the layer's output moved channels-last, a straight-through
    /// estimator that branches (`m + (round(m) - m)`, scaled back), a select written as
    /// comparisons multiplied in, a per-channel constant, then channels-first again plus the
    /// image's mean per channel (a value computed at run time, broadcast). `cleanup` cancels
    /// the transposes and the elementwise nodes run as one chain of two reads.
    fn channels_last_block(&mut self, x: ValueId, rng: &mut Rng) -> ValueId {
        let rank = self.shape(x).len();
        let channels = self.shape(x)[1];
        let mut last: Vec<usize> = vec![0];
        last.extend(2..rank);
        last.push(1);
        let mut first = vec![0; rank];
        for (i, &p) in last.iter().enumerate() {
            first[p] = i;
        }
        let t = self.node(Op::Transpose { perm: last }, &[x]);
        let levels = [4.0, 8.0, 16.0][rng.below(3)];
        let up = self.scalar(levels);
        let m = self.node(Op::Binary(BinaryOp::Mul), &[t, up]);
        let r = self.node(Op::Round, &[m]);
        let d = self.node(Op::Binary(BinaryOp::Sub), &[r, m]);
        let s = self.node(Op::Binary(BinaryOp::Add), &[m, d]);
        let down = self.scalar(1.0 / levels);
        let q = self.node(Op::Binary(BinaryOp::Mul), &[s, down]);
        let bound = rng.uniform(-0.5, 1.0);
        let bound = self.scalar(bound);
        let le = self.node(Op::Compare(CompareOp::LessOrEqual), &[t, bound]);
        let zero = self.scalar(0.0);
        let over = self.node(Op::Compare(CompareOp::Equal), &[le, zero]);
        let kept = self.node(Op::Binary(BinaryOp::Mul), &[le, q]);
        let scales = rng.floats(channels, -1.5, 1.5);
        let scales = self.constant(vec![channels], scales);
        let other = self.node(Op::Binary(BinaryOp::Mul), &[over, scales]);
        let sel = self.node(Op::Binary(BinaryOp::Add), &[kept, other]);
        let back = self.node(Op::Transpose { perm: first }, &[sel]);
        let mean = self.node(Op::GlobalAveragePool, &[x]);
        self.node(Op::Binary(BinaryOp::Add), &[back, mean])
    }

    fn shape(&self, v: ValueId) -> Vec<usize> {
        self.graph.value(v).ty.shape.clone()
    }
}

/// A random network: a quantized input, one to three conv or dense layers with BatchNorm
/// and activation quantizers (max-pools between convs), a classifier. Convolutional networks
/// are 2-D in half the seeds, 1-D or 3-D in the others. Some convolutions are depthwise;
/// with `grouped`, most of the others have groups of several channels. A quarter of the
/// convolutions have tf2onnx's channels-last form of a QKeras activation before their
/// quantizer ([`Builder::channels_last_block`]).
fn network(seed: u64, grouped: bool) -> (Graph, Vec<usize>) {
    let mut rng = Rng::new(seed);
    // The number of spatial axes comes from a stream of its own, so that a 2-D network is
    // the one its seed gave before 1-D and 3-D networks were added.
    let spatial = [2, 2, 1, 3][Rng::new(seed ^ 0x5ba7_1a1d).below(4)];
    let convolutional = rng.coin();
    let input_shape = if convolutional {
        let (c, hw) = (1 + rng.below(4), 4 + rng.below(6));
        let mut shape = vec![1, c];
        shape.extend(std::iter::repeat_n(hw, spatial));
        shape
    } else {
        vec![1, 4 + rng.below(60)]
    };
    let mut b = Builder {
        graph: Graph::new(format!("fuzz{seed}")),
        rng: &mut rng,
        count: 0,
        groups: grouped.then(|| Rng::new(seed ^ 0x0006_2005)),
    };
    let x = b
        .graph
        .add_input("x", TensorType::new(ElemType::F32, input_shape.clone()));
    let bits = [1, 2, 4, 8][b.rng.below(4)];
    let signed = bits == 1 || b.rng.coin();
    let mut v = b.quantizer(x, bits, signed);
    // Channels-last activations come from a stream of their own, as groups do.
    let mut keras = Rng::new(seed ^ 0x4b45_5241);
    for _ in 0..1 + b.rng.below(3) {
        let shape = b.shape(v);
        if shape.len() > 2 {
            let (c, h) = (shape[1], shape[2]);
            let kernel = if h >= 3 { 1 + 2 * b.rng.below(2) } else { 1 };
            let pad = if kernel == 3 { b.rng.below(2) } else { 0 };
            let stride = 1 + usize::from(h > 5 && b.rng.below(4) == 0);
            let depthwise = c > 1 && b.rng.below(5) == 0;
            let (m, group) = if depthwise {
                (c, c)
            } else {
                let m = 1 + b.rng.below(70);
                // Three in four: a divisor of the channels (all of them is depthwise with a
                // channel multiplier), the filters rounded up to a multiple of it.
                let divisors: Vec<usize> = (2..=c).filter(|d| c % d == 0).collect();
                let group = b.groups.as_mut().and_then(|g| {
                    let d = divisors.get(g.below(divisors.len().max(1))).copied();
                    d.filter(|_| g.below(4) != 0)
                });
                match group {
                    Some(d) => (m.div_ceil(d) * d, d),
                    None => (m, 1),
                }
            };
            let mut w_shape = vec![m, c / group];
            w_shape.extend(std::iter::repeat_n(kernel, spatial));
            let w = b.weights(w_shape);
            let attrs = ConvAttrs {
                kernel: vec![kernel; spatial],
                strides: vec![stride; spatial],
                dilations: vec![1; spatial],
                pads: vec![pad; 2 * spatial],
                group,
            };
            v = b.node(Op::Conv(attrs), &[v, w]);
            if b.rng.below(4) != 0 {
                v = b.batch_norm(v, m);
            }
            if keras.below(4) == 0 {
                v = b.channels_last_block(v, &mut keras);
            }
            v = b.activation(v);
            let h = b.shape(v)[2];
            if h >= 2 && b.rng.below(3) == 0 {
                let attrs = PoolAttrs {
                    kernel: vec![2; spatial],
                    strides: vec![2; spatial],
                    dilations: vec![1; spatial],
                    pads: vec![0; 2 * spatial],
                    ceil_mode: h % 2 == 1 && b.rng.coin(),
                    count_include_pad: false,
                };
                v = b.node(Op::MaxPool(attrs), &[v]);
            }
        } else {
            let (k, m) = (shape[1], 1 + b.rng.below(80));
            v = dense(&mut b, v, k, m);
            if b.rng.below(4) != 0 {
                v = b.batch_norm(v, m);
            }
            v = b.activation(v);
        }
    }
    let shape = b.shape(v);
    let k: usize = shape[1..].iter().product();
    if shape.len() > 2 {
        v = b.node(Op::Reshape { shape: vec![1, k] }, &[v]);
    }
    let classes = 2 + b.rng.below(10);
    v = dense(&mut b, v, k, classes);
    match b.rng.below(3) {
        // A float head (a scale, or BatchNorm), or an integer one (a last quantizer).
        0 => {
            let s = b.rng.uniform(0.1, 3.0);
            let s = b.scalar(s);
            v = b.node(Op::Binary(BinaryOp::Mul), &[v, s]);
        }
        1 => v = b.batch_norm(v, classes),
        _ => v = b.activation(v),
    }
    b.graph.set_outputs(vec![v]);
    (b.graph, input_shape)
}

/// A network of wide convolutions, as CNV's middle layers are: two 3x3 convolutions (the
/// second dilated in some) of 64, 128 or 33 to 100 filters over 10 to 22 pixels a side, with binary
/// activations and weights (XNOR layers) or 2-4 bit activations, signed or not, and weights
/// of 1-4 or 8 bits, BatchNorm and max-pools in some, then a binary convolution over the
/// whole image after binary activations: the layers the AMX tile kernels take, where the
/// machine has them.
fn wide_network(seed: u64) -> (Graph, Vec<usize>) {
    let mut rng = Rng::new(seed ^ 0x0007_11e5);
    let (c, hw) = (1 + rng.below(3), 12 + rng.below(13));
    let input_shape = vec![1, c, hw, hw];
    let mut b = Builder {
        graph: Graph::new(format!("wide{seed}")),
        rng: &mut rng,
        count: 0,
        groups: None,
    };
    let x = b
        .graph
        .add_input("x", TensorType::new(ElemType::F32, input_shape.clone()));
    // Some activations are binary, and so are the weights they meet (XNOR layers), half of
    // them, and two in three after a binary one (XNOR kernels write bits).
    let activation = |b: &mut Builder<'_>, v, after_binary: bool| {
        if b.rng.below(6) < if after_binary { 4 } else { 3 } {
            (b.quantizer(v, 1, true), true)
        } else {
            let (bits, signed) = (2 + b.rng.below(3), b.rng.coin());
            (b.quantizer(v, bits, signed), false)
        }
    };
    let bipolar_weights = |b: &mut Builder<'_>, shape: Vec<usize>| {
        let data = b.rng.floats(shape.iter().product(), -1.0, 1.0);
        let w = b.constant(shape, data);
        b.quantizer(w, 1, true)
    };
    let (mut v, mut binary) = activation(&mut b, x, false);
    for layer in 0..2 {
        let shape = b.shape(v);
        let (c, h) = (shape[1], shape[2]);
        let dilation = if layer == 1 && h >= 7 && b.rng.coin() {
            2
        } else {
            1
        };
        // CNV's widths, or any from 33 to 100 (a partial word of channels).
        let m = [64, 128, 33 + b.rng.below(68)][b.rng.below(3)];
        let w = if binary {
            bipolar_weights(&mut b, vec![m, c, 3, 3])
        } else {
            b.weights(vec![m, c, 3, 3])
        };
        let attrs = ConvAttrs {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            dilations: vec![dilation; 2],
            pads: vec![0; 4],
            group: 1,
        };
        v = b.node(Op::Conv(attrs), &[v, w]);
        if b.rng.below(4) != 0 {
            v = b.batch_norm(v, m);
        }
        (v, binary) = activation(&mut b, v, binary);
        if b.shape(v)[2] >= 6 && b.rng.coin() {
            let attrs = PoolAttrs {
                kernel: vec![2, 2],
                strides: vec![2, 2],
                dilations: vec![1, 1],
                pads: vec![0; 4],
                ceil_mode: false,
                count_include_pad: false,
            };
            v = b.node(Op::MaxPool(attrs), &[v]);
        }
    }
    if binary {
        // As CNV ends: a binary convolution over the whole image, so that the one before
        // writes bits (a flattening of more than one pixel reads them in another order).
        let shape = b.shape(v);
        let (c, h, w) = (shape[1], shape[2], shape[3]);
        let m = 16 + b.rng.below(50);
        let weights = bipolar_weights(&mut b, vec![m, c, h, w]);
        let attrs = ConvAttrs {
            kernel: vec![h, w],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            pads: vec![0; 4],
            group: 1,
        };
        v = b.node(Op::Conv(attrs), &[v, weights]);
        v = b.batch_norm(v, m);
        (v, binary) = activation(&mut b, v, binary);
    }
    let shape = b.shape(v);
    let k: usize = shape[1..].iter().product();
    v = b.node(Op::Reshape { shape: vec![1, k] }, &[v]);
    let classes = 2 + b.rng.below(10);
    // After binary activations, a binary classifier (so the last convolution writes bits).
    v = if binary {
        let w = bipolar_weights(&mut b, vec![k, classes]);
        b.node(Op::MatMul, &[v, w])
    } else {
        dense(&mut b, v, k, classes)
    };
    v = b.batch_norm(v, classes);
    b.graph.set_outputs(vec![v]);
    (b.graph, input_shape)
}

/// A dense layer: Gemm (B transposed or not) or MatMul.
fn dense(b: &mut Builder<'_>, x: ValueId, k: usize, m: usize) -> ValueId {
    if b.rng.coin() {
        let w = b.weights(vec![k, m]);
        b.node(Op::MatMul, &[x, w])
    } else {
        let trans_b = b.rng.coin();
        let w = b.weights(if trans_b { vec![m, k] } else { vec![k, m] });
        let attrs = GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b,
        };
        b.node(Op::Gemm(attrs), &[x, w])
    }
}

/// Inputs in [-2, 2) on a grid of 1/16, so that exact zeros and quantizer ties occur.
fn inputs(seed: u64, shape: &[usize], samples: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let n: usize = shape.iter().product::<usize>() * samples;
    (0..n)
        .map(|_| (rng.below(64) as f32) / 16.0 - 2.0)
        .collect()
}

/// What one case covered: the op kinds of its optimized network (window ops of other than
/// two spatial axes also as e.g. `xnor_conv 1-D`), or `None` when bnnc refused it natively
/// (counted, not failed).
type Covered = Option<Vec<String>>;

/// Where native code runs.
#[derive(Clone, Copy)]
enum Native<'a> {
    /// This machine, loaded through the runtime crate.
    Host,
    /// aarch64 code, under qemu-aarch64.
    Aarch64(&'a common::AarchDriver),
}

/// Which network a seed builds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    /// [`network`]'s, ungrouped.
    Plain,
    /// [`network`]'s with groups of several channels.
    Grouped,
    /// [`wide_network`]'s.
    Wide,
}

/// Runs one case.
fn case(seed: u64, family: Family, native: Native<'_>) -> Result<Covered, String> {
    let (graph, shape) = match family {
        Family::Plain => network(seed, false),
        Family::Grouped => network(seed, true),
        Family::Wide => wide_network(seed),
    };
    let label = match family {
        Family::Plain => "",
        Family::Grouped => " (grouped)",
        Family::Wide => " (wide)",
    };
    // Half the grouped networks make every low-bit layer bit-serial: the cost model keeps
    // most grouped layers of these few channels on integers, and the kernels are what the
    // campaign tests. So do the wide ones, whose layers are the tile kernels'.
    let always = match family {
        Family::Plain => false,
        Family::Grouped => seed.is_multiple_of(2),
        Family::Wide => true,
    };
    let bit_serial = if always {
        bnnc_passes::BitSerial::Always
    } else {
        bnnc_passes::BitSerial::CostModel
    };
    check(&graph, &shape, (seed, label), bit_serial, native)
}

/// Runs network `graph` of input `shape` three ways (see the top of the file); `seed` makes
/// its inputs, and names it in failures with its `family`.
fn check(
    graph: &Graph,
    shape: &[usize],
    (seed, family): (u64, &str),
    bit_serial: bnnc_passes::BitSerial,
    native: Native<'_>,
) -> Result<Covered, String> {
    let ir = bnnc_ir::text::print_graph(graph);
    let fail = |what: String| format!("seed {seed}{family}: {what}\n{ir}");
    let samples = 4;
    let data = inputs(seed, shape, samples);
    let mut batch = shape.to_vec();
    batch[0] = samples;
    let x = Tensor::f32(batch, data.clone());
    let imported =
        bnnc_ir::interp::run_batch(graph, &x).map_err(|e| fail(format!("interp: {e}")))?;
    let options = bnnc_passes::PipelineOptions {
        bit_serial,
        ..Default::default()
    };
    let optimized = bnnc_passes::run_pipeline_with(graph.clone(), &options, &mut |_| {})
        .map_err(|e| fail(format!("passes: {e:#}")))?;
    let want = bnnc_ir::interp::run_batch(&optimized, &x)
        .map_err(|e| fail(format!("interp after the passes: {e}")))?;
    let integer = graph.value(graph.outputs()[0]).ty.elem != ElemType::F32;
    let (a, b) = (imported[0].to_f32_vec(), want[0].to_f32_vec());
    let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let close = a.iter().zip(&b).all(|(p, q)| {
        if integer {
            p == q
        } else {
            (p - q).abs() <= 1e-5 * scale
        }
    });
    if !close {
        return Err(fail(format!(
            "the passes changed the outputs: {a:?} -> {b:?}"
        )));
    }
    // Both code generators when the LLVM backend is built in.
    let codegens: &[bnnc::native::Codegen] = if cfg!(feature = "llvm") {
        &[
            bnnc::native::Codegen::Cranelift,
            bnnc::native::Codegen::Llvm,
        ]
    } else {
        &[bnnc::native::Codegen::Cranelift]
    };
    let mut on_tiles = 0;
    for &codegen in codegens {
        let got = match native {
            Native::Host => {
                let loaded = match bnnc::native::load(
                    &optimized,
                    &bnnc::Tuning::default(),
                    bnnc::native::LoadOptions {
                        name: "fuzz".into(),
                        codegen,
                        profile: false,
                        dir: None,
                    },
                ) {
                    Ok(loaded) => loaded,
                    Err(e) if bnnc::diagnostic::locate(&e).is_some() => return Ok(None),
                    Err(e) => return Err(fail(format!("native ({codegen:?}): {e:#}"))),
                };
                on_tiles += loaded.on_tiles;
                loaded
                    .model
                    .run_batch(&data)
                    .map_err(|e| fail(format!("native run ({codegen:?}): {e}")))?
            }
            Native::Aarch64(driver) => {
                let options =
                    bnnc::native::options("aarch64", None, "fuzz".into(), &Default::default())
                        .map_err(|e| fail(format!("aarch64 options: {e:#}")))?;
                let build = match bnnc::native::compile(&optimized, &options, codegen) {
                    Ok(build) => build,
                    Err(e) if bnnc::diagnostic::locate(&e).is_some() => return Ok(None),
                    Err(e) => return Err(fail(format!("aarch64 ({codegen:?}): {e:#}"))),
                };
                let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                let lib = dir.path().join("libfuzz.so");
                bnnc::native::write(&build, &options, &lib, true)
                    .map_err(|e| fail(format!("aarch64 link ({codegen:?}): {e:#}")))?;
                let raw: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
                driver
                    .run(&lib, "fuzz", &raw)
                    .map_err(|e| fail(format!("aarch64 run ({codegen:?}): {e}")))?
            }
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&got) != bits(&b) {
            let place = match native {
                Native::Host => "native",
                Native::Aarch64(_) => "aarch64",
            };
            return Err(fail(format!(
                "{place} ({codegen:?}) {got:?}, interpreter {b:?}"
            )));
        }
    }
    // Grouped lowered convolutions count under their op and on their own, as do those of
    // 1 or 3 spatial axes.
    let mut ops = Vec::new();
    for n in optimized.node_ids() {
        let node = optimized.node(n);
        ops.push(node.op.name().to_string());
        match &node.op {
            Op::XnorConv(a) if a.group > 1 => ops.push("xnor_conv (grouped)".into()),
            Op::BitSerialConv { attrs, .. } if attrs.group > 1 => {
                ops.push("bitserial_conv (grouped)".into())
            }
            _ => {}
        }
        let windowed = matches!(
            node.op,
            Op::Conv(_) | Op::XnorConv(_) | Op::BitSerialConv { .. } | Op::MaxPool(_)
        ) || matches!(node.op, Op::MinMaxPool { .. });
        let rank = optimized.value(node.outputs[0]).ty.shape.len();
        if windowed && rank != 4 {
            ops.push(format!("{} {}-D", node.op.name(), rank - 2));
        }
    }
    if on_tiles > 0 {
        ops.push(ON_TILES.into());
    }
    // Convolutions on Cranelift's column kernel, float ones (MLAS's chains in lanes) apart.
    let plan = bnnc_cranelift::storage_plan(&optimized).map_err(|e| fail(e.to_string()))?;
    for step in &plan.steps {
        let kernel = step.kernel;
        if kernel == "elementwise, one loop for the chain" && step.operands.len() >= 2 {
            ops.push(CHAIN_OF_READS.into());
        }
        if kernel.ends_with("four columns to a vector") {
            ops.push(ON_COLUMNS.into());
            if kernel.starts_with("fused multiply-adds") {
                ops.push(FLOAT_ON_COLUMNS.into());
            }
        }
        if kernel.contains("byte dot products") {
            ops.push(ON_BYTE_DOTS.into());
        }
        if kernel.starts_with("bit-serial table lookups") {
            ops.push(ON_LOOKUPS.into());
        }
    }
    if matches!(native, Native::Host) && check_plan(&optimized, shape, &data).map_err(fail)? {
        ops.push(PLANNED.into());
    }
    Ok(Some(ops))
}

/// What a case covered where the network planned for an FPGA.
const PLANNED: &str = "a dataflow plan";

/// What a case covered where a convolution ran on the column kernel, and where a float one
/// did (counted, not required: the random networks' convolutions are quantized; the float
/// route's tests are the native filetests and the ONNX node tests).
const ON_COLUMNS: &str = "a conv on the column kernel";
const FLOAT_ON_COLUMNS: &str = "a float conv on the column kernel";

/// What a case covered where an elementwise chain read two values computed at run time
/// (a channels-last activation's, after `cleanup` cancelled its transposes).
const CHAIN_OF_READS: &str = "an elementwise chain of two reads";

/// What a case covered where a Gemm or MatMul runs on byte dot products where the CPU has
/// them (the host's native code: VNNI, or SSSE3 for 7-bit weights; not aarch64's).
const ON_BYTE_DOTS: &str = "a matrix product on byte dot products";

/// What a case covered where a bit-serial convolution ran on table lookups (the host's
/// native code: SSSE3's `pshufb`; aarch64's `tbl` under qemu).
const ON_LOOKUPS: &str = "a bit-serial conv on table lookups";

/// The FPGA plan of `graph` simulated on integers against the interpreter's values of the
/// hardware's input and output tensors, on every sample of `data`. `false` where the graph
/// has no plan (a refusal names its node; the campaign counts the plans).
fn check_plan(graph: &Graph, shape: &[usize], data: &[f32]) -> Result<bool, String> {
    let Ok(plan) = bnnc_dataflow::plan(graph, "fuzz", &Default::default()) else {
        return Ok(false);
    };
    let (input, output) = (plan.input_stream(), plan.output_stream());
    let mut boundary = plan.graph.clone();
    boundary.set_outputs(vec![plan.input.value, plan.output.value]);
    let len: usize = shape.iter().product();
    for (i, sample) in data.chunks_exact(len).enumerate() {
        let x = Tensor::f32(shape.to_vec(), sample.to_vec());
        let values = bnnc_ir::interp::run(&boundary, &[x])
            .map_err(|e| format!("interp at the plan's boundary: {e}"))?;
        let (values_in, values_out) = (values[0].to_f32_vec(), values[1].to_f32_vec());
        // The hardware's input integers: those the input's decoding maps to the host's values.
        let ints = (0..input.elements())
            .map(|s| {
                let (v, j) = (values_in[input.flat_index(s)], s % input.channels);
                integer_of(&plan.input.decode, v, j).ok_or_else(|| {
                    format!("sample {i}: no integer of the plan's input decodes to {v} (slot {j})")
                })
            })
            .collect::<Result<Vec<i64>, String>>()?;
        let frame = bnnc_dataflow::sim::simulate(&plan, &ints)
            .map_err(|e| format!("plan simulation: {e}"))?;
        for s in 0..output.elements() {
            let j = s % output.channels;
            let got = match &frame {
                bnnc_dataflow::sim::Frame::Ints(v) => plan.output.decode.value(v[s], j),
                bnnc_dataflow::sim::Frame::Floats(v) => v[s],
            };
            let want = values_out[output.flat_index(s)];
            if got.to_bits() != want.to_bits() {
                let layers: Vec<String> = plan
                    .layers
                    .iter()
                    .map(|l| format!("{} ({})", l.name, l.kind.name()))
                    .collect();
                return Err(format!(
                    "dataflow plan: sample {i}, output element {s}: plan {got}, interpreter {want}; layers {}",
                    layers.join(", ")
                ));
            }
        }
    }
    Ok(true)
}

/// The integer that `decode` maps to `v` in `slot`, if one does (-0 is the integer 0: a
/// quantizer's -0 enters the hardware as 0, which every integer layer takes alike).
fn integer_of(decode: &bnnc_dataflow::plan::Decode, v: f32, slot: usize) -> Option<i64> {
    use bnnc_dataflow::plan::Decode;
    let guess = match decode {
        Decode::Scaled(s) => f64::from(v) / f64::from(s[slot % s.len()]),
        Decode::Level {
            out_scale,
            out_bias,
            step,
            offset,
        } => (f64::from(v - out_bias) / f64::from(*out_scale)) * *step as f64 + *offset as f64,
        Decode::Float => return Some(i64::from(v.to_bits())),
    };
    let guess = guess.round() as i64;
    (guess - 2..=guess + 2).find(|&i| decode.value(i, slot) == v)
}

/// What a case covered where the LLVM kernels ran an XNOR or bit-serial layer on AMX tiles.
const ON_TILES: &str = "a layer on AMX tiles";

/// What every campaign must reach: the lowered kernels, windows of 1 and 3 axes included.
const REACHES: &[&str] = &[
    "xnor_conv",
    "xnor_matmul",
    "threshold",
    "bitserial_conv",
    "bitserial_matmul",
    "xnor_conv (grouped)",
    "bitserial_conv (grouped)",
    "conv 1-D",
    "conv 3-D",
    "xnor_conv 1-D",
    "xnor_conv 3-D",
    "bitserial_conv 1-D",
    "bitserial_conv 3-D",
    "maxpool 1-D",
    "maxpool 3-D",
    ON_COLUMNS,
    ON_BYTE_DOTS,
    CHAIN_OF_READS,
    ON_LOOKUPS,
];

fn campaign(seeds: std::ops::Range<u64>) {
    campaign_for(seeds, None, Native::Host, false);
}

/// A campaign over `seeds` with native code run `native`, stopping early once `budget` has
/// passed (if given), every fourth seed also building a wide network if `wide`; every op of
/// [`REACHES`] must have run in some network, and, with wide networks on a machine with
/// AMX, a layer on tiles.
fn campaign_for(
    seeds: std::ops::Range<u64>,
    budget: Option<std::time::Duration>,
    native: Native<'_>,
    wide: bool,
) {
    let started = std::time::Instant::now();
    let mut total = 0;
    let mut failures = Vec::new();
    let mut refused = 0;
    // In how many networks each op kind ran after the passes: what the campaign reached.
    let mut reached = std::collections::BTreeMap::<String, usize>::new();
    for seed in seeds {
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
        // Every seed's plain network, every third seed's grouped one, and with `wide`
        // every fourth seed's wide one.
        for family in [Family::Plain, Family::Grouped, Family::Wide] {
            let skip = match family {
                Family::Plain => false,
                Family::Grouped => !seed.is_multiple_of(3),
                Family::Wide => !wide || !seed.is_multiple_of(4),
            };
            if skip {
                continue;
            }
            total += 1;
            match case(seed, family, native) {
                Ok(Some(mut ops)) => {
                    ops.sort_unstable();
                    ops.dedup();
                    for op in ops {
                        *reached.entry(op).or_default() += 1;
                    }
                }
                Ok(None) => refused += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    eprintln!(
        "{total} networks in {:.0} s, {refused} refused natively, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    eprintln!("networks reaching each op after the passes: {reached:?}");
    // The lowered kernels are what the campaign is for.
    let tiles = wide && matches!(native, Native::Host) && host_has_amx();
    for op in REACHES.iter().chain(tiles.then_some(&ON_TILES)) {
        assert!(
            reached.get(*op).copied().unwrap_or(0) > 0,
            "no network reached {op}"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Most networks have an FPGA plan (3-D convolutions have none), checked on this machine.
    let planned = reached.get(PLANNED).copied().unwrap_or(0);
    assert!(
        !matches!(native, Native::Host) || planned * 2 >= total,
        "only {planned} of {total} networks have a dataflow plan"
    );
    // Refusals name their node; they must stay the exception.
    assert!(
        refused * 10 <= total,
        "{refused} of {total} networks refused natively"
    );
}

#[test]
fn smoke_campaign() {
    campaign(0..300);
}

/// The long campaign (`-- --ignored`): a few thousand networks.
#[test]
#[ignore]
fn long_campaign() {
    campaign(300..5_300);
}

/// A campaign of chosen length (`-- --ignored --nocapture timed_campaign`), with native code
/// for aarch64 under qemu when `BNNC_FUZZ_TARGET=aarch64`: seeds from
/// `BNNC_FUZZ_FIRST_SEED` (default 5,300, after the long campaign's) for
/// `BNNC_FUZZ_MINUTES` minutes (default 10). Run several with disjoint seeds to use more
/// cores; each prints its networks, refusals and failures, as TESTING.md records.
#[test]
#[ignore]
fn timed_campaign() {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
            })
            .unwrap_or(default)
    };
    let first = number("BNNC_FUZZ_FIRST_SEED", 5_300);
    let minutes = number("BNNC_FUZZ_MINUTES", 10);
    eprintln!("seeds from {first}, {minutes} minutes");
    let budget = Some(std::time::Duration::from_secs(60 * minutes));
    if std::env::var("BNNC_FUZZ_TARGET").as_deref() == Ok("aarch64") {
        let dir = tempfile::tempdir().unwrap();
        let driver = common::AarchDriver::build(dir.path());
        campaign_for(first..u64::MAX, budget, Native::Aarch64(&driver), false);
    } else {
        campaign_for(first..u64::MAX, budget, Native::Host, true);
    }
}

/// Whether this machine multiplies on AMX tiles (Linux's flags for AMX-INT8).
fn host_has_amx() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    cfg!(all(feature = "llvm", target_arch = "x86_64")) && has("amx_tile") && has("amx_int8")
}

/// Wide networks ([`wide_network`]), every low-bit layer bit-serial. Where this machine has
/// AMX, a third of them must run a layer on tiles, some an XNOR one; elsewhere the same
/// layers run on bit planes, and the test says so.
#[test]
fn wide_convolutions_campaign() {
    let (mut tiles, mut xnor_tiles, mut failures, seeds) = (0, 0, Vec::new(), 0..24);
    let total = seeds.end;
    for seed in seeds {
        match case(seed, Family::Wide, Native::Host) {
            Ok(Some(ops)) => {
                let has = |name: &str| ops.iter().any(|op| op == name);
                if has(ON_TILES) {
                    tiles += 1;
                    // Tiles in a network of no bit-serial layer ran an XNOR one.
                    xnor_tiles += usize::from(!has("bitserial_conv"));
                }
            }
            Ok(None) => failures.push(format!("seed {seed} (wide): refused natively")),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!("{total} wide networks, {tiles} with a layer on AMX tiles ({xnor_tiles} XNOR only)");
    if host_has_amx() {
        assert!(
            tiles * 3 >= total as usize,
            "only {tiles} of {total} ran on tiles"
        );
        assert!(xnor_tiles > 0, "no XNOR layer ran on tiles");
    } else {
        eprintln!("this machine has no AMX-INT8 (or bnnc has no LLVM backend): the tile kernels did not run");
    }
}

/// The smoke campaign's networks with aarch64 native code, run under qemu-aarch64.
/// Wide networks the timed campaign found planned wrong: a last product of scaled integers
/// whose sums inference types f32 (they might pass 2^24 units) was decoded as bare integers,
/// its scale lost. They must plan and simulate exactly.
#[test]
fn wide_networks_with_f32_sums_plan_exactly() {
    for seed in [40400, 40536, 42560] {
        let ops = case(seed, Family::Wide, Native::Host)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("seed {seed} refused natively"));
        assert!(
            ops.iter().any(|op| op == PLANNED),
            "seed {seed} has no plan"
        );
    }
}

#[test]
fn aarch64_smoke_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let driver = common::AarchDriver::build(dir.path());
    campaign_for(0..300, None, Native::Aarch64(&driver), false);
}
