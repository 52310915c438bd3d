//! Output stages: what a matrix-product kernel does with its integer dot products. This is
//! the description the schedule decides on (and records in its fused steps) and every kernel
//! reads (Cranelift's XNOR, int16
//! and bit-serial kernels, and the LLVM backend's through [`crate::XnorConvKernel`] and
//! [`crate::PlaneConvKernel`]).
//!
//! A fused threshold becomes integer bounds on the dot product, exact for every integer
//! accumulator: `x >= T` on an ascending channel is `dot >= ceil(T / unit)`, and `x <= T` on
//! a descending one is `-dot >= -floor(T / unit)`, `unit` being the value of one accumulator
//! step.

use bnnc_ir::{ElemType, Graph, Node, Op, Scale, ValueId};

use crate::BackendError;

/// Integer thresholds beyond any accumulator: "always" and "never".
pub(crate) const BEYOND: i64 = 1 << 40;

/// The value of one step of an integer-valued accumulator type: its power-of-two scale,
/// or 1.
pub(crate) fn accumulator_unit(elem: &ElemType) -> f64 {
    match elem {
        ElemType::Scaled(_, Scale::Tensor(s)) => f64::from(*s),
        _ => 1.0,
    }
}

/// What a kernel does with its dot products.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OutputStage {
    /// Stores them as `i32`, NCHW.
    Acc,
    /// Stores bit `sign[m] * dot >= bound[m]` of every channel `m`, packed channels-last.
    Bits { sign: Vec<i64>, bound: Vec<i64> },
    /// Stores the level of a multi-threshold as bit planes, channels-last.
    Levels(Levels),
}

/// A MaxPool on bits that a convolution's output stage runs (the schedule's
/// `fusable_pool`): each output pixel's bits are ORed into its pooled pixel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BitPool {
    /// The window, which is also the stride.
    pub window: (usize, usize),
    /// The convolution's own output extent.
    pub conv_out: (usize, usize),
    /// The pooled extent.
    pub pooled: (usize, usize),
}

impl BitPool {
    /// The MaxPool `pool` after threshold `t`, run in the output stage of `t`'s layer.
    pub fn after(graph: &Graph, t: &Node, pool: &Node) -> BitPool {
        let extent = |v: ValueId| {
            let shape = &graph.value(v).ty.shape;
            (shape[2], shape[3])
        };
        let window = match &pool.op {
            Op::MaxPool(attrs) => (attrs.kernel[0], attrs.kernel[1]),
            _ => (1, 1),
        };
        BitPool {
            window,
            conv_out: extent(t.outputs[0]),
            pooled: extent(pool.outputs[0]),
        }
    }

    /// The positions computed: those some pooled pixel gathers (positions past the last
    /// whole window, or past the last partial one in ceil mode, are not).
    pub fn computed(&self) -> (usize, usize) {
        (
            self.conv_out.0.min(self.pooled.0 * self.window.0),
            self.conv_out.1.min(self.pooled.1 * self.window.1),
        )
    }
}

/// A multi-threshold on integer dot products whose output levels are integers affine in the
/// count of thresholds reached: channel `m`'s count is `#{t : sign[m] * dot >= bounds[m][t]}`
/// and its level `alpha * count + beta`, stored as `planes` bit planes (two's complement
/// when `signed`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Levels {
    pub sign: Vec<i64>,
    /// `(M, thresholds)`, row-major.
    pub bounds: Vec<i64>,
    pub thresholds: usize,
    pub alpha: i64,
    pub beta: i64,
    pub planes: usize,
    pub signed: bool,
}

/// Per channel, the sign and the integer bounds of threshold node `t` on accumulators of
/// step `unit`: `(sign, bounds (C, N), N)`.
fn integer_bounds(
    graph: &Graph,
    t: &Node,
    unit: f64,
) -> Result<(Vec<i64>, Vec<i64>, usize), BackendError> {
    let (Op::Threshold(attrs) | Op::MultiThreshold(attrs)) = &t.op else {
        return Err(BackendError::unsupported(t, "internal: not a threshold"));
    };
    let konst = |i: usize| {
        graph
            .const_data(t.inputs[i])
            .map(|d| d.to_f32_vec())
            .ok_or_else(|| BackendError::unsupported(t, "the thresholds must be constant"))
    };
    let table = konst(1)?;
    let shape = &graph.value(t.inputs[1]).ty.shape;
    let channels = graph.value(t.outputs[0]).ty.shape[attrs.channel_axis];
    let (&[rows, n], 1) = (shape.as_slice(), attrs.channel_axis) else {
        return Err(BackendError::unsupported(
            t,
            "a fused threshold needs a (C, N) table on channel axis 1",
        ));
    };
    if rows != 1 && rows != channels {
        return Err(BackendError::unsupported(
            t,
            format!("{rows} threshold rows for {channels} channels"),
        ));
    }
    let descending: Vec<bool> = match t.inputs.get(2) {
        Some(_) => konst(2)?.iter().map(|&d| d < 0.0).collect(),
        None => vec![false; channels],
    };
    let (mut sign, mut bounds) = (
        Vec::with_capacity(channels),
        Vec::with_capacity(channels * n),
    );
    for (c, &desc) in descending.iter().enumerate().take(channels) {
        let row = if rows == 1 { 0 } else { c };
        sign.push(if desc { -1 } else { 1 });
        for &th in &table[row * n..(row + 1) * n] {
            let th = f64::from(th) / unit;
            // reached <=> s * dot >= b, for an integer dot.
            let b = if th.is_nan() {
                BEYOND as f64
            } else if desc {
                -th.floor()
            } else {
                th.ceil()
            };
            bounds.push(b.clamp(-BEYOND as f64, BEYOND as f64) as i64);
        }
    }
    Ok((sign, bounds, n))
}

