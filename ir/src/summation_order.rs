//! The order in which onnxruntime's MLAS sums, as bnnc's semantics follow it.
//!
//! A float layer's last bit depends on the order of its sums, so the interpreter (the
//! semantics) sums as the reference executor does, and every backend that computes float
//! layers follows the same order. This module holds those decisions, shared by
//! `bnnc_ir::interp` and the backends: how a threaded product splits its columns and strides
//! its reduction ([`segments`], [`k_stride`]), which kernel a convolution takes
//! ([`conv_route`]), and how pooling windows and average-pooling kernels are chosen
//! ([`axis_windows`], [`average_pool_route`]). The kernels themselves stay in the
//! interpreter (`interp/mac.rs`, `interp/pool.rs`) and in each backend.

use crate::op::{ConvAttrs, PoolAttrs};

/// Products this large (M * N * K) run on several threads, 64Ki multiply-adds each
/// (`MLAS_SGEMM_THREAD_COMPLEXITY`), at most 16 (`MLAS_MAXIMUM_THREAD_COUNT`).
const THREAD_COMPLEXITY: f64 = 65536.0;
const MAX_THREADS: usize = 16;

/// How a threaded MLAS product divides the output columns (N) among its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threading {
    /// `MlasGemm`: when N > M, N in blocks of 16 columns shared out evenly.
    Gemm,
    /// `MlasConv`'s segmented path: N in equal strides rounded up to 16.
    Conv,
    /// One thread per batch and group (grouped or batched convolutions): N whole.
    Whole,
}

/// A run of output columns `[start, end)` that MLAS sums with one K stride: every output's
/// sum is an fma chain over each slice of `stride_k` reduction indices, the slices added in
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub start: usize,
    pub end: usize,
    pub stride_k: usize,
}

/// The column segments of an `m x k @ k x n` MLAS product. The thread count follows MLAS from
/// the product's size, assuming the reference machine had the cores to run them all (the
/// reference outputs agree with that); each segment's K stride is [`k_stride`] of its width.
/// `expand_k` is false for Gemm with transA, where MLAS keeps the K stride.
pub fn segments(
    m: usize,
    n: usize,
    k: usize,
    threading: Threading,
    expand_k: bool,
) -> Vec<Segment> {
    let complexity = m as f64 * n as f64 * k as f64;
    let threads = if complexity < THREAD_COMPLEXITY * MAX_THREADS as f64 {
        (complexity / THREAD_COMPLEXITY) as usize + 1
    } else {
        MAX_THREADS
    };
    let mut bounds: Vec<(usize, usize)> = Vec::new();
    match threading {
        Threading::Gemm if n > m && threads > 1 => {
            let blocks = n.div_ceil(16);
            let count = threads.min(blocks).max(1);
            let (each, extra) = (blocks / count, blocks % count);
            for i in 0..count {
                let first = i * each + i.min(extra);
                let len = each + usize::from(i < extra);
                bounds.push(((first * 16).min(n), ((first + len) * 16).min(n)));
            }
        }
        Threading::Conv if threads > 1 => {
            let stride = n.div_ceil(threads).div_ceil(16) * 16;
            let used = if stride >= n {
                1
            } else if stride * (threads - 1) >= n {
                threads - 1
            } else {
                threads
            };
            if used == 1 {
                bounds.push((0, n));
            } else {
                bounds.extend((0..used).map(|i| ((i * stride).min(n), ((i + 1) * stride).min(n))));
            }
        }
        _ => bounds.push((0, n)),
    }
    bounds
        .into_iter()
        .filter(|(start, end)| start < end || n == 0)
        .map(|(start, end)| Segment {
            start,
            end,
            stride_k: k_stride(end - start, k, expand_k),
        })
        .collect()
}

/// How many reduction indices MLAS's general kernel sums in one pass over `n` columns
/// (`MlasSgemmOperation`, `MlasConvOperation`): 128, halved while K is small next to N,
/// doubled (with the N stride halved) while N is small.
pub fn k_stride(n: usize, k: usize, expand_k: bool) -> usize {
    let (mut stride_n, mut stride_k) = (128usize, 128usize);
    if n >= k {
        // (MLAS doubles the N stride alongside; only K matters for the order.)
        while stride_k / 2 >= k.max(1) {
            stride_k /= 2;
        }
    } else if expand_k {
        while stride_n > 16 && stride_n / 2 >= n {
            stride_k *= 2;
            stride_n /= 2;
        }
    }
    stride_k
}

/// Which MLAS kernel computes a convolution's sums (per group: `m` filters, `n` output
/// positions, reduction length `k`), as `MlasConvPrepare` chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvRoute {
    /// The general fma kernel, its columns (output positions) threaded as given.
    General(Threading),
    /// One filter: the M = 1 kernel (`m1_dot`).
    SingleFilter,
    /// One filter whose windows are runs of whole input rows, read in place as a transposed B
    /// (`m1_transposed_one` over the positions).
    FullWidthRows,
    /// One output position with several filters: the N = 1 case with the operands swapped
    /// (`m1_transposed_one` over the filters).
    SinglePosition,
}

