//! Threshold and MultiThreshold: `out_scale * #{i : x >= T[c, i]} + out_bias` per element,
//! counting `x <= T[c, i]` in descending channels.
//!
//! A descending channel is counted on the negated input against negated thresholds
//! (`-x >= -T` is `x <= T`, negation being exact), so one loop serves both directions. On an
//! `i32` accumulator the thresholds become integers first: `x >= T` is `x >= ceil(T)`.

use bnnc_ir::{Node, ThresholdAttrs};
use bnnc_runtime::packing::WORD_BITS;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::convert::{
    integer_of, pack, pack_pixels4, pack_pixels4_planes, pack_planes, planes_of_row_quads,
};
use super::elementwise::pick;
use super::{KernelBuilder, Operand};
use crate::schedule::Storage;
use crate::BackendError;

/// Integer thresholds beyond any i32 accumulator: "never" and "always" stay so.
const BEYOND: f64 = (1u64 << 40) as f64;

pub(crate) fn threshold(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ThresholdAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let x = &operands[0];
    let table = operands[1]
        .const_f32()
        .ok_or_else(|| BackendError::unsupported(node, "the thresholds must be constant"))?;
    let &[rows, n] = operands[1].shape.as_slice() else {
        return Err(BackendError::unsupported(node, "thresholds must be (C, N)"));
    };
    let axis = attrs.channel_axis;
    let channels = x.shape.get(axis).copied().unwrap_or(1);
    let descending: Vec<bool> = match operands.get(2) {
        None => vec![false; channels],
        Some(d) => d
            .const_f32()
            .ok_or_else(|| BackendError::unsupported(node, "the directions must be constant"))?
            .iter()
            .map(|&s| s < 0.0)
            .collect(),
    };
    if (rows != 1 && rows != channels) || descending.len() != channels {
        return Err(BackendError::unsupported(
            node,
            format!(
                "{rows} threshold rows and {} directions for {channels} channels",
                descending.len()
            ),
        ));
    }
    let integer = x.storage == Storage::I32;
    if let (Storage::Planes(planes), Storage::F32, None, 1) =
        (out.storage, x.storage, operands.get(2), axis)
    {
        let pixels = crate::schedule::bit_geometry(&x.shape).2;
        if let (Some(levels), true) = (
            affine_levels(attrs, &out.elem, n),
            pixels == 1 || pixels >= 4,
        ) {
            let t = ThresholdRows {
                table: &table,
                rows,
                n,
            };
            if pixels == 1 {
                planes_of_rows_by_thresholds(kb, x, out, planes.into(), &t, levels);
            } else {
                planes_of_pixels_by_thresholds(kb, x, out, planes.into(), &t, levels);
            }
            return Ok(());
        }
    }
    if out.storage == Storage::Bits && n == 1 && axis == 1 {
        let rows: Vec<(bool, f32)> = (0..channels)
            .map(|c| (descending[c], table[if rows == 1 { 0 } else { c }]))
            .collect();
        bits_one_threshold(kb, attrs, x, out, &rows);
        return Ok(());
    }
    // Per channel: the sign to multiply the input by, and its N thresholds.
    let mut signs = Vec::with_capacity(channels);
    let mut int_t = Vec::with_capacity(channels * n);
    let mut float_t = Vec::with_capacity(channels * n);
    for (c, &desc) in descending.iter().enumerate() {
        let row = if rows == 1 { 0 } else { c };
        signs.push(if desc { -1i32 } else { 1 });
        for &t in &table[row * n..(row + 1) * n] {
            let t = f64::from(t);
            let it = if t.is_nan() {
                BEYOND
            } else if desc {
                -t.floor()
            } else {
                t.ceil()
            };
            int_t.push(it.clamp(-BEYOND, BEYOND) as i64);
            float_t.push(if desc { -(t as f32) } else { t as f32 });
        }
    }
    let inner: usize = x.shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    if (out.storage, x.storage, axis) == (Storage::F32, Storage::F32, 1) && inner >= 4 {
        let image = ImageThresholds {
            signs: &signs,
            thresholds: &float_t,
            n,
            scale: attrs.out_scale,
            bias: attrs.out_bias,
            by_arithmetic: counts_by_arithmetic(&x.elem, &signs, &float_t, n),
        };
        image.emit(kb, x, out.ptr, inner);
        return Ok(());
    }
    let signs_ptr = kb.table_i32(&signs);
    let vectors =
        (n >= VECTOR_THRESHOLDS).then(|| VectorThresholds::new(kb, n, &int_t, &float_t, integer));
    let t_ptr = if integer {
        kb.table(int_t.iter().flat_map(|v| v.to_le_bytes()).collect())
    } else {
        kb.table_f32(&float_t)
    };
    let src = x.f32_ptr(kb);
    let (scale, bias) = (attrs.out_scale, attrs.out_bias);
    // The f32 result of element `index` in `channel`.
    let value = move |kb: &mut KernelBuilder, index: Value, channel: Value| -> Value {
        let sign = kb.load_at(I32, signs_ptr, channel);
        let first = kb.b.ins().imul_imm_s(channel, n as i64);
        let count = if let Some(vt) = vectors {
            let signed = if integer {
                let raw = kb.load_at(I32, src, index);
                kb.b.ins().imul(raw, sign)
            } else {
                let raw = kb.load_at(F32, src, index);
                let sf = kb.i32_to_f32(sign);
                kb.b.ins().fmul(raw, sf)
            };
            vt.count(kb, channel, signed)
        } else if integer {
            let raw = kb.load_at(I32, src, index);
            let signed = kb.b.ins().imul(raw, sign);
            let v = kb.b.ins().sextend(I64, signed);
            count(kb, n, |kb, i| {
                let at = kb.b.ins().iadd_imm_s(first, i as i64);
                let t = kb.load_at(I64, t_ptr, at);
                kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, t)
            })
        } else {
            let raw = kb.load_at(F32, src, index);
            let sf = kb.i32_to_f32(sign);
            let v = kb.b.ins().fmul(raw, sf);
            count(kb, n, |kb, i| {
                let at = kb.b.ins().iadd_imm_s(first, i as i64);
                let t = kb.load_at(F32, t_ptr, at);
                kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, t)
            })
        };
        let cf = kb.i32_to_f32(count);
        let s = kb.fconst(scale);
        let b = kb.fconst(bias);
        let scaled = kb.b.ins().fmul(s, cf);
        kb.b.ins().fadd(scaled, b)
    };
    if let Storage::Planes(planes) = out.storage {
        if axis != 1 {
            return Err(BackendError::unsupported(
                node,
                "bit planes need the channels on axis 1",
            ));
        }
        let scale = match &out.elem {
            bnnc_ir::ElemType::Scaled(_, bnnc_ir::Scale::Tensor(s)) => *s,
            _ => 1.0,
        };
        pack_planes(
            kb,
            &out.shape,
            out.ptr,
            planes.into(),
            |kb, index, channel| {
                let v = value(kb, index, channel);
                let q = integer_of(kb, v, scale);
                kb.b.ins().fcvt_to_sint_sat(I64, q)
            },
        );
    } else if out.storage == Storage::Bits {
        if axis != 1 {
            return Err(BackendError::unsupported(
                node,
                "packed bits need the channels on axis 1",
            ));
        }
        pack(kb, &out.shape, out.ptr, |kb, index, channel| {
            let v = value(kb, index, channel);
            let zero = kb.fconst(0.0);
            kb.b.ins().fcmp(FloatCC::GreaterThan, v, zero)
        });
    } else {
        let outer: usize = x.shape[..axis].iter().product();
        let inner: usize = x.shape[axis + 1..].iter().product();
        let dst = out.ptr;
        kb.for_range(outer, |kb, o| {
            kb.for_range(channels, |kb, c| {
                kb.for_range(inner, |kb, i| {
                    let oc = kb.b.ins().imul_imm_s(o, channels as i64);
                    let row = kb.b.ins().iadd(oc, c);
                    let base = kb.b.ins().imul_imm_s(row, inner as i64);
                    let index = kb.b.ins().iadd(base, i);
                    let v = value(kb, index, c);
                    kb.store_at(v, dst, index);
                })
            })
        });
    }
    Ok(())
}

