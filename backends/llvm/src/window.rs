//! Where a convolution window reads and writes: the index of a pixel in row-major planes
//! (an output pixel, an input tap), the same arithmetic for every kernel.

use inkwell::values::IntValue;

use crate::emitter::{Built, KernelEmitter};

/// A convolution's window over input planes of `image` = `(h, w)` pixels (padding, where a
/// kernel takes it, is [`Window::tap_padded`]'s).
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

    /// [`Window::tap`] of an image padded by `(top, left)`: the pixel, and, when there is
    /// padding, whether the tap lies inside the image (an `i1`). A tap in the padding reads
    /// pixel `(0, 0)` of the plane, in bounds, which the caller counts as nothing.
    pub fn tap_padded<'ctx>(
        &self,
        e: &KernelEmitter<'ctx, '_>,
        plane: IntValue<'ctx>,
        (oy, ox): (IntValue<'ctx>, IntValue<'ctx>),
        (ky, kx): (usize, usize),
        (top, left): (usize, usize),
    ) -> Built<(IntValue<'ctx>, Option<IntValue<'ctx>>)> {
        if (top, left) == (0, 0) {
            return Ok((self.tap(e, plane, (oy, ox), (ky, kx))?, None));
        }
        let b = &e.builder;
        let coordinate = |o: IntValue<'ctx>, stride: usize, offset: i64, extent: usize| {
            let scaled = b.build_int_mul(o, e.i64(stride as i64), "")?;
            let c = b.build_int_add(scaled, e.i64(offset), "")?;
            // Negative coordinates wrap to huge unsigned ones: one compare for both sides.
            let inside = b.build_int_compare(
                inkwell::IntPredicate::ULT,
                c,
                e.i64(extent as i64),
                "inside",
            )?;
            Ok::<_, inkwell::builder::BuilderError>((c, inside))
        };
        let dy = (ky * self.dilations.0) as i64 - top as i64;
        let dx = (kx * self.dilations.1) as i64 - left as i64;
        let (iy, in_y) = coordinate(oy, self.strides.0, dy, self.image.0)?;
        let (ix, in_x) = coordinate(ox, self.strides.1, dx, self.image.1)?;
        let inside = b.build_and(in_y, in_x, "inside")?;
        let iy = b.build_select(inside, iy, e.i64(0), "")?.into_int_value();
        let ix = b.build_select(inside, ix, e.i64(0), "")?.into_int_value();
        Ok((e.pixel_index(plane, (iy, ix), self.image)?, Some(inside)))
    }
}
