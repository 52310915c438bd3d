//! Float Conv, Gemm and MatMul.
//!
//! Two ways to sum, chosen per layer from the IR's types:
//! - When every product is an integer times one power-of-two scale and the result fits 24
//!   bits (the IR types it `iN` or `iN*2^e`), every partial sum is exact in f32 and any order
//!   gives the interpreter's result: the sums run four output channels to a vector.
//! - When the operands are integers with other scales, the interpreter sums the integers and
//!   scales once ([`bnnc_ir::interp::IntegerFirst`]): the same exact kernel runs on the
//!   integers (the weights' at compile time, the activations' as they are loaded) and scales
//!   each sum as it stores it.
//! - Otherwise the last bit depends on the order, and the sums follow the interpreter's,
//!   which is onnxruntime's MLAS ([`bnnc_ir::interp::mlas`]), product by product.

use bnnc_ir::interp::mlas::{conv_route, segments, ConvRoute, Segment, Threading};
use bnnc_ir::interp::{integer_first, IntegerFirst};
use bnnc_ir::{ConvAttrs, ElemType, GemmAttrs, Graph, Node, TensorType};
use cranelift_codegen::ir::types::{F32, F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::convert::integer_of;
use super::{KernelBuilder, Operand};
use crate::first_layer::{int16_applies, int16_weights, int_pow2, small_integers};
use crate::BackendError;

/// The fused int16 first layer `node` as a kernel for another code generator
/// ([`crate::Int16ConvKernel`]); `None` where [`int16_applies`] does not hold.
pub(crate) fn int16_kernel(
    graph: &Graph,
    node: &Node,
    attrs: &ConvAttrs,
    stage: &crate::stage::OutputStage,
    symbol: String,
) -> Option<crate::Int16ConvKernel> {
    if !int16_applies(graph, node, attrs) {
        return None;
    }
    let shape = |v: bnnc_ir::ValueId| graph.value(v).ty.shape.clone();
    let (x, w, out) = (
        shape(node.inputs[0]),
        shape(node.inputs[1]),
        shape(node.outputs[0]),
    );
    let (_, in_scale) = int_pow2(&graph.value(node.inputs[0]).ty.elem)?;
    Some(crate::Int16ConvKernel {
        symbol,
        input: (x[0], x[1], x[2], x[3]),
        in_scale,
        filters: (w[0], w[2], w[3]),
        output: (out[2], out[3]),
        strides: (attrs.strides[0], attrs.strides[1]),
        dilations: (attrs.dilations[0], attrs.dilations[1]),
        weights: int16_weights(graph, node)?,
        levels: stage.levels()?.kernel(),
    })
}

/// A Conv on small integers with its threshold fused: per output position, the sums of all
/// filters in `i16x8` vectors (eight filters each), every tap's input splat and multiplied
/// by eight filters' weights; then each vector compared with its eight thresholds, the
/// compare's lanes being the position's bits. This is the 8-bit first layer of a binary
/// network, run on integers and never on floats.
pub(crate) fn conv_int16_bits(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
    stage: &crate::stage::OutputStage,
) -> Result<(), BackendError> {
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::types::{I16, I16X8};
    let Some(levels) = stage.levels() else {
        return Err(BackendError::unsupported(
            node,
            "internal: the int16 kernel runs a threshold stage",
        ));
    };
    let (x, w) = (&operands[0], &operands[1]);
    let (Some((_, x_scale)), Some(weights)) = (
        int_pow2(&x.elem),
        int_pow2(&w.elem).and_then(|(_, scale)| small_integers(&w.const_f32()?, scale)),
    ) else {
        return Err(BackendError::unsupported(
            node,
            "internal: not an int16 convolution",
        ));
    };
    let (batch, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, kh, kw) = (w.shape[0], attrs.kernel[0], attrs.kernel[1]);
    let (oh, ow) = (out.shape[2], out.shape[3]);
    let k = c * kh * kw;
    if attrs.strides[1] == 1 && ow >= 8 {
        let geometry = RowGeometry {
            image: (batch, c, h, wd),
            filters: (m, kh, kw),
            out: (oh, ow),
            stride_y: attrs.strides[0],
            dilations: (attrs.dilations[0], attrs.dilations[1]),
        };
        let src = x.f32_ptr(kb);
        conv_int16_rows(kb, &geometry, &weights, x_scale, &levels, (src, out.ptr));
        return Ok(());
    }
    let groups = m.div_ceil(8);
    // Weights as (k, filters padded to 8); padded filters have weight 0 and bound "never"
    // (their bits lie past the channels and stay 0).
    let mut w_km = vec![0i16; k * groups * 8];
    for j in 0..m {
        for kk in 0..k {
            w_km[kk * groups * 8 + j] = weights[j * k + kk];
        }
    }
    let w_t = kb.table(w_km.iter().flat_map(|v| v.to_le_bytes()).collect());
    // s * acc >= b, as i16 lanes: bounds beyond the i16 range mean always or never.
    let lanes = |v: &[i64], pad: i64| -> Vec<i16> {
        let mut l: Vec<i16> = v.iter().map(|&x| x.clamp(-32768, 32767) as i16).collect();
        l.resize(groups * 8, pad as i16);
        l
    };
    let bytes = |l: Vec<i16>| -> Vec<u8> { l.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let sign_t = kb.table(bytes(lanes(&levels.sign, 1)));
    // Bounds as [group][threshold][lane].
    let t_count = levels.thresholds;
    let per_threshold: Vec<Vec<i16>> = (0..t_count)
        .map(|t| {
            let column: Vec<i64> = (0..m).map(|j| levels.bounds[j * t_count + t]).collect();
            lanes(&column, 32767)
        })
        .collect();
    let mut bound_lanes = Vec::with_capacity(groups * t_count * 8);
    for g in 0..groups {
        for column in &per_threshold {
            bound_lanes.extend_from_slice(&column[g * 8..g * 8 + 8]);
        }
    }
    let bound_t = kb.table(bytes(bound_lanes));
    let planes = levels.planes;
    let words_out = bnnc_runtime::packing::words(m);
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    let inv = 1.0 / x_scale;
    let (sh, sw) = (attrs.strides[0], attrs.strides[1]);
    let (dh, dw) = (attrs.dilations[0], attrs.dilations[1]);
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, (c * h * wd * 4) as i64, 0);
        let out_image = kb.addr(dst, n, (oh * ow * planes * words_out * 8) as i64, 0);
        kb.for_range(oh, |kb, oy| {
            let row = kb.b.ins().imul_imm_s(oy, (sh * wd) as i64);
            kb.for_range(ow, |kb, ox| {
                let col = kb.b.ins().imul_imm_s(ox, sw as i64);
                let origin = kb.b.ins().iadd(row, col);
                let at = kb.addr(image, origin, 4, 0);
                let zero = kb.iconst32(0);
                let zero = kb.b.ins().ireduce(I16, zero);
                let zv = kb.b.ins().splat(I16X8, zero);
                let mut acc = vec![zv; groups];
                for kk in 0..k {
                    let (ch, tap) = (kk / (kh * kw), kk % (kh * kw));
                    let (ky, kx) = (tap / kw, tap % kw);
                    let off = ((ch * h * wd + ky * dh * wd + kx * dw) * 4) as i64;
                    let v = kb.load(F32, at, off);
                    let s = kb.fconst(inv);
                    let q = kb.b.ins().fmul(v, s);
                    let q = kb.b.ins().fcvt_to_sint_sat(I32, q);
                    let q = kb.b.ins().ireduce(I16, q);
                    let qs = kb.b.ins().splat(I16X8, q);
                    for (g, a) in acc.iter_mut().enumerate() {
                        let wv = kb.load_aligned(I16X8, w_t, ((kk * groups + g) * 16) as i64);
                        let p = kb.b.ins().imul(qs, wv);
                        *a = kb.b.ins().iadd(*a, p);
                    }
                }
                let pos = kb.b.ins().imul_imm_s(oy, ow as i64);
                let pos = kb.b.ins().iadd(pos, ox);
                let out_at = kb.addr(out_image, pos, (planes * words_out * 8) as i64, 0);
                for word in 0..words_out {
                    let zero = kb.iconst(0);
                    let mut bits = vec![zero; planes];
                    let first = word * 8;
                    for (g, &a) in acc.iter().enumerate().skip(first).take(8) {
                        let s = kb.load_aligned(I16X8, sign_t, (g * 16) as i64);
                        let v = kb.b.ins().imul(a, s);
                        let mut level = None;
                        for t in 0..t_count {
                            let at = ((g * t_count + t) * 16) as i64;
                            let b = kb.load_aligned(I16X8, bound_t, at);
                            let on = kb.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, v, b);
                            // Reached lanes are all ones: -1 each.
                            level = Some(match level {
                                None => on,
                                Some(l) => kb.b.ins().iadd(l, on),
                            });
                        }
                        let level = level_lanes(kb, level.expect("a threshold"), &levels);
                        for (r, plane_bits) in bits.iter_mut().enumerate() {
                            let eight = plane_lanes(kb, level, r);
                            let shifted = kb.b.ins().ishl_imm_s(eight, ((g - first) * 8) as i64);
                            *plane_bits = kb.b.ins().bor(*plane_bits, shifted);
                        }
                    }
                    // Channels past m hold level `beta`: their bits must stay 0.
                    let valid = 64.min(m - word * 64);
                    for (r, plane_bits) in bits.into_iter().enumerate() {
                        let plane_bits = if valid < 64 {
                            kb.b.ins().band_imm_s(plane_bits, (1i64 << valid) - 1)
                        } else {
                            plane_bits
                        };
                        kb.store(plane_bits, out_at, ((r * words_out + word) * 8) as i64);
                    }
                }
            });
        });
    });
    Ok(())
}

