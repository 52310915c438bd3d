//! The taps of a window (convolution or pooling) of any number of spatial axes at one output
//! position, and the loops over output positions.
//!
//! The geometry is `bnnc_ir::window`'s (the one definition: kernel, strides, dilations and
//! pads per axis), read for an input of given spatial extents. Kernels loop over output
//! positions with [`for_each_position`], one nested loop per axis, and visit a window's taps
//! row-major, the order in which the interpreter visits them (`interp/linear.rs` gathers a
//! convolution's patch channel-major then taps row-major, `interp/pool.rs` walks a pool's
//! window row-major).
//!
//! Why the geometry is generalised rather than other ranks viewed as 2-D: a 1-D window is the
//! 2-D window of height 1 (the same taps in the same order; MLAS and the interpreter's
//! `conv_route` even promote a 1-D convolution so), but a 3-D window is no 2-D window of any
//! view of its image, since its taps are not a box in any two axes of it. Float sums over a
//! 3-D window must still run in the interpreter's order (its patch order for convolutions, the
//! route `average_pool_route` picks for the pool's own rank), so the kernels take windows of
//! any rank, and 1-D takes the same code (one axis) rather than a second path. Only where a
//! kernel is offered to another code generator, whose kernels are 2-D, is a 1-D convolution
//! described as 2-D of height 1 (integer sums, exact in any order).

use bnnc_ir::ConvAttrs;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::KernelBuilder;

/// A window over an image of extents `image` (one per spatial axis): per axis, the kernel
/// extent, stride, dilation and leading pad.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub image: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pads: Vec<usize>,
}

/// One tap: its input pixel (row-major within the image; 0 for a tap outside it), and
/// whether it is inside (`None` when every tap always is).
#[derive(Clone, Copy)]
pub(crate) struct Tap {
    pub pixel: Value,
    pub inside: Option<Value>,
}

/// Row-major strides of `extents`, in elements.
pub(crate) fn row_major_strides(extents: &[usize]) -> Vec<usize> {
    (0..extents.len())
        .map(|a| extents[a + 1..].iter().product())
        .collect()
}

/// The row-major indices of the taps of a kernel of extents `kernel`, in order.
pub(crate) fn kernel_taps(kernel: &[usize]) -> Vec<Vec<usize>> {
    kernel.iter().fold(vec![Vec::new()], |acc, &k| {
        acc.iter()
            .flat_map(|prefix| {
                (0..k).map(move |t| {
                    let mut v = prefix.clone();
                    v.push(t);
                    v
                })
            })
            .collect()
    })
}

/// `body(coords)` for every output position of extents `out`, row-major: one loop per axis.
pub(crate) fn for_each_position(
    kb: &mut KernelBuilder,
    out: &[usize],
    body: &mut dyn FnMut(&mut KernelBuilder, &[Value]),
) {
    fn nest(
        kb: &mut KernelBuilder,
        out: &[usize],
        coords: &mut Vec<Value>,
        body: &mut dyn FnMut(&mut KernelBuilder, &[Value]),
    ) {
        match out.split_first() {
            None => body(kb, coords),
            Some((&extent, rest)) => kb.for_range(extent, |kb, o| {
                coords.push(o);
                nest(kb, rest, coords, body);
                coords.pop();
            }),
        }
    }
    nest(kb, out, &mut Vec::with_capacity(out.len()), body);
}

/// `sum + coord * stride` (`coord * stride` without a sum), kernels being built unoptimized:
/// no multiply by a unit stride, no add to nothing.
pub(crate) fn add_scaled(
    kb: &mut KernelBuilder,
    sum: Option<Value>,
    coord: Value,
    stride: usize,
) -> Value {
    let term = kb.mul_imm(coord, stride as i64);
    match sum {
        None => term,
        Some(s) => kb.b.ins().iadd(s, term),
    }
}