/// A threshold of f32 images to f32 (channels on axis 1, at least four elements each):
/// four of a channel's elements to a vector, each threshold one compare, the count the sum
/// of the masks, scaled and biased per lane as the scalar kernel does.
struct ImageThresholds<'a> {
    /// Per channel: 1, or -1 for a descending one.
    signs: &'a [i32],
    /// Per channel, its `n` thresholds (negated for a descending channel).
    thresholds: &'a [f32],
    n: usize,
    scale: f32,
    bias: f32,
    /// Per channel, the count as arithmetic ([`counts_by_arithmetic`]), where it is exact.
    by_arithmetic: Option<Vec<(f32, f32)>>,
}

/// Inputs with more integers than this are not checked value by value (the checks run at
/// compile time): their thresholds are compared.
const CHECKED_VALUES: usize = 1 << 22;

/// Per channel, `(r, b)` such that the number of its thresholds `v` reaches is
/// `clamp(floor(v * r + b), 0, n)` in f32 arithmetic (`v` multiplied by the channel's sign
/// first), for every value of the input's type: its integers times its scale, each rounded
/// once to f32, as a scaled integer is. Each of those values is checked. Thresholds on
/// integers from evenly spaced ones, as a BatchNorm before a uniform quantizer gives, then
/// cost a multiply, an add and a floor instead of `n` compares; `None` where no line counts
/// every value right.
fn counts_by_arithmetic(
    elem: &bnnc_ir::ElemType,
    signs: &[i32],
    thresholds: &[f32],
    n: usize,
) -> Option<Vec<(f32, f32)>> {
    use bnnc_ir::{ElemType, Scale};
    let (int, scales): (_, Vec<f32>) = match elem {
        ElemType::Int(t) => (*t, vec![1.0]),
        ElemType::Scaled(t, Scale::Tensor(s)) => (*t, vec![*s]),
        ElemType::Scaled(t, Scale::Channel { axis: 1, values }) => (*t, values.to_vec()),
        _ => return None,
    };
    let values = usize::try_from(int.max() - int.min() + 1).ok()?;
    if n < 2 || values.checked_mul(signs.len())? > CHECKED_VALUES {
        return None;
    }
    let mut rows = Vec::with_capacity(signs.len());
    for (c, &sign) in signs.iter().enumerate() {
        let mut row = thresholds[c * n..(c + 1) * n].to_vec();
        if row.iter().any(|t| t.is_nan()) {
            return None;
        }
        row.sort_by(f32::total_cmp);
        let scale = scales[if scales.len() == 1 { 0 } else { c }];
        // The channel's values in rising order are `m * scale` for its integers `m` (the
        // sign's negation is exact), and their counts.
        let (lo, hi) = if sign > 0 {
            (int.min(), int.max())
        } else {
            (-int.max(), -int.min())
        };
        let value = |m: i64| m as f32 * scale;
        let counts: Vec<usize> = (lo..=hi)
            .map(|m| row.partition_point(|&t| t <= value(m)))
            .collect();
        // Threshold j is first reached at integer lo + counts.partition_point(<= j).
        let reached: Vec<(f64, f64)> = (0..n)
            .map(|j| match counts.partition_point(|&k| k <= j) {
                0 => (f64::NEG_INFINITY, lo as f64),
                i if i == counts.len() => (hi as f64, f64::INFINITY),
                i => ((lo + i as i64) as f64 - 1.0, (lo + i as i64) as f64),
            })
            .collect();
        let (a, d) = line_through(&reached)?;
        let r = (1.0 / (f64::from(scale) * d)) as f32;
        let b = (1.0 - a / d) as f32;
        let exact = (lo..=hi).zip(&counts).all(|(m, &k)| {
            let y = (value(m) * r + b).floor().clamp(0.0, n as f32);
            y == k as f32
        });
        if !exact {
            return None;
        }
        rows.push((r, b));
    }
    Some(rows)
}

