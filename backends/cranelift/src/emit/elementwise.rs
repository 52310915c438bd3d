//! Elementwise kernels with numpy broadcasting: arithmetic, quantizers, BatchNorm, Relu,
//! Clip, Sign. Each computes exactly the f32 operations of the interpreter, in its order.

use bnnc_ir::broadcast;
use bnnc_ir::interp::{batchnorm_scale_shift, quant_range};
use bnnc_ir::{BinaryOp, CompareOp, Node, Op, RoundingMode};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

use super::convert::{pack, pack_pixels4};
use super::{KernelBuilder, Operand};
use crate::schedule::Storage;
use crate::BackendError;

/// One input of [`map_lanes`]: the address of its elements, its shape, and whether they are
/// `i32` integers (an accumulator), each read as the f32 a conversion step would write.
#[derive(Clone)]
pub(crate) struct Input {
    pub ptr: Value,
    pub shape: Vec<usize>,
    pub ints: bool,
}

impl Input {
    pub fn of(kb: &mut KernelBuilder, op: &Operand) -> Input {
        Input {
            ptr: op.f32_ptr(kb),
            shape: op.shape.clone(),
            ints: op.storage == Storage::I32 && op.data.is_none(),
        }
    }

    fn table(kb: &mut KernelBuilder, data: &[f32], shape: Vec<usize>) -> Input {
        Input {
            ptr: kb.table_f32(data),
            shape,
            ints: false,
        }
    }
}

/// One element (`F32`) or four (`F32X4`) of an input at `at`.
fn load_input(kb: &mut KernelBuilder, ty: Type, ints: bool, at: Value, offset: i64) -> Value {
    use cranelift_codegen::ir::types::{I32, I32X4};
    if !ints {
        return kb.load(ty, at, offset);
    }
    let int = if ty.is_vector() { I32X4 } else { I32 };
    let v = kb.load(int, at, offset);
    kb.b.ins().fcvt_from_sint(ty, v)
}

/// `out[i] = f(inputs[..][broadcast i])` over the output's shape, row-major. With `lanes`
/// (`f` computes `f32x4` lanes as it does `f32` values, the same IEEE operation per lane),
/// the innermost contiguous axis runs four elements at a time.
pub(crate) fn map_lanes(
    kb: &mut KernelBuilder,
    out: Value,
    out_shape: &[usize],
    inputs: &[Input],
    lanes: bool,
    mut f: impl FnMut(&mut KernelBuilder, &[Value]) -> Value,
) {
    // Strides per axis of the output and of every input; axes that are contiguous for all
    // of them merge, so the common cases (same shape, scalar, per-channel) are one or two
    // loops.
    let all: Vec<Vec<usize>> = std::iter::once(out_shape)
        .chain(inputs.iter().map(|i| i.shape.as_slice()))
        .map(|shape| {
            broadcast::strides(shape, out_shape)
                .expect("a verified graph's operands broadcast to their result")
        })
        .collect();
    let mut dims: Vec<(usize, Vec<usize>)> = Vec::new();
    for (axis, &extent) in out_shape.iter().enumerate() {
        if extent == 1 {
            continue;
        }
        let strides: Vec<usize> = all.iter().map(|s| s[axis]).collect();
        if let Some((prev_extent, prev)) = dims.last_mut() {
            if prev.iter().zip(&strides).all(|(&p, &s)| p == s * extent) {
                *prev_extent *= extent;
                *prev = strides;
                continue;
            }
        }
        dims.push((extent, strides));
    }
    let mut bases: Vec<Value> = std::iter::once(out)
        .chain(inputs.iter().map(|i| i.ptr))
        .collect();
    let ints: Vec<bool> = inputs.iter().map(|i| i.ints).collect();
    nest(kb, &dims, &mut bases, &ints, lanes, &mut f);
}