/// The row-major index of position `coords` among positions of extents `extents`.
pub(crate) fn flat_index(kb: &mut KernelBuilder, coords: &[Value], extents: &[usize]) -> Value {
    let strides = row_major_strides(extents);
    let mut index = None;
    for (&c, &s) in coords.iter().zip(&strides) {
        index = Some(add_scaled(kb, index, c, s));
    }
    index.unwrap_or_else(|| kb.iconst(0))
}

impl Window {
    /// The window of `window` (the IR's) over an image of spatial extents `image`.
    pub fn new(window: bnnc_ir::window::Window<'_>, image: &[usize]) -> Self {
        let rank = image.len();
        Window {
            image: image.to_vec(),
            kernel: window.kernel.to_vec(),
            strides: window.strides.to_vec(),
            dilations: window.dilations.to_vec(),
            pads: (0..rank).map(|a| window.axis_pads(a).0).collect(),
        }
    }

    /// Taps per window.
    pub fn taps_per_window(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Whether some window of the output positions `out` reaches outside the image
    /// (padding, or ceil mode's partial windows).
    pub fn reaches_outside(&self, out: &[usize]) -> bool {
        self.pads.iter().any(|&p| p != 0)
            || (0..self.image.len()).any(|a| {
                out[a] > 0
                    && (out[a] - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a]
                        >= self.image[a]
            })
    }

    /// The taps, row-major, of the window of output position `out` (one coordinate per
    /// axis). With `check`, each tap tests its coordinates (padding, ceil mode); otherwise
    /// all are inside.
    pub fn taps(&self, kb: &mut KernelBuilder, out: &[Value], check: bool) -> Vec<Tap> {
        let rank = self.image.len();
        let in_strides = row_major_strides(&self.image);
        // The window's first coordinate along each axis (before padding) and its first
        // pixel; each tap is a constant offset from them, so the position's arithmetic is
        // done once, not per tap.
        let starts: Vec<Value> = (0..rank)
            .map(|a| {
                let s = kb.mul_imm(out[a], self.strides[a] as i64);
                kb.add_imm(s, -(self.pads[a] as i64))
            })
            .collect();
        let mut origin: Option<Value> = None;
        for a in 0..rank {
            origin = Some(add_scaled(kb, origin, starts[a], in_strides[a]));
        }
        let origin = origin.expect("a window has a spatial axis");
        // Per axis and kernel index, whether that coordinate lies inside the image, tested
        // once per axis. Unsigned compares also reject negative coordinates.
        let inside_axis: Vec<Vec<Value>> = if check {
            (0..rank)
                .map(|a| {
                    (0..self.kernel[a])
                        .map(|t| {
                            let c = kb.add_imm(starts[a], (t * self.dilations[a]) as i64);
                            kb.b.ins()
                                .icmp_imm_s(IntCC::UnsignedLessThan, c, self.image[a] as i64)
                        })
                        .collect()
                })
                .collect()
        } else {
            Vec::new()
        };
        let zero = check.then(|| kb.iconst(0));
        let mut taps = Vec::with_capacity(self.taps_per_window());
        for tap in kernel_taps(&self.kernel) {
            let offset: i64 = (0..rank)
                .map(|a| (tap[a] * self.dilations[a] * in_strides[a]) as i64)
                .sum();
            let pixel = kb.add_imm(origin, offset);
            let Some(zero) = zero else {
                taps.push(Tap {
                    pixel,
                    inside: None,
                });
                continue;
            };
            let mut inside = inside_axis[0][tap[0]];
            for a in 1..rank {
                inside = kb.b.ins().band(inside, inside_axis[a][tap[a]]);
            }
            // An outside tap reads the image's first pixel, which its user ignores.
            let pixel = kb.select(inside, pixel, zero);
            taps.push(Tap {
                pixel,
                inside: Some(inside),
            });
        }
        taps
    }
}

/// A convolution's receptive field term by term, in im2col order (channel-major, then taps
/// row-major, as weights `(M, C, k...)` are laid out), over an f32 image `(C, spatial...)`:
/// the order of the interpreter's patch, so float sums over the terms in order are its sums.
#[derive(Clone)]
pub(crate) struct Im2col {
    /// Per term: its channel's offset in the image, and per axis its tap's offset from the
    /// window's origin (padding included).
    chan: Value,
    deltas: Vec<Value>,
    image: Vec<usize>,
    out: Vec<usize>,
    strides: Vec<i64>,
    padded: bool,
}

impl Im2col {
    /// The tables of a convolution over `(c, image...)` images with `out` output positions
    /// per axis.
    pub fn new(
        kb: &mut KernelBuilder,
        attrs: &ConvAttrs,
        c: usize,
        image: &[usize],
        out: &[usize],
    ) -> Self {
        let window = Window::new(attrs.window(), image);
        let plane: usize = image.iter().product();
        let taps = kernel_taps(&window.kernel);
        let k = c * taps.len();
        let mut chan = Vec::with_capacity(k);
        let mut deltas = vec![Vec::with_capacity(k); image.len()];
        for ch in 0..c {
            for tap in &taps {
                chan.push((ch * plane) as i32);
                for (a, d) in deltas.iter_mut().enumerate() {
                    d.push((tap[a] * window.dilations[a]) as i32 - window.pads[a] as i32);
                }
            }
        }
        Im2col {
            chan: kb.table_i32(&chan),
            deltas: deltas.iter().map(|d| kb.table_i32(d)).collect(),
            image: image.to_vec(),
            out: out.to_vec(),
            strides: window.strides.iter().map(|&s| s as i64).collect(),
            padded: attrs.pads.iter().any(|&p| p != 0),
        }
    }