/// The shapes [`conv_int16_rows`] works on.
struct RowGeometry {
    image: (usize, usize, usize, usize),
    filters: (usize, usize, usize),
    out: (usize, usize),
    stride_y: usize,
    dilations: (usize, usize),
}

/// [`conv_int16_bits`] for unit column strides: eight neighbouring output columns to an
/// `i16x8` vector, so that each weight, a constant of the code, is one add or subtract
/// (a multiply for other values) of the tap's vector. Each filter's compare gives eight
/// bits, one per column; eight filters' bytes are transposed (an 8x8 bit matrix) into one
/// byte per column, stored into that column's packed channels.
fn conv_int16_rows(
    kb: &mut KernelBuilder,
    g: &RowGeometry,
    weights: &[i16],
    x_scale: f32,
    levels: &crate::stage::Levels,
    (src, dst): (Value, Value),
) {
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::types::{I16, I16X8, I32X4, I8};
    let (batch, c, h, wd) = g.image;
    let (m, kh, kw) = g.filters;
    let (oh, ow) = g.out;
    let (dh, dw) = g.dilations;
    let k = c * kh * kw;
    let words_out = bnnc_runtime::packing::words(m);
    let planes = levels.planes;
    let pixel_words = planes * words_out;
    let blocks = ow.div_ceil(8);
    let inv = 1.0 / x_scale;
    // Channels past m in the last word are never written by the byte stores: zero first.
    if m % 64 != 0 {
        let zero = kb.iconst(0);
        kb.for_range(batch * oh * ow * pixel_words, |kb, i| {
            kb.store_at(zero, dst, i)
        });
    }
    let taps = kb.stack((k * 16) as u32);
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, (c * h * wd * 4) as i64, 0);
        let out_image = kb.addr(dst, n, (oh * ow * pixel_words * 8) as i64, 0);
        kb.for_range(oh, |kb, oy| {
            let row = kb.addr(image, oy, (g.stride_y * wd * 4) as i64, 0);
            kb.for_range(blocks, |kb, b| {
                // The last block overlaps the one before when 8 does not divide the width.
                let start = kb.b.ins().imul_imm_s(b, 8);
                let last = kb.iconst((ow - 8) as i64);
                let ox = kb.b.ins().umin(start, last);
                let at = kb.addr(row, ox, 4, 0);
                // Every tap's eight inputs as integers, once for all filters.
                let s = kb.fconst(inv);
                let sv = kb.b.ins().splat(F32X4, s);
                for kk in 0..k {
                    let (ch, tap) = (kk / (kh * kw), kk % (kh * kw));
                    let (ky, kx) = (tap / kw, tap % kw);
                    let off = ((ch * h * wd + ky * dh * wd + kx * dw) * 4) as i64;
                    let halves: Vec<Value> = [0, 16]
                        .iter()
                        .map(|&o| {
                            let v = kb.load(F32X4, at, off + o);
                            let v = kb.b.ins().fmul(v, sv);
                            kb.b.ins().fcvt_to_sint_sat(I32X4, v)
                        })
                        .collect();
                    let q = kb.b.ins().snarrow(halves[0], halves[1]);
                    kb.store(q, taps, (kk * 16) as i64);
                }
                let pos = kb.b.ins().imul_imm_s(oy, ow as i64);
                let pos = kb.b.ins().iadd(pos, ox);
                let out_at = kb.addr(out_image, pos, (pixel_words * 8) as i64, 0);
                // The sum of all taps, shared by every filter of ±1 weights: such a
                // filter's sum is `2 * (sum of its +1 taps) - all`, or `all - 2 * (sum of
                // its -1 taps)`, so it adds only the fewer of its two kinds of taps.
                let zero = kb.iconst32(0);
                let zero = kb.b.ins().ireduce(I16, zero);
                let zv = kb.b.ins().splat(I16X8, zero);
                let mut all = zv;
                for kk in 0..k {
                    let xv = kb.load(I16X8, taps, (kk * 16) as i64);
                    all = kb.b.ins().iadd(all, xv);
                }
                for group in 0..m.div_ceil(8) {
                    let filters = group * 8..(group * 8 + 8).min(m);
                    let forms: Vec<SumForm> = filters
                        .clone()
                        .map(|j| SumForm::of(&weights[j * k..(j + 1) * k]))
                        .collect();
                    let mut acc = vec![zv; filters.len()];
                    for kk in 0..k {
                        let used = |f: &SumForm, j: usize| f.adds(weights[j * k + kk]);
                        if !forms.iter().zip(filters.clone()).any(|(f, j)| used(f, j)) {
                            continue;
                        }
                        let xv = kb.load(I16X8, taps, (kk * 16) as i64);
                        for ((a, j), form) in acc.iter_mut().zip(filters.clone()).zip(&forms) {
                            let wv = weights[j * k + kk];
                            if !used(form, j) {
                                continue;
                            }
                            *a = match (form, wv) {
                                (SumForm::Plus | SumForm::Minus, _) | (SumForm::Direct, 1) => {
                                    kb.b.ins().iadd(*a, xv)
                                }
                                (SumForm::Direct, -1) => kb.b.ins().isub(*a, xv),
                                (SumForm::Direct, wv) => {
                                    let c = kb.iconst32(i32::from(wv));
                                    let c = kb.b.ins().ireduce(I16, c);
                                    let cv = kb.b.ins().splat(I16X8, c);
                                    let p = kb.b.ins().imul(xv, cv);
                                    kb.b.ins().iadd(*a, p)
                                }
                            };
                        }
                    }
                    for (a, form) in acc.iter_mut().zip(&forms) {
                        let twice = kb.b.ins().iadd(*a, *a);
                        *a = match form {
                            SumForm::Plus => kb.b.ins().isub(twice, all),
                            SumForm::Minus => kb.b.ins().isub(all, twice),
                            SumForm::Direct => *a,
                        };
                    }
                    // Per plane, byte j of its matrix: filter j's bit per column.
                    let zero = kb.iconst(0);
                    let mut matrices = vec![zero; planes];
                    for (i, (a, j)) in acc.into_iter().zip(filters.clone()).enumerate() {
                        let t_count = levels.thresholds;
                        let mut level = None;
                        for &bound in &levels.bounds[j * t_count..(j + 1) * t_count] {
                            let (cc, b) = if levels.sign[j] >= 0 {
                                (IntCC::SignedGreaterThanOrEqual, bound)
                            } else {
                                (IntCC::SignedLessThanOrEqual, -bound)
                            };
                            let b = kb.iconst32(b.clamp(-32768, 32767) as i32);
                            let b = kb.b.ins().ireduce(I16, b);
                            let bv = kb.b.ins().splat(I16X8, b);
                            let on = kb.b.ins().icmp(cc, a, bv);
                            // Reached lanes are all ones: -1 each.
                            level = Some(match level {
                                None => on,
                                Some(l) => kb.b.ins().iadd(l, on),
                            });
                        }
                        let level = level_lanes(kb, level.expect("a threshold"), levels);
                        for (r, matrix) in matrices.iter_mut().enumerate() {
                            let cols = plane_lanes(kb, level, r);
                            let cols = kb.b.ins().ishl_imm_s(cols, (8 * i) as i64);
                            *matrix = kb.b.ins().bor(*matrix, cols);
                        }
                    }
                    let byte = (group % 8) as i64 + (group / 8 * 8) as i64;
                    for (r, matrix) in matrices.into_iter().enumerate() {
                        let t = transpose8(kb, matrix);
                        for col in 0..8i64 {
                            let v = if col == 0 {
                                t
                            } else {
                                kb.b.ins().ushr_imm_s(t, 8 * col)
                            };
                            let v = kb.b.ins().ireduce(I8, v);
                            let plane = (r * words_out * 8) as i64;
                            kb.b.ins().store(
                                super::builder::mem(),
                                v,
                                out_at,
                                (col * (pixel_words as i64) * 8 + plane + byte) as i32,
                            );
                        }
                    }
                }
            });
        });
    });
}