/// A line `a + j * d` (`d > 0`) strictly inside each `(low_j, high_j]`, as far from the
/// bounds as the middle of the feasible slopes and then offsets puts it, if there is one.
fn line_through(bounds: &[(f64, f64)]) -> Option<(f64, f64)> {
    let (mut d_low, mut d_high) = (0.0f64, f64::INFINITY);
    for (i, &(low_i, high_i)) in bounds.iter().enumerate() {
        for (j, &(low_j, high_j)) in bounds.iter().enumerate().skip(i + 1) {
            let steps = (j - i) as f64;
            let (below, above) = ((low_j - high_i) / steps, (high_j - low_i) / steps);
            if !below.is_nan() {
                d_low = d_low.max(below);
            }
            if !above.is_nan() {
                d_high = d_high.min(above);
            }
        }
    }
    if d_low >= d_high {
        return None;
    }
    let d = if d_high.is_finite() {
        (d_low + d_high) / 2.0
    } else {
        d_low + 1.0
    };
    let a_low = bounds
        .iter()
        .enumerate()
        .map(|(j, &(low, _))| low - j as f64 * d)
        .fold(f64::NEG_INFINITY, f64::max);
    let a_high = bounds
        .iter()
        .enumerate()
        .map(|(j, &(_, high))| high - j as f64 * d)
        .fold(f64::INFINITY, f64::min);
    let a = match (a_low.is_finite(), a_high.is_finite()) {
        _ if a_low >= a_high => return None,
        (true, true) => (a_low + a_high) / 2.0,
        (true, false) => a_low + 1.0,
        (false, true) => a_high - 1.0,
        (false, false) => 0.0,
    };
    Some((a, d))
}

