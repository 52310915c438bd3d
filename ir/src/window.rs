//! The sliding window of convolutions and pooling: per spatial axis a kernel extent, a stride,
//! a dilation and padding at both ends, and how many windows fit. Type inference gives Conv,
//! MaxPool and AveragePool (and their lowered forms) their spatial extents with it; the
//! interpreter re-derives them before it indexes.

use crate::op::{ConvAttrs, PoolAttrs};
use crate::types::checked_numel;

/// The most window taps a convolution or pooling may visit per channel plane (output positions
/// times kernel taps): the interpreter lists them, so this bounds its memory and time.
pub const MAX_WINDOW_TAPS: usize = crate::infer::MAX_ELEMENTS;

/// The window of a convolution or a pooling, borrowed from its attributes
/// ([`ConvAttrs::window`], [`PoolAttrs::window`]): one entry per spatial axis, two for pads.
#[derive(Clone, Copy, Debug)]
pub struct Window<'a> {
    pub kernel: &'a [usize],
    pub strides: &'a [usize],
    pub dilations: &'a [usize],
    /// Begins of every spatial axis, then ends (ONNX order).
    pub pads: &'a [usize],
    /// Whether a partial last window counts (pooling's `ceil_mode`; a convolution has none).
    pub ceil_mode: bool,
}

impl ConvAttrs {
    /// The convolution's sliding window.
    pub fn window(&self) -> Window<'_> {
        Window {
            kernel: &self.kernel,
            strides: &self.strides,
            dilations: &self.dilations,
            pads: &self.pads,
            ceil_mode: false,
        }
    }
}

impl PoolAttrs {
    /// The pooling's sliding window.
    pub fn window(&self) -> Window<'_> {
        Window {
            kernel: &self.kernel,
            strides: &self.strides,
            dilations: &self.dilations,
            pads: &self.pads,
            ceil_mode: self.ceil_mode,
        }
    }
}

impl Window<'_> {
    /// The padding before and after spatial axis `axis`.
    pub fn axis_pads(&self, axis: usize) -> (usize, usize) {
        (self.pads[axis], self.pads[self.kernel.len() + axis])
    }

    /// Checks that the window has an entry per spatial axis of an input of shape `x`
    /// (`N, C, spatial...`), and two pads.
    pub fn check_rank(&self, x: &[usize]) -> Result<(), String> {
        let rank = x.len();
        if rank < 3 {
            return Err(format!(
                "input has rank {rank}, expected at least 3 (N, C, spatial...)"
            ));
        }
        let n = rank - 2;
        for (what, len, want) in [
            ("kernel extents", self.kernel.len(), n),
            ("strides", self.strides.len(), n),
            ("dilations", self.dilations.len(), n),
            ("pads", self.pads.len(), 2 * n),
        ] {
            if len != want {
                return Err(format!(
                    "{len} {what} for an input of rank {rank}, expected {want}"
                ));
            }
        }
        Ok(())
    }

    /// The number of windows along each spatial axis of an input of shape `x`
    /// (`N, C, spatial...`): the result's spatial extents. The windows may visit at most
    /// [`MAX_WINDOW_TAPS`] taps per channel plane.
    pub fn output_extents(&self, x: &[usize]) -> Result<Vec<usize>, String> {
        self.check_rank(x)?;
        let out = (0..self.kernel.len())
            .map(|a| {
                output_extent(
                    x[a + 2],
                    self.kernel[a],
                    self.strides[a],
                    self.dilations[a],
                    self.axis_pads(a),
                    self.ceil_mode,
                )
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let taps = checked_numel(&out).and_then(|o| o.checked_mul(checked_numel(self.kernel)?));
        match taps {
            Some(taps) if taps <= MAX_WINDOW_TAPS => Ok(out),
            _ => Err(format!(
                "a kernel of {:?} over {out:?} output positions visits more than \
                 {MAX_WINDOW_TAPS} taps per channel, bnnc's limit",
                self.kernel
            )),
        }
    }
}

impl Window<'_> {
    /// For every output position of `out` (row-major) and every tap of the kernel
    /// (row-major), the offset of the input cell it reads within a channel plane of extents
    /// `input`, or `None` for a tap in the padding. Convolutions gather their patches with it
    /// (the interpreter, and the host code of the dataflow plan).
    pub fn tap_offsets(&self, input: &[usize], out: &[usize]) -> Vec<Option<usize>> {
        let spatial = input.len();
        let mut in_strides = vec![1usize; spatial];
        for d in (0..spatial.saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * input[d + 1];
        }
        let (positions, taps): (usize, usize) =
            (out.iter().product(), self.kernel.iter().product());
        let mut offsets = Vec::with_capacity(positions * taps);
        let mut pos = vec![0usize; spatial];
        for _ in 0..positions {
            let mut tap = vec![0usize; spatial];
            for _ in 0..taps {
                let mut offset = Some(0usize);
                for d in 0..spatial {
                    let coord = (pos[d] * self.strides[d] + tap[d] * self.dilations[d])
                        .checked_sub(self.pads[d]);
                    offset = match (offset, coord) {
                        (Some(o), Some(c)) if c < input[d] => Some(o + c * in_strides[d]),
                        _ => None,
                    };
                }
                offsets.push(offset);
                advance(&mut tap, self.kernel);
            }
            advance(&mut pos, out);
        }
        offsets
    }
}