/// The levels of `i16x8` lanes from the sum of their threshold compares (-1 per threshold
/// reached): `alpha * count + beta`.
fn level_lanes(kb: &mut KernelBuilder, minus_count: Value, levels: &crate::stage::Levels) -> Value {
    use cranelift_codegen::ir::types::{I16, I16X8};
    let splat = |kb: &mut KernelBuilder, v: i64| {
        let c = kb.iconst32(v as i32);
        let c = kb.b.ins().ireduce(I16, c);
        kb.b.ins().splat(I16X8, c)
    };
    // level = beta - alpha * (-count)
    let scaled = match levels.alpha {
        1 => minus_count,
        a => {
            let av = splat(kb, a);
            kb.b.ins().imul(minus_count, av)
        }
    };
    let beta = splat(kb, levels.beta);
    kb.b.ins().isub(beta, scaled)
}

/// Bit `r` of each of eight `i16` lanes, as the low byte of an i64.
fn plane_lanes(kb: &mut KernelBuilder, level: Value, r: usize) -> Value {
    use cranelift_codegen::ir::condcodes::IntCC;
    use cranelift_codegen::ir::types::{I16, I16X8, I64};
    // Shift bit r to the sign bit: the lanes' high bits are the plane's bits.
    let shifted = kb.b.ins().ishl_imm_s(level, 15 - r as i64);
    let zero = kb.iconst32(0);
    let zero = kb.b.ins().ireduce(I16, zero);
    let zv = kb.b.ins().splat(I16X8, zero);
    let on = kb.b.ins().icmp(IntCC::SignedLessThan, shifted, zv);
    kb.b.ins().vhigh_bits(I64, on)
}

/// How [`conv_int16_rows`] sums one filter.
enum SumForm {
    /// Weights all ±1, fewer +1: `2 * (sum of the +1 taps) - all`.
    Plus,
    /// Weights all ±1, fewer -1: `all - 2 * (sum of the -1 taps)`.
    Minus,
    /// Other weights: every tap times its weight.
    Direct,
}

impl SumForm {
    fn of(weights: &[i16]) -> SumForm {
        if !weights.iter().all(|&w| w == 1 || w == -1) {
            return SumForm::Direct;
        }
        let plus = weights.iter().filter(|&&w| w == 1).count();
        if plus <= weights.len() - plus {
            SumForm::Plus
        } else {
            SumForm::Minus
        }
    }

    /// Whether the filter adds the tap of weight `w`.
    fn adds(&self, w: i16) -> bool {
        match self {
            SumForm::Plus => w == 1,
            SumForm::Minus => w == -1,
            SumForm::Direct => w != 0,
        }
    }
}