fn nest(
    kb: &mut KernelBuilder,
    dims: &[(usize, Vec<usize>)],
    bases: &mut [Value],
    ints: &[bool],
    lanes: bool,
    f: &mut impl FnMut(&mut KernelBuilder, &[Value]) -> Value,
) {
    if let [(extent, strides)] = dims {
        let contiguous = strides[0] == 1 && strides[1..].iter().all(|&s| s <= 1);
        if lanes && contiguous && *extent >= 4 {
            return lanes_loop(kb, *extent, strides, bases, ints, f);
        }
    }
    let Some(((extent, strides), rest)) = dims.split_first() else {
        let args: Vec<Value> = bases[1..]
            .iter()
            .zip(ints)
            .map(|(&p, &int)| load_input(kb, F32, int, p, 0))
            .collect();
        let y = f(kb, &args);
        kb.store(y, bases[0], 0);
        return;
    };
    kb.for_range(*extent, |kb, i| {
        let mut inner: Vec<Value> = bases
            .iter()
            .zip(strides)
            .map(|(&b, &s)| {
                if s == 0 {
                    b
                } else {
                    kb.addr(b, i, (s * 4) as i64, 0)
                }
            })
            .collect();
        nest(kb, rest, &mut inner, ints, lanes, f);
    });
}

/// The innermost axis, contiguous in the output and each input (stride 1, or 0 for a
/// broadcast value), four elements to an `f32x4`, then the last few one by one.
fn lanes_loop(
    kb: &mut KernelBuilder,
    extent: usize,
    strides: &[usize],
    bases: &[Value],
    ints: &[bool],
    f: &mut impl FnMut(&mut KernelBuilder, &[Value]) -> Value,
) {
    use cranelift_codegen::ir::types::F32X4;
    let splats: Vec<Option<Value>> = bases[1..]
        .iter()
        .zip(&strides[1..])
        .zip(ints)
        .map(|((&b, &s), &int)| {
            (s == 0).then(|| {
                let v = load_input(kb, F32, int, b, 0);
                kb.b.ins().splat(F32X4, v)
            })
        })
        .collect();
    kb.for_range(extent / 4, |kb, i| {
        let args: Vec<Value> = bases[1..]
            .iter()
            .zip(&splats)
            .zip(ints)
            .map(|((&b, splat), &int)| match splat {
                Some(v) => *v,
                None => {
                    let at = kb.addr(b, i, 16, 0);
                    load_input(kb, F32X4, int, at, 0)
                }
            })
            .collect();
        let y = f(kb, &args);
        let at = kb.addr(bases[0], i, 16, 0);
        kb.store(y, at, 0);
    });
    for r in extent / 4 * 4..extent {
        let args: Vec<Value> = bases[1..]
            .iter()
            .zip(&strides[1..])
            .zip(ints)
            .map(|((&b, &s), &int)| load_input(kb, F32, int, b, (r * s * 4) as i64))
            .collect();
        let y = f(kb, &args);
        kb.store(y, bases[0], (r * 4) as i64);
    }
}

/// An elementwise op as a function of each element `x` of its first operand and of the
/// elements `args` of its other operands there: what a step of one op and a chain of them
/// ([`chain`]) both run.
pub(crate) struct Pointwise {
    /// The other operands, broadcast to the result's shape.
    args: Vec<Input>,
    /// Whether `f` computes `f32x4` lanes as it does `f32` values (the same IEEE operation
    /// per lane).
    lanes: bool,
    f: PointFn,
}

type PointFn = Box<dyn Fn(&mut KernelBuilder, Value, &[Value]) -> Value>;

impl Pointwise {
    fn new(
        args: Vec<Input>,
        lanes: bool,
        f: impl Fn(&mut KernelBuilder, Value, &[Value]) -> Value + 'static,
    ) -> Pointwise {
        Pointwise {
            args,
            lanes,
            f: Box::new(f),
        }
    }
}

/// Where a chain node's first operand, or second one computed at run time, comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// The step's operand of this index.
    Read(usize),
    /// The result of the chain's node of this index (an earlier one).
    Node(usize),
    /// A constant (a first operand only: `c - x`).
    Const(Input),
}

/// One node of a chain: its op, where its first operand comes from, and, for arithmetic or
/// a comparison on a second operand computed at run time, where that one does (it is then
/// the value of `op`'s first argument, which is not loaded).
pub(crate) struct Link {
    pub op: Pointwise,
    pub x: Source,
    pub y: Option<Source>,
}

impl Link {
    /// What the link loads per element: a constant first operand, then `op`'s arguments.
    fn loads(&self) -> impl Iterator<Item = &Input> {
        let x = match &self.x {
            Source::Const(c) => Some(c),
            _ => None,
        };
        x.into_iter()
            .chain(&self.op.args[usize::from(self.y.is_some())..])
    }
}

