//! The taps of a 2-D window (convolution or pooling) at one output position.

use bnnc_ir::ConvAttrs;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

use super::KernelBuilder;

/// A 2-D window over an `h x w` image: kernel extent, strides, dilations and leading pads,
/// per axis.
pub(crate) struct Window {
    pub image: (usize, usize),
    pub kernel: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub pads: (usize, usize),
}

/// One tap: its input pixel (row-major within the image; 0 for a tap outside it), and
/// whether it is inside (`None` when every tap always is).
#[derive(Clone, Copy)]
pub(crate) struct Tap {
    pub pixel: Value,
    pub inside: Option<Value>,
}

impl Window {
    /// The taps, row-major, of the window of output `(oy, ox)`. With `check`, each tap
    /// tests its coordinates (padding, ceil mode); otherwise all are inside.
    pub fn taps(&self, kb: &mut KernelBuilder, oy: Value, ox: Value, check: bool) -> Vec<Tap> {
        let (h, w) = (self.image.0 as i64, self.image.1 as i64);
        // The window's first row and column (before padding); each tap is an offset from
        // them, so the position's arithmetic is done once, not per tap.
        let y0 = kb.mul_imm(oy, self.strides.0 as i64);
        let y0 = kb.add_imm(y0, -(self.pads.0 as i64));
        let x0 = kb.mul_imm(ox, self.strides.1 as i64);
        let x0 = kb.add_imm(x0, -(self.pads.1 as i64));
        let row0 = kb.mul_imm(y0, w);
        let origin = kb.b.ins().iadd(row0, x0);
        let rows: Vec<i64> = (0..self.kernel.0)
            .map(|ky| (ky * self.dilations.0) as i64)
            .collect();
        let cols: Vec<i64> = (0..self.kernel.1)
            .map(|kx| (kx * self.dilations.1) as i64)
            .collect();
        let mut taps = Vec::with_capacity(rows.len() * cols.len());
        if !check {
            for &dy in &rows {
                for &dx in &cols {
                    let pixel = kb.add_imm(origin, dy * w + dx);
                    taps.push(Tap {
                        pixel,
                        inside: None,
                    });
                }
            }
            return taps;
        }
        // Unsigned compares also reject negative coordinates.
        let in_y: Vec<Value> = rows
            .iter()
            .map(|&dy| {
                let iy = kb.add_imm(y0, dy);
                kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iy, h)
            })
            .collect();
        let in_x: Vec<Value> = cols
            .iter()
            .map(|&dx| {
                let ix = kb.add_imm(x0, dx);
                kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ix, w)
            })
            .collect();
        let zero = kb.iconst(0);
        for (&dy, &in_y) in rows.iter().zip(&in_y) {
            for (&dx, &in_x) in cols.iter().zip(&in_x) {
                let pixel = kb.add_imm(origin, dy * w + dx);
                let inside = kb.b.ins().band(in_y, in_x);
                // An outside tap reads the image's first pixel, which its user ignores.
                let pixel = kb.select(inside, pixel, zero);
                taps.push(Tap {
                    pixel,
                    inside: Some(inside),
                });
            }
        }
        taps
    }
}

/// A convolution's receptive field term by term, in im2col order (channel-major, then taps
/// row-major, as weights `(M, C, KH, KW)` are laid out), over an f32 image `(C, H, W)`.
#[derive(Clone, Copy)]
pub(crate) struct Im2col {
    /// Per term: its channel's offset in the image, and its tap's offsets from the window's
    /// origin (padding included).
    chan: Value,
    dy: Value,
    dx: Value,
    image: (usize, usize),
    strides: (i64, i64),
    padded: bool,
}

impl Im2col {
    /// The tables of a convolution over `(C, H, W)` images.
    pub fn new(
        kb: &mut KernelBuilder,
        attrs: &ConvAttrs,
        (c, h, w): (usize, usize, usize),
    ) -> Self {
        let (kh, kw) = (attrs.kernel[0], attrs.kernel[1]);
        let k = c * kh * kw;
        let (mut chan, mut dys, mut dxs) = (
            Vec::with_capacity(k),
            Vec::with_capacity(k),
            Vec::with_capacity(k),
        );
        for ch in 0..c {
            for ky in 0..kh {
                for kx in 0..kw {
                    chan.push((ch * h * w) as i32);
                    dys.push((ky * attrs.dilations[0]) as i32 - attrs.pads[0] as i32);
                    dxs.push((kx * attrs.dilations[1]) as i32 - attrs.pads[1] as i32);
                }
            }
        }
        Im2col {
            chan: kb.table_i32(&chan),
            dy: kb.table_i32(&dys),
            dx: kb.table_i32(&dxs),
            image: (h, w),
            strides: (attrs.strides[0] as i64, attrs.strides[1] as i64),
            padded: attrs.pads.iter().any(|&p| p != 0),
        }
    }

    /// The window origin (before padding) of output `(oy, ox)`.
    pub fn origin(&self, kb: &mut KernelBuilder, oy: Value, ox: Value) -> (Value, Value) {
        let y0 = kb.b.ins().imul_imm_s(oy, self.strides.0);
        let x0 = kb.b.ins().imul_imm_s(ox, self.strides.1);
        (y0, x0)
    }

    /// Term `kk` of the window at `origin` in `image`: its f32 value, 0 in the padding.
    pub fn load(
        &self,
        kb: &mut KernelBuilder,
        image: Value,
        (y0, x0): (Value, Value),
        kk: Value,
    ) -> Value {
        let (h, w) = self.image;
        let dy = kb.load_at(I32, self.dy, kk);
        let dy = kb.b.ins().sextend(I64, dy);
        let dx = kb.load_at(I32, self.dx, kk);
        let dx = kb.b.ins().sextend(I64, dx);
        let iy = kb.b.ins().iadd(y0, dy);
        let ix = kb.b.ins().iadd(x0, dx);
        let ch = kb.load_at(I32, self.chan, kk);
        let ch = kb.b.ins().sextend(I64, ch);
        let row = kb.b.ins().imul_imm_s(iy, w as i64);
        let at = kb.b.ins().iadd(row, ix);
        let at = kb.b.ins().iadd(at, ch);
        if !self.padded {
            return kb.load_at(F32, image, at);
        }
        // A tap in the padding reads the first element and counts as 0.
        let in_y = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iy, h as i64);
        let in_x = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ix, w as i64);
        let inside = kb.b.ins().band(in_y, in_x);
        let zero_at = kb.iconst(0);
        let safe = kb.select(inside, at, zero_at);
        let v = kb.load_at(F32, image, safe);
        let zero = kb.fconst(0.0);
        kb.select(inside, v, zero)
    }
}