/// Transposes the 8x8 bit matrix whose row `i` is byte `i` (bit `8i + j` to bit `8j + i`).
fn transpose8(kb: &mut KernelBuilder, x: Value) -> Value {
    let mut x = x;
    for (shift, mask) in [
        (7i64, 0x00AA_00AA_00AA_00AAu64),
        (14, 0x0000_CCCC_0000_CCCC),
        (28, 0x0000_0000_F0F0_F0F0),
    ] {
        let shifted = kb.b.ins().ushr_imm_s(x, shift);
        let t = kb.b.ins().bxor(x, shifted);
        let t = kb.b.ins().band_imm_s(t, mask as i64);
        let back = kb.b.ins().ishl_imm_s(t, shift);
        let x1 = kb.b.ins().bxor(x, t);
        x = kb.b.ins().bxor(x1, back);
    }
    x
}

/// Whether sums of this result type are exact in f32 in any order.
fn exact_in_any_order(elem: &ElemType) -> bool {
    elem.exact_scaled().is_some_and(|(t, _)| t.bits() <= 24)
}

/// The interpreter's integer-first plan for this layer, if it has one.
fn scaled_integers(node: &Node, operands: &[Operand], out: &Operand) -> Option<IntegerFirst> {
    let types: Vec<TensorType> = operands
        .iter()
        .map(|o| TensorType::new(o.elem.clone(), o.shape.clone()))
        .collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    integer_first(&node.op, &refs, &out.shape)
}

/// `sum * out_scales[j]`: one scale, or the one of output channel `j`.
fn scale_sum(kb: &mut KernelBuilder, plan: &IntegerFirst, j: usize, sum: Value) -> Value {
    let s = kb.fconst(plan.out_scales[j % plan.out_scales.len()]);
    kb.b.ins().fmul(sum, s)
}

/// Loads element `kk` of the reduction for output row `r`.
type Loader<'l> = dyn Fn(&mut KernelBuilder, Value, Value) -> Value + 'l;

/// The exact kernel: `out(r, j) = sum over kk of x(r, kk) * w[kk][j]`, four `j` at a time,
/// `w` being a constant `(k, m)` matrix.
fn exact_rows(
    kb: &mut KernelBuilder,
    rows: usize,
    k: usize,
    m: usize,
    w_km: &[f32],
    x: &Loader<'_>,
    store: &dyn Fn(&mut KernelBuilder, Value, usize, Value, Value),
) {
    let mp = m.next_multiple_of(4);
    let mut padded = vec![0f32; k * mp];
    for kk in 0..k {
        padded[kk * mp..kk * mp + m].copy_from_slice(&w_km[kk * m..(kk + 1) * m]);
    }
    let table = kb.table_f32(&padded);
    // Four vectors (16 channels) per pass keep the accumulators in registers.
    const VECTORS: usize = 4;
    kb.for_range(rows, |kb, r| {
        let mut j0 = 0;
        while j0 < mp {
            let nv = VECTORS.min((mp - j0) / 4);
            let zero = kb.fconst(0.0);
            let zv = kb.b.ins().splat(F32X4, zero);
            let acc = kb.fold_range(k, vec![zv; nv], |kb, kk, acc| {
                let xv = x(kb, r, kk);
                let xs = kb.b.ins().splat(F32X4, xv);
                let row = kb.addr(table, kk, (mp * 4) as i64, (j0 * 4) as i64);
                acc.iter()
                    .enumerate()
                    .map(|(v, &a)| {
                        let wv = kb.load(F32X4, row, (v * 16) as i64);
                        let p = kb.b.ins().fmul(xs, wv);
                        kb.b.ins().fadd(a, p)
                    })
                    .collect()
            });
            for (v, a) in acc.into_iter().enumerate() {
                for lane in 0..4 {
                    let j = j0 + v * 4 + lane;
                    if j < m {
                        let s = kb.b.ins().extractlane(a, lane as u8);
                        let jv = kb.iconst(j as i64);
                        store(kb, r, j, jv, s);
                    }
                }
            }
            j0 += nv * 4;
        }
    });
}

/// How one output's dot product is summed (see `bnnc_ir::interp::mlas`).
#[derive(Clone, Copy)]
enum Order {
    /// Fused chains over slices of `stride`, the slices added in order (the general MLAS
    /// kernel). `alpha` scales each slice as it joins (`fma(acc, alpha, y)`).
    Slices { stride: usize, alpha: f32 },
    /// Plain products in groups of four, `((p0 + p1) + p2) + p3`, each added to the sum so
    /// far (MLAS's M = 1 kernel).
    Groups,
    /// Eight lanes of plain sums, reduced as output `j` of `n` is (MLAS's transposed M = 1
    /// kernel).
    Lanes { j: usize, n: usize },
}

