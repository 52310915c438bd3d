//! MaxPool and MinMaxPool (on floats, or on packed bipolar bits as OR and AND), AveragePool,
//! GlobalAveragePool and ReduceMean (their sums in the interpreter's orders).

use bnnc_ir::summation_order::{average_pool_route, axis_windows, AveragePoolRoute, AxisWindow};
use bnnc_ir::{Node, PoolAttrs};
use bnnc_runtime::packing::{words, WORD_BITS};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::window::{
    add_scaled, flat_index, for_each_position, kernel_taps, row_major_strides, Tap, Window,
};
use super::{KernelBuilder, Operand};
use crate::schedule::{bit_geometry, Storage};
use crate::BackendError;

/// A pool's input and output as `(N, C, spatial...)`: batch, channels and the spatial
/// extents of each.
struct PoolShape<'a> {
    n: usize,
    c: usize,
    image: &'a [usize],
    out_ext: &'a [usize],
}

impl<'a> PoolShape<'a> {
    /// The shape of `node`'s pool from `x` to `out`, or the error if they have no spatial
    /// axis or differ in rank.
    fn of(node: &Node, x: &'a Operand, out: &'a Operand) -> Result<Self, BackendError> {
        if x.shape.len() < 3 || out.shape.len() != x.shape.len() {
            return Err(BackendError::unsupported(
                node,
                "a pool needs an input of rank 3 or more (N, C, spatial...)",
            ));
        }
        Ok(PoolShape {
            n: x.shape[0],
            c: x.shape[1],
            image: &x.shape[2..],
            out_ext: &out.shape[2..],
        })
    }
}

