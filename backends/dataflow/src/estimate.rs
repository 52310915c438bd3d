//! Cycles and resources per layer.
//!
//! Cycles per frame follow the loops the backends generate: a matrix-vector unit runs one
//! flattened loop of `pixels * NF * SF` iterations at II = 1; a window generator or a pool
//! reads and writes in the same loop, one beat each per cycle, after filling the rows its
//! first window needs; the other layers move one beat per cycle.
//!
//! Resources are FINN-R's estimates for the matrix-vector units (`../shared/docs/fpga.md`):
//! LUTs `300 + 1.1 * PE * (mult + addertree + acc + thr + comp)`; weights in block RAM in the
//! aspect ratio that needs the fewest blocks, or in LUTs when the memory is shallow; small fixed costs for the rest, block RAM for line buffers,
//! DSPs for 8-bit multipliers and for f32 arithmetic (Vitis' `fadd`: 2, `fmul`: 3).

use crate::plan::{ElementOp, Encoding, Layer, LayerKind, Mac, Mvau, Plan, Window, WindowGeometry};

/// What one layer costs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Cycles per frame (the layer's initiation interval in a pipeline of frames).
    pub cycles: u64,
    pub luts: u64,
    pub bram18: u64,
    pub dsps: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.cycles += o.cycles;
        self.luts += o.luts;
        self.bram18 += o.bram18;
        self.dsps += o.dsps;
    }
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// Bits of storage that stay in LUTs (distributed RAM) rather than a block RAM.
const LUTRAM_BITS: u64 = 1024;

/// Weight memories this shallow (words) are LUTs, whatever their width.
const SHALLOW_WORDS: u64 = 64;

/// The aspect ratios of an 18 Kb block RAM: depth x width.
const BRAM18_SHAPES: [(u64, u64); 6] = [
    (16384, 1),
    (8192, 2),
    (4096, 4),
    (2048, 9),
    (1024, 18),
    (512, 36),
];

/// Block RAMs (18 Kb) for a memory of `depth` words of `width` bits, in the aspect ratio
/// that needs the fewest. (FINN-R's formulas take 4-bit words for widths of 2 and 3, twice
/// what an 8K x 2 block holds.)
pub fn bram18_of(depth: u64, width: u64) -> u64 {
    BRAM18_SHAPES
        .iter()
        .map(|&(d, w)| ceil_div(depth, d) * ceil_div(width, w))
        .min()
        .unwrap_or(0)
}

/// Block RAMs (18 Kb) for `bits` of buffer, none when small.
fn buffer_bram18(bits: u64) -> u64 {
    if bits <= LUTRAM_BITS {
        0
    } else {
        ceil_div(bits, 18 * 1024)
    }
}

/// The cost of `layer` in `plan`, folded as it is.
pub fn cost(plan: &Plan, layer: &Layer) -> Cost {
    let elements = |i: usize| plan.streams[i].elements() as u64;
    match &layer.kind {
        LayerKind::Mvau(m) => mvau_cost(m, m.pe, m.simd),
        LayerKind::Window(w) => window_cost(w, w.simd),
        LayerKind::Pool(p) => {
            let g = &p.geometry;
            let beats_in = (g.in_hw[0] * g.in_hw[1] * g.channels / p.lanes) as u64;
            // Both backends reduce a window's taps one beat per cycle, as a generator writes.
            let tap_beats = (g.out_hw[0] * g.out_hw[1] * g.taps() * g.channels / p.lanes) as u64;
            let bits = line_buffer_bits(g, p.encoding.bits());
            Cost {
                cycles: window_cycles(g, beats_in, tap_beats),
                luts: 40 + u64::from(p.encoding.bits()) * (p.lanes * g.taps()) as u64,
                bram18: buffer_bram18(bits),
                dsps: 0,
            }
        }
        LayerKind::Threshold(t) => {
            let acc = u64::from(t.input.bits());
            let levels = t.thresholds.levels as u64;
            Cost {
                cycles: ceil_div(elements(layer.inputs[0]), t.lanes as u64),
                luts: 20 + t.lanes as u64 * levels * acc * ceil_div(t.channels as u64, 64).max(1),
                bram18: 0,
                dsps: 0,
            }
        }
        LayerKind::Elementwise(e) => {
            let (mut luts, mut dsps) = (20u64, 0u64);
            for op in &e.ops {
                let (l, d) = match op {
                    ElementOp::Binary(bnnc_ir::BinaryOp::Mul, ..) => (130, 3),
                    ElementOp::Binary(bnnc_ir::BinaryOp::Div, ..) => (800, 0),
                    ElementOp::Binary(..) => (220, 2),
                    ElementOp::Relu(_)
                    | ElementOp::Sign(_)
                    | ElementOp::Clip(..)
                    | ElementOp::BipolarQuant(..) => (40, 0),
                    // A division, a rounding and a multiplication.
                    ElementOp::Quant { .. } => (1100, 3),
                };
                luts += l * e.lanes as u64;
                dsps += d * e.lanes as u64;
            }
            // Integers to f32 and back.
            luts += 80
                * e.lanes as u64
                * (e.inputs.len() as u64 + u64::from(e.output != Encoding::F32));
            Cost {
                cycles: ceil_div(elements(layer.outputs[0]), e.lanes as u64),
                luts,
                bram18: 0,
                dsps,
            }
        }
        LayerKind::Duplicate { lanes } => {
            let s = &plan.streams[layer.inputs[0]];
            Cost {
                cycles: ceil_div(s.elements() as u64, *lanes as u64),
                luts: 10 + u64::from(s.encoding.bits()) * (*lanes * layer.outputs.len()) as u64 / 4,
                bram18: 0,
                dsps: 0,
            }
        }
        LayerKind::Convert { from, to } => {
            let s = &plan.streams[layer.inputs[0]];
            let elements = s.elements() as u64;
            let bits = u64::from(s.encoding.bits());
            // A shift register: a beat in and a beat out per cycle, the first out after
            // enough are in.
            Cost {
                cycles: ceil_div(elements, *from as u64).max(ceil_div(elements, *to as u64)) + 1,
                luts: 20 + 2 * bits * (*from + *to) as u64,
                bram18: 0,
                dsps: 0,
            }
        }
    }
}