/// The route of a convolution's sums (per group: `m` filters, `n` output positions,
/// reduction length `k`; `cg` channels per group).
pub fn conv_route(
    attrs: &ConvAttrs,
    in_shape: &[usize],
    cg: usize,
    m: usize,
    n: usize,
    k: usize,
) -> ConvRoute {
    // Batched or grouped convolutions thread over batch and group, each position run whole.
    let segmented = if in_shape[0] > 1 || attrs.group > 1 {
        Threading::Whole
    } else {
        Threading::Conv
    };
    // A product through MlasGemm (alpha 1, beta 0).
    let gemm = |m: usize, n: usize| match (m, n) {
        (1, _) => ConvRoute::SingleFilter,
        (_, 1) => ConvRoute::SinglePosition,
        _ => ConvRoute::General(Threading::Gemm),
    };
    let unit_strides = attrs.strides.iter().all(|&s| s == 1);
    let no_pads = attrs.pads.iter().all(|&p| p == 0);
    if unit_strides && no_pads {
        if k == cg {
            // Pointwise: the input itself is B.
            return gemm(m, n);
        }
        // MLAS promotes 1-D convolutions to 2-D with a height of 1.
        let spatial = &in_shape[2..];
        let unit_dilations = attrs.dilations.iter().all(|&d| d == 1);
        if spatial.len() <= 2 && unit_dilations && cg == 1 {
            let (h, w) = if spatial.len() == 2 {
                (spatial[0], spatial[1])
            } else {
                (1, spatial[0])
            };
            let (kh, kw) = if attrs.kernel.len() == 2 {
                (attrs.kernel[0], attrs.kernel[1])
            } else {
                (1, attrs.kernel[0])
            };
            if kw == w {
                return match m {
                    1 => ConvRoute::FullWidthRows,
                    _ => ConvRoute::General(Threading::Gemm),
                };
            }
            if kh == h && kw == 1 {
                return gemm(m, n);
            }
        }
    }
    if m > n {
        // Everything expanded first, then one threaded product.
        return gemm(m, n);
    }
    // Segments of output positions, each a product per slice of K.
    match m {
        1 => ConvRoute::SingleFilter,
        _ => ConvRoute::General(segmented),
    }
}

/// The window of one output index along one axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisWindow {
    /// Per tap of the kernel, in order, its input coordinate, or `None` in the padding or
    /// past it.
    pub taps: Vec<Option<usize>>,
    /// Taps inside the padded extent `[-pad_begin, extent + pad_end)` (the count_include_pad
    /// divisor; a ceil_mode window may reach past it).
    pub padded: usize,
}

impl AxisWindow {
    /// Input coordinates of the taps inside the input, in order.
    pub fn inputs(&self) -> impl Iterator<Item = usize> + '_ {
        self.taps.iter().flatten().copied()
    }
}

/// The windows of the `out` output indices along spatial axis `d` of a pooling whose input has
/// `extent` along it.
pub fn axis_windows(attrs: &PoolAttrs, d: usize, extent: usize, out: usize) -> Vec<AxisWindow> {
    let spatial = attrs.kernel.len();
    let (pad_begin, pad_end) = (attrs.pads[d], attrs.pads[spatial + d]);
    (0..out)
        .map(|o| {
            let mut window = AxisWindow {
                taps: Vec::with_capacity(attrs.kernel[d]),
                padded: 0,
            };
            for t in 0..attrs.kernel[d] {
                // Coordinate in the padded frame, where the input starts at pad_begin.
                let p = o * attrs.strides[d] + t * attrs.dilations[d];
                if p < pad_begin + extent + pad_end {
                    window.padded += 1;
                }
                window
                    .taps
                    .push(p.checked_sub(pad_begin).filter(|&c| c < extent));
            }
            window
        })
        .collect()
}

/// Which of onnxruntime's AveragePool kernels sums a pooling's windows (see
/// `average_pool`): backends follow the same route to round as the interpreter does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AveragePoolRoute {
    /// MLAS's global kernel: the window is the whole plane (`mlas_global_mean`).
    Global,
    /// MLAS's vectorized 2-D / 3-D kernel: per output row, column sums over the window's
    /// rows, then sums of those columns (`mlas_vector_average`).
    Vector,
    /// The taps inside the input summed from 0 in row-major order.
    Generic,
}

/// The route of an AveragePool over input planes of extents `spatial`.
pub fn average_pool_route(attrs: &PoolAttrs, spatial: &[usize]) -> AveragePoolRoute {
    let n = spatial.len();
    let mlas =
        attrs.dilations.iter().all(|&d| d == 1) && !(attrs.ceil_mode && attrs.count_include_pad);
    let whole_plane = attrs.kernel == spatial
        && attrs.strides.iter().all(|&s| s == 1)
        && attrs.pads.iter().all(|&p| p == 0);
    if mlas && whole_plane {
        return AveragePoolRoute::Global;
    }
    let buffer_fits = match (
        attrs.pads.get(n.wrapping_sub(1)),
        attrs.pads.get((2 * n).wrapping_sub(1)),
        spatial.last(),
    ) {
        (Some(&l), Some(&r), Some(&w)) => l.saturating_add(r).saturating_add(w) <= VECTOR_BUFFER,
        _ => false,
    };
    let vector = mlas
        && (n == 2 || n == 3)
        && attrs.strides.last().is_some_and(|&s| s <= 2)
        && attrs.kernel.iter().all(|&k| k <= 32)
        && buffer_fits;
    if vector {
        AveragePoolRoute::Vector
    } else {
        AveragePoolRoute::Generic
    }
}

/// Room of MLAS's reduction buffer for one padded input row (2048 elements, less 3 kept for
/// reading a whole vector past the end).
const VECTOR_BUFFER: usize = 2048 - 3;