    /// The window origin (before padding), one coordinate per axis, of output position `p`
    /// (row-major).
    pub fn origin(&self, kb: &mut KernelBuilder, p: Value) -> Vec<Value> {
        let mut origin = vec![p; self.out.len()];
        let mut rest = p;
        for a in (0..self.out.len()).rev() {
            let extent = self.out[a] as i64;
            let coord = if a == 0 {
                rest
            } else {
                let q = kb.b.ins().udiv_imm_s(rest, extent);
                let qe = kb.b.ins().imul_imm_s(q, extent);
                let coord = kb.b.ins().isub(rest, qe);
                rest = q;
                coord
            };
            origin[a] = kb.b.ins().imul_imm_s(coord, self.strides[a]);
        }
        origin
    }

    /// Term `kk` of the window at `origin` in `image`: its f32 value, 0 in the padding.
    pub fn load(&self, kb: &mut KernelBuilder, image: Value, origin: &[Value], kk: Value) -> Value {
        let ch = kb.load_at(I32, self.chan, kk);
        let mut at = kb.b.ins().sextend(I64, ch);
        let mut inside: Option<Value> = None;
        let in_strides = row_major_strides(&self.image);
        for (a, &o) in origin.iter().enumerate() {
            let d = kb.load_at(I32, self.deltas[a], kk);
            let d = kb.b.ins().sextend(I64, d);
            let coord = kb.b.ins().iadd(o, d);
            at = add_scaled(kb, Some(at), coord, in_strides[a]);
            if self.padded {
                let in_axis =
                    kb.b.ins()
                        .icmp_imm_s(IntCC::UnsignedLessThan, coord, self.image[a] as i64);
                inside = Some(match inside {
                    None => in_axis,
                    Some(i) => kb.b.ins().band(i, in_axis),
                });
            }
        }
        let Some(inside) = inside else {
            return kb.load_at(F32, image, at);
        };
        // A tap in the padding reads the first element and counts as 0.
        let zero_at = kb.iconst(0);
        let safe = kb.select(inside, at, zero_at);
        let v = kb.load_at(F32, image, safe);
        let zero = kb.fconst(0.0);
        kb.select(inside, v, zero)
    }
}
