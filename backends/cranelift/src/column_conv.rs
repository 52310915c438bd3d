//! Which convolutions run four neighbouring output columns to a vector
//! (`emit::linear::columns`), and whether they first stage their input: a copy with its
//! padding as zeros, its columns in phases of a column stride, or the integers of scaled
//! activations. The schedule gives a staged layer its workspace and the kernel reads the
//! same decision, so it lives below both.

use bnnc_ir::interp::{integer_first, IntegerFirst};
use bnnc_ir::summation_order::{conv_route, segments, ConvRoute};
use bnnc_ir::{ConvAttrs, ElemType, Graph, Node, TensorType};

/// Whether sums of this result type are exact in f32 in any order: integers (times one
/// power-of-two scale) of at most 24 bits.
pub(crate) fn exact_in_any_order(elem: &ElemType) -> bool {
    elem.exact_scaled().is_some_and(|(t, _)| t.bits() <= 24)
}

/// How a column convolution sums.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ColumnSum {
    /// Exactly, in any order (integers of at most 24 bits, times a power-of-two scale):
    /// multiply-adds, fused where the target has them.
    Exact,
    /// The integers of scaled activations and weights, exact in any order, each sum times
    /// its channel's scale as it is stored (the interpreter's [`IntegerFirst`]).
    Integers(IntegerFirst),
    /// Floats in MLAS's order where that order is one chain of fused multiply-adds per
    /// output over the whole window (its general kernel with one K slice): every lane runs
    /// its output's chain, so the sums are the interpreter's bit for bit.
    Fma,
}

/// A 2-D convolution on the column kernel.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ColumnConv {
    /// The input `(batch, c, h, w)`.
    pub image: (usize, usize, usize, usize),
    /// Padding `(top, left, bottom, right)`.
    pub pads: (usize, usize, usize, usize),
    /// Filters `(m, kh, kw)` in `groups` groups.
    pub filters: (usize, usize, usize),
    pub groups: usize,
    pub out: (usize, usize),
    pub strides: (usize, usize),
    pub dilations: (usize, usize),
    pub sum: ColumnSum,
}

impl ColumnConv {
    /// The plan for a Conv with operand types `types` (input, weights, bias) and result
    /// `out`, if the column kernel computes it: two spatial axes, at least four output
    /// columns, and sums exact or in one MLAS chain each.
    pub(crate) fn of(attrs: &ConvAttrs, types: &[&TensorType], out: &TensorType) -> Option<Self> {
        let (x, w) = (types.first()?, types.get(1)?);
        let (&[batch, c, h, wd], &[m, _, kh, kw], &[_, _, oh, ow]) =
            (x.shape.as_slice(), w.shape.as_slice(), out.shape.as_slice())
        else {
            return None;
        };
        let groups = attrs.group.max(1);
        if ow < 4 || c % groups != 0 || m % groups != 0 {
            return None;
        }
        let (cg, mg) = (c / groups, m / groups);
        let k = cg * kh * kw;
        let sum = if let Some(plan) =
            integer_first(&bnnc_ir::Op::Conv(attrs.clone()), types, &out.shape)
        {
            ColumnSum::Integers(plan)
        } else if exact_in_any_order(&out.elem) {
            ColumnSum::Exact
        } else {
            // The interpreter's route: one K slice for every output, or another order.
            let positions = oh * ow;
            let ConvRoute::General(threading) = conv_route(attrs, &x.shape, cg, mg, positions, k)
            else {
                return None;
            };
            let segs = segments(mg, positions, k, threading, true);
            if !segs.iter().all(|s| s.stride_k >= k) {
                return None;
            }
            ColumnSum::Fma
        };
        let p = &attrs.pads;
        Some(ColumnConv {
            image: (batch, c, h, wd),
            pads: (p[0], p[1], p[2], p[3]),
            filters: (m, kh, kw),
            groups,
            out: (oh, ow),
            strides: (attrs.strides[0], attrs.strides[1]),
            dilations: (attrs.dilations[0], attrs.dilations[1]),
            sum,
        })
    }

    /// The plan of Conv `node` of `graph`, scheduled with a workspace or not, if it runs on
    /// the column kernel: one that needs no workspace, or has it.
    pub(crate) fn scheduled(
        graph: &Graph,
        node: &Node,
        attrs: &ConvAttrs,
        workspace: bool,
    ) -> Option<Self> {
        let types: Vec<&TensorType> = node.inputs.iter().map(|&v| &graph.value(v).ty).collect();
        ColumnConv::of(attrs, &types, &graph.value(node.outputs[0]).ty)?.given(workspace)
    }

    /// This plan, if a step with a workspace or without one (`workspace`) runs it: a staged
    /// layer needs one, and another has none.
    pub(crate) fn given(self, workspace: bool) -> Option<Self> {
        (self.staged() == workspace).then_some(self)
    }

    /// Whether the kernel reads a staged copy of each image: padded, of integers, or split
    /// into column phases.
    pub(crate) fn staged(&self) -> bool {
        let (t, l, b, r) = self.pads;
        t + l + b + r > 0 || self.strides.1 > 1 || matches!(self.sum, ColumnSum::Integers(_))
    }

    /// The padded image `(h, w)`.
    pub(crate) fn padded_image(&self) -> (usize, usize) {
        let (_, _, h, w) = self.image;
        let (t, l, b, r) = self.pads;
        (h + t + b, w + l + r)
    }

    /// How a channel is laid out where the kernel reads it: `(phases, rows, columns)`. With
    /// a column stride `s`, column `x` of a padded row is column `x / s` of phase `x % s`,
    /// so that the inputs of neighbouring output columns under any tap are neighbours.
    pub(crate) fn read_layout(&self) -> (usize, usize, usize) {
        let (h, w) = self.padded_image();
        let s = self.strides.1;
        (s, h, w.div_ceil(s))
    }

    /// Bytes of the workspace a staged layer needs: one image as the kernel reads it.
    pub(crate) fn workspace_bytes(&self) -> Option<usize> {
        let (phases, h, w) = self.read_layout();
        let bytes = [self.image.1, phases, h, w, 4]
            .into_iter()
            .try_fold(1usize, usize::checked_mul)?;
        self.staged().then_some(bytes)
    }
}
