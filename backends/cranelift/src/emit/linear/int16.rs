//! The fused first layer on `i16` lanes: an 8-bit Conv of a binary network whose integer
//! sums fit 15 bits ([`crate::first_layer`] decides which), summed as integers and compared
//! with its thresholds in the same kernel, so it never runs on floats and never stores its
//! sums.

use bnnc_ir::{ConvAttrs, Graph, Node};
use cranelift_codegen::ir::types::{F32, F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Value};

use crate::emit::builder::little_endian;
use crate::emit::count_planes::{self, CountLayout};
use crate::emit::{KernelBuilder, Operand};
use crate::first_layer::{int16_applies, int16_weights, int_pow2, small_integers};
use crate::BackendError;

/// The most stack the first layer's counts may take (beyond, bits are transposed as before).
const MAX_COUNT_BYTES: usize = 128 << 10;

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
    let x_elem = &graph.value(node.inputs[0]).ty.elem;
    let (_, in_scale) = int_pow2(x_elem)?;
    let (int, _) = x_elem.exact_scaled()?;
    Some(crate::Int16ConvKernel {
        symbol,
        input: (x[0], x[1], x[2], x[3]),
        in_scale,
        in_range: (int.min(), int.max()),
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
    let affine = kb.table(bytes(
        vec![levels.alpha as i16; 8]
            .into_iter()
            .chain(vec![levels.beta as i16; 8])
            .collect(),
    ));
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
                        let level = level_lanes(kb, level.expect("a threshold"), &levels, affine);
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
                            kb.b.ins()
                                .band_imm_s(plane_bits, ((1u64 << valid) - 1) as i64)
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
    // Levels' counts of thresholds, a byte per position and filter, written as planes after
    // each image (`count_planes`): eight filters' counts take twelve shuffles and eight
    // stores, where their levels' planes take some eighty instructions. (A bit stage's
    // compares are its bits already: they stay on the transposes, which measured faster.)
    let m_pad = m.next_multiple_of(16);
    let bits = (levels.thresholds, levels.alpha, levels.beta, levels.planes) == (1, 1, 0, 1);
    let counts = (!bits && levels.thresholds <= 15 && oh * ow * m_pad <= MAX_COUNT_BYTES)
        .then(|| kb.stack((oh * ow * m_pad) as u32));
    let layout = CountLayout {
        m,
        m_pad,
        out: (oh, ow),
        pool: (1, 1),
        pooled: (oh, ow),
    };
    let count_tables = counts.map(|_| kb.table(count_planes::tables(levels)));
    // Channels past m in the last word are never written by the byte stores: zero first.
    if m % 64 != 0 && counts.is_none() {
        let zero = kb.iconst(0);
        kb.for_range(batch * oh * ow * pixel_words, |kb, i| {
            kb.store_at(zero, dst, i)
        });
    }
    // The image as `i16` integers, converted once per image rather than once per tap and
    // block (each input is read by up to `k` taps' vectors).
    let image16 = kb.stack((c * h * wd * 2).next_multiple_of(16) as u32);
    // Tap `kk`'s offset from its window's first input, in bytes of `i16` elements.
    let tap_offset = |kk: usize| {
        let (ch, tap) = (kk / (kh * kw), kk % (kh * kw));
        let (ky, kx) = (tap / kw, tap % kw);
        ((ch * h * wd + ky * dh * wd + kx * dw) * 2) as i64
    };
    // Each filter's bounds, as it compares (`-bound` where it descends), splat to `i16x8`
    // `[filter][threshold]`; then `alpha` and `beta` splat: loads that fold into the
    // compares, where building the splats in code would cost three instructions each.
    let splat_lanes =
        |v: i16| -> Vec<u8> { v.to_le_bytes().into_iter().cycle().take(16).collect() };
    let t_count = levels.thresholds;
    let bounds: Vec<u8> = (0..m * t_count)
        .flat_map(|i| {
            let b = levels.bounds[i];
            let b = if levels.sign[i / t_count] >= 0 { b } else { -b };
            splat_lanes(b.clamp(-32768, 32767) as i16)
        })
        .collect();
    let bounds = kb.table(bounds);
    // Levels are read only in their low bits: alpha and beta wrap to i16 as the lanes do.
    let affine = kb.table(
        [
            splat_lanes(levels.alpha as i16),
            splat_lanes(levels.beta as i16),
        ]
        .concat(),
    );
    kb.for_range(batch, |kb, n| {
        let image = kb.addr(src, n, (c * h * wd * 4) as i64, 0);
        let out_image = kb.addr(dst, n, (oh * ow * pixel_words * 8) as i64, 0);
        // Eight inputs at a time (the last eight overlapping: the width is at least 8).
        let total = c * h * wd;
        kb.for_range(total.div_ceil(8), |kb, i| {
            let start = kb.b.ins().imul_imm_s(i, 8);
            let last = kb.iconst((total - 8) as i64);
            let start = kb.b.ins().umin(start, last);
            let from = kb.addr(image, start, 4, 0);
            let s = kb.fconst(inv);
            let sv = kb.b.ins().splat(F32X4, s);
            let halves: Vec<Value> = [0, 16]
                .iter()
                .map(|&o| {
                    let v = kb.load(F32X4, from, o);
                    let v = kb.b.ins().fmul(v, sv);
                    kb.b.ins().fcvt_to_sint_sat(I32X4, v)
                })
                .collect();
            let q = kb.b.ins().snarrow(halves[0], halves[1]);
            let to = kb.addr(image16, start, 2, 0);
            kb.store(q, to, 0);
        });
        kb.for_range(oh, |kb, oy| {
            let row = kb.addr(image16, oy, (g.stride_y * wd * 2) as i64, 0);
            kb.for_range(blocks, |kb, b| {
                // The last block overlaps the one before when 8 does not divide the width.
                let start = kb.b.ins().imul_imm_s(b, 8);
                let last = kb.iconst((ow - 8) as i64);
                let ox = kb.b.ins().umin(start, last);
                // Every tap's eight inputs start here, `tap_offset` apart.
                let taps = kb.addr(row, ox, 2, 0);
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
                    let xv = kb.load(I16X8, taps, tap_offset(kk));
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
                        let xv = kb.load(I16X8, taps, tap_offset(kk));
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
                                // A power of two (the 2-bit weights' -2): a shift, not a
                                // multiply by a splat constant.
                                (SumForm::Direct, wv) if wv.unsigned_abs().is_power_of_two() => {
                                    let log = wv.unsigned_abs().trailing_zeros();
                                    let p = kb.b.ins().ishl_imm_s(xv, i64::from(log));
                                    if wv < 0 {
                                        kb.b.ins().isub(*a, p)
                                    } else {
                                        kb.b.ins().iadd(*a, p)
                                    }
                                }
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
                    let mut minus_counts = Vec::with_capacity(8);
                    for (i, (a, j)) in acc.into_iter().zip(filters.clone()).enumerate() {
                        let t_count = levels.thresholds;
                        let mut level = None;
                        for t in 0..t_count {
                            let cc = if levels.sign[j] >= 0 {
                                IntCC::SignedGreaterThanOrEqual
                            } else {
                                IntCC::SignedLessThanOrEqual
                            };
                            let at = ((j * t_count + t) * 16) as i64;
                            let bv = kb.load_aligned(I16X8, bounds, at);
                            let on = kb.b.ins().icmp(cc, a, bv);
                            // Reached lanes are all ones: -1 each.
                            level = Some(match level {
                                None => on,
                                Some(l) => kb.b.ins().iadd(l, on),
                            });
                        }
                        let minus_count = level.expect("a threshold");
                        if counts.is_some() {
                            minus_counts.push(minus_count);
                            continue;
                        }
                        // One threshold whose level is its count, in one plane: a reached
                        // lane (all ones) has its bit as its high bit.
                        let bit_is_compare =
                            (t_count, levels.alpha, levels.beta, planes) == (1, 1, 0, 1);
                        let level = if bit_is_compare {
                            minus_count
                        } else {
                            level_lanes(kb, minus_count, levels, affine)
                        };
                        for (r, matrix) in matrices.iter_mut().enumerate() {
                            let cols = if bit_is_compare {
                                kb.b.ins()
                                    .vhigh_bits(cranelift_codegen::ir::types::I64, level)
                            } else {
                                plane_lanes(kb, level, r)
                            };
                            let cols = kb.b.ins().ishl_imm_s(cols, (8 * i) as i64);
                            *matrix = kb.b.ins().bor(*matrix, cols);
                        }
                    }
                    if let Some(counts) = counts {
                        let pos = kb.b.ins().imul_imm_s(oy, ow as i64);
                        let pos = kb.b.ins().iadd(pos, ox);
                        let at = kb.addr(counts, pos, m_pad as i64, (group * 8) as i64);
                        store_counts8(kb, &minus_counts, at, m_pad);
                        continue;
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
                                crate::emit::builder::mem(),
                                v,
                                out_at,
                                (col * (pixel_words as i64) * 8 + plane + byte) as i32,
                            );
                        }
                    }
                }
            });
        });
        if let (Some(counts), Some(tables)) = (counts, count_tables) {
            count_planes::write(kb, &layout, planes, (counts, tables), out_image);
        }
    });
}