/// MaxPool (any number of spatial axes), or MinPool on the channels `min` marks (empty:
/// none). Taps outside the input (padding, ceil mode) never count. On bits, the maximum of
/// bipolar values is the OR of their bits (1 is +1) and the minimum their AND. The float
/// maximum compares the taps row-major, as the interpreter does.
pub(crate) fn max_pool(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &PoolAttrs,
    min: &[bool],
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let PoolShape {
        n,
        c,
        image,
        out_ext,
    } = PoolShape::of(node, x, out)?;
    let (in_pixels, out_pixels) = (
        image.iter().product::<usize>(),
        out_ext.iter().product::<usize>(),
    );
    let is_min = |ch: usize| min.get(ch).copied().unwrap_or(false);
    let window = Window::new(attrs.window(), image);
    // Windows that fit whatever the position need no test.
    let check = attrs.ceil_mode || attrs.pads.iter().any(|&p| p != 0);
    let bits = x.storage == Storage::Bits;
    if let ([ih, iw], [oh, ow], false, false, false) =
        (image, out_ext, check, bits, min.contains(&true))
    {
        if *ow >= 4 {
            let (src, dst) = (x.f32_ptr(kb), out.ptr);
            max_pool_rows(kb, attrs, n * c, (*ih, *iw), (*oh, *ow), (src, dst));
            return Ok(());
        }
    }
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    // Planes: every (n, c) for floats; every n for bits, whose pixels hold all channels.
    let (planes, pixel_words) = if bits {
        let (outer, ch, _) = bit_geometry(&x.shape);
        (outer, words(ch))
    } else {
        (n * c, 1)
    };
    // Per word of bits, the channels pooled by their minimum.
    let min_masks: Vec<u64> = (0..pixel_words)
        .map(|word| {
            (0..WORD_BITS)
                .filter(|&b| is_min(word * WORD_BITS + b))
                .fold(0u64, |m, b| m | 1 << b)
        })
        .collect();
    // Per f32 plane, whether its channel takes the minimum.
    let plane_min: Vec<i32> = (0..n * c).map(|p| i32::from(is_min(p % c))).collect();
    let plane_min_t = (!bits && min.contains(&true)).then(|| kb.table_i32(&plane_min));
    // A pixel is `pixel_words` words of bits, or one f32.
    let pixel_bytes = if bits { pixel_words * 8 } else { 4 };
    kb.for_range(planes, |kb, plane| {
        let in_plane = kb.addr(src, plane, (in_pixels * pixel_bytes) as i64, 0);
        let out_plane = kb.addr(dst, plane, (out_pixels * pixel_bytes) as i64, 0);
        // f32 planes taking the minimum pool the negated values (exact) and negate back.
        let sign = plane_min_t.map(|t| {
            let m = kb.load_at(I32, t, plane);
            let (minus, one) = (kb.fconst(-1.0), kb.fconst(1.0));
            kb.select(m, minus, one)
        });
        for_each_position(kb, out_ext, &mut |kb, o| {
            let taps = window.taps(kb, o, check);
            let opix = flat_index(kb, o, out_ext);
            if bits {
                for (word, &mask) in min_masks.iter().enumerate() {
                    let (mut any, mut all) = (kb.iconst(0), kb.iconst(-1));
                    for &Tap { pixel, inside } in &taps {
                        let at =
                            kb.addr(in_plane, pixel, (pixel_words * 8) as i64, (word * 8) as i64);
                        let v = kb.load(I64, at, 0);
                        // A tap outside counts as 0 for OR, as all ones for AND.
                        let (v_or, v_and) = match inside {
                            Some(inside) => {
                                let (zero, ones) = (kb.iconst(0), kb.iconst(-1));
                                (kb.select(inside, v, zero), kb.select(inside, v, ones))
                            }
                            None => (v, v),
                        };
                        any = kb.b.ins().bor(any, v_or);
                        if mask != 0 {
                            all = kb.b.ins().band(all, v_and);
                        }
                    }
                    let pooled = if mask == 0 {
                        any
                    } else {
                        let keep_any = kb.b.ins().band_imm_s(any, !mask as i64);
                        let keep_all = kb.b.ins().band_imm_s(all, mask as i64);
                        kb.b.ins().bor(keep_any, keep_all)
                    };
                    let at = kb.addr(out_plane, opix, (pixel_words * 8) as i64, (word * 8) as i64);
                    kb.store(pooled, at, 0);
                }
            } else {
                let mut max = kb.fconst(f32::NEG_INFINITY);
                for &Tap { pixel, inside } in &taps {
                    let v = kb.load_at(F32, in_plane, pixel);
                    let v = match sign {
                        Some(s) => kb.b.ins().fmul(v, s),
                        None => v,
                    };
                    // `if v > max { max = v }`, as the interpreter.
                    let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, v, max);
                    let take = match inside {
                        Some(inside) => kb.b.ins().band(greater, inside),
                        None => greater,
                    };
                    max = kb.select(take, v, max);
                }
                let max = match sign {
                    Some(s) => kb.b.ins().fmul(max, s),
                    None => max,
                };
                kb.store_at(max, out_plane, opix);
            }
        })
    });
    Ok(())
}

/// The float MaxPool of 2-D windows that all fit, four outputs of a row at a time: each tap,
/// in the window's row-major order, compared with the four maxima as the scalar kernel
/// compares it with one (`if v > max { max = v }`, from -inf). A stride of 2 takes the even
/// lanes of two loads that end at the last column read.
fn max_pool_rows(
    kb: &mut KernelBuilder,
    attrs: &PoolAttrs,
    planes: usize,
    (ih, iw): (usize, usize),
    (oh, ow): (usize, usize),
    (src, dst): (Value, Value),
) {
    use cranelift_codegen::ir::types::F32X4;
    let (kh, kw) = (attrs.kernel[0], attrs.kernel[1]);
    let (sh, sw) = (attrs.strides[0], attrs.strides[1]);
    let (dh, dw) = (attrs.dilations[0], attrs.dilations[1]);
    kb.for_range(planes, |kb, plane| {
        let in_plane = kb.addr(src, plane, (ih * iw * 4) as i64, 0);
        let out_plane = kb.addr(dst, plane, (oh * ow * 4) as i64, 0);
        kb.for_range(oh, |kb, oy| {
            let in_rows = kb.addr(in_plane, oy, (sh * iw * 4) as i64, 0);
            let out_row = kb.addr(out_plane, oy, (ow * 4) as i64, 0);
            kb.for_quads(ow, |kb, ox| {
                let low = kb.fconst(f32::NEG_INFINITY);
                let mut max = kb.b.ins().splat(F32X4, low);
                for ky in 0..kh {
                    for kx in 0..kw {
                        let tap = ((ky * dh * iw + kx * dw) * 4) as i64;
                        let at = kb.addr(in_rows, ox, (sw * 4) as i64, tap);
                        let v = match sw {
                            1 => kb.load(F32X4, at, 0),
                            // Columns 0..=3 and 3..=6: lanes 0 and 2 of one, 1 and 3 of
                            // the other.
                            2 => {
                                let (a, b) = (kb.load(F32X4, at, 0), kb.load(F32X4, at, 12));
                                kb.shuffle_f32x4(a, b, [0, 2, 5, 7])
                            }
                            _ => {
                                let first = kb.load(F32, at, 0);
                                let mut v = kb.b.ins().splat(F32X4, first);
                                for lane in 1..4u8 {
                                    let e = kb.load(F32, at, i64::from(lane) * (sw * 4) as i64);
                                    v = kb.b.ins().insertlane(v, e, lane);
                                }
                                v
                            }
                        };
                        let greater = kb.b.ins().fcmp(FloatCC::GreaterThan, v, max);
                        max = super::elementwise::pick(kb, greater, v, max);
                    }
                }
                let at = kb.addr(out_row, ox, 4, 0);
                kb.store(max, at, 0);
            });
        });
    });
}