impl OutputStage {
    /// The bit rule of a fused threshold (one threshold per channel, bipolar output): the
    /// bit is 1 where the threshold's output is +1.
    /// `unit` is the value of one accumulator step (the scale of a scaled integer sum; 1 for
    /// XNOR dot products): a threshold `T` on values is `T / unit` on the integer sum, exact
    /// for the powers of two the kernels accept.
    pub fn bits(graph: &Graph, t: &Node, unit: f64) -> Result<OutputStage, BackendError> {
        let (Op::Threshold(attrs) | Op::MultiThreshold(attrs)) = &t.op else {
            return Err(BackendError::unsupported(t, "internal: not a threshold"));
        };
        let (sign, bounds, n) = integer_bounds(graph, t, unit)?;
        if n != 1 {
            return Err(BackendError::unsupported(
                t,
                "internal: a bit stage has one threshold per channel",
            ));
        }
        let value = |count: f32| attrs.out_scale * count + attrs.out_bias > 0.0;
        let (b0, b1) = (value(0.0), value(1.0));
        let (sign, bound) = sign
            .into_iter()
            .zip(bounds)
            .map(|(s, b)| match (b0, b1) {
                (false, true) => (s, b),
                // bit = not reached <=> s * dot < b <=> -s * dot >= 1 - b
                (true, false) => (-s, 1 - b),
                (true, true) => (1, -BEYOND),
                (false, false) => (1, BEYOND),
            })
            .unzip();
        Ok(OutputStage::Bits { sign, bound })
    }
}

impl OutputStage {
    /// A threshold stage as levels: a bit stage is one threshold whose level is the count,
    /// in one plane. `None` for sums.
    pub fn levels(&self) -> Option<Levels> {
        match self {
            OutputStage::Acc => None,
            OutputStage::Bits { sign, bound } => Some(Levels {
                sign: sign.clone(),
                bounds: bound.clone(),
                thresholds: 1,
                alpha: 1,
                beta: 0,
                planes: 1,
                signed: false,
            }),
            OutputStage::Levels(l) => Some(l.clone()),
        }
    }
}

impl Levels {
    /// As other code generators' kernels take it.
    pub fn kernel(self) -> crate::KernelLevels {
        crate::KernelLevels {
            sign: self.sign,
            bounds: self.bounds,
            thresholds: self.thresholds,
            alpha: self.alpha,
            beta: self.beta,
            planes: self.planes,
        }
    }

    /// The levels of threshold `t` on accumulators of step `unit`, if its output is a
    /// low-bit integer type whose levels are affine in the count: `round((out_scale *
    /// count + out_bias) / scale)` is `alpha * count + beta`, and times `scale` gives the
    /// value back exactly, as f32 computes both.
    pub fn of(graph: &Graph, t: &Node, unit: f64) -> Result<Option<Levels>, BackendError> {
        let (Op::Threshold(attrs) | Op::MultiThreshold(attrs)) = &t.op else {
            return Ok(None);
        };
        let elem = &graph.value(t.outputs[0]).ty.elem;
        let Some((planes, signed)) = elem.int_type().and_then(|i| i.planes()) else {
            return Ok(None);
        };
        let int = elem.int_type().expect("planes imply an integer type");
        let scale = match elem {
            ElemType::Int(_) => 1.0,
            ElemType::Scaled(_, Scale::Tensor(s)) => *s,
            _ => return Ok(None),
        };
        let Some(&n) = graph.value(t.inputs[1]).ty.shape.get(1) else {
            return Ok(None);
        };
        // The integer a value is stored as is `round(value / scale)`, as the bit-serial ops
        // read it; it must give the value back exactly (`level * scale`, in f32) for
        // consumers that read it as f32.
        let level = |count: usize| -> Option<i64> {
            let value = attrs.out_scale * count as f32 + attrs.out_bias;
            let l = (value / scale).round();
            (l * scale == value && int.contains(f64::from(l))).then_some(l as i64)
        };
        let levels: Option<Vec<i64>> = (0..=n).map(level).collect();
        let Some(levels) = levels else {
            return Ok(None);
        };
        let (beta, alpha) = (levels[0], levels.get(1).map_or(0, |l| l - levels[0]));
        if levels
            .iter()
            .enumerate()
            .any(|(c, &l)| l != beta + alpha * c as i64)
        {
            return Ok(None);
        }
        let (sign, bounds, thresholds) = integer_bounds(graph, t, unit)?;
        Ok(Some(Levels {
            sign,
            bounds,
            thresholds,
            alpha,
            beta,
            planes,
            signed,
        }))
    }
}
