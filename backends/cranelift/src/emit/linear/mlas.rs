//! Float sums whose last bit depends on their order, summed product by product in the
//! interpreter's order, which is onnxruntime's MLAS ([`bnnc_ir::summation_order`]): its
//! convolution routes, its thread segments and K slices of fused multiply-adds, its M = 1
//! kernels. Native code then gives the interpreter's floats bit for bit. The M = 1 kernels'
//! outputs, whose sums all follow one pattern, run four to a vector, each lane its own sum.

use bnnc_ir::summation_order::{conv_route, segments, ConvRoute, Segment, Threading};
use bnnc_ir::ConvAttrs;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};

use super::layout::{ConvLayout, Product, ProductIo};
use crate::emit::KernelBuilder;

/// [`super::conv`] on floats, in MLAS's order: each group is its own MLAS convolution of `mg`
/// filters over `cg` channels, as onnxruntime runs grouped convolutions.
pub(super) fn conv(kb: &mut KernelBuilder, attrs: &ConvAttrs, layout: &ConvLayout, w_data: &[f32]) {
    let (batch, cg, mg) = (layout.input[0], layout.cg, layout.mg);
    let m = layout.m;
    let (positions, k, dst) = (layout.positions, layout.k, layout.dst);
    let out_image = m * positions;
    // The route of the layer's own shape, whatever its rank, as the interpreter takes it.
    let route = conv_route(attrs, &layout.input, cg, mg, positions, k);
    let segs: Vec<Segment> = match route {
        ConvRoute::General(threading) => segments(mg, positions, k, threading, true),
        _ => Vec::new(),
    };
    // Each group's (mg, k) filters.
    let tables: Vec<Value> = w_data
        .chunks_exact(mg * k)
        .map(|w_g| kb.table_f32(w_g))
        .collect();
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
        for (g, &w_t) in tables.iter().enumerate() {
            for &(start, end, stride) in &ranges {
                // Filter `j` of group `g`, output channel `g * mg + j`.
                let emit_position =
                    |kb: &mut KernelBuilder, p: Value, j: usize, jv: Value, order: Order| {
                        let xa = |kb: &mut KernelBuilder, kk: Value| layout.load(kb, n, g, p, kk);
                        let wa = |kb: &mut KernelBuilder, kk: Value| {
                            let row = kb.addr(w_t, jv, (k * 4) as i64, 0);
                            kb.load_at(F32, row, kk)
                        };
                        // Lanes with the operands swapped (SinglePosition) sum patch x filter.
                        let s = dot(kb, k, order, None, &xa, &wa);
                        let channel = g * mg + j;
                        let cv = kb.iconst(channel as i64);
                        let s = layout.add_bias(kb, cv, s);
                        let at = kb.addr(image, p, 4, (channel * positions * 4) as i64);
                        kb.store(s, at, 0);
                    };
                match route {
                    ConvRoute::General(_) => {
                        let stride = stride.unwrap_or(k);
                        kb.for_range(end - start, |kb, i| {
                            let p = kb.b.ins().iadd_imm_s(i, start as i64);
                            for j in 0..mg {
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
                            for j in 0..mg {
                                let jv = kb.iconst(j as i64);
                                emit_position(kb, p, j, jv, Order::Lanes { j, n: mg });
                            }
                        });
                    }
                }
            }
        }
    });
}