/// The `links` computed in turn for each element of the result, written to `out`: one loop
/// however many nodes, each element's values staying in registers from the first node to
/// the last. `reads` are the chain's operands computed at run time, broadcast to `out`'s
/// shape.
pub(crate) fn chain(kb: &mut KernelBuilder, reads: Vec<Input>, links: &[Link], out: &Operand) {
    let lanes = links.iter().all(|l| l.op.lanes);
    let count = reads.len();
    let inputs: Vec<Input> = reads
        .into_iter()
        .chain(links.iter().flat_map(|l| l.loads().cloned()))
        .collect();
    map_lanes(kb, out.ptr, &out.shape, &inputs, lanes, |kb, v| {
        let (reads, mut loaded) = v.split_at(count);
        let mut results: Vec<Value> = Vec::with_capacity(links.len());
        for l in links {
            let (mine, rest) = loaded.split_at(l.loads().count());
            loaded = rest;
            let value = |s: &Source| match s {
                Source::Read(i) => reads[*i],
                Source::Node(i) => results[*i],
                Source::Const(_) => mine[0],
            };
            let x = value(&l.x);
            let args = &mine[usize::from(matches!(l.x, Source::Const(_)))..];
            let y = match &l.y {
                Some(s) => (l.op.f)(kb, x, &[value(s)]),
                None => (l.op.f)(kb, x, args),
            };
            results.push(y);
        }
        *results.last().expect("a chain has nodes")
    });
}

/// The elementwise op `node` (of f32 tensors) of [`pointwise`] as one step.
pub(crate) fn elementwise(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    if matches!(node.op, Op::BipolarQuant) && out.storage == Storage::Bits {
        bipolar_bits(kb, &operands[0], out);
        return Ok(());
    }
    let op = pointwise(kb, node, operands)?;
    let x = Input::of(kb, &operands[0]);
    let link = Link {
        op,
        x: Source::Read(0),
        y: None,
    };
    chain(kb, vec![x], &[link], out);
    Ok(())
}

/// Add, Sub, Mul, Div, Min, Max and Pow of f32 tensors.
fn binary(op: BinaryOp, operands: &[Operand], y: Input) -> Pointwise {
    // onnxruntime (and so the interpreter) squares and cubes by multiplication for a scalar
    // exponent of 2 or 3; other powers are C's `powf`, as Rust's `f32::powf` is.
    let power = match operands[1].const_f32().as_deref() {
        Some([e]) if *e == 2.0 || *e == 3.0 => Some(*e),
        _ => None,
    };
    // Every arm but the call to powf is one IEEE operation per element, or per lane.
    let lanes = !(op == BinaryOp::Pow && power.is_none());
    Pointwise::new(vec![y], lanes, move |kb, x, v| match op {
        BinaryOp::Add => kb.b.ins().fadd(x, v[0]),
        BinaryOp::Sub => kb.b.ins().fsub(x, v[0]),
        BinaryOp::Mul => kb.b.ins().fmul(x, v[0]),
        BinaryOp::Div => kb.b.ins().fdiv(x, v[0]),
        // IEEE 754 minimum and maximum, as the interpreter's.
        BinaryOp::Min => kb.b.ins().fmin(x, v[0]),
        BinaryOp::Max => kb.b.ins().fmax(x, v[0]),
        BinaryOp::Pow => match power {
            Some(e) => {
                let square = kb.b.ins().fmul(x, x);
                if e == 3.0 {
                    kb.b.ins().fmul(square, x)
                } else {
                    square
                }
            }
            None => kb.call_c("powf", &[F32, F32], F32, &[x, v[0]]),
        },
    })
}

/// A comparison of f32 tensors: 1.0 where it holds, else 0.0 (NaN compares false).
fn compare(op: CompareOp, y: Input) -> Pointwise {
    let cc = match op {
        CompareOp::Less => FloatCC::LessThan,
        CompareOp::LessOrEqual => FloatCC::LessThanOrEqual,
        CompareOp::Greater => FloatCC::GreaterThan,
        CompareOp::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
        CompareOp::Equal => FloatCC::Equal,
    };
    Pointwise::new(vec![y], true, move |kb, x, v| {
        let holds = kb.b.ins().fcmp(cc, x, v[0]);
        let (one, zero) = (constant_like(kb, x, 1.0), constant_like(kb, x, 0.0));
        pick(kb, holds, one, zero)
    })
}