/// Row-major odometer step of `index` within `extents`.
fn advance(index: &mut [usize], extents: &[usize]) {
    for a in (0..index.len()).rev() {
        index[a] += 1;
        if index[a] < extents[a] {
            return;
        }
        index[a] = 0;
    }
}

/// The cells a kernel of `kernel` taps `dilation` apart covers, `None` on overflow.
pub fn span(kernel: usize, dilation: usize) -> Option<usize> {
    kernel.checked_sub(1)?.checked_mul(dilation)?.checked_add(1)
}

/// The number of windows along one axis of `input` cells with `pads` around it.
///
/// With `ceil_mode` a partial last window counts, as long as it starts inside the input or the
/// left padding (the ONNX and PyTorch rule).
pub fn output_extent(
    input: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    pads: (usize, usize),
    ceil_mode: bool,
) -> Result<usize, String> {
    if kernel == 0 || stride == 0 || dilation == 0 {
        return Err(format!(
            "kernel {kernel}, stride {stride} and dilation {dilation} must be positive"
        ));
    }
    let span = span(kernel, dilation).ok_or("kernel span overflows")?;
    let padded = input
        .checked_add(pads.0)
        .and_then(|p| p.checked_add(pads.1))
        .ok_or("padded extent overflows")?;
    if padded < span {
        return Err(format!(
            "a window of {span} does not fit in the padded extent {padded}"
        ));
    }
    let room = padded - span;
    let mut count = room / stride + 1;
    if ceil_mode && room % stride != 0 {
        count += 1;
        // The partial window must start before the end of the input (+ left padding).
        if (count - 1) * stride >= input + pads.0 {
            count -= 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_along_one_axis() {
        // 5 cells, kernel 3: 3 windows at stride 1, 2 at stride 2.
        assert_eq!(output_extent(5, 3, 1, 1, (0, 0), false), Ok(3));
        assert_eq!(output_extent(5, 3, 2, 1, (0, 0), false), Ok(2));
        // Padding 1 on both sides keeps the extent.
        assert_eq!(output_extent(5, 3, 1, 1, (1, 1), false), Ok(5));
        // Dilation 2 spreads 3 taps over 5 cells.
        assert_eq!(span(3, 2), Some(5));
        assert_eq!(output_extent(5, 3, 1, 2, (0, 0), false), Ok(1));
        // 7 cells, kernel 2, stride 2: 3 whole windows; ceil mode counts the partial fourth...
        assert_eq!(output_extent(7, 2, 2, 1, (0, 0), false), Ok(3));
        assert_eq!(output_extent(7, 2, 2, 1, (0, 0), true), Ok(4));
        // ...but not one that would start in the right padding.
        assert_eq!(output_extent(4, 2, 2, 1, (0, 1), false), Ok(2));
        assert_eq!(output_extent(4, 2, 2, 1, (0, 1), true), Ok(2));
        assert!(output_extent(2, 3, 1, 1, (0, 0), false).is_err());
        assert!(output_extent(5, 0, 1, 1, (0, 0), false).is_err());
        assert!(output_extent(usize::MAX, 1, 1, 1, (1, 0), false).is_err());
        assert_eq!(span(0, 1), None);
    }

    #[test]
    fn extents_of_attributes() {
        let pool = PoolAttrs {
            kernel: vec![2, 3],
            strides: vec![2, 1],
            dilations: vec![1, 1],
            pads: vec![0, 1, 0, 1],
            ceil_mode: true,
            count_include_pad: false,
        };
        assert_eq!(pool.window().axis_pads(1), (1, 1));
        assert_eq!(pool.window().output_extents(&[1, 4, 5, 6]), Ok(vec![3, 6]));
        let conv = ConvAttrs {
            kernel: vec![3],
            strides: vec![1],
            dilations: vec![1],
            pads: vec![0, 0],
            group: 1,
        };
        assert_eq!(conv.window().output_extents(&[1, 2, 8]), Ok(vec![6]));
        let err = conv.window().output_extents(&[1, 2, 8, 8]).unwrap_err();
        assert_eq!(err, "1 kernel extents for an input of rank 4, expected 2");
        assert!(conv.window().output_extents(&[1, 2]).is_err());
    }
}
