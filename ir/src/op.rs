//! Operations. Every op has typed attributes; numeric parameters that may be per-channel
//! (scales, zero points, thresholds) are operands, usually constants.
//!
//! The operand list of each op is written in its doc comment; the interpreter
//! ([`crate::interp`]) gives the exact semantics.

use crate::types::{ElemType, IntType};

/// How a quantizer rounds (QONNX `rounding_mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RoundingMode {
    /// Round half to even (`ROUND`, `HALF_EVEN`; numpy's `np.round`).
    HalfEven,
    /// Towards +inf.
    Ceil,
    /// Towards -inf.
    Floor,
    /// Away from zero.
    Up,
    /// Towards zero.
    Down,
    /// Half away from zero.
    HalfUp,
    /// Half towards zero.
    HalfDown,
}

impl RoundingMode {
    /// The mode named by a QONNX `rounding_mode` attribute (case-insensitive).
    pub fn from_qonnx(name: &str) -> Option<Self> {
        Some(match name.to_ascii_uppercase().as_str() {
            "ROUND" | "HALF_EVEN" => RoundingMode::HalfEven,
            "CEIL" => RoundingMode::Ceil,
            "FLOOR" => RoundingMode::Floor,
            "UP" => RoundingMode::Up,
            "DOWN" => RoundingMode::Down,
            "HALF_UP" => RoundingMode::HalfUp,
            "HALF_DOWN" => RoundingMode::HalfDown,
            _ => return None,
        })
    }

    /// Rounds `y` as qonnx's `resolve_rounding_mode` does: numpy functions, and the UP /
    /// HALF_* modes written with `np.sign`, `np.abs`, `np.ceil` and `np.floor` (so their zeros
    /// and NaNs are numpy's). The interpreter and the threshold search both round here.
    pub fn apply(self, y: f32) -> f32 {
        match self {
            RoundingMode::HalfEven => y.round_ties_even(),
            RoundingMode::Ceil => y.ceil(),
            RoundingMode::Floor => y.floor(),
            RoundingMode::Up => np_sign(y) * y.abs().ceil(),
            RoundingMode::Down => y.trunc(),
            RoundingMode::HalfUp => np_sign(y) * (y.abs() + 0.5).floor(),
            RoundingMode::HalfDown => np_sign(y) * (y.abs() - 0.5).ceil(),
        }
    }

    /// The name in the IR text.
    pub fn name(self) -> &'static str {
        match self {
            RoundingMode::HalfEven => "half_even",
            RoundingMode::Ceil => "ceil",
            RoundingMode::Floor => "floor",
            RoundingMode::Up => "up",
            RoundingMode::Down => "down",
            RoundingMode::HalfUp => "half_up",
            RoundingMode::HalfDown => "half_down",
        }
    }
}

/// numpy's `np.sign` on floats: NaN stays NaN and both zeros give +0.
fn np_sign(y: f32) -> f32 {
    if y > 0.0 {
        1.0
    } else if y < 0.0 {
        -1.0
    } else if y == 0.0 {
        0.0
    } else {
        y
    }
}

/// Attributes of QONNX `Quant` (IntQuant).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantAttrs {
    pub signed: bool,
    pub narrow: bool,
    pub rounding: RoundingMode,
}

/// Attributes of QONNX `Trunc`.
#[derive(Clone, Debug, PartialEq)]
pub struct TruncAttrs {
    pub rounding: RoundingMode,
    /// Trunc v2 only: whether the output is signed.
    pub signed: bool,
    /// Trunc v2 only: narrow range.
    pub narrow: bool,
    /// Trunc v2 (has an `out_scale` operand, clamps to the output range) rather than v1.
    pub v2: bool,
}

/// Attributes of FINN `MultiThreshold` and of the lowered integer [`Op::Threshold`].
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdAttrs {
    /// `out = out_scale * count + out_bias`.
    pub out_scale: f32,
    pub out_bias: f32,
    /// The element type the model declares for the output (`out_dtype`).
    pub out_type: ElemType,
    /// The axis whose index selects a row of thresholds (1 for NCHW, the last for NHWC).
    pub channel_axis: usize,
}

/// Attributes shared by Conv and the XNOR-popcount convolution.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvAttrs {
    /// Spatial kernel extent, one per spatial axis.
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begins of every spatial axis, then ends (ONNX order), after resolving `auto_pad`.
    pub pads: Vec<usize>,
    pub group: usize,
}

/// Attributes of Gemm: `alpha * op(A) @ op(B) + beta * C`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

/// Attributes of MaxPool and AveragePool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Begins then ends, after resolving `auto_pad`.
    pub pads: Vec<usize>,
    pub ceil_mode: bool,
    /// AveragePool only: padded cells count in the divisor.
    pub count_include_pad: bool,
}

