//! The plan's report: per layer its folding, cycles and resources; for the network its
//! initiation interval, frames per second and latency at the clock, against the part.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::estimate::{cost, Cost};
use crate::part::Part;
use crate::plan::{LayerKind, Plan};

/// One layer's line.
#[derive(Clone, Debug)]
pub struct LayerReport {
    pub name: String,
    pub kind: &'static str,
    /// `(PE, SIMD)` of a matrix-vector unit, `(lanes, lanes)` of others.
    pub parallelism: (usize, usize),
    pub cost: Cost,
}

/// The report of a plan on a part at a clock.
#[derive(Clone, Debug)]
pub struct Report {
    pub layers: Vec<LayerReport>,
    pub total: Cost,
    /// Cycles between frames: the slowest layer's.
    pub initiation_interval: u64,
    pub clock_ns: f64,
    pub part: Part,
}

impl Report {
    /// Frames per second at the clock.
    pub fn fps(&self) -> f64 {
        1e9 / (self.clock_ns * self.initiation_interval.max(1) as f64)
    }

    /// Latency of one frame in microseconds: every layer's cycles in turn (an upper bound;
    /// layers overlap within a frame).
    pub fn latency_us(&self) -> f64 {
        self.total.cycles as f64 * self.clock_ns / 1e3
    }

    /// The report as JSON (`report.json`).
    pub fn json(&self) -> Value {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "layer": l.name,
                    "kind": l.kind,
                    "pe": l.parallelism.0,
                    "simd": l.parallelism.1,
                    "cycles": l.cost.cycles,
                    "lut": l.cost.luts,
                    "bram18": l.cost.bram18,
                    "dsp": l.cost.dsps,
                })
            })
            .collect();
        json!({
            "layers": layers,
            "total": {
                "lut": self.total.luts,
                "bram18": self.total.bram18,
                "dsp": self.total.dsps,
                "cycles": self.total.cycles,
            },
            "initiation_interval_cycles": self.initiation_interval,
            "clock_ns": self.clock_ns,
            "fps": self.fps(),
            "latency_us": self.latency_us(),
            "part": {
                "name": self.part.name,
                "board": self.part.board,
                "lut": self.part.luts,
                "ff": self.part.ffs,
                "bram18": self.part.bram18,
                "dsp": self.part.dsps,
            },
            "fits": self.fits(),
        })
    }

    /// Whether the estimate fits the part.
    pub fn fits(&self) -> bool {
        self.total.luts <= self.part.luts
            && self.total.bram18 <= self.part.bram18
            && self.total.dsps <= self.part.dsps
    }

    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<40} {:<12} {:>5} {:>5} {:>10} {:>8} {:>7} {:>5}",
            "layer", "kind", "PE", "SIMD", "cycles", "LUT", "BRAM18", "DSP"
        );
        for l in &self.layers {
            let _ = writeln!(
                out,
                "{:<40} {:<12} {:>5} {:>5} {:>10} {:>8} {:>7} {:>5}",
                l.name,
                l.kind,
                l.parallelism.0,
                l.parallelism.1,
                l.cost.cycles,
                l.cost.luts,
                l.cost.bram18,
                l.cost.dsps
            );
        }
        let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
        let _ = writeln!(
            out,
            "{:<40} {:<12} {:>5} {:>5} {:>10} {:>8} {:>7} {:>5}",
            "total",
            "",
            "",
            "",
            self.total.cycles,
            self.total.luts,
            self.total.bram18,
            self.total.dsps
        );
        let _ = writeln!(
            out,
            "part {} ({}): LUT {:.1}% of {}, BRAM18 {:.1}% of {}, DSP {:.1}% of {}{}",
            self.part.name,
            self.part.board,
            pct(self.total.luts, self.part.luts),
            self.part.luts,
            pct(self.total.bram18, self.part.bram18),
            self.part.bram18,
            pct(self.total.dsps, self.part.dsps),
            self.part.dsps,
            if self.fits() { "" } else { " -- does not fit" }
        );
        let _ = writeln!(
            out,
            "at {} ns ({:.0} MHz): initiation interval {} cycles, {:.0} frames/s, latency {:.1} us",
            self.clock_ns,
            1e3 / self.clock_ns,
            self.initiation_interval,
            self.fps(),
            self.latency_us()
        );
        out
    }
}

/// The report of `plan`.
pub fn report(plan: &Plan, part: Part, clock_ns: f64) -> Report {
    let mut total = Cost::default();
    let mut ii = 1;
    let layers = plan
        .layers
        .iter()
        .map(|layer| {
            let c = cost(plan, layer);
            total += c;
            ii = ii.max(c.cycles);
            let parallelism = match &layer.kind {
                LayerKind::Mvau(m) => (m.pe, m.simd),
                LayerKind::Window(w) => (w.simd, w.simd),
                LayerKind::Convert { from, to } => (*from, *to),
                k => (k.input_lanes(), k.input_lanes()),
            };
            LayerReport {
                name: layer.name.clone(),
                kind: layer.kind.name(),
                parallelism,
                cost: c,
            }
        })
        .collect();
    Report {
        layers,
        total,
        initiation_interval: ii,
        clock_ns,
        part,
    }
}
