//! FPGA parts: the resources a plan is sized against.

/// An FPGA part and what it has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Part {
    /// The part name as Vivado and Vitis take it.
    pub name: &'static str,
    /// The board it is best known from.
    pub board: &'static str,
    pub luts: u64,
    pub ffs: u64,
    /// 18 Kb block RAMs (two per 36 Kb block).
    pub bram18: u64,
    pub dsps: u64,
}

/// Common parts of binary-network work (from AMD's product tables).
pub const PARTS: &[Part] = &[
    Part {
        name: "xc7z020clg400-1",
        board: "Pynq-Z1 / Pynq-Z2",
        luts: 53_200,
        ffs: 106_400,
        bram18: 280,
        dsps: 220,
    },
    Part {
        name: "xc7z010clg400-1",
        board: "Zybo Z7-10",
        luts: 17_600,
        ffs: 35_200,
        bram18: 120,
        dsps: 80,
    },
    Part {
        name: "xc7z045ffg900-2",
        board: "ZC706",
        luts: 218_600,
        ffs: 437_200,
        bram18: 1_090,
        dsps: 900,
    },
    Part {
        name: "xczu3eg-sbva484-1-e",
        board: "Ultra96-V2",
        luts: 70_560,
        ffs: 141_120,
        bram18: 432,
        dsps: 360,
    },
    Part {
        name: "xck26-sfvc784-2LV-c",
        board: "Kria KV260",
        luts: 117_120,
        ffs: 234_240,
        bram18: 288,
        dsps: 1_248,
    },
    Part {
        name: "xczu7ev-ffvc1156-2-e",
        board: "ZCU104",
        luts: 230_400,
        ffs: 460_800,
        bram18: 624,
        dsps: 1_728,
    },
    Part {
        name: "xczu9eg-ffvb1156-2-e",
        board: "ZCU102",
        luts: 274_080,
        ffs: 548_160,
        bram18: 1_824,
        dsps: 2_520,
    },
    Part {
        name: "xcu250-figd2104-2L-e",
        board: "Alveo U250",
        luts: 1_728_000,
        ffs: 3_456_000,
        bram18: 5_376,
        dsps: 12_288,
    },
];

/// The default part: the Pynq-Z1's Zynq-7020.
pub const DEFAULT_PART: &str = "xc7z020clg400-1";

/// The part named `name` (case-insensitive), or an error listing the known ones.
pub fn part(name: &str) -> Result<Part, String> {
    PARTS
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .copied()
        .ok_or_else(|| {
            format!(
                "unknown part '{name}'; known parts: {}",
                PARTS
                    .iter()
                    .map(|p| format!("{} ({})", p.name, p.board))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
