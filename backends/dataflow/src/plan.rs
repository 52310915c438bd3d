//! The dataflow plan: hardware layers connected by streams.
//!
//! A frame (one sample) flows through every layer once. A stream carries a tensor pixel by
//! pixel in raster order, each pixel's channels in order, `lanes` elements per beat; an
//! element is an integer (the integer of the IR value's type: a scaled value's integer, ±1
//! for bipolar) or an f32. Every layer reads and writes whole frames in that order.

use bnnc_ir::{ElemType, IntType, ValueId};

use crate::host::HostProgram;

/// A stream's index in [`Plan::streams`].
pub type StreamId = usize;

/// How a stream element is stored in hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// ±1 as one bit, 1 for +1.
    Bipolar,
    /// An integer of `bits` bits, two's complement when `signed`.
    Int { bits: u32, signed: bool },
    /// An IEEE single-precision float.
    F32,
}

impl Encoding {
    /// The encoding of the integers of `t`.
    pub fn of_int(t: IntType) -> Encoding {
        match t {
            IntType::Bipolar => Encoding::Bipolar,
            IntType::Binary => Encoding::Int {
                bits: 1,
                signed: false,
            },
            IntType::Signed(b) => Encoding::Int {
                bits: b.into(),
                signed: true,
            },
            IntType::Unsigned(b) => Encoding::Int {
                bits: b.into(),
                signed: false,
            },
        }
    }

    /// The encoding of values of `elem`: its integers, or f32.
    pub fn of_elem(elem: &ElemType) -> Encoding {
        elem.int_type().map_or(Encoding::F32, Encoding::of_int)
    }

    /// The narrowest signed or unsigned encoding of every integer in `lo..=hi`.
    pub fn covering(lo: i64, hi: i64) -> Encoding {
        match IntType::covering(lo, hi) {
            IntType::Binary => Encoding::Int {
                bits: 1,
                signed: false,
            },
            t => Encoding::of_int(t),
        }
    }

    /// Bits of one element.
    pub fn bits(self) -> u32 {
        match self {
            Encoding::Bipolar => 1,
            Encoding::Int { bits, .. } => bits,
            Encoding::F32 => 32,
        }
    }

    /// The smallest and largest integer an element holds (`None` for f32).
    pub fn range(self) -> Option<(i64, i64)> {
        match self {
            Encoding::Bipolar => Some((-1, 1)),
            Encoding::Int { bits, signed: true } => {
                Some((-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1))
            }
            Encoding::Int {
                bits,
                signed: false,
            } => Some((0, (1i64 << bits) - 1)),
            Encoding::F32 => None,
        }
    }

    /// The bits that store integer `v` (the low `bits()` bits).
    pub fn code(self, v: i64) -> u64 {
        match self {
            Encoding::Bipolar => u64::from(v > 0),
            Encoding::Int { bits, .. } => (v as u64) & mask(bits),
            Encoding::F32 => (v as f32).to_bits().into(),
        }
    }

    /// The integer stored as `code`.
    pub fn decode(self, code: u64) -> i64 {
        match self {
            Encoding::Bipolar => {
                if code & 1 == 1 {
                    1
                } else {
                    -1
                }
            }
            Encoding::Int { bits, signed } => {
                let v = code & mask(bits);
                if signed && bits < 64 && v >> (bits - 1) & 1 == 1 {
                    (v | !mask(bits)) as i64
                } else {
                    v as i64
                }
            }
            Encoding::F32 => f32::from_bits(code as u32) as i64,
        }
    }
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// How the interpreter's f32 value of an element follows from its integer `i`; `slot` is the
/// element's index within its pixel.
#[derive(Clone, Debug, PartialEq)]
pub enum Decode {
    /// `i as f32 * scales[slot]` (one scale per slot, or one for all): a scaled integer.
    Scaled(Vec<f32>),
    /// A threshold's level, `out_scale * count + out_bias` in f32 with
    /// `count = (i - offset) / step`, as the interpreter computes a threshold's result.
    Level {
        out_scale: f32,
        out_bias: f32,
        step: i64,
        offset: i64,
    },
    /// The element is its f32 value.
    Float,
}

impl Decode {
    /// The f32 value of integer `i` in `slot` (of an f32 element: its value, given as `i`'s
    /// bits by [`Encoding::code`]).
    pub fn value(&self, i: i64, slot: usize) -> f32 {
        match self {
            Decode::Scaled(s) => i as f32 * s[slot % s.len()],
            Decode::Level {
                out_scale,
                out_bias,
                step,
                offset,
            } => out_scale * ((i - offset) / step) as f32 + out_bias,
            Decode::Float => i as f32,
        }
    }