impl ImageThresholds<'_> {
    fn emit(&self, kb: &mut KernelBuilder, x: &Operand, dst: Value, inner: usize) {
        use cranelift_codegen::ir::types::{F32X4, I32X4};
        /// Up to this many thresholds a channel's compares are unrolled.
        const UNROLLED: usize = 16;
        let channels = x.shape[1];
        let outer = x.shape[0];
        let n = self.n;
        let splat = |v: &[f32]| -> Vec<f32> { v.iter().flat_map(|&t| [t; 4]).collect() };
        let signs: Vec<f32> = self.signs.iter().map(|&s| s as f32).collect();
        let (signs, thresholds) = (
            kb.table_f32(&splat(&signs)),
            kb.table_f32(&splat(self.thresholds)),
        );
        // Per channel, r four times then b four times.
        let lines = self.by_arithmetic.as_ref().map(|rows| {
            let splatted: Vec<f32> = rows
                .iter()
                .flat_map(|&(r, b)| [r, r, r, r, b, b, b, b])
                .collect();
            kb.table_f32(&splatted)
        });
        let src = x.f32_ptr(kb);
        kb.for_range(outer * channels, |kb, row| {
            let c = if outer == 1 {
                row
            } else {
                kb.b.ins().urem_imm_s(row, channels as i64)
            };
            let sign = kb.addr(signs, c, 16, 0);
            let sign = kb.load_aligned(F32X4, sign, 0);
            let t_row = kb.addr(thresholds, c, (n * 16) as i64, 0);
            let line = lines.map(|lines| kb.addr(lines, c, 32, 0));
            let from = kb.addr(src, row, (inner * 4) as i64, 0);
            let to = kb.addr(dst, row, (inner * 4) as i64, 0);
            kb.for_quads(inner, |kb, i| {
                let at = kb.addr(from, i, 4, 0);
                let v = kb.load(F32X4, at, 0);
                let v = kb.b.ins().fmul(v, sign);
                let zero = kb.iconst32(0);
                let zero = kb.b.ins().splat(I32X4, zero);
                // Reached lanes are all ones: -1 each.
                let reached = |kb: &mut KernelBuilder, t: Value, minus: Value| {
                    let tv = kb.addr(t_row, t, 16, 0);
                    let tv = kb.load_aligned(F32X4, tv, 0);
                    let on = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, tv);
                    kb.b.ins().iadd(minus, on)
                };
                let cf = if let Some(line) = line {
                    // floor(v * r + b), clamped to 0..=n by plain compares.
                    let r = kb.load_aligned(F32X4, line, 0);
                    let b = kb.load_aligned(F32X4, line, 16);
                    let y = kb.b.ins().fmul(v, r);
                    let y = kb.b.ins().fadd(y, b);
                    let y = kb.b.ins().floor(y);
                    // At or below 0 is +0 (never -0, which a bias of -0 would keep).
                    let lo = kb.fconst(0.0);
                    let lo = kb.b.ins().splat(F32X4, lo);
                    let below = kb.b.ins().fcmp(FloatCC::LessThanOrEqual, y, lo);
                    let y = pick(kb, below, lo, y);
                    let hi = kb.fconst(n as f32);
                    let hi = kb.b.ins().splat(F32X4, hi);
                    let above = kb.b.ins().fcmp(FloatCC::GreaterThan, y, hi);
                    pick(kb, above, hi, y)
                } else {
                    let minus = if n <= UNROLLED {
                        (0..n).fold(zero, |minus, t| {
                            let t = kb.iconst(t as i64);
                            reached(kb, t, minus)
                        })
                    } else {
                        kb.fold_range(n, vec![zero], |kb, t, m| vec![reached(kb, t, m[0])])[0]
                    };
                    let count = kb.b.ins().ineg(minus);
                    kb.b.ins().fcvt_from_sint(F32X4, count)
                };
                let s = kb.fconst(self.scale);
                let s = kb.b.ins().splat(F32X4, s);
                let bias = kb.fconst(self.bias);
                let bias = kb.b.ins().splat(F32X4, bias);
                let scaled = kb.b.ins().fmul(s, cf);
                let value = kb.b.ins().fadd(scaled, bias);
                let at = kb.addr(to, i, 4, 0);
                kb.store(value, at, 0);
            });
        });
    }
}

/// The integers a threshold's counts give in its output type, `a * count + b`, if they are
/// integers of that form for every count in `0..=n`: `(a, b)`.
fn affine_levels(attrs: &ThresholdAttrs, out: &bnnc_ir::ElemType, n: usize) -> Option<(i32, i32)> {
    let scale = match out {
        bnnc_ir::ElemType::Scaled(_, bnnc_ir::Scale::Tensor(s)) => *s,
        bnnc_ir::ElemType::Int(_) => 1.0,
        _ => return None,
    };
    // As the interpreter: the count scaled and biased in f32; then the value's integer, the
    // one whose value in the output type it is (as the scalar kernel rounds: 1/7 * 3 / (1/7)
    // is not 3 in f32).
    let integer = |count: usize| -> Option<i32> {
        let v = attrs.out_scale * count as f32 + attrs.out_bias;
        let q = (v / scale).round_ties_even();
        (q.abs() < 65536.0 && q * scale == v).then_some(q as i32)
    };
    let b = integer(0)?;
    let a = integer(1)? - b;
    (0..=n)
        .all(|k| integer(k) == Some(a * k as i32 + b))
        .then_some((a, b))
}