/// ReduceMean over trailing axes, each sum in the interpreter's order (Eigen's vectorized
/// sum, which depends on where the run lies against 16-byte alignment), divided by the
/// count.
pub(crate) fn reduce_mean(
    kb: &mut KernelBuilder,
    node: &Node,
    axes: &[usize],
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let rank = x.shape.len();
    let reduced = |a: usize| axes.is_empty() || axes.contains(&a);
    let first = (0..rank).find(|&a| reduced(a)).unwrap_or(rank);
    if !(first..rank).all(reduced) {
        return reduce_mean_strided(kb, node, &reduced, x, out);
    }
    let count: usize = x.shape[first..].iter().product();
    let rows: usize = x.shape[..first].iter().product();
    if count == 0 {
        return Err(BackendError::unsupported(node, "a mean over no element"));
    }
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    // Row r starts r * count elements in, so its alignment repeats every four rows: one loop
    // per residue, each with its own (compile-time) order.
    for r0 in 0..rows.min(EIGEN_PACKET) {
        let offset = r0 * count % EIGEN_PACKET;
        kb.for_range((rows - r0).div_ceil(EIGEN_PACKET), |kb, j| {
            let r = kb.b.ins().imul_imm_s(j, EIGEN_PACKET as i64);
            let r = kb.b.ins().iadd_imm_s(r, r0 as i64);
            let row = kb.addr(src, r, (count * 4) as i64, 0);
            let sum = eigen_sum(kb, row, count, offset);
            let n = kb.fconst(count as f32);
            let mean = kb.b.ins().fdiv(sum, n);
            kb.store_at(mean, dst, r);
        });
    }
    Ok(())
}

/// ReduceMean over axes that are not all trailing: each sum from 0 over its elements in the
/// input's row-major order (the interpreter's), through tables of byte offsets (one per
/// result, one per reduced element).
fn reduce_mean_strided(
    kb: &mut KernelBuilder,
    node: &Node,
    reduced: &dyn Fn(usize) -> bool,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let shape = &x.shape;
    let strides: Vec<usize> = (0..shape.len())
        .map(|a| shape[a + 1..].iter().product::<usize>() * 4)
        .collect();
    // Byte offsets of every combination of indices along `axes`, row-major.
    let offsets = |axes: Vec<usize>| -> Vec<usize> {
        axes.iter().fold(vec![0usize], |acc, &a| {
            let (extent, stride) = (shape[a], strides[a]);
            acc.iter()
                .flat_map(|&o| (0..extent).map(move |i| o + i * stride))
                .collect()
        })
    };
    let kept = offsets((0..shape.len()).filter(|&a| !reduced(a)).collect());
    let inner = offsets((0..shape.len()).filter(|&a| reduced(a)).collect());
    let too_far = |v: &[usize]| v.iter().any(|&o| o > i32::MAX as usize);
    if inner.is_empty() || too_far(&kept) || too_far(&inner) {
        return Err(BackendError::unsupported(
            node,
            "a mean over no element or too far",
        ));
    }
    let as_i32 = |v: &[usize]| v.iter().map(|&o| o as i32).collect::<Vec<i32>>();
    let (kept_t, inner_t) = (kb.table_i32(&as_i32(&kept)), kb.table_i32(&as_i32(&inner)));
    let count = inner.len();
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    kb.for_range(kept.len(), |kb, o| {
        let base = kb.load_at(I32, kept_t, o);
        let base = kb.b.ins().sextend(I64, base);
        let base = kb.b.ins().iadd(src, base);
        let zero = kb.fconst(0.0);
        let sum = kb.fold_range(count, vec![zero], |kb, i, s| {
            let off = kb.load_at(I32, inner_t, i);
            let off = kb.b.ins().sextend(I64, off);
            let at = kb.b.ins().iadd(base, off);
            let v = kb.load(F32, at, 0);
            vec![kb.b.ins().fadd(s[0], v)]
        })[0];
        let n = kb.fconst(count as f32);
        let mean = kb.b.ins().fdiv(sum, n);
        kb.store_at(mean, dst, o);
    });
    Ok(())
}