/// One dot product of length `k` in `order`; `start` is the output's initial value (Gemm's
/// C), if any.
fn dot(
    kb: &mut KernelBuilder,
    k: usize,
    order: Order,
    start: Option<Value>,
    a: &dyn Fn(&mut KernelBuilder, Value) -> Value,
    b: &dyn Fn(&mut KernelBuilder, Value) -> Value,
) -> Value {
    let product = |kb: &mut KernelBuilder, kk: Value| {
        let (x, y) = (a(kb, kk), b(kb, kk));
        kb.b.ins().fmul(x, y)
    };
    match order {
        Order::Slices { stride, alpha } => {
            let stride = stride.max(1);
            let mut y = start;
            let mut k0 = 0;
            while k0 < k || (k == 0 && k0 == 0) {
                let len = stride.min(k - k0);
                let zero = kb.fconst(0.0);
                let base = k0;
                let acc = kb.fold_range(len, vec![zero], |kb, i, acc| {
                    let kk = kb.b.ins().iadd_imm_s(i, base as i64);
                    let (x, w) = (a(kb, kk), b(kb, kk));
                    vec![kb.b.ins().fma(x, w, acc[0])]
                })[0];
                let alpha_v = kb.fconst(alpha);
                y = Some(match y {
                    None if alpha == 1.0 => acc,
                    None => kb.b.ins().fmul(acc, alpha_v),
                    Some(prev) if alpha == 1.0 => kb.b.ins().fadd(prev, acc),
                    Some(prev) => kb.b.ins().fma(acc, alpha_v, prev),
                });
                k0 += len.max(1);
            }
            y.expect("at least one slice")
        }
        Order::Groups => {
            let zero = kb.fconst(0.0);
            let init = start.unwrap_or(zero);
            let groups = k / 4;
            let y = kb.fold_range(groups, vec![init], |kb, g, y| {
                let kk = kb.b.ins().imul_imm_s(g, 4);
                let mut sum = product(kb, kk);
                for r in 1..4 {
                    let kr = kb.b.ins().iadd_imm_s(kk, r);
                    let p = product(kb, kr);
                    sum = kb.b.ins().fadd(sum, p);
                }
                vec![kb.b.ins().fadd(sum, y[0])]
            })[0];
            let mut y = y;
            let mut kk = groups * 4;
            for size in [2usize, 1] {
                if (k - kk) & size != 0 {
                    let first = kb.iconst(kk as i64);
                    let mut sum = product(kb, first);
                    for r in 1..size {
                        let kr = kb.iconst((kk + r) as i64);
                        let p = product(kb, kr);
                        sum = kb.b.ins().fadd(sum, p);
                    }
                    y = kb.b.ins().fadd(sum, y);
                    kk += size;
                }
            }
            y
        }
        Order::Lanes { j, n } => {
            let zero = kb.fconst(0.0);
            let chunks = k / 8;
            let mut l = kb.fold_range(chunks, vec![zero; 8], |kb, c, lanes| {
                let base = kb.b.ins().imul_imm_s(c, 8);
                lanes
                    .iter()
                    .enumerate()
                    .map(|(i, &lane)| {
                        let kk = kb.b.ins().iadd_imm_s(base, i as i64);
                        let p = product(kb, kk);
                        kb.b.ins().fadd(lane, p)
                    })
                    .collect()
            });
            for i in chunks * 8..k {
                let kk = kb.iconst(i as i64);
                let p = product(kb, kk);
                l[i % 8] = kb.b.ins().fadd(l[i % 8], p);
            }
            // The masked tail adds 0 * 0 to the unused lanes (-0 becomes +0).
            if !k.is_multiple_of(8) {
                for lane in l.iter_mut().skip(k % 8) {
                    *lane = kb.b.ins().fadd(*lane, zero);
                }
            }
            let mut add = |x: Value, y: Value| kb.b.ins().fadd(x, y);
            let grouped_by_four = n - n % 4;
            let y = if j < grouped_by_four {
                let a = add(l[0], l[1]);
                let a = add(a, l[2]);
                let lo = add(a, l[3]);
                let b = add(l[4], l[5]);
                let b = add(b, l[6]);
                let hi = add(b, l[7]);
                add(lo, hi)
            } else {
                let pairs: [(usize, usize); 4] = if n % 4 >= 2 && j < grouped_by_four + 2 {
                    [(0, 2), (4, 6), (1, 3), (5, 7)]
                } else {
                    [(0, 1), (2, 3), (4, 5), (6, 7)]
                };
                let p: Vec<Value> = pairs.iter().map(|&(x, y)| add(l[x], l[y])).collect();
                let lo = add(p[0], p[1]);
                let hi = add(p[2], p[3]);
                add(lo, hi)
            };
            match start {
                Some(c) => kb.b.ins().fadd(y, c),
                None => y,
            }
        }
    }
}

fn constant(node: &Node, op: &Operand, what: &str) -> Result<Vec<f32>, BackendError> {
    op.const_f32()
        .ok_or_else(|| BackendError::unsupported(node, format!("the {what} must be constant")))
}

/// Conv (2-D) with optional bias: exact integer sums with any number of groups, float sums
/// in MLAS's order with one.
pub(crate) fn conv(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &ConvAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (x, w) = (&operands[0], &operands[1]);
    let plan = scaled_integers(node, operands, out);
    let mut w_data = constant(node, w, "weights")?;
    if let Some(plan) = &plan {
        w_data = plan.weight_integers(&w_data, &w.shape);
    }
    let bias = match operands.get(2) {
        Some(b) => Some(constant(node, b, "bias")?),
        None => None,
    };
    let exact = exact_in_any_order(&out.elem);
    if x.shape.len() != 4 {
        return Err(BackendError::unsupported(
            node,
            "the native convolution is 2-D",
        ));
    }
    let group = attrs.group.max(1);
    if group != 1 && !(exact || plan.is_some()) {
        // onnxruntime sums a grouped float convolution per group and thread; the exact
        // kernels need no order.
        return Err(BackendError::unsupported(
            node,
            "a grouped convolution on floats (not exact integers) has no native kernel yet",
        ));
    }
    let (batch, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (m, kh, kw) = (w.shape[0], attrs.kernel[0], attrs.kernel[1]);
    if c % group != 0 || m % group != 0 {
        return Err(BackendError::unsupported(
            node,
            format!("{c} channels and {m} filters in {group} groups"),
        ));
    }
    // Per group: `cg` input channels and `mg` filters.
    let (cg, mg) = (c / group, m / group);
    let (oh, ow) = (out.shape[2], out.shape[3]);
    let (taps, positions) = (kh * kw, oh * ow);
    let k = cg * taps;
    let im2col = super::window::Im2col::new(kb, attrs, (cg, h, wd));
    let src = x.f32_ptr(kb);
    let dst = out.ptr;
    let image_bytes = (c * h * wd * 4) as i64;
    let group_bytes = (cg * h * wd * 4) as i64;
    let out_image = m * positions;
    let bias_t = bias.as_ref().map(|b| kb.table_f32(b));

    // x(n, g, p, kk): the input under tap kk of output position p of group g of image n, 0
    // in the padding.
    let load_group = move |kb: &mut KernelBuilder, n: Value, g: usize, p: Value, kk: Value| {
        let oy = kb.b.ins().udiv_imm_s(p, ow as i64);
        let oyw = kb.b.ins().imul_imm_s(oy, ow as i64);
        let ox = kb.b.ins().isub(p, oyw);
        let origin = im2col.origin(kb, oy, ox);
        let image = kb.addr(src, n, image_bytes, g as i64 * group_bytes);
        im2col.load(kb, image, origin, kk)
    };
    let load_x = move |kb: &mut KernelBuilder, n: Value, p: Value, kk: Value| -> Value {
        load_group(kb, n, 0, p, kk)
    };
    let add_bias = |kb: &mut KernelBuilder, j: Value, s: Value| match bias_t {
        Some(t) => {
            let bv = kb.load_at(F32, t, j);
            kb.b.ins().fadd(s, bv)
        }
        None => s,
    };

    if exact && plan.is_none() && unrolled_fits(attrs, &x.shape, m, k, ow) {
        unrolled_conv(
            kb,
            &x.shape,
            (m, kh, kw),
            (oh, ow),
            &w_data,
            src,
            dst,
            bias_t,
        );
        return Ok(());
    }
    if exact || plan.is_some() {
        let plan = plan.as_ref();
        kb.for_range(batch, |kb, n| {
            for g in 0..group {
                // The group's (mg, K) weights as a (K, mg) matrix.
                let mut w_km = vec![0f32; k * mg];
                for jj in 0..mg {
                    for kk in 0..k {
                        w_km[kk * mg + jj] = w_data[(g * mg + jj) * k + kk];
                    }
                }
                let x = |kb: &mut KernelBuilder, p: Value, kk: Value| {
                    let v = load_group(kb, n, g, p, kk);
                    match plan {
                        Some(plan) => integer_of(kb, v, plan.a_scale),
                        None => v,
                    }
                };
                let store = |kb: &mut KernelBuilder, p: Value, jj: usize, _: Value, s: Value| {
                    let j = g * mg + jj;
                    let s = match plan {
                        Some(plan) => scale_sum(kb, plan, j, s),
                        None => s,
                    };
                    let jv = kb.iconst(j as i64);
                    let s = add_bias(kb, jv, s);
                    let image = kb.addr(dst, n, (out_image * 4) as i64, (j * positions * 4) as i64);
                    let at = kb.addr(image, p, 4, 0);
                    kb.store(s, at, 0);
                };
                exact_rows(kb, positions, k, mg, &w_km, &x, &store);
            }
        });
        return Ok(());
    }

    let route = conv_route(attrs, &x.shape, c, m, positions, k);
    let w_t = kb.table_f32(&w_data);
    let segs: Vec<Segment> = match route {
        ConvRoute::General(threading) => segments(m, positions, k, threading, true),
        _ => Vec::new(),
    };
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(dst, n, (out_image * 4) as i64, 0);
        // Output positions run in ranges whose order is fixed at compile time.
        let mut ranges: Vec<(usize, usize, Option<usize>)> = match route {
            ConvRoute::General(_) => segs
                .iter()
                .map(|s| (s.start, s.end, Some(s.stride_k)))
                .collect(),
            _ => vec![(0, positions, None)],
        };
        if ranges.is_empty() {
            ranges.push((0, positions, Some(k)));
        }
        for (start, end, stride) in ranges {
            let emit_position =
                |kb: &mut KernelBuilder, p: Value, j: usize, jv: Value, order: Order| {
                    let xa = |kb: &mut KernelBuilder, kk: Value| load_x(kb, n, p, kk);
                    let wa = |kb: &mut KernelBuilder, kk: Value| {
                        let row = kb.addr(w_t, jv, (k * 4) as i64, 0);
                        kb.load_at(F32, row, kk)
                    };
                    // Lanes with the operands swapped (SinglePosition) sum patch x filter.
                    let s = dot(kb, k, order, None, &xa, &wa);
                    let s = add_bias(kb, jv, s);
                    let at = kb.addr(image, p, 4, (j * positions * 4) as i64);
                    kb.store(s, at, 0);
                };
            match route {
                ConvRoute::General(_) => {
                    let stride = stride.unwrap_or(k);
                    kb.for_range(end - start, |kb, i| {
                        let p = kb.b.ins().iadd_imm_s(i, start as i64);
                        for j in 0..m {
                            let jv = kb.iconst(j as i64);
                            emit_position(kb, p, j, jv, Order::Slices { stride, alpha: 1.0 });
                        }
                    });
                }
                ConvRoute::SingleFilter => kb.for_range(positions, |kb, p| {
                    let jv = kb.iconst(0);
                    emit_position(kb, p, 0, jv, Order::Groups);
                }),
                ConvRoute::FullWidthRows => {
                    for p in 0..positions {
                        let pv = kb.iconst(p as i64);
                        let jv = kb.iconst(0);
                        emit_position(kb, pv, 0, jv, Order::Lanes { j: p, n: positions });
                    }
                }
                ConvRoute::SinglePosition => {
                    kb.for_range(positions, |kb, p| {
                        for j in 0..m {
                            let jv = kb.iconst(j as i64);
                            emit_position(kb, p, j, jv, Order::Lanes { j, n: m });
                        }
                    });
                }
            }
        }
    });
    Ok(())
}