/// A window generator moving `simd` channels per beat.
pub(crate) fn window_cost(w: &Window, simd: usize) -> Cost {
    let g = &w.geometry;
    let beats_in = (g.in_hw[0] * g.in_hw[1] * g.channels / simd) as u64;
    let beats_out = (g.out_hw[0] * g.out_hw[1] * g.taps() * g.channels / simd) as u64;
    Cost {
        cycles: window_cycles(g, beats_in, beats_out),
        luts: 40 + 3 * u64::from(w.output.bits()) * simd as u64,
        bram18: buffer_bram18(line_buffer_bits(g, w.input.bits())),
        dsps: 0,
    }
}

/// Bits a window generator (or pool) buffers: the rows one output row needs, and as many
/// more as the stride moves, of the whole image width.
pub fn line_buffer_bits(g: &WindowGeometry, bits: u32) -> u64 {
    (buffer_rows(g) * g.in_hw[1] * g.channels) as u64 * u64::from(bits)
}

/// Rows of a window generator's circular buffer.
pub fn buffer_rows(g: &WindowGeometry) -> usize {
    (g.row_span() + g.stride[0]).min(g.in_hw[0]).max(1)
}

/// One read and one write per cycle, the writes starting once the rows of the first window
/// are in.
fn window_cycles(g: &WindowGeometry, beats_in: u64, beats_out: u64) -> u64 {
    let first_rows = g.row_span().saturating_sub(g.pads[0]).min(g.in_hw[0]);
    let fill = beats_in * first_rows as u64 / g.in_hw[0].max(1) as u64;
    beats_in.max(fill + beats_out)
}

/// FINN-R's matrix-vector unit at `(pe, simd)`.
pub(crate) fn mvau_cost(m: &Mvau, pe: usize, simd: usize) -> Cost {
    let (p, q) = (pe as f64, simd as f64);
    let (w, a) = (f64::from(m.weight.bits()), f64::from(m.input.bits()));
    let (mult, addertree) = match m.mac {
        Mac::Xnor => (q, q),
        _ => {
            let wa = w + a;
            (
                q * (2.0 * (wa / 6.0).ceil() - 1.0) * wa,
                wa * (2.0 * q - 1.0),
            )
        }
    };
    let acc = f64::from(m.acc.bits());
    let tmem = (m.mh / pe) as f64;
    let levels = m.thresholds.as_ref().map_or(0, |t| t.levels) as f64;
    let thr = levels * acc * (tmem / 64.0).ceil();
    let comp = levels * acc;
    let luts = 300.0 + 1.1 * p * (mult + addertree + acc + thr + comp);
    // Weights: one memory per PE (the generated code partitions them along PE) of omega
    // words of SIMD * W bits. Shallow memories go to LUTs (a LUT6 holds 64 x 1 bits), as
    // Vivado maps them: in block RAM a wide, shallow memory spends a block per 36 bits.
    let omega = (m.mw * m.mh / (simd * pe)) as u64;
    let width = (simd as u64) * u64::from(m.weight.bits());
    let lutram = omega <= SHALLOW_WORDS || omega * width <= LUTRAM_BITS;
    let (bram18, weight_luts) = if lutram {
        (0, pe as u64 * width * ceil_div(omega, 64))
    } else {
        (pe as u64 * bram18_of(omega, width), 0)
    };
    let luts = luts.round() as u64 + weight_luts;
    let dsps = match m.mac {
        Mac::Multiply if m.weight.bits().max(m.input.bits()) >= 8 => (pe * simd) as u64,
        _ => 0,
    };
    Cost {
        cycles: (m.pixels * (m.mh / pe) * (m.mw / simd)) as u64,
        luts,
        bram18,
        dsps,
    }
}