/// A threshold table `(rows, n)`: one row for every channel, or one for all.
struct ThresholdRows<'a> {
    table: &'a [f32],
    rows: usize,
    n: usize,
}

/// A MultiThreshold from rows of `c` contiguous f32 (one pixel each, NC layout) to bit planes,
/// four channels at a time ([`planes_of_row_quads`]): each threshold one compare of a vector
/// (the row's or the channel's, from a table), the count the sum of the masks, and its
/// integer `a * count + b`.
fn planes_of_rows_by_thresholds(
    kb: &mut KernelBuilder,
    x: &Operand,
    out: &Operand,
    planes: usize,
    t: &ThresholdRows<'_>,
    (a, b): (i32, i32),
) {
    use cranelift_codegen::ir::types::F32X4;
    let (rows, c, _) = crate::schedule::bit_geometry(&x.shape);
    let quads = c.div_ceil(4);
    // Thresholds [quad][threshold][lane]: lanes past the channels never reached.
    let mut lanes = vec![f32::INFINITY; quads * t.n * 4];
    for ch in 0..c {
        let row = if t.rows == 1 { 0 } else { ch };
        for i in 0..t.n {
            lanes[((ch / 4) * t.n + i) * 4 + ch % 4] = t.table[row * t.n + i];
        }
    }
    let table = kb.table_f32(&lanes);
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let map = LevelMap::new(kb, (a, b));
    planes_of_row_quads(kb, (src, dst), (rows, c), planes, |kb, v, quad| {
        let reached = count_reached(kb, v, t.n, |kb, i| {
            kb.load_aligned(F32X4, table, ((quad * t.n + i) * 16) as i64)
        });
        map.apply(kb, reached)
    });
}

/// The levels' map `count -> a * count + b` on four `i32` lanes, with the splats of `a` and
/// `b` made (once per kernel) only where they are used: no multiply where `a` is 1, no add
/// where `b` is 0.
struct LevelMap {
    a: Option<Value>,
    b: Option<Value>,
}

impl LevelMap {
    fn new(kb: &mut KernelBuilder, (a, b): (i32, i32)) -> LevelMap {
        use cranelift_codegen::ir::types::I32X4;
        let mut splat = |v: i32, unused: i32| {
            (v != unused).then(|| {
                let v = kb.iconst32(v);
                kb.b.ins().splat(I32X4, v)
            })
        };
        LevelMap {
            a: splat(a, 1),
            b: splat(b, 0),
        }
    }

    /// The levels of four lanes' counts.
    fn apply(&self, kb: &mut KernelBuilder, count: Value) -> Value {
        let scaled = match self.a {
            Some(a) => kb.b.ins().imul(count, a),
            None => count,
        };
        match self.b {
            Some(b) => kb.b.ins().iadd(scaled, b),
            None => scaled,
        }
    }
}

/// The thresholds four f32 lanes `v` reach, as an `i32x4`: `threshold(kb, i)` gives
/// threshold `i`'s vector, each compared (`>=`) once.
fn count_reached(
    kb: &mut KernelBuilder,
    v: Value,
    n: usize,
    mut threshold: impl FnMut(&mut KernelBuilder, usize) -> Value,
) -> Value {
    use cranelift_codegen::ir::types::I32X4;
    use cranelift_codegen::ir::{Endianness, MemFlagsData};
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let zero = kb.iconst32(0);
    let mut reached = kb.b.ins().splat(I32X4, zero);
    for i in 0..n {
        let tv = threshold(kb, i);
        let on = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, tv);
        let on = kb.b.ins().bitcast(I32X4, little, on);
        // A reached threshold's lane is -1.
        reached = kb.b.ins().isub(reached, on);
    }
    reached
}