/// Whether [`unrolled_conv`] applies: unit strides and dilations, no padding, at least four
/// output columns, and few enough weights to unroll.
fn unrolled_fits(attrs: &ConvAttrs, x: &[usize], m: usize, k: usize, ow: usize) -> bool {
    attrs.group == 1
        && x.len() == 4
        && attrs
            .strides
            .iter()
            .chain(&attrs.dilations)
            .all(|&s| s == 1)
        && attrs.pads.iter().all(|&p| p == 0)
        && ow >= 4
        && m * k <= 1 << 15
}

/// An exact convolution with its weights in the code: four neighbouring output columns
/// to a vector, eight filters at a time, each weight an add, a subtract (for ±1, as the
/// binary first layer of a network has) or a multiply-add of a constant; zero weights cost
/// nothing. Inputs are contiguous along the columns, as outputs are.
#[allow(clippy::too_many_arguments)]
fn unrolled_conv(
    kb: &mut KernelBuilder,
    x: &[usize],
    (m, kh, kw): (usize, usize, usize),
    (oh, ow): (usize, usize),
    w: &[f32],
    src: Value,
    dst: Value,
    bias: Option<Value>,
) {
    const FILTERS: usize = 8;
    let (batch, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let k = c * kh * kw;
    let blocks = ow.div_ceil(4);
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, (c * h * wd * 4) as i64, 0);
        let out_image = kb.addr(dst, n, (m * oh * ow * 4) as i64, 0);
        kb.for_range(oh, |kb, oy| {
            let in_row = kb.addr(image, oy, (wd * 4) as i64, 0);
            let out_row = kb.addr(out_image, oy, (ow * 4) as i64, 0);
            kb.for_range(blocks, |kb, b| {
                // The last block overlaps the one before when 4 does not divide the width.
                let start = kb.b.ins().imul_imm_s(b, 4);
                let last = kb.iconst((ow - 4) as i64);
                let ox = kb.b.ins().umin(start, last);
                let at_in = kb.addr(in_row, ox, 4, 0);
                let at_out = kb.addr(out_row, ox, 4, 0);
                for f0 in (0..m).step_by(FILTERS) {
                    let filters = f0..(f0 + FILTERS).min(m);
                    let zero = kb.fconst(0.0);
                    let zv = kb.b.ins().splat(F32X4, zero);
                    let mut acc = vec![zv; filters.len()];
                    for kk in 0..k {
                        let (ch, tap) = (kk / (kh * kw), kk % (kh * kw));
                        let (ky, kx) = (tap / kw, tap % kw);
                        if filters.clone().all(|j| w[j * k + kk] == 0.0) {
                            continue;
                        }
                        let off = ((ch * h * wd + ky * wd + kx) * 4) as i64;
                        let xv = kb.load(F32X4, at_in, off);
                        for (a, j) in acc.iter_mut().zip(filters.clone()) {
                            let wv = w[j * k + kk];
                            *a = if wv == 0.0 {
                                *a
                            } else if wv == 1.0 {
                                kb.b.ins().fadd(*a, xv)
                            } else if wv == -1.0 {
                                kb.b.ins().fsub(*a, xv)
                            } else {
                                let ws = kb.fconst(wv);
                                let wsv = kb.b.ins().splat(F32X4, ws);
                                let p = kb.b.ins().fmul(xv, wsv);
                                kb.b.ins().fadd(*a, p)
                            };
                        }
                    }
                    for (a, j) in acc.into_iter().zip(filters) {
                        let a = match bias {
                            Some(t) => {
                                let bv = kb.load(F32, t, (j * 4) as i64);
                                let bs = kb.b.ins().splat(F32X4, bv);
                                kb.b.ins().fadd(a, bs)
                            }
                            None => a,
                        };
                        kb.store(a, at_out, (j * oh * ow * 4) as i64);
                    }
                }
            });
        });
    });
}

