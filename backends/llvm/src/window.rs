//! Where a convolution window reads and writes: the index of a pixel in row-major planes
//! (an output pixel, an input tap), the same arithmetic for every kernel.

use inkwell::values::IntValue;

use crate::emitter::{Built, KernelEmitter};

/// A convolution's window over input planes of `image` = `(h, w)` pixels, without padding
/// (the kernels here are offered only unpadded convolutions).
pub(crate) struct Window {
    pub image: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
}

impl<'ctx> KernelEmitter<'ctx, '_> {
    /// The index of pixel `(y, x)` of plane `plane` in row-major planes of `(height,
    /// width)` pixels: `(plane * height + y) * width + x`. A plane is an image of a batch
    /// (channels-last storage, whose pixels hold all channels) or one channel.
    pub fn pixel_index(
        &self,
        plane: IntValue<'ctx>,
        (y, x): (IntValue<'ctx>, IntValue<'ctx>),
        (height, width): (usize, usize),
    ) -> Built<IntValue<'ctx>> {
        let b = &self.builder;
        let rows = b.build_int_mul(plane, self.i64(height as i64), "")?;
        let row = b.build_int_add(rows, y, "row")?;
        let pixels = b.build_int_mul(row, self.i64(width as i64), "")?;
        b.build_int_add(pixels, x, "pixel")
    }
}

impl Window {
    /// The input pixel under tap `(ky, kx)` of output pixel `(oy, ox)`, in plane `plane`
    /// (see [`KernelEmitter::pixel_index`]): at `(oy * stride + ky * dilation, ...)`.
    pub fn tap<'ctx>(
        &self,
        e: &KernelEmitter<'ctx, '_>,
        plane: IntValue<'ctx>,
        (oy, ox): (IntValue<'ctx>, IntValue<'ctx>),
        (ky, kx): (usize, usize),
    ) -> Built<IntValue<'ctx>> {
        let b = &e.builder;
        let y0 = b.build_int_mul(oy, e.i64(self.strides.0 as i64), "")?;
        let iy = b.build_int_add(y0, e.i64((ky * self.dilations.0) as i64), "iy")?;
        let x0 = b.build_int_mul(ox, e.i64(self.strides.1 as i64), "")?;
        let ix = b.build_int_add(x0, e.i64((kx * self.dilations.1) as i64), "ix")?;
        e.pixel_index(plane, (iy, ix), self.image)
    }
}
