//! The taps of a 2-D window (convolution or pooling) at one output position.

use cranelift_codegen::ir::condcodes::IntCC;
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
        let mut taps = Vec::with_capacity(self.kernel.0 * self.kernel.1);
        for ky in 0..self.kernel.0 {
            for kx in 0..self.kernel.1 {
                let y0 = kb.b.ins().imul_imm_s(oy, self.strides.0 as i64);
                let iy =
                    kb.b.ins()
                        .iadd_imm_s(y0, (ky * self.dilations.0) as i64 - self.pads.0 as i64);
                let x0 = kb.b.ins().imul_imm_s(ox, self.strides.1 as i64);
                let ix =
                    kb.b.ins()
                        .iadd_imm_s(x0, (kx * self.dilations.1) as i64 - self.pads.1 as i64);
                let row = kb.b.ins().imul_imm_s(iy, w);
                let pixel = kb.b.ins().iadd(row, ix);
                if !check {
                    taps.push(Tap {
                        pixel,
                        inside: None,
                    });
                    continue;
                }
                // Unsigned compares also reject negative coordinates.
                let in_y = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, iy, h);
                let in_x = kb.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ix, w);
                let inside = kb.b.ins().band(in_y, in_x);
                // An outside tap reads the image's first pixel, which its user ignores.
                let zero = kb.iconst(0);
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