/// `alpha * op(a) @ b + start` for an activation `a` and a constant `b`, summed as the
/// interpreter's `gemm` and `mlas_gemm` do.
struct Product<'d> {
    /// Row-major `(m, k)`, or `(k, m)` with `trans_a`.
    a: Value,
    trans_a: bool,
    /// Whether the model's B was transposed (it decides MLAS's M = 1 kernel).
    trans_b: bool,
    /// B as a row-major `(k, n)` matrix.
    b_kn: &'d [f32],
    mkn: (usize, usize, usize),
    alpha: f32,
    /// `beta * C`, row-major `(m, n)`.
    start: Option<&'d [f32]>,
    /// MLAS takes its M = 1 kernels only with alpha 1 and beta 0 or 1.
    m1_allowed: bool,
    exact: bool,
    /// Sums of integers, scaled once (`b_kn` holds the weights' integers).
    scaled: Option<&'d IntegerFirst>,
}

fn product(kb: &mut KernelBuilder, p: &Product<'_>, dst: Value) {
    let (m, k, n) = p.mkn;
    let (a, trans_a) = (p.a, p.trans_a);
    let load_a = move |kb: &mut KernelBuilder, i: Value, kk: Value| {
        let (row, col, width) = if trans_a { (kk, i, m) } else { (i, kk, k) };
        let r = kb.b.ins().imul_imm_s(row, width as i64);
        let at = kb.b.ins().iadd(r, col);
        kb.load_at(F32, a, at)
    };
    let start_t = p.start.map(|s| kb.table_f32(s));
    let start_at = |kb: &mut KernelBuilder, i: Value, j: Value| {
        start_t.map(|t| {
            let r = kb.b.ins().imul_imm_s(i, n as i64);
            let at = kb.b.ins().iadd(r, j);
            kb.load_at(F32, t, at)
        })
    };
    let store = |kb: &mut KernelBuilder, i: Value, j: Value, s: Value| {
        let r = kb.b.ins().imul_imm_s(i, n as i64);
        let at = kb.b.ins().iadd(r, j);
        kb.store_at(s, dst, at);
    };
    if let Some(plan) = p.scaled {
        let alpha = p.alpha;
        let load_int = |kb: &mut KernelBuilder, i: Value, kk: Value| {
            let v = load_a(kb, i, kk);
            integer_of(kb, v, plan.a_scale)
        };
        let store_scaled = |kb: &mut KernelBuilder, i: Value, j: usize, jv: Value, s: Value| {
            let mut s = scale_sum(kb, plan, j, s);
            if alpha != 1.0 {
                let a = kb.fconst(alpha);
                s = kb.b.ins().fmul(s, a);
            }
            let s = match start_at(kb, i, jv) {
                Some(c) => kb.b.ins().fadd(s, c),
                None => s,
            };
            store(kb, i, jv, s);
        };
        exact_rows(kb, m, k, n, p.b_kn, &load_int, &store_scaled);
        return;
    }
    if p.exact && p.alpha == 1.0 {
        let store_exact = |kb: &mut KernelBuilder, i: Value, _j: usize, jv: Value, s: Value| {
            let s = match start_at(kb, i, jv) {
                Some(c) => kb.b.ins().fadd(s, c),
                None => s,
            };
            store(kb, i, jv, s);
        };
        exact_rows(kb, m, k, n, p.b_kn, &load_a, &store_exact);
        return;
    }
    let b_t = kb.table_f32(p.b_kn);
    let load_b = move |kb: &mut KernelBuilder, kk: Value, j: Value| {
        let r = kb.b.ins().imul_imm_s(kk, n as i64);
        let at = kb.b.ins().iadd(r, j);
        kb.load_at(F32, b_t, at)
    };
    // The transposed M = 1 kernel adds C (or 0) after its lanes.
    let lanes_start =
        |kb: &mut KernelBuilder, c: Option<Value>| Some(c.unwrap_or_else(|| kb.fconst(0.0)));
    if p.m1_allowed && m == 1 && !trans_a {
        kb.for_range(n, |kb, j| {
            let i = kb.iconst(0);
            let c = start_at(kb, i, j);
            let s = if p.trans_b {
                // Output j of n of the transposed kernel: unrolled over j at compile time.
                None
            } else {
                Some(dot(
                    kb,
                    k,
                    Order::Groups,
                    c,
                    &|kb, kk| load_a(kb, i, kk),
                    &|kb, kk| load_b(kb, kk, j),
                ))
            };
            if let Some(s) = s {
                store(kb, i, j, s);
            }
        });
        if p.trans_b {
            for j in 0..n {
                let (i, jv) = (kb.iconst(0), kb.iconst(j as i64));
                let c = start_at(kb, i, jv);
                let c = lanes_start(kb, c);
                let s = dot(
                    kb,
                    k,
                    Order::Lanes { j, n },
                    c,
                    &|kb, kk| load_a(kb, i, kk),
                    &|kb, kk| load_b(kb, kk, jv),
                );
                store(kb, i, jv, s);
            }
        }
    } else if p.m1_allowed && n == 1 && !p.trans_b {
        // One column: MLAS swaps the operands, B's column against every row of op(A).
        if trans_a {
            kb.for_range(m, |kb, i| {
                let j = kb.iconst(0);
                let c = start_at(kb, i, j);
                let s = dot(
                    kb,
                    k,
                    Order::Groups,
                    c,
                    &|kb, kk| load_b(kb, kk, j),
                    &|kb, kk| load_a(kb, i, kk),
                );
                store(kb, i, j, s);
            });
        } else {
            for i in 0..m {
                let (iv, j) = (kb.iconst(i as i64), kb.iconst(0));
                let c = start_at(kb, iv, j);
                let c = lanes_start(kb, c);
                let s = dot(
                    kb,
                    k,
                    Order::Lanes { j: i, n: m },
                    c,
                    &|kb, kk| load_b(kb, kk, j),
                    &|kb, kk| load_a(kb, iv, kk),
                );
                store(kb, iv, j, s);
            }
        }
    } else {
        let alpha = p.alpha;
        for seg in segments(m, n, k, Threading::Gemm, !trans_a) {
            kb.for_range(m, |kb, i| {
                kb.for_range(seg.end - seg.start, |kb, jj| {
                    let j = kb.b.ins().iadd_imm_s(jj, seg.start as i64);
                    let c = start_at(kb, i, j);
                    let order = Order::Slices {
                        stride: seg.stride_k,
                        alpha,
                    };
                    let s = dot(kb, k, order, c, &|kb, kk| load_a(kb, i, kk), &|kb, kk| {
                        load_b(kb, kk, j)
                    });
                    store(kb, i, j, s);
                });
            });
        }
    }
}