    /// Whether values grow with the integer in `slot` (`None`: they fall; equal values count
    /// as growing).
    pub fn increasing(&self, slot: usize) -> Option<bool> {
        match self {
            Decode::Scaled(s) => Some(s[slot % s.len()] >= 0.0),
            Decode::Level {
                out_scale, step, ..
            } => Some((*out_scale >= 0.0) == (*step > 0)),
            Decode::Float => None,
        }
    }
}

/// A stream of frames between layers (or the top's ports).
///
/// Element `s` of a frame is element `(s % channels) * pixels + s / channels` of its IR
/// tensor in row-major order ([`Stream::flat_index`]): a tensor `(1, C, spatial...)` goes
/// pixel by pixel, channels innermost. A reshape keeps those indices, so it changes nothing
/// in hardware; a layer that needs pixels (a window, a pool) checks that the stream's
/// pixels and channels are its operand's.
#[derive(Clone, Debug)]
pub struct Stream {
    /// The IR value it carries (for names and comments).
    pub name: String,
    pub encoding: Encoding,
    /// Pixels per frame.
    pub pixels: usize,
    /// Elements per pixel.
    pub channels: usize,
    /// Elements per beat (divides `channels`, or the frame for flat streams): set by folding.
    pub lanes: usize,
}

impl Stream {
    /// Elements per frame.
    pub fn elements(&self) -> usize {
        self.pixels * self.channels
    }

    /// Beats per frame.
    pub fn beats(&self) -> usize {
        self.elements() / self.lanes.max(1)
    }

    /// Bits of one beat.
    pub fn beat_bits(&self) -> u32 {
        self.encoding.bits() * self.lanes as u32
    }

    /// Bits of an AXI-Stream port carrying this stream: a beat in whole bytes, as AXI-Stream
    /// data is (the bits above the beat are 0). Host code packs beats into as many bytes.
    pub fn port_bits(&self) -> u32 {
        self.beat_bits().div_ceil(8) * 8
    }

    /// The row-major index in the IR tensor of element `s` of a frame.
    pub fn flat_index(&self, s: usize) -> usize {
        (s % self.channels) * self.pixels + s / self.channels
    }
}

/// Two spatial extents, rows then columns.
pub type Extent2 = [usize; 2];

/// The sliding-window geometry of a convolution or pool over an `in_hw` image of `channels`.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowGeometry {
    pub channels: usize,
    pub in_hw: Extent2,
    pub out_hw: Extent2,
    pub kernel: Extent2,
    pub stride: Extent2,
    pub dilation: Extent2,
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
}

impl WindowGeometry {
    /// The input pixel `(y, x)` of tap `(ky, kx)` of output pixel `(oy, ox)`, or `None` in
    /// the padding (or past the image, for a pool's ceil mode).
    pub fn tap(&self, out: Extent2, k: Extent2) -> Option<Extent2> {
        let mut at = [0; 2];
        for a in 0..2 {
            let pos = (out[a] * self.stride[a] + k[a] * self.dilation[a]) as isize
                - self.pads[a] as isize;
            if pos < 0 || pos >= self.in_hw[a] as isize {
                return None;
            }
            at[a] = pos as usize;
        }
        Some(at)
    }

    /// Taps per window.
    pub fn taps(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }

    /// The rows a window covers, its dilated height ([`bnnc_ir::window::span`]). A planned
    /// window's span fits: type inference checked it.
    pub fn row_span(&self) -> usize {
        bnnc_ir::window::span(self.kernel[0], self.dilation[0]).expect("a checked window span")
    }
}

/// Integer thresholds, one row per output slot: `count = #{t in row : acc >= t}` (or
/// `acc <= t` where descending), then the element is `offset + step * count`.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// Thresholds per row.
    pub levels: usize,
    /// `rows * levels` integers, row by row.
    pub values: Vec<i64>,
    /// One per row.
    pub descending: Vec<bool>,
    pub step: i64,
    pub offset: i64,
    /// The encoding of the result.
    pub output: Encoding,
}