/// Elementwise binary arithmetic with numpy broadcasting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// ONNX Min of two operands: IEEE 754's `minimum` (NaN if either is NaN, -0 below +0),
    /// as Cranelift's `fmin`.
    Min,
    /// ONNX Max of two operands: IEEE 754's `maximum` (NaN if either is NaN, +0 above -0).
    Max,
}

impl BinaryOp {
    /// The name in the IR text.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }
}

/// An elementwise comparison, ONNX's Less, LessOrEqual, Greater, GreaterOrEqual and Equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
}

impl CompareOp {
    /// The name in the IR text.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Less => "less",
            CompareOp::LessOrEqual => "less_equal",
            CompareOp::Greater => "greater",
            CompareOp::GreaterOrEqual => "greater_equal",
            CompareOp::Equal => "equal",
        }
    }

    /// Every comparison, for the text parser.
    pub const ALL: [CompareOp; 5] = [
        CompareOp::Less,
        CompareOp::LessOrEqual,
        CompareOp::Greater,
        CompareOp::GreaterOrEqual,
        CompareOp::Equal,
    ];

    /// `a op b` on f32 (false when either is NaN, as IEEE compares).
    pub fn apply(self, a: f32, b: f32) -> bool {
        match self {
            CompareOp::Less => a < b,
            CompareOp::LessOrEqual => a <= b,
            CompareOp::Greater => a > b,
            CompareOp::GreaterOrEqual => a >= b,
            CompareOp::Equal => a == b,
        }
    }
}

/// An operation of the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- quantizers ----
    /// QONNX Quant. Operands: x, scale, zero point, bit width.
    Quant(QuantAttrs),
    /// QONNX BipolarQuant: `(x >= 0 ? +1 : -1) * scale`. Operands: x, scale.
    BipolarQuant,
    /// QONNX Trunc. Operands: x, scale, zero point, input bit width, output bit width
    /// (and output scale in v2).
    Trunc(TruncAttrs),
    /// FINN MultiThreshold on a float input: `out_scale * #{i : x >= T[c, i]} + out_bias`.
    /// Operands: x, thresholds `(C, N)` or `(1, N)`.
    MultiThreshold(ThresholdAttrs),
    /// ONNX QuantizeLinear: `saturate(round_half_even(x / scale) + zp)` into `out`.
    /// Operands: x, scale, zero point.
    QuantizeLinear { axis: usize, out: IntType },
    /// ONNX DequantizeLinear: `(q - zp) * scale`. Operands: q, scale, zero point.
    DequantizeLinear { axis: usize },
    /// ONNX Clip with constant bounds. Operand: x.
    Clip { min: f32, max: f32 },

    // ---- linear algebra ----
    /// ONNX Conv (NCHW, any number of spatial axes). Operands: x, w, optional bias.
    Conv(ConvAttrs),
    /// ONNX Gemm. Operands: a, b, optional c.
    Gemm(GemmAttrs),
    /// ONNX MatMul with numpy broadcasting. Operands: a, b.
    MatMul,
    /// ONNX BatchNormalization in inference mode. Operands: x, gamma, beta, mean, var.
    BatchNorm { epsilon: f32 },

    // ---- pooling and reductions ----
    /// ONNX MaxPool (padding never wins: pads hold -inf).
    MaxPool(PoolAttrs),
    /// ONNX AveragePool.
    AveragePool(PoolAttrs),
    /// ONNX GlobalAveragePool: the mean over every spatial axis, kept as extent 1.
    GlobalAveragePool,
    /// ONNX ReduceMean over the given axes.
    ReduceMean { axes: Vec<usize>, keep_dims: bool },

    // ---- elementwise ----
    /// Elementwise arithmetic with broadcasting. Operands: a, b.
    Binary(BinaryOp),
    /// ONNX Relu.
    Relu,
    /// ONNX Sign: -1, 0 or +1 (note `Sign(0) = 0`, unlike BipolarQuant).
    Sign,
    /// ONNX Abs.
    Abs,
    /// ONNX Round: to the nearest integer, halves to even.
    Round,
    /// An elementwise comparison with broadcasting: 1 where it holds, else 0 (ONNX's bool
    /// result, as a `binary` value; NaN compares false). Operands: a, b.
    Compare(CompareOp),

    // ---- layout ----
    /// Reinterprets the row-major data under a new static shape.
    Reshape { shape: Vec<usize> },
    /// Permutes axes: output axis `i` is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// Constant padding: begins of every axis, then ends.
    Pad { pads: Vec<usize>, value: f32 },
    /// Joins its operands along `axis`.
    Concat { axis: usize },

    // ---- heads ----
    /// ONNX Softmax. With `coerce_2d` (opset < 13) the input is viewed as 2-D at `axis`
    /// and the softmax runs over everything from `axis` on.
    Softmax { axis: usize, coerce_2d: bool },
    /// ONNX TopK: two results, values and i64 indices.
    TopK {
        k: usize,
        axis: usize,
        largest: bool,
        sorted: bool,
    },

    // ---- lowered binary ops, produced by the passes ----
    /// Integer thresholds on an integer accumulator:
    /// `out_scale * #{i : acc >= T[c, i]} + out_bias` for an ascending channel and
    /// `out_scale * #{i : acc <= T[c, i]} + out_bias` for a descending one (a channel whose
    /// float chain had a negative multiplier). Operands: acc, thresholds `(C, N)` or `(1, N)`,
    /// and optionally the directions `(C)`: +1 ascending, -1 descending (all ascending when
    /// absent).
    Threshold(ThresholdAttrs),
    /// Bipolar x bipolar matrix product as an integer: `dot = K - 2 * popcount(a ^ w)`.
    /// Operands: a bipolar `(.., K)`, and the weights, bipolar `(K, M)` packed into 64-bit
    /// words along K: an i64 tensor `(M, words(K))` ([`crate::packing`]).
    XnorMatMul,
    /// Bipolar x bipolar convolution as an integer; zero padding contributes 0 to the dot
    /// product (only valid taps count). Operands: x bipolar `(N, C, K...)`, and the weights,
    /// bipolar `(M, C/group, K...)` packed into 64-bit words along their group's channels:
    /// an i64 tensor `(M, K..., words(C/group))` ([`crate::packing`]).
    XnorConv(ConvAttrs),
    /// MaxPool on the channels (axis 1) whose `min` is false, MinPool on the others: what a
    /// MaxPool becomes when it moves past a quantizer that falls on some channels
    /// (`t(max x) = min t(x)` for a non-increasing `t`). On bipolar bits, OR and AND. Padded
    /// taps never count.
    MinMaxPool { attrs: PoolAttrs, min: Vec<bool> },
    /// Low-bit integer matrix product as an integer, computed bit-serially by backends (one
    /// popcount per pair of bit planes, weighted by the planes' place values). Operands: a
    /// `(.., K)` of integers or integers times `a_scale` (its integers are `a / a_scale`,
    /// rounded), and integer weights `(K, M)`; the result is the exact integer dot product.
    BitSerialMatMul { a_scale: f32 },
    /// Low-bit integer convolution as an integer (any group), computed bit-serially by
    /// backends; zero padding contributes 0. Operands: x `(N, C, H, W)` of integers or
    /// integers times `a_scale`, and integer weights `(M, C/group, KH, KW)`.
    BitSerialConv { attrs: ConvAttrs, a_scale: f32 },
}