/// Stores eight filters' counts of eight positions (`minus_counts`: one `i16x8` per filter,
/// each lane minus a position's count; fewer than eight filters at the layer's end) at
/// `at`, `[position][filter]` with `m_pad` filters a position: the counts narrowed to bytes,
/// two filters a vector, then transposed by byte, word and double-word interleaves into
/// two positions' eight filters a vector.
fn store_counts8(kb: &mut KernelBuilder, minus_counts: &[Value], at: Value, m_pad: usize) {
    use cranelift_codegen::ir::types::I64X2;
    let zero16 = kb.splat_i16(0);
    let zero8 = kb.splat_i8(0);
    let filter = |j: usize| minus_counts.get(j).copied().unwrap_or(zero16);
    // [f p0..p7, f+1 p0..p7] as counts (0..=15: the narrowing is exact).
    let pairs: Vec<Value> = (0..4)
        .map(|i| {
            let minus = kb.b.ins().snarrow(filter(2 * i), filter(2 * i + 1));
            kb.b.ins().isub(zero8, minus)
        })
        .collect();
    let interleave = |kb: &mut KernelBuilder, a: Value, b: Value, lanes: [u8; 16]| {
        let mask = kb.b.func.dfg.immediates.push(lanes.to_vec().into());
        kb.b.ins().shuffle(a, b, mask)
    };
    let bytes_lo = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
    let bytes_hi = bytes_lo.map(|l| l + 8);
    let dwords_lo = [0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23];
    let dwords_hi = dwords_lo.map(|l| l + 8);
    // [f p, f+2 p] per position, then [f..f+4 p] per position, four positions a vector.
    let u0 = interleave(kb, pairs[0], pairs[1], bytes_lo);
    let u1 = interleave(kb, pairs[0], pairs[1], bytes_hi);
    let u2 = interleave(kb, pairs[2], pairs[3], bytes_lo);
    let u3 = interleave(kb, pairs[2], pairs[3], bytes_hi);
    let quads = [
        interleave(kb, u0, u1, bytes_lo),
        interleave(kb, u0, u1, bytes_hi),
        interleave(kb, u2, u3, bytes_lo),
        interleave(kb, u2, u3, bytes_hi),
    ];
    for half in 0..2 {
        let (low, high) = (quads[half], quads[half + 2]);
        for (k, lanes) in [dwords_lo, dwords_hi].into_iter().enumerate() {
            let two = interleave(kb, low, high, lanes);
            let two = kb.b.ins().bitcast(I64X2, little_endian(), two);
            let first = 4 * half + 2 * k;
            for lane in 0..2u8 {
                let eight = kb.b.ins().extractlane(two, lane);
                kb.store(eight, at, ((first + lane as usize) * m_pad) as i64);
            }
        }
    }
}

/// The levels of `i16x8` lanes from the sum of their threshold compares (-1 per threshold
/// reached): `alpha * count + beta`, with `affine` the table of `alpha` and `beta` splat.
fn level_lanes(
    kb: &mut KernelBuilder,
    minus_count: Value,
    levels: &crate::stage::Levels,
    affine: Value,
) -> Value {
    use cranelift_codegen::ir::types::I16X8;
    // level = beta - alpha * (-count)
    let scaled = match levels.alpha {
        1 => minus_count,
        _ => {
            let av = kb.load_aligned(I16X8, affine, 0);
            kb.b.ins().imul(minus_count, av)
        }
    };
    let beta = kb.load_aligned(I16X8, affine, 16);
    kb.b.ins().isub(beta, scaled)
}

/// Bit `r` of each of eight `i16` lanes, as the low byte of an i64.
fn plane_lanes(kb: &mut KernelBuilder, level: Value, r: usize) -> Value {
    use cranelift_codegen::ir::types::I64;
    // Shift bit r to the sign bit: the lanes' high bits are the plane's bits.
    let shifted = kb.b.ins().ishl_imm_s(level, 15 - r as i64);
    kb.b.ins().vhigh_bits(I64, shifted)
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