/// ONNX Gemm with a constant B (and C).
pub(crate) fn gemm(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &GemmAttrs,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, b) = (&operands[0], &operands[1]);
    let plan = scaled_integers(node, operands, out);
    let mut b_data = constant(node, b, "B matrix")?;
    if let Some(plan) = &plan {
        b_data = plan.weight_integers(&b_data, &b.shape);
    }
    let (&[ar, ac], &[br, bc]) = (a.shape.as_slice(), b.shape.as_slice()) else {
        return Err(BackendError::unsupported(
            node,
            "Gemm operands must be matrices",
        ));
    };
    let (m, k) = if attrs.trans_a { (ac, ar) } else { (ar, ac) };
    let n = if attrs.trans_b { br } else { bc };
    let b_kn: Vec<f32> = if attrs.trans_b {
        (0..k * n).map(|i| b_data[(i % n) * bc + i / n]).collect()
    } else {
        b_data
    };
    let start = match operands.get(2).filter(|_| attrs.beta != 0.0) {
        Some(c) => {
            let c_data = constant(node, c, "C matrix")?;
            let strides = broadcast(&c.shape);
            Some(
                (0..m * n)
                    .map(|i| {
                        let v = c_data[(i / n) * strides[0] + (i % n) * strides[1]];
                        if attrs.beta == 1.0 {
                            v
                        } else {
                            attrs.beta * v
                        }
                    })
                    .collect::<Vec<f32>>(),
            )
        }
        None => None,
    };
    let a_ptr = a.f32_ptr(kb);
    let p = Product {
        a: a_ptr,
        trans_a: attrs.trans_a,
        trans_b: attrs.trans_b,
        b_kn: &b_kn,
        mkn: (m, k, n),
        alpha: attrs.alpha,
        m1_allowed: attrs.alpha == 1.0 && (start.is_none() || attrs.beta == 1.0),
        start: start.as_deref(),
        exact: exact_in_any_order(&out.elem),
        scaled: plan.as_ref(),
    };
    product(kb, &p, out.ptr);
    Ok(())
}

/// numpy broadcast strides of `shape` to a matrix.
fn broadcast(shape: &[usize]) -> [usize; 2] {
    let mut s = [0usize; 2];
    let mut stride = 1;
    for (i, &d) in shape.iter().enumerate().rev() {
        let o = 2 - (shape.len() - i);
        s[o] = if d == 1 { 0 } else { stride };
        stride *= d;
    }
    s
}

/// ONNX MatMul of an activation and a constant matrix (leading axes of A fold into rows).
pub(crate) fn matmul(
    kb: &mut KernelBuilder,
    node: &Node,
    operands: &[Operand],
    out: &Operand,
) -> Result<(), BackendError> {
    let (a, b) = (&operands[0], &operands[1]);
    let plan = scaled_integers(node, operands, out);
    let mut b_data = constant(node, b, "B matrix")?;
    if let Some(plan) = &plan {
        b_data = plan.weight_integers(&b_data, &b.shape);
    }
    let exact = exact_in_any_order(&out.elem);
    let a_ptr = a.f32_ptr(kb);
    let product_of = |kb: &mut KernelBuilder, a: Value, b_kn: &[f32], mkn, dst: Value| {
        let p = Product {
            a,
            trans_a: false,
            trans_b: false,
            b_kn,
            mkn,
            alpha: 1.0,
            start: None,
            m1_allowed: true,
            exact,
            scaled: plan.as_ref(),
        };
        product(kb, &p, dst);
    };
    match (a.shape.as_slice(), b.shape.as_slice()) {
        (_, &[k, n]) => {
            let m = a.numel() / k.max(1);
            product_of(kb, a_ptr, &b_data, (m, k, n), out.ptr);
        }
        // A vector B: each row of A on its own (M = 1 each), as onnxruntime does.
        (_, &[k]) if plan.is_none() => {
            kb.for_range(a.numel() / k.max(1), |kb, r| {
                let row = kb.addr(a_ptr, r, (k * 4) as i64, 0);
                let dst = kb.addr(out.ptr, r, 4, 0);
                product_of(kb, row, &b_data, (1, k, 1), dst);
            });
        }
        // Batches of matrices, broadcast against each other: one product per batch.
        (&[.., m, ka], &[.., k, n]) if plan.is_none() && ka == k => {
            let (batch_a, batch_b) = (&a.shape[..a.shape.len() - 2], &b.shape[..b.shape.len() - 2]);
            let batch = &out.shape[..out.shape.len() - 2];
            let count: usize = batch.iter().product();
            if count > MAX_UNROLLED_BATCHES {
                return Err(BackendError::unsupported(
                    node,
                    format!("{count} batched products are more than the native MatMul unrolls"),
                ));
            }
            for i in 0..count {
                let (ia, ib) = (
                    batch_index(i, batch, batch_a),
                    batch_index(i, batch, batch_b),
                );
                let a_i = kb.b.ins().iadd_imm_s(a_ptr, (ia * m * k * 4) as i64);
                let dst = kb.b.ins().iadd_imm_s(out.ptr, (i * m * n * 4) as i64);
                product_of(
                    kb,
                    a_i,
                    &b_data[ib * k * n..(ib + 1) * k * n],
                    (m, k, n),
                    dst,
                );
            }
        }
        _ => {
            return Err(BackendError::unsupported(
                node,
                "the native MatMul takes a constant B of rank 1 or 2, or batches of matrices",
            ))
        }
    }
    Ok(())
}

/// Batched products a native MatMul unrolls at most.
const MAX_UNROLLED_BATCHES: usize = 256;

/// The index of the operand batch that output batch `i` (of the broadcast `batch` shape)
/// reads, for an operand whose batch axes are `own` (numpy broadcasting: aligned at the end,
/// extents of 1 repeat).
fn batch_index(i: usize, batch: &[usize], own: &[usize]) -> usize {
    let mut rest = i;
    let mut index = 0;
    let mut stride = 1;
    for (d, &extent) in batch.iter().enumerate().rev() {
        let coordinate = rest % extent.max(1);
        rest /= extent.max(1);
        let Some(own_d) = (d + own.len()).checked_sub(batch.len()) else {
            continue;
        };
        if own[own_d] != 1 {
            index += coordinate * stride;
        }
        stride *= own[own_d];
    }
    index
}