impl Thresholds {
    /// The element for accumulator `acc` in row `row`.
    pub fn apply(&self, acc: i64, row: usize) -> i64 {
        let row_values = &self.values[row * self.levels..(row + 1) * self.levels];
        let count = if self.descending[row] {
            row_values.iter().filter(|&&t| acc <= t).count()
        } else {
            row_values.iter().filter(|&&t| acc >= t).count()
        };
        self.offset + self.step * count as i64
    }
}

/// How a matrix-vector unit multiplies an input by a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mac {
    /// Bipolar by bipolar: XNOR, and a popcount.
    Xnor,
    /// An integer by a bipolar weight: the input or its negation.
    IntByBipolar,
    /// A bipolar input by an integer weight: the weight or its negation.
    BipolarByInt,
    /// Integer by integer.
    Multiply,
}

/// A max-pool (min on `take_min` slots) fused into a layer's output stage: windows tile the
/// image (kernel = stride, no padding), so each output pixel joins one pooled pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct FusedPool {
    pub in_hw: Extent2,
    pub kernel: Extent2,
    pub out_hw: Extent2,
    /// One per slot: the pool keeps the smallest element rather than the largest.
    pub take_min: Vec<bool>,
}

impl FusedPool {
    /// The pooled pixel that input pixel `(y, x)` joins, if any (floor mode drops the last
    /// rows and columns).
    pub fn pooled(&self, y: usize, x: usize) -> Option<Extent2> {
        let at = [y / self.kernel[0], x / self.kernel[1]];
        (at[0] < self.out_hw[0] && at[1] < self.out_hw[1]).then_some(at)
    }

    /// Whether `(y, x)` is the last input pixel of its pooled window.
    pub fn closes(&self, y: usize, x: usize) -> bool {
        let last =
            |v: usize, a: usize| v % self.kernel[a] == self.kernel[a] - 1 || v == self.in_hw[a] - 1;
        last(y, 0) && last(x, 1)
    }

    /// Whether `(y, x)` is the first input pixel of its pooled window.
    pub fn opens(&self, y: usize, x: usize) -> bool {
        y.is_multiple_of(self.kernel[0]) && x.is_multiple_of(self.kernel[1])
    }
}

/// A matrix-vector unit: `MH` outputs per input vector of `MW`, `pixels` vectors per frame,
/// with the output stage of `fuse-output-stages`: integer thresholds and a tiling pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Mvau {
    pub mw: usize,
    pub mh: usize,
    /// Input vectors per frame (output pixels of a convolution, 1 for a matrix product).
    pub pixels: usize,
    /// Output pixel grid of a convolution (for the fused pool).
    pub out_hw: Extent2,
    pub mac: Mac,
    pub input: Encoding,
    pub weight: Encoding,
    /// `mh * mw` integers: row `r` holds output `r`'s weights in the input's stream order.
    pub weights: Vec<i64>,
    /// The accumulator: wide enough for every sum (and every threshold).
    pub acc: Encoding,
    /// `None`: the accumulator is the output.
    pub thresholds: Option<Thresholds>,
    pub pool: Option<FusedPool>,
    /// Output channels computed in parallel.
    pub pe: usize,
    /// Inputs per output channel per cycle.
    pub simd: usize,
}

impl Mvau {
    /// The output element encoding.
    pub fn output(&self) -> Encoding {
        self.thresholds.as_ref().map_or(self.acc, |t| t.output)
    }

    /// Neuron folds: `MH / PE`.
    pub fn nf(&self) -> usize {
        self.mh / self.pe
    }

    /// Synapse folds: `MW / SIMD`.
    pub fn sf(&self) -> usize {
        self.mw / self.simd
    }
}

/// A sliding-window generator: each output pixel's window, tap by tap, `channels` per tap, with
/// zeros in the padding (a padded bipolar input becomes 2-bit integers, 0 in the padding).
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub geometry: WindowGeometry,
    pub input: Encoding,
    pub output: Encoding,
    /// Elements per beat, in and out (divides the channels).
    pub simd: usize,
}

/// A standalone max (or min) pool over integer elements, padded taps counting for neither.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub geometry: WindowGeometry,
    pub encoding: Encoding,
    /// One per channel.
    pub take_min: Vec<bool>,
    pub lanes: usize,
}

/// A standalone threshold on an integer stream.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdLayer {
    pub input: Encoding,
    pub thresholds: Thresholds,
    /// Elements per pixel (rows of the thresholds).
    pub channels: usize,
    pub lanes: usize,
}