/// Bits `x >= 0` of `rows` rows of `channels` contiguous f32, packed: each `f32x4` compare's
/// lanes are four bits (`vhigh_bits`), sixteen compares a word.
fn pack_signs_rows(
    kb: &mut KernelBuilder,
    src: Value,
    dst: Value,
    (rows, channels): (usize, usize),
) {
    use cranelift_codegen::ir::types::{F32X4, I64};
    let nwords = bnnc_runtime::packing::words(channels);
    kb.for_range(rows, |kb, r| {
        let row = kb.addr(src, r, (channels * 4) as i64, 0);
        let out = kb.addr(dst, r, (nwords * 8) as i64, 0);
        let zero = kb.fconst(0.0);
        let zeros = kb.b.ins().splat(F32X4, zero);
        for w in 0..nwords {
            let first = w * 64;
            let count = 64.min(channels - first);
            let mut word = kb.iconst(0);
            for q in 0..count / 4 {
                let v = kb.load(F32X4, row, ((first + 4 * q) * 4) as i64);
                let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zeros);
                let four = kb.b.ins().vhigh_bits(I64, ge);
                let four = kb.b.ins().ishl_imm_s(four, (4 * q) as i64);
                word = kb.b.ins().bor(word, four);
            }
            for j in count / 4 * 4..count {
                let v = kb.load(F32, row, ((first + j) * 4) as i64);
                let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zero);
                let bit = kb.b.ins().uextend(I64, ge);
                let bit = kb.b.ins().ishl_imm_s(bit, j as i64);
                word = kb.b.ins().bor(word, bit);
            }
            kb.store(word, out, (w * 8) as i64);
        }
    });
}

/// Rounds as [`RoundingMode::apply`].
pub(crate) fn round(kb: &mut KernelBuilder, mode: RoundingMode, y: Value) -> Value {
    match mode {
        RoundingMode::HalfEven => kb.b.ins().nearest(y),
        RoundingMode::Ceil => kb.b.ins().ceil(y),
        RoundingMode::Floor => kb.b.ins().floor(y),
        RoundingMode::Down => kb.b.ins().trunc(y),
        RoundingMode::Up | RoundingMode::HalfUp | RoundingMode::HalfDown => {
            // np.sign(y) * g(|y|)
            let a = kb.b.ins().fabs(y);
            let g = match mode {
                RoundingMode::Up => kb.b.ins().ceil(a),
                RoundingMode::HalfUp => {
                    let half = kb.fconst(0.5);
                    let s = kb.b.ins().fadd(a, half);
                    kb.b.ins().floor(s)
                }
                _ => {
                    let half = kb.fconst(0.5);
                    let s = kb.b.ins().fsub(a, half);
                    kb.b.ins().ceil(s)
                }
            };
            let sign = np_sign(kb, y);
            kb.b.ins().fmul(sign, g)
        }
    }
}

/// numpy's sign: -1, 0 (for both zeros), +1, NaN for NaN.
fn np_sign(kb: &mut KernelBuilder, y: Value) -> Value {
    let zero = constant_like(kb, y, 0.0);
    let one = constant_like(kb, y, 1.0);
    let minus = constant_like(kb, y, -1.0);
    let pos = kb.b.ins().fcmp(FloatCC::GreaterThan, y, zero);
    let neg = kb.b.ins().fcmp(FloatCC::LessThan, y, zero);
    let eq = kb.b.ins().fcmp(FloatCC::Equal, y, zero);
    let or_nan = pick(kb, eq, zero, y);
    let or_neg = pick(kb, neg, minus, or_nan);
    pick(kb, pos, one, or_neg)
}

/// `if y > max { max } else { y }`, then `if y < min { min } else { y }`.
fn clamp(kb: &mut KernelBuilder, y: Value, min: f32, max: f32) -> Value {
    let (lo, hi) = (constant_like(kb, y, min), constant_like(kb, y, max));
    let y = pick_min(kb, hi, y);
    pick_max(kb, lo, y)
}