/// Lanes of Eigen's f32 packets in onnxruntime's build (SSE).
const EIGEN_PACKET: usize = 4;

/// The sum of `len` f32 at `row`, a run `offset` elements past 16-byte alignment, in the order
/// of the interpreter's `eigen_sum`: aligned packets alternately into two accumulators, then
/// the lanes as `(l0 + l2) + (l1 + l3)`, then the unaligned head and the tail in order.
fn eigen_sum(kb: &mut KernelBuilder, row: Value, len: usize, offset: usize) -> Value {
    const P: usize = EIGEN_PACKET;
    let at = |kb: &mut KernelBuilder, i: usize| kb.load(F32, row, (i * 4) as i64);
    let start = ((P - offset % P) % P).min(len);
    let body = len - start;
    let (aligned, aligned2) = (body / P * P, body / (2 * P) * (2 * P));
    if aligned == 0 {
        let first = at(kb, 0);
        return (1..len).fold(first, |s, i| {
            let v = at(kb, i);
            kb.b.ins().fadd(s, v)
        });
    }
    let packet = |kb: &mut KernelBuilder, base: Value, i: usize| -> Vec<Value> {
        (0..P)
            .map(|l| kb.load(F32, base, ((i + l) * 4) as i64))
            .collect()
    };
    let add = |kb: &mut KernelBuilder, a: &[Value], b: &[Value]| -> Vec<Value> {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| kb.b.ins().fadd(a, b))
            .collect()
    };
    let mut p0 = packet(kb, row, start);
    if aligned > P {
        let p1 = packet(kb, row, start + P);
        // Pairs of packets from start + 2P up to start + aligned2.
        let pairs = (aligned2 - 2 * P) / (2 * P);
        let init: Vec<Value> = p0.iter().chain(&p1).copied().collect();
        let acc = kb.fold_range(pairs, init, |kb, i, acc| {
            let base = kb.addr(row, i, (2 * P * 4) as i64, ((start + 2 * P) * 4) as i64);
            let (a, b) = (packet(kb, base, 0), packet(kb, base, P));
            let mut next = add(kb, &acc[..P], &a);
            next.extend(add(kb, &acc[P..], &b));
            next
        });
        p0 = add(kb, &acc[..P], &acc[P..]);
        if aligned > aligned2 {
            let last = packet(kb, row, start + aligned2);
            p0 = add(kb, &p0, &last);
        }
    }
    let even = kb.b.ins().fadd(p0[0], p0[2]);
    let odd = kb.b.ins().fadd(p0[1], p0[3]);
    let mut sum = kb.b.ins().fadd(even, odd);
    for i in (0..start).chain(start + aligned..len) {
        let v = at(kb, i);
        sum = kb.b.ins().fadd(sum, v);
    }
    sum
}