/// [`super::product`] on floats, in MLAS's order: its M = 1 kernels where MLAS takes them,
/// its thread segments otherwise.
pub(super) fn product(kb: &mut KernelBuilder, p: &Product<'_>, io: &ProductIo) {
    let (m, k, n) = p.mkn;
    let trans_a = p.trans_a;
    let load_a = |kb: &mut KernelBuilder, i: Value, kk: Value| io.load_a(kb, i, kk);
    let start_at = |kb: &mut KernelBuilder, i: Value, j: Value| io.start_at(kb, i, j);
    let store = |kb: &mut KernelBuilder, i: Value, j: Value, s: Value| io.store(kb, i, j, s);
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
        if !p.trans_b && n >= 4 {
            groups_in_lanes(kb, (k, n), b_t, io);
        } else if !p.trans_b {
            // Fewer outputs than a vector: one at a time.
            kb.for_range(n, |kb, j| {
                let i = kb.iconst(0);
                let c = start_at(kb, i, j);
                let s = dot(
                    kb,
                    k,
                    Order::Groups,
                    c,
                    &|kb, kk| load_a(kb, i, kk),
                    &|kb, kk| load_b(kb, kk, j),
                );
                store(kb, i, j, s);
            });
        } else {
            // Outputs in whole groups of four reduce their lanes alike: four to a vector;
            // the others one at a time, unrolled (each reduces as its place says).
            let vectored = n - n % 4;
            lanes_in_vectors(kb, (k, n, vectored), b_t, io);
            for j in vectored..n {
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

/// MLAS's M = 1 kernel ([`Order::Groups`]) for outputs `0..n` (`n >= 4`), four outputs to
/// a vector: each lane runs its output's adds in the scalar kernel's order, so the sums are
/// the same bit for bit; four vectors at once (sixteen outputs) overlap their chains. The
/// last vector overlaps the one before where 4 does not divide `n`, computing its outputs
/// again, the same way.
fn groups_in_lanes(kb: &mut KernelBuilder, (k, n): (usize, usize), b_t: Value, io: &ProductIo) {
    use cranelift_codegen::ir::types::F32X4;
    const VECTORS: usize = 4;
    let starts: Vec<usize> = (0..n.div_ceil(4)).map(|q| (4 * q).min(n - 4)).collect();
    let i = kb.iconst(0);
    for block in starts.chunks(VECTORS) {
        let init: Vec<Value> = block
            .iter()
            .map(|&j| match io.start {
                Some(c) => kb.load(F32X4, c, (j * 4) as i64),
                None => {
                    let zero = kb.fconst(0.0);
                    kb.b.ins().splat(F32X4, zero)
                }
            })
            .collect();
        // The products of terms `kk..kk + size`, added left to right, then added to `y`.
        let group = |kb: &mut KernelBuilder, kk: Value, size: usize, y: &[Value]| {
            let mut sums: Vec<Option<Value>> = vec![None; block.len()];
            for r in 0..size {
                let kr = kb.b.ins().iadd_imm_s(kk, r as i64);
                let x = io.load_a(kb, i, kr);
                let xs = kb.b.ins().splat(F32X4, x);
                let row = kb.addr(b_t, kr, (n * 4) as i64, 0);
                for (v, &j) in block.iter().enumerate() {
                    let w = kb.load(F32X4, row, (j * 4) as i64);
                    let p = kb.b.ins().fmul(xs, w);
                    sums[v] = Some(match sums[v] {
                        None => p,
                        Some(s) => kb.b.ins().fadd(s, p),
                    });
                }
            }
            sums.iter()
                .zip(y)
                .map(|(s, &y)| kb.b.ins().fadd(s.expect("a group has a term"), y))
                .collect::<Vec<Value>>()
        };
        let groups = k / 4;
        let mut y = kb.fold_range(groups, init, |kb, g, y| {
            let kk = kb.b.ins().imul_imm_s(g, 4);
            group(kb, kk, 4, &y)
        });
        let mut kk = groups * 4;
        for size in [2usize, 1] {
            if (k - kk) & size != 0 {
                let first = kb.iconst(kk as i64);
                y = group(kb, first, size, &y);
                kk += size;
            }
        }
        for (&j, &v) in block.iter().zip(&y) {
            kb.store(v, io.dst, (j * 4) as i64);
        }
    }
}

/// MLAS's transposed M = 1 kernel ([`Order::Lanes`]) for outputs `0..vectored` (the whole
/// groups of four of `n`, which reduce their eight lanes alike), four outputs to a vector:
/// eight vectors of lanes, each lane its output's sums in the scalar kernel's order.
fn lanes_in_vectors(
    kb: &mut KernelBuilder,
    (k, n, vectored): (usize, usize, usize),
    b_t: Value,
    io: &ProductIo,
) {
    use cranelift_codegen::ir::types::F32X4;
    let i = kb.iconst(0);
    kb.for_range(vectored / 4, |kb, q| {
        let j = kb.b.ins().imul_imm_s(q, 4);
        let zero = kb.fconst(0.0);
        let zeros = kb.b.ins().splat(F32X4, zero);
        let product = |kb: &mut KernelBuilder, kk: Value| {
            let x = io.load_a(kb, i, kk);
            let xs = kb.b.ins().splat(F32X4, x);
            let row = kb.addr(b_t, kk, (n * 4) as i64, 0);
            let at = kb.addr(row, j, 4, 0);
            let w = kb.load(F32X4, at, 0);
            kb.b.ins().fmul(xs, w)
        };
        let l = eight_lanes(kb, k, zeros, &product);
        // Every output of a whole group of four reduces its lanes as output 0 does.
        let y = reduce_lanes(kb, &l, (0, n));
        // C, or 0 as the scalar kernel adds it.
        let c = match io.start {
            Some(c) => {
                let at = kb.addr(c, j, 4, 0);
                kb.load(F32X4, at, 0)
            }
            None => zeros,
        };
        let y = kb.b.ins().fadd(y, c);
        let at = kb.addr(io.dst, j, 4, 0);
        kb.store(y, at, 0);
    });
}

/// How one output's dot product is summed (see [`bnnc_ir::summation_order`]).
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
            let l = eight_lanes(kb, k, zero, &product);
            let y = reduce_lanes(kb, &l, (j, n));
            match start {
                Some(c) => kb.b.ins().fadd(y, c),
                None => y,
            }
        }
    }
}

/// The eight lanes of MLAS's transposed M = 1 kernel over `k` terms (`product(kk)` each,
/// scalars or vectors of four outputs, `zero` of the same type): lane `i` sums the terms
/// `kk % 8 == i` in order, then the masked tail adds 0 * 0 to the lanes past `k % 8` (-0
/// becomes +0).
fn eight_lanes(
    kb: &mut KernelBuilder,
    k: usize,
    zero: Value,
    product: &dyn Fn(&mut KernelBuilder, Value) -> Value,
) -> Vec<Value> {
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
    if !k.is_multiple_of(8) {
        for lane in l.iter_mut().skip(k % 8) {
            *lane = kb.b.ins().fadd(*lane, zero);
        }
    }
    l
}

/// The eight lanes `l` of output `j` of `n` added as MLAS reduces them: in halves of four
/// for the outputs of whole groups of four, in pairs for the last two or three.
fn reduce_lanes(kb: &mut KernelBuilder, l: &[Value], (j, n): (usize, usize)) -> Value {
    let mut add = |x: Value, y: Value| kb.b.ins().fadd(x, y);
    let grouped_by_four = n - n % 4;
    if j < grouped_by_four {
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
    }
}