impl Op {
    /// The op's name in the IR text and in `bnnc inspect`.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Quant(_) => "quant",
            Op::BipolarQuant => "bipolar_quant",
            Op::Trunc(_) => "trunc",
            Op::MultiThreshold(_) => "multithreshold",
            Op::QuantizeLinear { .. } => "quantize_linear",
            Op::DequantizeLinear { .. } => "dequantize_linear",
            Op::Clip { .. } => "clip",
            Op::Conv(_) => "conv",
            Op::Gemm(_) => "gemm",
            Op::MatMul => "matmul",
            Op::BatchNorm { .. } => "batchnorm",
            Op::MaxPool(_) => "maxpool",
            Op::AveragePool(_) => "avgpool",
            Op::GlobalAveragePool => "global_avgpool",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::Binary(b) => b.name(),
            Op::Relu => "relu",
            Op::Sign => "sign",
            Op::Abs => "abs",
            Op::Round => "round",
            Op::Compare(c) => c.name(),
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Softmax { .. } => "softmax",
            Op::TopK { .. } => "topk",
            Op::Threshold(_) => "threshold",
            Op::XnorMatMul => "xnor_matmul",
            Op::XnorConv(_) => "xnor_conv",
            Op::BitSerialMatMul { .. } => "bitserial_matmul",
            Op::BitSerialConv { .. } => "bitserial_conv",
            Op::MinMaxPool { .. } => "minmaxpool",
        }
    }

    /// How many results the op has.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }

    /// Whether the op is a layer that multiplies by weights (for `bnnc inspect`'s MACs).
    pub fn is_linear_layer(&self) -> bool {
        matches!(
            self,
            Op::Conv(_)
                | Op::Gemm(_)
                | Op::MatMul
                | Op::XnorMatMul
                | Op::XnorConv(_)
                | Op::BitSerialMatMul { .. }
                | Op::BitSerialConv { .. }
        )
    }
}