/// GlobalAveragePool (and an AveragePool whose window is the whole plane): per plane, MLAS's
/// global kernel as the interpreter computes it: four lane sums from 0 over whole vectors,
/// `(l0 + l2) + (l1 + l3)`, the tail in order, divided by the count.
pub(crate) fn global_average_pool(
    kb: &mut KernelBuilder,
    node: &Node,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    if x.shape.len() < 2 {
        return Err(BackendError::unsupported(
            node,
            "a global pool of a tensor of rank < 2",
        ));
    }
    let planes: usize = x.shape[..2].iter().product();
    let len: usize = x.shape[2..].iter().product();
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    kb.for_range(planes, |kb, p| {
        let plane = kb.addr(src, p, (len * 4) as i64, 0);
        let zero = kb.fconst(0.0);
        let lanes = kb.fold_range(len / 4, vec![zero; 4], |kb, i, lanes| {
            let base = kb.addr(plane, i, 16, 0);
            (0..4)
                .map(|l| {
                    let v = kb.load(F32, base, (l * 4) as i64);
                    kb.b.ins().fadd(lanes[l], v)
                })
                .collect()
        });
        let even = kb.b.ins().fadd(lanes[0], lanes[2]);
        let odd = kb.b.ins().fadd(lanes[1], lanes[3]);
        let mut sum = kb.b.ins().fadd(even, odd);
        for i in len / 4 * 4..len {
            let v = kb.load(F32, plane, (i * 4) as i64);
            sum = kb.b.ins().fadd(sum, v);
        }
        let n = kb.fconst(len as f32);
        let mean = kb.b.ins().fdiv(sum, n);
        kb.store_at(mean, dst, p);
    });
    Ok(())
}

/// Taps of the largest window an unrolled AveragePool kernel takes.
const MAX_AVERAGE_TAPS: usize = 1024;