/// A MultiThreshold from an NCHW f32 tensor of at least four pixels to bit planes, four
/// pixels of a channel at a time ([`pack_pixels4_planes`]): each of the channel's
/// thresholds one compare, the count the sum of the masks, its integer `a * count + b`, and
/// each plane's mask that integer's bit spread over the lane.
fn planes_of_pixels_by_thresholds(
    kb: &mut KernelBuilder,
    x: &Operand,
    out: &Operand,
    planes: usize,
    t: &ThresholdRows<'_>,
    (a, b): (i32, i32),
) {
    use cranelift_codegen::ir::types::F32X4;
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let map = LevelMap::new(kb, (a, b));
    pack_pixels4_planes(kb, &x.shape, (src, dst), planes, |kb, at, c| {
        let row = &t.table[if t.rows == 1 { 0 } else { c * t.n }..][..t.n];
        let v = kb.load(F32X4, at, 0);
        let reached = count_reached(kb, v, t.n, |kb, i| {
            let tv = kb.fconst(row[i]);
            kb.b.ins().splat(F32X4, tv)
        });
        let level = map.apply(kb, reached);
        // Plane p's mask: bit p moved to the sign bit, then spread over the lane.
        let masks = (0..planes)
            .map(|p| {
                let top = kb.b.ins().ishl_imm_s(level, 31 - p as i64);
                kb.b.ins().sshr_imm_s(top, 31)
            })
            .collect();
        Some(masks)
    });
}

/// One threshold per channel, written as packed bits: per pixel, every channel's compare
/// with its threshold as an immediate, the accumulator read at a constant offset.
fn bits_one_threshold(
    kb: &mut KernelBuilder,
    attrs: &ThresholdAttrs,
    x: &Operand,
    out: &Operand,
    rows: &[(bool, f32)],
) {
    let (outer, channels, pixels) = crate::schedule::bit_geometry(&x.shape);
    let nwords = bnnc_runtime::packing::words(channels);
    let integer = x.storage == Storage::I32;
    let value = |count: f32| attrs.out_scale * count + attrs.out_bias > 0.0;
    let (b0, b1) = (value(0.0), value(1.0));
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    if pixels >= 4 {
        // Four pixels of a channel at a time: the bit is `b1` where reached, `b0` elsewhere.
        pack_pixels4(kb, &x.shape, (src, dst), |kb, at, c| {
            use cranelift_codegen::ir::types::{F32X4, I32X4};
            let (desc, t) = rows[c];
            let all = |kb: &mut KernelBuilder| {
                let ones = kb.iconst32(-1);
                kb.b.ins().splat(I32X4, ones)
            };
            let reached = if t.is_nan() {
                None
            } else if integer {
                // The accumulators have at most 31 bits: bounds clamped to i32 keep every
                // answer. Ascending: x >= ceil(t), x > ceil(t) - 1; descending: x <= floor(t),
                // not x > floor(t).
                let t = f64::from(t);
                let above = if desc { t.floor() } else { t.ceil() - 1.0 };
                let above = above.clamp(i32::MIN.into(), i32::MAX.into()) as i32;
                let v = kb.load(I32X4, at, 0);
                let b = kb.iconst32(above);
                let b = kb.b.ins().splat(I32X4, b);
                let gt = kb.b.ins().icmp(IntCC::SignedGreaterThan, v, b);
                Some(if desc { kb.b.ins().bnot(gt) } else { gt })
            } else {
                let v = kb.load(F32X4, at, 0);
                let tv = kb.fconst(t);
                let tv = kb.b.ins().splat(F32X4, tv);
                let cc = if desc {
                    FloatCC::LessThanOrEqual
                } else {
                    FloatCC::GreaterThanOrEqual
                };
                Some(kb.b.ins().fcmp(cc, v, tv))
            };
            match (reached, b0, b1) {
                (_, false, false) | (None, false, true) => None,
                (_, true, true) | (None, true, false) => Some(all(kb)),
                (Some(r), false, true) => Some(r),
                (Some(r), true, false) => Some(kb.b.ins().bnot(r)),
            }
        });
        return;
    }
    kb.for_range(outer, |kb, n| {
        let image = kb.addr(src, n, (channels * pixels * 4) as i64, 0);
        let out_image = kb.addr(dst, n, (pixels * nwords * 8) as i64, 0);
        kb.for_range(pixels, |kb, p| {
            let at = kb.addr(image, p, 4, 0);
            let out_at = kb.addr(out_image, p, (nwords * 8) as i64, 0);
            for w in 0..nwords {
                let mut word = kb.iconst(0);
                for j in 0..WORD_BITS.min(channels - w * WORD_BITS) {
                    let c = w * WORD_BITS + j;
                    let (desc, t) = rows[c];
                    let offset = (c * pixels * 4) as i64;
                    // reached: x >= t (ascending) or x <= t (descending).
                    let reached = if t.is_nan() {
                        None
                    } else if integer {
                        let v = kb.load(I32, at, offset);
                        let v = kb.b.ins().sextend(I64, v);
                        let t = f64::from(t);
                        let (cc, bound) = if desc {
                            (IntCC::SignedLessThanOrEqual, t.floor())
                        } else {
                            (IntCC::SignedGreaterThanOrEqual, t.ceil())
                        };
                        let bound = bound.clamp(-BEYOND, BEYOND) as i64;
                        Some(kb.b.ins().icmp_imm_s(cc, v, bound))
                    } else {
                        let v = kb.load(F32, at, offset);
                        let tv = kb.fconst(t);
                        let cc = if desc {
                            FloatCC::LessThanOrEqual
                        } else {
                            FloatCC::GreaterThanOrEqual
                        };
                        Some(kb.b.ins().fcmp(cc, v, tv))
                    };
                    let bit = match (reached, b0, b1) {
                        (_, false, false) => continue,
                        (_, true, true) | (None, true, _) => kb.iconst(1),
                        (None, false, _) => continue,
                        (Some(r), false, true) => kb.b.ins().uextend(I64, r),
                        (Some(r), true, false) => {
                            let r = kb.b.ins().uextend(I64, r);
                            kb.b.ins().bxor_imm_s(r, 1)
                        }
                    };
                    let shifted = if j == 0 {
                        bit
                    } else {
                        kb.b.ins().ishl_imm_s(bit, j as i64)
                    };
                    word = kb.b.ins().bor(word, shifted);
                }
                kb.store(word, out_at, (w * 8) as i64);
            }
        });
    });
}