/// An operand of an elementwise operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// The value of input stream `i`'s element.
    Input(usize),
    /// The result of an earlier operation of the same layer.
    Op(usize),
    /// A constant per slot (or one for all).
    Const(Vec<f32>),
}

/// One elementwise operation, on f32 values as the interpreter computes it.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementOp {
    Binary(bnnc_ir::BinaryOp, Operand, Operand),
    Relu(Operand),
    /// ONNX Sign: -1, 0 or +1.
    Sign(Operand),
    /// ONNX Clip with constant bounds.
    Clip(Operand, f32, f32),
    /// QONNX BipolarQuant: `(x >= 0 ? 1 : -1) * scale`.
    BipolarQuant(Operand, Operand),
    /// QONNX Quant: `y = x / scale + zero`, the bipolar case or clamped to `min..=max` and
    /// rounded, then `(q - zero) * scale`.
    Quant {
        x: Operand,
        scale: Operand,
        zero: Operand,
        min: f32,
        max: f32,
        bipolar: bool,
        rounding: bnnc_ir::RoundingMode,
    },
}

/// Elementwise f32 arithmetic on one or more streams of the same shape, writing the last
/// operation's value (f32) or its integer (`round(v / scale)`) under `output`.
#[derive(Clone, Debug, PartialEq)]
pub struct Elementwise {
    pub inputs: Vec<(Encoding, Decode)>,
    pub ops: Vec<ElementOp>,
    pub output: Encoding,
    /// For an integer output: the scale of its type per slot (or one).
    pub output_scale: Vec<f32>,
    pub channels: usize,
    pub lanes: usize,
}

/// What a layer does.
#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Window(Window),
    Mvau(Mvau),
    Pool(Pool),
    Threshold(ThresholdLayer),
    Elementwise(Elementwise),
    /// Copies its input to each of its outputs.
    Duplicate {
        lanes: usize,
    },
    /// Regroups the elements of a stream from `from` to `to` per beat.
    Convert {
        from: usize,
        to: usize,
    },
}

impl LayerKind {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            LayerKind::Window(_) => "window",
            LayerKind::Mvau(m) => match m.mac {
                Mac::Xnor => "mvau-xnor",
                _ => "mvau-int",
            },
            LayerKind::Pool(_) => "pool",
            LayerKind::Threshold(_) => "threshold",
            LayerKind::Elementwise(_) => "elementwise",
            LayerKind::Duplicate { .. } => "duplicate",
            LayerKind::Convert { .. } => "convert",
        }
    }
}

/// A hardware layer: one function (HLS) or module (Verilog).
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Unique; a linear layer's is its IR node's name (`bnnc inspect`'s, folding files').
    pub name: String,
    /// The IR nodes it computes.
    pub nodes: Vec<String>,
    pub kind: LayerKind,
    pub inputs: Vec<StreamId>,
    pub outputs: Vec<StreamId>,
}

impl Layer {
    /// The layer's function or module name in generated code: `L{index}_` and its name as a
    /// C identifier.
    pub fn symbol(&self, index: usize) -> String {
        let id: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("L{index}_{id}")
    }
}

/// Where the hardware meets the host: a stream, the IR value it carries, and the values of
/// its integers.
#[derive(Clone, Debug)]
pub struct Port {
    pub stream: StreamId,
    pub value: ValueId,
    pub decode: Decode,
}

/// The whole plan: host code before and after, and the layers between.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The optimized IR the plan was made from (the host programs run parts of it).
    pub graph: bnnc_ir::Graph,
    /// The model's name (a C identifier).
    pub name: String,
    pub streams: Vec<Stream>,
    /// In dataflow order: every layer after the producers of its inputs.
    pub layers: Vec<Layer>,
    pub input: Port,
    pub output: Port,
    /// Host code from the graph's input to the top's input integers.
    pub pre: HostProgram,
    /// Host code from the top's output to the graph's output.
    pub post: HostProgram,
}

impl Plan {
    /// The layer named `name`.
    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The stream the hardware takes in: the top's input port.
    pub fn input_stream(&self) -> &Stream {
        &self.streams[self.input.stream]
    }

    /// The stream the hardware gives out: the top's output port.
    pub fn output_stream(&self) -> &Stream {
        &self.streams[self.output.stream]
    }
}