/// AveragePool (any number of spatial axes) on the route onnxruntime takes
/// ([`AveragePoolRoute`], decided on the pool's own rank, so a 1-D pool never takes the
/// vector kernel, which MLAS has only in 2-D and 3-D), so that every sum rounds as the
/// interpreter's: the global kernel; MLAS's vector kernel (per tap of the last axis, a column:
/// the taps of the leading axes inside, row-major, from the first in 2-D and from 0 in 3-D;
/// then the columns, padding as +0.0); or the generic one (the taps inside, row-major, from
/// 0).
pub(crate) fn average_pool(
    kb: &mut KernelBuilder,
    node: &Node,
    attrs: &PoolAttrs,
    x: &Operand,
    out: &Operand,
) -> Result<(), BackendError> {
    let PoolShape {
        n,
        c,
        image,
        out_ext,
    } = PoolShape::of(node, x, out)?;
    let rank = image.len();
    let route = average_pool_route(attrs, image);
    if route == AveragePoolRoute::Global {
        return global_average_pool(kb, node, x, out);
    }
    let kernel = &attrs.kernel;
    let window_taps = kernel
        .iter()
        .try_fold(1usize, |t, &k| t.checked_mul(k))
        .filter(|&t| t <= MAX_AVERAGE_TAPS);
    if window_taps.is_none() {
        return Err(BackendError::unsupported(
            node,
            format!("a {kernel:?} window is larger than the native AveragePool unrolls"),
        ));
    }
    let windows: Vec<Vec<AxisWindow>> = (0..rank)
        .map(|d| axis_windows(attrs, d, image[d], out_ext[d]))
        .collect();
    // Per axis: per output index and tap, the input coordinate or -1; per output index, the
    // taps inside the input, or (count_include_pad, generic route) inside the padded extent.
    let include_pad = attrs.count_include_pad;
    let padded_counts = include_pad && route == AveragePoolRoute::Generic;
    let coord_t: Vec<Value> = windows
        .iter()
        .map(|axis| {
            let coordinates: Vec<i32> = axis
                .iter()
                .flat_map(|w| w.taps.iter().map(|t| t.map_or(-1, |c| c as i32)))
                .collect();
            kb.table_i32(&coordinates)
        })
        .collect();
    let count_t: Vec<Value> = windows
        .iter()
        .map(|axis| {
            let counts: Vec<i32> = axis
                .iter()
                .map(|w| {
                    if padded_counts {
                        w.padded
                    } else {
                        w.inputs().count()
                    }
                })
                .map(|c| c as i32)
                .collect();
            kb.table_i32(&counts)
        })
        .collect();
    let in_strides = row_major_strides(image);
    let (in_pixels, out_pixels) = (
        image.iter().product::<usize>(),
        out_ext.iter().product::<usize>(),
    );
    let last = rank - 1;
    let (lead_taps, all_taps) = (kernel_taps(&kernel[..last]), kernel_taps(kernel));
    let (src, dst) = (x.f32_ptr(kb), out.ptr);
    kb.for_range(n * c, |kb, plane| {
        let in_plane = kb.addr(src, plane, (in_pixels * 4) as i64, 0);
        let out_plane = kb.addr(dst, plane, (out_pixels * 4) as i64, 0);
        for_each_position(kb, out_ext, &mut |kb, o| {
            // Per axis, the input coordinates of the kernel's taps along it at `o`.
            let coords: Vec<Vec<Value>> = (0..rank)
                .map(|d| {
                    (0..kernel[d])
                        .map(|t| {
                            let at =
                                kb.addr(coord_t[d], o[d], (kernel[d] * 4) as i64, (t * 4) as i64);
                            kb.load(I32, at, 0)
                        })
                        .collect()
                })
                .collect();
            // The value of a tap and whether it lies inside the input (outside, its address
            // is clamped to the plane's first element and never used).
            let tap = |kb: &mut KernelBuilder, t: &[usize]| -> (Value, Value) {
                let mut inside: Option<Value> = None;
                let mut at: Option<Value> = None;
                for d in 0..rank {
                    let coord = coords[d][t[d]];
                    let in_axis =
                        kb.b.ins()
                            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, coord, 0);
                    inside = Some(match inside {
                        None => in_axis,
                        Some(i) => kb.b.ins().band(i, in_axis),
                    });
                    at = Some(add_scaled(kb, at, coord, in_strides[d]));
                }
                let (inside, at) = (
                    inside.expect("a pool has a spatial axis"),
                    at.expect("a pool has a spatial axis"),
                );
                let zero = kb.iconst32(0);
                let at = kb.select(inside, at, zero);
                let at = kb.b.ins().sextend(I64, at);
                (kb.load_at(F32, in_plane, at), inside)
            };
            let sum = if route == AveragePoolRoute::Vector {
                let mut sum = None;
                for kx in 0..kernel[last] {
                    // The column's taps inside: in 2-D from the first, in 3-D from 0; +0.0 if
                    // none.
                    let (mut column, mut started) = (kb.fconst(0.0), kb.b.ins().iconst(I8, 0));
                    for lead in &lead_taps {
                        let mut t = lead.clone();
                        t.push(kx);
                        let (v, inside) = tap(kb, &t);
                        let added = kb.b.ins().fadd(column, v);
                        let next = if rank == 2 {
                            kb.select(started, added, v)
                        } else {
                            added
                        };
                        column = kb.select(inside, next, column);
                        started = kb.b.ins().bor(started, inside);
                    }
                    sum = Some(match sum {
                        None => column,
                        Some(s) => kb.b.ins().fadd(s, column),
                    });
                }
                sum.unwrap_or_else(|| kb.fconst(0.0))
            } else {
                let mut sum = kb.fconst(0.0);
                for t in &all_taps {
                    let (v, inside) = tap(kb, t);
                    let added = kb.b.ins().fadd(sum, v);
                    sum = kb.select(inside, added, sum);
                }
                sum
            };
            let divisor = if route == AveragePoolRoute::Vector && include_pad {
                kb.fconst(all_taps.len() as f32)
            } else {
                let mut taps = kb.iconst32(1);
                for d in 0..rank {
                    let count = kb.load_at(I32, count_t[d], o[d]);
                    taps = kb.b.ins().imul(taps, count);
                }
                let taps = kb.b.ins().fcvt_from_sint(F32, taps);
                if route == AveragePoolRoute::Vector {
                    // MLAS divides an empty window's zero by 1.
                    let one = kb.fconst(1.0);
                    let small = kb.b.ins().fcmp(FloatCC::LessThan, taps, one);
                    kb.select(small, one, taps)
                } else {
                    taps
                }
            };
            let mean = kb.b.ins().fdiv(sum, divisor);
            let opix = flat_index(kb, o, out_ext);
            kb.store_at(mean, out_plane, opix);
        })
    });
    Ok(())
}