/// From this many thresholds per channel, an element's count runs on vectors.
const VECTOR_THRESHOLDS: usize = 8;

/// Every channel's thresholds in a table (`[channel][threshold]`), for counting many of them
/// at once (an 8-bit output has 255).
#[derive(Clone, Copy)]
struct VectorThresholds {
    table: Value,
    integer: bool,
    rows: ThresholdRowLayout,
}

/// How a [`VectorThresholds`] table holds a channel's row.
#[derive(Clone, Copy)]
enum ThresholdRowLayout {
    /// Four to a vector, padded to whole vectors with thresholds never reached: this many
    /// vectors per channel, each compared at once.
    Vectors(usize),
    /// From [`SEARCHED_THRESHOLDS`] on: sorted, and this long (a power of two past the
    /// thresholds, padded with ones never reached); a count is a binary search, 8
    /// dependent loads for 255 thresholds instead of 64 compares.
    Sorted(usize),
}

/// From this many thresholds per channel, a count is a binary search of the sorted row.
const SEARCHED_THRESHOLDS: usize = 64;

/// Integer threshold `t` as the `i32` that `v > below(t)` compares with (`v >= t`): the
/// accumulators have at most 31 bits (`|v| < 2^30`), so `t - 1` clamped to `i32` keeps every
/// answer, and `i32::MAX` is never exceeded.
fn below(t: i64) -> i32 {
    t.saturating_sub(1).clamp(i32::MIN.into(), i32::MAX.into()) as i32
}

impl VectorThresholds {
    fn new(
        kb: &mut KernelBuilder,
        n: usize,
        int_t: &[i64],
        float_t: &[f32],
        integer: bool,
    ) -> VectorThresholds {
        let rows = if integer { int_t.len() } else { float_t.len() } / n;
        if n >= SEARCHED_THRESHOLDS {
            return VectorThresholds::sorted(kb, n, rows, int_t, float_t, integer);
        }
        let per_row = n.div_ceil(4);
        let table = if integer {
            // `v >= t` as `v > below(t)` on i32 lanes; padding is `i32::MAX`.
            let mut lanes = vec![i32::MAX; rows * per_row * 4];
            for (i, &t) in int_t.iter().enumerate() {
                lanes[(i / n) * per_row * 4 + i % n] = below(t);
            }
            kb.table_i32(&lanes)
        } else {
            // NaN padding: `v >= NaN` never holds.
            let mut lanes = vec![f32::NAN; rows * per_row * 4];
            for (i, &t) in float_t.iter().enumerate() {
                lanes[(i / n) * per_row * 4 + i % n] = t;
            }
            kb.table_f32(&lanes)
        };
        VectorThresholds {
            table,
            integer,
            rows: ThresholdRowLayout::Vectors(per_row),
        }
    }