/// `a < b ? a : b`: one `minps` on x86 lanes (whose rule this is: `b` where they are equal
/// or either is NaN). Not IEEE `minimum`, which orders -0 below +0 and propagates NaN.
fn pick_min(kb: &mut KernelBuilder, a: Value, b: Value) -> Value {
    let less = kb.b.ins().fcmp(FloatCC::LessThan, a, b);
    pick(kb, less, a, b)
}

/// `b < a ? a : b`: one `maxps` on x86 lanes (`b` where they are equal or either is NaN).
fn pick_max(kb: &mut KernelBuilder, a: Value, b: Value) -> Value {
    let less = kb.b.ins().fcmp(FloatCC::LessThan, b, a);
    pick(kb, less, a, b)
}

/// The constant `c` as a value of `like`'s type: an f32, or four lanes of it.
fn constant_like(kb: &mut KernelBuilder, like: Value, c: f32) -> Value {
    let v = kb.fconst(c);
    let ty = kb.b.func.dfg.value_type(like);
    if ty.is_vector() {
        kb.b.ins().splat(ty, v)
    } else {
        v
    }
}

/// `cond ? a : b` for a compare of f32 values or of lanes.
pub(crate) fn pick(kb: &mut KernelBuilder, cond: Value, a: Value, b: Value) -> Value {
    let ty = kb.b.func.dfg.value_type(a);
    if ty.is_vector() {
        let little = cranelift_codegen::ir::MemFlagsData::new()
            .with_endianness(cranelift_codegen::ir::Endianness::Little);
        let mask = kb.b.ins().bitcast(ty, little, cond);
        kb.b.ins().bitselect(mask, a, b)
    } else {
        kb.select(cond, a, b)
    }
}

fn single_const(node: &Node, op: &Operand, what: &str) -> Result<f32, BackendError> {
    match op.const_f32().as_deref() {
        Some([v]) => Ok(*v),
        _ => Err(BackendError::unsupported(
            node,
            format!("the {what} must be a constant scalar"),
        )),
    }
}

fn constant(node: &Node, op: &Operand, what: &str) -> Result<Vec<f32>, BackendError> {
    op.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, format!("the {what} must be a constant")))
}

/// Per-axis parameters (QuantizeLinear's scale) as a tensor broadcastable to `shape`.
fn along_axis(shape: &[usize], axis: usize, len: usize) -> Vec<usize> {
    if len == 1 {
        // A scalar, which broadcasts to any rank (0 included).
        return Vec::new();
    }
    let mut s = vec![1usize; shape.len()];
    s[axis] = len;
    s
}

/// QuantizeLinear's and DequantizeLinear's scale and zero point (0 when absent), per
/// `axis` or for the whole tensor, as inputs broadcast to `shape`.
fn linear_quant_params(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    shape: &[usize],
    axis: usize,
) -> Result<(Input, Input), BackendError> {
    let scale = constant(node, &operands[1], "scale")?;
    let zp = match operands.get(2) {
        Some(z) => constant(node, z, "zero point")?,
        None => vec![0.0; scale.len()],
    };
    let p = along_axis(shape, axis, scale.len());
    Ok((
        Input::table(kb, &scale, p.clone()),
        Input::table(kb, &zp, p),
    ))
}