    /// The rows sorted (a count does not depend on the thresholds' order), each padded to
    /// a power of two past `n` with thresholds never reached: whether `v` reaches a row's
    /// entries is then true for a prefix, whose length a binary search finds.
    fn sorted(
        kb: &mut KernelBuilder,
        n: usize,
        rows: usize,
        int_t: &[i64],
        float_t: &[f32],
        integer: bool,
    ) -> VectorThresholds {
        let len = (n + 1).next_power_of_two();
        let table = if integer {
            // `v > below(t)` as the vectors compare; padding is `i32::MAX`.
            let mut lanes = vec![i32::MAX; rows * len];
            for (r, row) in int_t.chunks_exact(n).enumerate() {
                let mut row: Vec<i32> = row.iter().map(|&t| below(t)).collect();
                row.sort_unstable();
                lanes[r * len..r * len + n].copy_from_slice(&row);
            }
            kb.table_i32(&lanes)
        } else {
            // NaN is never reached: sorted last, as the padding.
            let mut lanes = vec![f32::NAN; rows * len];
            for (r, row) in float_t.chunks_exact(n).enumerate() {
                let mut row = row.to_vec();
                row.sort_unstable_by(|a, b| match (a.is_nan(), b.is_nan()) {
                    (false, false) => a.partial_cmp(b).expect("numbers compare"),
                    (x, y) => x.cmp(&y),
                });
                lanes[r * len..r * len + n].copy_from_slice(&row);
            }
            kb.table_f32(&lanes)
        };
        VectorThresholds {
            table,
            integer,
            rows: ThresholdRowLayout::Sorted(len),
        }
    }

    /// [`Self::count`] by binary search of a sorted row of `len` entries: from the first
    /// entry, each halving step moves past its entries where `v` reaches their last.
    fn search(&self, kb: &mut KernelBuilder, len: usize, channel: Value, v: Value) -> Value {
        let row = kb.addr(self.table, channel, (len * 4) as i64, 0);
        let mut at = kb.iconst(0);
        let mut step = len / 2;
        while step > 0 {
            let entry = kb.addr(row, at, 4, ((step - 1) * 4) as i64);
            let reached = if self.integer {
                let t = kb.load(I32, entry, 0);
                kb.b.ins().icmp(IntCC::SignedGreaterThan, v, t)
            } else {
                let t = kb.load(F32, entry, 0);
                kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, v, t)
            };
            let past = kb.iconst(step as i64);
            let zero = kb.iconst(0);
            let by = kb.select(reached, past, zero);
            at = kb.b.ins().iadd(at, by);
            step /= 2;
        }
        kb.b.ins().ireduce(I32, at)
    }

    /// The count (an i32) of `channel`'s thresholds that `v` (its sign applied: an i32, or
    /// an f32) reaches.
    fn count(&self, kb: &mut KernelBuilder, channel: Value, v: Value) -> Value {
        use cranelift_codegen::ir::types::{F32X4, I32X4};
        let per_row = match self.rows {
            ThresholdRowLayout::Sorted(len) => return self.search(kb, len, channel, v),
            ThresholdRowLayout::Vectors(per_row) => per_row,
        };
        let row = kb.addr(self.table, channel, (per_row * 16) as i64, 0);
        let splat =
            kb.b.ins()
                .splat(if self.integer { I32X4 } else { F32X4 }, v);
        let zero = kb.iconst32(0);
        let zeros = kb.b.ins().splat(I32X4, zero);
        let little = cranelift_codegen::ir::MemFlagsData::new()
            .with_endianness(cranelift_codegen::ir::Endianness::Little);
        // Each reached lane is all ones (-1): the sum of the masks is minus the count.
        let step = |kb: &mut KernelBuilder, at: Value, acc: Value| {
            let reached = if self.integer {
                let t = kb.load_aligned(I32X4, at, 0);
                kb.b.ins().icmp(IntCC::SignedGreaterThan, splat, t)
            } else {
                let t = kb.load_aligned(F32X4, at, 0);
                let ge = kb.b.ins().fcmp(FloatCC::GreaterThanOrEqual, splat, t);
                kb.b.ins().bitcast(I32X4, little, ge)
            };
            kb.b.ins().iadd(acc, reached)
        };
        // Unrolled: fewer than SEARCHED_THRESHOLDS make at most 16 vectors.
        let acc = (0..per_row).fold(zeros, |acc, i| {
            let at = kb.add_imm(row, (i * 16) as i64);
            step(kb, at, acc)
        });
        let pairs = kb.b.ins().iadd_pairwise(acc, acc);
        let sums = kb.b.ins().iadd_pairwise(pairs, pairs);
        let minus = kb.b.ins().extractlane(sums, 0);
        kb.b.ins().ineg(minus)
    }
}

/// The number of `i in 0..n` for which `reached(i)` holds, as an i32.
fn count(
    kb: &mut KernelBuilder,
    n: usize,
    mut reached: impl FnMut(&mut KernelBuilder, usize) -> Value,
) -> Value {
    let mut total = kb.iconst32(0);
    for i in 0..n {
        let hit = reached(kb, i);
        let one = kb.b.ins().uextend(I32, hit);
        total = kb.b.ins().iadd(total, one);
    }
    total
}