/// The elementwise op `node` as a [`Pointwise`] function of its first operand: arithmetic,
/// comparisons, quantizers, BatchNorm, Relu, Clip, Sign, Abs, Round (a BipolarQuant into bits is
/// [`elementwise`]'s).
pub(crate) fn pointwise(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
) -> Result<Pointwise, BackendError> {
    let shape = operands[0].shape.clone();
    Ok(match &node.op {
        Op::Binary(op) => {
            let y = Input::of(kb, &operands[1]);
            binary(*op, operands, y)
        }
        Op::Compare(op) => compare(*op, Input::of(kb, &operands[1])),
        Op::Relu => Pointwise::new(vec![], true, |kb, x, _| {
            let zero = constant_like(kb, x, 0.0);
            let pos = kb.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            pick(kb, pos, x, zero)
        }),
        Op::Sign => Pointwise::new(vec![], true, |kb, x, _| np_sign(kb, x)),
        Op::Abs => Pointwise::new(vec![], true, |kb, x, _| kb.b.ins().fabs(x)),
        Op::Round => Pointwise::new(vec![], true, |kb, x, _| kb.b.ins().nearest(x)),
        Op::Clip { min, max } => {
            let (min, max) = (*min, *max);
            Pointwise::new(vec![], true, move |kb, x, _| {
                let (lo, hi) = (constant_like(kb, x, min), constant_like(kb, x, max));
                // x < lo ? lo : x, then y > hi ? hi : y.
                let y = pick_max(kb, lo, x);
                pick_min(kb, hi, y)
            })
        }
        Op::BatchNorm { epsilon } => {
            let [g, b, m, v] =
                [1, 2, 3, 4].map(|i| constant(node, &operands[i], "BatchNorm parameter"));
            let (g, b, m, v) = (g?, b?, m?, v?);
            let (s, t): (Vec<f32>, Vec<f32>) = (0..g.len())
                .map(|c| batchnorm_scale_shift(g[c], b[c], m[c], v[c], *epsilon))
                .unzip();
            let per_channel = along_axis(&shape, 1, s.len());
            let s = Input::table(kb, &s, per_channel.clone());
            let t = Input::table(kb, &t, per_channel);
            Pointwise::new(vec![s, t], true, |kb, x, v| {
                let p = kb.b.ins().fmul(x, v[0]);
                kb.b.ins().fadd(p, v[1])
            })
        }
        Op::BipolarQuant => {
            let s = Input::of(kb, &operands[1]);
            Pointwise::new(vec![s], true, |kb, x, v| {
                let zero = constant_like(kb, x, 0.0);
                let (one, minus) = (constant_like(kb, x, 1.0), constant_like(kb, x, -1.0));
                let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, x, zero);
                let q = pick(kb, ge, one, minus);
                kb.b.ins().fmul(q, v[0])
            })
        }
        Op::Quant(attrs) => {
            let bits = single_const(node, &operands[3], "bit width")?;
            if bits.fract() != 0.0 || !(1.0..=32.0).contains(&bits) {
                return Err(BackendError::unsupported(node, format!("bit width {bits}")));
            }
            let bits = bits as u32;
            let bipolar = bits == 1 && attrs.signed;
            let (min, max) = quant_range(attrs.signed, attrs.narrow, bits);
            let rounding = attrs.rounding;
            let s = Input::of(kb, &operands[1]);
            let z = Input::of(kb, &operands[2]);
            // A multi-bit quantizer rounding by one instruction computes lanes as values.
            let lanes = !bipolar
                && matches!(
                    rounding,
                    RoundingMode::HalfEven
                        | RoundingMode::Floor
                        | RoundingMode::Ceil
                        | RoundingMode::Down
                );
            Pointwise::new(vec![s, z], lanes, move |kb, x, v| {
                let d = kb.b.ins().fdiv(x, v[0]);
                let y = kb.b.ins().fadd(d, v[1]);
                let q = if bipolar {
                    let (zero, one, minus) = (kb.fconst(0.0), kb.fconst(1.0), kb.fconst(-1.0));
                    let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, y, zero);
                    kb.select(ge, one, minus)
                } else {
                    let c = clamp(kb, y, min, max);
                    round(kb, rounding, c)
                };
                let centered = kb.b.ins().fsub(q, v[1]);
                kb.b.ins().fmul(centered, v[0])
            })
        }
        Op::Trunc(attrs) => {
            // The shift is a power of two fixed by constants, computed as the interpreter
            // computes it.
            let shift = if attrs.v2 {
                let (scale, out_scale) = (
                    single_const(node, &operands[1], "scale")?,
                    single_const(node, &operands[5], "output scale")?,
                );
                2f32.powf((out_scale / scale).log2().round_ties_even())
            } else {
                let (in_bits, out_bits) = (
                    single_const(node, &operands[3], "input bit width")?,
                    single_const(node, &operands[4], "output bit width")?,
                );
                2f32.powf(in_bits - out_bits)
            };
            // Only v2 clamps to the output's range; v1's output bit width counts only in the
            // shift (any value, 0 included).
            let (min, max) = if attrs.v2 {
                let out_bits = single_const(node, &operands[4], "output bit width")?;
                if out_bits.fract() != 0.0 || !(1.0..=64.0).contains(&out_bits) {
                    return Err(BackendError::unsupported(
                        node,
                        format!("output bit width {out_bits}"),
                    ));
                }
                quant_range(attrs.signed, attrs.narrow, out_bits as u32)
            } else {
                (f32::NEG_INFINITY, f32::INFINITY)
            };
            let (v2, rounding) = (attrs.v2, attrs.rounding);
            let s = Input::of(kb, &operands[1]);
            let z = Input::of(kb, &operands[2]);
            let os = if v2 {
                Input::of(kb, &operands[5])
            } else {
                s.clone()
            };
            Pointwise::new(vec![s, z, os], false, move |kb, x, v| {
                let d = kb.b.ins().fdiv(x, v[0]);
                let y = kb.b.ins().fadd(d, v[1]);
                let r = kb.b.ins().nearest(y);
                let shift = kb.fconst(shift);
                let q = kb.b.ins().fdiv(r, shift);
                if v2 {
                    let c = clamp(kb, q, min, max);
                    let t = round(kb, rounding, c);
                    let z = kb.b.ins().fdiv(v[1], shift);
                    let centered = kb.b.ins().fsub(t, z);
                    kb.b.ins().fmul(centered, v[2])
                } else {
                    let t = round(kb, rounding, q);
                    let centered = kb.b.ins().fsub(t, v[1]);
                    kb.b.ins().fmul(centered, v[0])
                }
            })
        }
        Op::QuantizeLinear { axis, out: int } => {
            let (s, z) = linear_quant_params(kb, node, operands, &shape, *axis)?;
            let (min, max) = (int.min() as f32, int.max() as f32);
            // `q = round(x / s) + zp` is -0.0 only where the zero point is -0.0 (a sum of
            // round-to-nearest is -0 only of two -0s), and an integer zero point never is:
            // then the IEEE maximum and minimum of the clamp equal the plain compares
            // (one instruction each), NaN being taken care of on its own.
            let zero_points = match operands.get(2) {
                Some(z) => constant(node, z, "zero point")?,
                None => Vec::new(),
            };
            let plain = zero_points
                .iter()
                .all(|z| !(*z == 0.0 && z.is_sign_negative()));
            Pointwise::new(vec![s, z], true, move |kb, x, v| {
                let d = kb.b.ins().fdiv(x, v[0]);
                let r = kb.b.ins().nearest(d);
                let q = kb.b.ins().fadd(r, v[1]);
                // NaN saturates to the minimum; otherwise clamp.
                let (lo, hi) = (constant_like(kb, q, min), constant_like(kb, q, max));
                let nan = kb.b.ins().fcmp(FloatCC::Unordered, q, q);
                let c = if plain {
                    let c = pick_max(kb, lo, q);
                    pick_min(kb, hi, c)
                } else {
                    let c = kb.b.ins().fmax(q, lo);
                    kb.b.ins().fmin(c, hi)
                };
                pick(kb, nan, lo, c)
            })
        }
        Op::DequantizeLinear { axis } => {
            let (s, z) = linear_quant_params(kb, node, operands, &shape, *axis)?;
            Pointwise::new(vec![s, z], true, |kb, x, v| {
                let c = kb.b.ins().fsub(x, v[1]);
                kb.b.ins().fmul(c, v[0])
            })
        }
        _ => {
            return Err(BackendError::unsupported(
                node,
                "internal: not an elementwise op",
            ))
        }
    })
}

/// A BipolarQuant (of a unit scale: only that makes bipolar values) into packed bits: the
/// bit is the sign test.
fn bipolar_bits(kb: &mut KernelBuilder, x: &Operand, out: &Operand) {
    let src = x.f32_ptr(kb);
    match crate::schedule::bit_geometry(&out.shape) {
        // Channels contiguous (one pixel per batch index): four tests at a time.
        (rows, channels, 1) => pack_signs_rows(kb, src, out.ptr, (rows, channels)),
        // Four pixels of a channel at a time.
        (_, _, pixels) if pixels >= 4 => {
            pack_pixels4(kb, &out.shape, (src, out.ptr), |kb, at, _| {
                use cranelift_codegen::ir::types::F32X4;
                let v = kb.load(F32X4, at, 0);
                let zero = kb.fconst(0.0);
                let zeros = kb.b.ins().splat(F32X4, zero);
                // A lane compare is an i32x4 mask.
                Some(kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zeros))
            })
        }
        _ => pack(kb, &out.shape, out.ptr, |kb, index, _| {
            let v = kb.load_at(F32, src, index);
            let zero = kb.fconst(0.0);
            kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, zero)
        }),
    }
}
