//! One Verilog-2001 module per hardware layer, specialized for its sizes, with its weights
//! and thresholds in ROMs read from `$readmemh` files.
//!
//! Every layer streams with valid/ready and moves only when its output register can take a
//! result (`en = !m_tvalid || m_tready`): a stalled output stalls the layer, nothing is lost
//! or repeated. A matrix-vector unit is a three-stage pipeline: issue (the input beat, or
//! the buffered one in later neuron folds, and the weights' ROM word), accumulate (PE sums
//! of SIMD products: XNOR and a popcount, or multiplications), and the output stage
//! (thresholds as a comparator bank, the fused pool).

use std::fmt::Write;

use bnnc_dataflow::estimate::buffer_rows;
use bnnc_dataflow::plan::{
    Decode, ElementOp, Elementwise, Encoding, Layer, LayerKind, Mac, Mvau, Operand, Plan, Pool,
    ThresholdLayer, Window,
};

/// A layer's Verilog: its module and the memory files it reads.
pub struct LayerRtl {
    pub verilog: String,
    /// `(file name under rtl/mem/, contents)`.
    pub memories: Vec<(String, String)>,
}

/// Bits to count `0..n` (at least 1).
pub fn clog2(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()).max(1) as usize
}

/// Hex digits of a word of `bits` from its bits, least significant first.
fn hex_word(bits: &[bool]) -> String {
    let digits = bits.len().div_ceil(4).max(1);
    (0..digits)
        .rev()
        .map(|d| {
            let v = (0..4).fold(0u32, |acc, b| {
                acc | (u32::from(bits.get(d * 4 + b).copied().unwrap_or(false)) << b)
            });
            char::from_digit(v, 16).expect("a hex digit")
        })
        .collect()
}

/// Appends `value`'s low `bits` bits (two's complement) to `out`, least significant first.
fn push_bits(out: &mut Vec<bool>, value: i64, bits: u32) {
    for b in 0..bits {
        out.push((value >> b.min(63)) & 1 == 1);
    }
}

/// A signed `[w-1:0]` Verilog constant.
fn sconst(w: usize, v: i64) -> String {
    if v < 0 {
        format!("-{w}'sd{}", v.unsigned_abs())
    } else {
        format!("{w}'sd{v}")
    }
}

/// Element `i` (a Verilog expression) of `v` under `encoding`, sign-extended to `w` bits.
fn element(v: &str, i: &str, encoding: Encoding, w: usize) -> String {
    match encoding {
        Encoding::Bipolar => format!("({v}[{i}] ? {} : {})", sconst(w, 1), sconst(w, -1)),
        Encoding::Int { bits, signed } => {
            let bits = bits as usize;
            let top = if signed {
                format!("{v}[({i})*{bits}+{}]", bits - 1)
            } else {
                "1'b0".to_string()
            };
            if w > bits {
                format!(
                    "$signed({{{{{}{{{top}}}}}, {v}[({i})*{bits} +: {bits}]}})",
                    w - bits
                )
            } else {
                format!("$signed({v}[({i})*{bits} +: {bits}])")
            }
        }
        Encoding::F32 => unreachable!("hardware layers in Verilog are on integers"),
    }
}

/// The module of layer `index`, or why the Verilog backend has none.
pub fn layer_rtl(
    plan: &Plan,
    index: usize,
    layer: &Layer,
    module: &str,
) -> Result<LayerRtl, String> {
    // A module's ports are as wide as its streams' beats.
    let width = |s: usize| plan.streams[s].beat_bits() as usize;
    let (iw, ow) = (width(layer.inputs[0]), width(layer.outputs[0]));
    match &layer.kind {
        LayerKind::Mvau(m) => Ok(mvau(module, m, iw, ow)),
        LayerKind::Window(w) => Ok(window(module, w, iw, ow)),
        LayerKind::Threshold(t) => Ok(threshold(module, t, iw, ow)),
        LayerKind::Pool(p) => pool(module, p, iw, ow),
        LayerKind::Elementwise(e) => {
            let iws = layer.inputs.iter().map(|&s| width(s)).collect();
            elementwise(module, e, iws, ow)
        }
        other => Err(format!(
            "the Verilog backend has no {} layer yet (layer {index})",
            other.name()
        )),
    }
}

fn mvau(module: &str, m: &Mvau, iw: usize, ow: usize) -> LayerRtl {
    let (pe, simd, nf, sf) = (m.pe, m.simd, m.nf(), m.sf());
    let wb = m.weight.bits() as usize;
    let ww = simd * wb;
    let ab = m.acc.bits() as usize + 2;
    let ob = m.output().bits() as usize;
    let tiles = nf * sf;
    let mut memories = Vec::new();
    // Weights: word `tile = nf * SF + sf` holds PE words of SIMD weights, PE 0 lowest.
    let mut text = String::new();
    for t in 0..tiles {
        let (n, s) = (t / sf, t % sf);
        let mut bits = Vec::with_capacity(pe * ww);
        for p in 0..pe {
            let row = n * pe + p;
            for k in 0..simd {
                let w = m.weights[row * m.mw + s * simd + k];
                push_bits(&mut bits, m.weight.code(w) as i64, wb as u32);
            }
        }
        let _ = writeln!(text, "{}", hex_word(&bits));
    }
    memories.push((format!("{module}_w.mem"), text));
    let levels = m.thresholds.as_ref().map_or(0, |t| t.levels);
    let descending: Vec<bool> = m
        .thresholds
        .as_ref()
        .map_or_else(Vec::new, |t| t.descending.clone());
    let mixed_directions = descending.iter().any(|&d| d) && !descending.iter().all(|&d| d);
    if let Some(t) = &m.thresholds {
        let mut text = String::new();
        let mut dtext = String::new();
        for n in 0..nf {
            let mut bits = Vec::with_capacity(pe * t.levels * ab);
            let mut dbits = Vec::with_capacity(pe);
            for p in 0..pe {
                let row = n * pe + p;
                for k in 0..t.levels {
                    push_bits(&mut bits, t.values[row * t.levels + k], ab as u32);
                }
                dbits.push(t.descending[row]);
            }
            let _ = writeln!(text, "{}", hex_word(&bits));
            let _ = writeln!(dtext, "{}", hex_word(&dbits));
        }
        if t.levels > 0 {
            memories.push((format!("{module}_t.mem"), text));
        }
        if mixed_directions {
            memories.push((format!("{module}_d.mem"), dtext));
        }
    }
    let pool = m.pool.as_ref();
    let mixed_pool =
        pool.is_some_and(|p| p.take_min.iter().any(|&x| x) && !p.take_min.iter().all(|&x| x));
    if let (Some(p), true) = (pool, mixed_pool) {
        let mut text = String::new();
        for n in 0..nf {
            let bits: Vec<bool> = (0..pe).map(|q| p.take_min[n * pe + q]).collect();
            let _ = writeln!(text, "{}", hex_word(&bits));
        }
        memories.push((format!("{module}_m.mem"), text));
    }

    let (nfw, sfw, tw) = (clog2(nf), clog2(sf), clog2(tiles));
    let (oh, owd) = (m.out_hw[0], m.out_hw[1]);
    let (yw, xw) = (clog2(oh), clog2(owd));
    let mut v = String::new();
    let _ = writeln!(
        v,
        "module {module} (\n    input wire clk,\n    input wire rst,\n    input wire [{}:0] s_tdata,\n    input wire s_tvalid,\n    output wire s_tready,\n    output reg [{}:0] m_tdata,\n    output reg m_tvalid,\n    input wire m_tready\n);",
        iw - 1,
        ow - 1
    );
    let _ = writeln!(v, "    reg [{}:0] weights [0:{}];\n    initial $readmemh(\"rtl/mem/{module}_w.mem\", weights);", pe * ww - 1, tiles - 1);
    if levels > 0 {
        let _ = writeln!(v, "    reg [{}:0] thresholds [0:{}];\n    initial $readmemh(\"rtl/mem/{module}_t.mem\", thresholds);", pe * levels * ab - 1, nf - 1);
    }
    if mixed_directions {
        let _ = writeln!(v, "    reg [{}:0] descending [0:{}];\n    initial $readmemh(\"rtl/mem/{module}_d.mem\", descending);", pe - 1, nf - 1);
    }
    let _ = writeln!(v, "    reg [{}:0] inputs [0:{}];", iw - 1, sf - 1);
    let _ = writeln!(
        v,
        "    reg [{}:0] nf;\n    reg [{}:0] sf;\n    reg [{}:0] tile;\n    reg [{}:0] y;\n    reg [{}:0] x;",
        nfw - 1,
        sfw - 1,
        tw - 1,
        yw - 1,
        xw - 1
    );
    let _ = writeln!(v, "    wire en = !m_tvalid || m_tready;");
    let _ = writeln!(v, "    wire first_fold = nf == {nfw}'d0;");
    let _ = writeln!(v, "    wire issue = en && (!first_fold || s_tvalid);");
    let _ = writeln!(v, "    assign s_tready = en && first_fold;");
    // Stage A: issue.
    let _ = writeln!(
        v,
        "    reg a_valid;\n    reg a_first;\n    reg a_last;\n    reg [{}:0] a_nf;\n    reg [{}:0] a_y;\n    reg [{}:0] a_x;\n    reg [{}:0] a_in;\n    reg [{}:0] a_w;",
        nfw - 1,
        yw - 1,
        xw - 1,
        iw - 1,
        pe * ww - 1
    );
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (issue && first_fold) inputs[sf] <= s_tdata;\n    end");
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            a_valid <= 1'b0;\n            nf <= {nfw}'d0;\n            sf <= {sfw}'d0;\n            tile <= {tw}'d0;\n            y <= {yw}'d0;\n            x <= {xw}'d0;\n        end else if (en) begin\n            a_valid <= issue;\n            if (issue) begin");
    let _ = writeln!(
        v,
        "                a_in <= first_fold ? s_tdata : inputs[sf];\n                a_w <= weights[tile];\n                a_first <= sf == {sfw}'d0;\n                a_last <= sf == {sfw}'d{};\n                a_nf <= nf;\n                a_y <= y;\n                a_x <= x;",
        sf - 1
    );
    let _ = writeln!(
        v,
        "                tile <= tile == {tw}'d{} ? {tw}'d0 : tile + {tw}'d1;",
        tiles - 1
    );
    let _ = writeln!(
        v,
        "                if (sf == {sfw}'d{}) begin\n                    sf <= {sfw}'d0;\n                    if (nf == {nfw}'d{}) begin\n                        nf <= {nfw}'d0;\n                        if (x == {xw}'d{}) begin\n                            x <= {xw}'d0;\n                            y <= y == {yw}'d{} ? {yw}'d0 : y + {yw}'d1;\n                        end else begin\n                            x <= x + {xw}'d1;\n                        end\n                    end else begin\n                        nf <= nf + {nfw}'d1;\n                    end\n                end else begin\n                    sf <= sf + {sfw}'d1;\n                end",
        sf - 1,
        nf - 1,
        owd - 1,
        oh - 1
    );
    let _ = writeln!(v, "            end\n        end\n    end");
    // Stage B: the sums and the accumulators.
    let _ = writeln!(
        v,
        "    reg signed [{}:0] sum [0:{}];\n    integer p;\n    integer s;",
        ab - 1,
        pe - 1
    );
    let product = match m.mac {
        Mac::Xnor => format!("$signed({{{}'d0, ~(a_in[s] ^ a_w[p*{ww} + s])}})", ab - 1),
        Mac::IntByBipolar => {
            let a = element("a_in", "s", m.input, ab);
            format!("(a_w[p*{ww} + s] ? {a} : -{a})")
        }
        Mac::BipolarByInt => {
            let w = element("a_w", &format!("p*{simd} + s"), m.weight, ab);
            format!("(a_in[s] ? {w} : -{w})")
        }
        Mac::Multiply => {
            let a = element("a_in", "s", m.input, ab);
            let w = element("a_w", &format!("p*{simd} + s"), m.weight, ab);
            format!("({a} * {w})")
        }
    };
    let _ = writeln!(
        v,
        "    always @* begin\n        for (p = 0; p < {pe}; p = p + 1) begin\n            sum[p] = {ab}'sd0;\n            for (s = 0; s < {simd}; s = s + 1)\n                sum[p] = sum[p] + {product};\n        end\n    end"
    );
    let _ = writeln!(v, "    reg signed [{}:0] acc [0:{}];\n    reg b_done;\n    reg [{}:0] b_nf;\n    reg [{}:0] b_y;\n    reg [{}:0] b_x;", ab - 1, pe - 1, nfw - 1, yw - 1, xw - 1);
    if levels > 0 {
        let _ = writeln!(v, "    reg [{}:0] b_t;", pe * levels * ab - 1);
    }
    if mixed_directions {
        let _ = writeln!(v, "    reg [{}:0] b_d;", pe - 1);
    }
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            b_done <= 1'b0;\n        end else if (en) begin\n            b_done <= a_valid && a_last;\n            b_nf <= a_nf;\n            b_y <= a_y;\n            b_x <= a_x;");
    if levels > 0 {
        let _ = writeln!(v, "            b_t <= thresholds[a_nf];");
    }
    if mixed_directions {
        let _ = writeln!(v, "            b_d <= descending[a_nf];");
    }
    let _ = writeln!(v, "            if (a_valid)\n                for (p = 0; p < {pe}; p = p + 1)\n                    acc[p] <= (a_first ? {ab}'sd0 : acc[p]) + sum[p];\n        end\n    end");
    // The output stage.
    let _ = writeln!(
        v,
        "    reg [{}:0] result;\n    reg signed [{}:0] dot;",
        ow - 1,
        ab - 1
    );
    if m.thresholds.is_some() {
        let _ = writeln!(v, "    reg [15:0] count;\n    reg signed [23:0] code;\n    integer k;\n    wire unused_code = ^code;");
    } else {
        // The accumulator's encoding is narrower than the sums' margin.
        let _ = writeln!(v, "    wire unused_dot = ^dot;");
    }
    let _ = writeln!(v, "    always @* begin\n        result = {ow}'d0;\n        for (p = 0; p < {pe}; p = p + 1) begin");
    if m.mac == Mac::Xnor {
        let _ = writeln!(
            v,
            "            dot = (acc[p] <<< 1) - {};",
            sconst(ab, m.mw as i64)
        );
    } else {
        let _ = writeln!(v, "            dot = acc[p];");
    }
    match &m.thresholds {
        None => {
            let _ = writeln!(v, "            result[p*{ob} +: {ob}] = dot[{}:0];", ob - 1);
        }
        Some(t) => {
            let _ = writeln!(v, "            count = 16'd0;");
            if t.levels > 0 {
                let desc = if mixed_directions {
                    "b_d[p]".to_string()
                } else if t.descending.iter().all(|&d| d) && !t.descending.is_empty() {
                    "1'b1".to_string()
                } else {
                    "1'b0".to_string()
                };
                let _ = writeln!(
                    v,
                    "            for (k = 0; k < {}; k = k + 1)\n                if ({desc} ? dot <= $signed(b_t[(p*{} + k)*{ab} +: {ab}]) : dot >= $signed(b_t[(p*{} + k)*{ab} +: {ab}]))\n                    count = count + 16'd1;",
                    t.levels, t.levels, t.levels
                );
            }
            let _ = writeln!(
                v,
                "            code = {} + {} * $signed({{8'd0, count}});",
                sconst(24, t.offset),
                sconst(24, t.step)
            );
            if t.output == Encoding::Bipolar {
                let _ = writeln!(v, "            result[p] = code > 24'sd0;");
            } else {
                let _ = writeln!(
                    v,
                    "            result[p*{ob} +: {ob}] = code[{}:0];",
                    ob - 1
                );
            }
        }
    }
    let _ = writeln!(v, "        end\n    end");
    match pool {
        None => {
            let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n        end else if (en) begin\n            m_tvalid <= b_done;\n            if (b_done) m_tdata <= result;\n        end\n    end");
            let _ = writeln!(v, "    wire unused = ^{{b_nf, b_y, b_x}};");
        }
        Some(pl) => {
            let (kh, kw) = (pl.kernel[0], pl.kernel[1]);
            let (ph, pw) = (pl.out_hw[0], pl.out_hw[1]);
            let slots = pw * nf;
            let enc = m.output();
            let _ = writeln!(v, "    reg [{}:0] pooled [0:{}];", ow - 1, slots - 1);
            if mixed_pool {
                let _ = writeln!(v, "    reg [{}:0] minimum [0:{}];\n    initial $readmemh(\"rtl/mem/{module}_m.mem\", minimum);", pe - 1, nf - 1);
            }
            let _ = writeln!(v, "    wire in_pool = b_y / {yw}'d{kh} < {yw}'d{ph} && b_x / {xw}'d{kw} < {xw}'d{pw};");
            let _ = writeln!(
                v,
                "    wire opens = b_y % {yw}'d{kh} == {yw}'d0 && b_x % {xw}'d{kw} == {xw}'d0;"
            );
            let _ = writeln!(
                v,
                "    wire closes = (b_y % {yw}'d{kh} == {yw}'d{} || b_y == {yw}'d{}) && (b_x % {xw}'d{kw} == {xw}'d{} || b_x == {xw}'d{});",
                kh - 1,
                pl.in_hw[0] - 1,
                kw - 1,
                pl.in_hw[1] - 1
            );
            let sw = clog2(slots);
            let _ = writeln!(
                v,
                "    wire [19:0] slot_wide = {{{}'d0, b_x}} / 20'd{kw} * 20'd{nf} + {{{}'d0, b_nf}};\n    wire [{}:0] slot = slot_wide[{}:0];\n    wire unused_slot = ^slot_wide;",
                20 - xw,
                20 - nfw,
                sw - 1,
                sw - 1
            );
            let _ = writeln!(
                v,
                "    reg [{}:0] merged;\n    reg [{}:0] previous;\n    reg take;",
                ow - 1,
                ow - 1
            );
            let min = if mixed_pool {
                "minimum[b_nf][p]".to_string()
            } else if pl.take_min.first().copied().unwrap_or(false) {
                "1'b1".to_string()
            } else {
                "1'b0".to_string()
            };
            let w = ob + 2;
            let (new, old) = (
                element("result", "p", enc, w),
                element("previous", "p", enc, w),
            );
            let _ = writeln!(
                v,
                "    always @* begin\n        previous = pooled[slot];\n        merged = {ow}'d0;\n        for (p = 0; p < {pe}; p = p + 1) begin\n            take = opens || ({min} ? {new} < {old} : {new} > {old});\n            merged[p*{ob} +: {ob}] = take ? result[p*{ob} +: {ob}] : previous[p*{ob} +: {ob}];\n        end\n    end"
            );
            let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n        end else if (en) begin\n            m_tvalid <= b_done && in_pool && closes;\n            if (b_done && in_pool) begin\n                pooled[slot] <= merged;\n                m_tdata <= merged;\n            end\n        end\n    end");
        }
    }
    let _ = writeln!(v, "endmodule");
    LayerRtl {
        verilog: v,
        memories,
    }
}

/// Rows of the Verilog window generator's buffer: as many as an output row needs and the
/// stride moves, and enough to take the next frame's first rows while the current frame's
/// last output row is still being written, so that frames follow each other without a gap.
fn window_rows(g: &bnnc_dataflow::plan::WindowGeometry) -> usize {
    let span = g.row_span();
    (span + g.stride[0])
        .max(2 * span - g.pads[0].min(span))
        .max(buffer_rows(g))
}

/// A sliding-window generator: a circular buffer of rows, one input beat and one tap beat
/// per cycle, taps starting once the rows of their output row are in. Rows are numbered
/// across frames, so the next frame's rows come in while this frame's last taps go out.
fn window(module: &str, w: &Window, iw: usize, ow: usize) -> LayerRtl {
    let g = &w.geometry;
    let simd = w.simd;
    let cb = g.channels / simd;
    let rows = window_rows(g);
    let (h, wd) = (g.in_hw[0], g.in_hw[1]);
    let writes = g.out_hw[0] * g.out_hw[1] * g.taps() * cb;
    let depth = rows * wd * cb;
    let (cbw, rw, aw) = (clog2(cb), clog2(rows), clog2(depth));
    // The last row of a window, counted from its first.
    let span = g.row_span() - 1;
    let mut v = String::new();
    let _ = writeln!(
        v,
        "module {module} (\n    input wire clk,\n    input wire rst,\n    input wire [{}:0] s_tdata,\n    input wire s_tvalid,\n    output wire s_tready,\n    output wire [{}:0] m_tdata,\n    output reg m_tvalid,\n    input wire m_tready\n);",
        iw - 1,
        ow - 1
    );
    let _ = writeln!(v, "    reg [{}:0] rows [0:{}];", iw - 1, depth - 1);
    let _ = writeln!(v, "    // Reading: rows read so far (counting across frames), the beat within the row.\n    reg [31:0] read_rows;\n    reg [15:0] rx;\n    reg [{}:0] rc;\n    reg [{}:0] rslot;", cbw - 1, rw - 1);
    let _ = writeln!(v, "    // Writing: the frame's first row (counting across frames) and its slot, the tap.\n    reg [31:0] base;\n    reg [{}:0] base_slot;\n    reg [15:0] oy;\n    reg [15:0] ox;\n    reg [15:0] ky;\n    reg [15:0] kx;\n    reg [{}:0] cb;\n    reg [31:0] written;", rw - 1, cbw - 1);
    let _ = writeln!(v, "    wire en = !m_tvalid || m_tready;");
    let _ = writeln!(
        v,
        "    wire signed [19:0] top = $signed({{4'd0, oy}}) * 20'sd{} - 20'sd{};",
        g.stride[0], g.pads[0]
    );
    let _ = writeln!(
        v,
        "    wire [19:0] first = top < 20'sd0 ? 20'd0 : $unsigned(top);"
    );
    let _ = writeln!(
        v,
        "    wire [19:0] last = top + 20'sd{span} > 20'sd{} ? 20'd{} : $unsigned(top + 20'sd{span});",
        h - 1,
        h - 1
    );
    let _ = writeln!(
        v,
        "    wire can_write = read_rows > base + {{12'd0, last}};"
    );
    let _ = writeln!(
        v,
        "    wire can_read = read_rows < base + {{12'd0, first}} + 32'd{rows};"
    );
    let _ = writeln!(v, "    assign s_tready = can_read;");
    let _ = writeln!(
        v,
        "    wire do_read = s_tvalid && s_tready;\n    wire do_write = en && can_write;"
    );
    let _ = writeln!(
        v,
        "    wire signed [19:0] iy = top + $signed({{4'd0, ky}}) * 20'sd{};\n    wire signed [19:0] ix = $signed({{4'd0, ox}}) * 20'sd{} - 20'sd{} + $signed({{4'd0, kx}}) * 20'sd{};",
        g.dilation[0], g.stride[1], g.pads[1], g.dilation[1]
    );
    let _ = writeln!(
        v,
        "    wire in_image = iy >= 20'sd0 && iy < 20'sd{h} && ix >= 20'sd0 && ix < 20'sd{wd};"
    );
    let _ = writeln!(
        v,
        "    wire [19:0] row_slot = in_image ? ({{{}'d0, base_slot}} + $unsigned(iy)) % 20'd{rows} : 20'd0;\n    wire [19:0] col = in_image ? $unsigned(ix) : 20'd0;\n    wire [{}:0] address = row_slot[{}:0] * {aw}'d{} + col[{}:0] * {aw}'d{cb} + {{{}'d0, cb}};",
        20 - rw,
        aw - 1,
        aw - 1,
        wd * cb,
        aw - 1,
        aw.saturating_sub(cbw),
    );
    let _ = writeln!(
        v,
        "    wire [{}:0] write_address = rslot * {aw}'d{} + rx[{}:0] * {aw}'d{cb} + {{{}'d0, rc}};",
        aw - 1,
        wd * cb,
        aw - 1,
        aw.saturating_sub(cbw)
    );
    let _ = writeln!(
        v,
        "    wire [19:0] next_base_slot = ({{{}'d0, base_slot}} + 20'd{h}) % 20'd{rows};",
        20 - rw
    );
    let _ = writeln!(v, "    reg [{}:0] tap;\n    reg pad;", iw - 1);
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (do_read) rows[write_address] <= s_tdata;\n        if (en) begin\n            tap <= rows[address];\n            pad <= !in_image;\n        end\n    end");
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n            read_rows <= 32'd0;\n            rx <= 16'd0;\n            rc <= {cbw}'d0;\n            rslot <= {rw}'d0;\n            base <= 32'd0;\n            base_slot <= {rw}'d0;\n            oy <= 16'd0;\n            ox <= 16'd0;\n            ky <= 16'd0;\n            kx <= 16'd0;\n            cb <= {cbw}'d0;\n            written <= 32'd0;\n        end else begin\n            if (en) m_tvalid <= do_write;");
    let _ = writeln!(
        v,
        "            if (do_write) begin\n                if (written == 32'd{}) begin\n                    // The frame's last tap: the next frame starts {h} rows on.\n                    written <= 32'd0;\n                    oy <= 16'd0;\n                    base <= base + 32'd{h};\n                    base_slot <= next_base_slot[{}:0];\n                end else begin\n                    written <= written + 32'd1;\n                end",
        writes - 1,
        rw - 1
    );
    let _ = writeln!(
        v,
        "                if (cb == {cbw}'d{}) begin\n                    cb <= {cbw}'d0;\n                    if (kx == 16'd{}) begin\n                        kx <= 16'd0;\n                        if (ky == 16'd{}) begin\n                            ky <= 16'd0;\n                            if (ox == 16'd{}) begin\n                                ox <= 16'd0;\n                                if (written != 32'd{}) oy <= oy + 16'd1;\n                            end else begin\n                                ox <= ox + 16'd1;\n                            end\n                        end else begin\n                            ky <= ky + 16'd1;\n                        end\n                    end else begin\n                        kx <= kx + 16'd1;\n                    end\n                end else begin\n                    cb <= cb + {cbw}'d1;\n                end\n            end",
        cb - 1,
        g.kernel[1] - 1,
        g.kernel[0] - 1,
        g.out_hw[1] - 1,
        writes - 1
    );
    let _ = writeln!(
        v,
        "            if (do_read) begin\n                if (rc == {cbw}'d{}) begin\n                    rc <= {cbw}'d0;\n                    if (rx == 16'd{}) begin\n                        rx <= 16'd0;\n                        read_rows <= read_rows + 32'd1;\n                        rslot <= rslot == {rw}'d{} ? {rw}'d0 : rslot + {rw}'d1;\n                    end else begin\n                        rx <= rx + 16'd1;\n                    end\n                end else begin\n                    rc <= rc + {cbw}'d1;\n                end\n            end\n        end\n    end",
        cb - 1,
        wd - 1,
        rows - 1
    );
    if w.input != w.output {
        // Bipolar bits become 2-bit integers: +1 is 01, -1 is 11, the padding 00.
        let _ = writeln!(v, "    genvar g;\n    generate\n        for (g = 0; g < {simd}; g = g + 1) begin : widen\n            assign m_tdata[g*2 +: 2] = pad ? 2'b00 : (tap[g] ? 2'b01 : 2'b11);\n        end\n    endgenerate");
    } else {
        let _ = writeln!(v, "    assign m_tdata = pad ? {ow}'d0 : tap;");
    }
    let _ = writeln!(
        v,
        "    wire unused = ^{{row_slot, col, next_base_slot}};\nendmodule"
    );
    LayerRtl {
        verilog: v,
        memories: Vec::new(),
    }
}

/// A standalone max (or, per channel, min) pool: the window generator's taps, and a bank of
/// one running extreme per channel beat, written out at each window's last tap. The taps of
/// a window come in order (rows, columns, then channel beats), one beat per cycle.
fn pool(module: &str, p: &Pool, iw: usize, ow: usize) -> Result<LayerRtl, String> {
    let g = &p.geometry;
    if g.pads.iter().any(|&x| x > 0) {
        // The window generator writes zeros at padded taps, which a max must skip.
        return Err("the Verilog backend pools only unpadded windows yet".into());
    }
    let window_module = format!("{module}_window");
    let taps_rtl = window(
        &window_module,
        &Window {
            geometry: g.clone(),
            input: p.encoding,
            output: p.encoding,
            simd: p.lanes,
        },
        iw,
        iw,
    );
    let lanes = p.lanes;
    let cb = g.channels / lanes;
    let taps = g.taps();
    let (cbw, tw) = (clog2(cb), clog2(taps));
    let bits = p.encoding.bits() as usize;
    // Compared as signed values one bit wider than the elements.
    let cw = bits + 1;
    let mut v = String::new();
    let _ = writeln!(
        v,
        "module {module} (\n    input wire clk,\n    input wire rst,\n    input wire [{}:0] s_tdata,\n    input wire s_tvalid,\n    output wire s_tready,\n    output reg [{}:0] m_tdata,\n    output reg m_tvalid,\n    input wire m_tready\n);",
        iw - 1,
        ow - 1
    );
    let _ = writeln!(
        v,
        "    wire [{}:0] t;\n    wire t_valid;\n    wire t_ready;",
        iw - 1
    );
    let _ = writeln!(v, "    {window_module} taps (.clk(clk), .rst(rst), .s_tdata(s_tdata), .s_tvalid(s_tvalid), .s_tready(s_tready), .m_tdata(t), .m_tvalid(t_valid), .m_tready(t_ready));");
    let _ = writeln!(v, "    // Slot c = beat * {lanes} + lane takes its minimum where bit c is set.\n    localparam [{}:0] TAKE_MIN = {}'h{};", g.channels - 1, g.channels, hex_word(&p.take_min));
    let _ = writeln!(
        v,
        "    reg [{}:0] best [0:{}];\n    reg [{}:0] cb;\n    reg [{}:0] tap;",
        iw - 1,
        cb - 1,
        cbw - 1,
        tw - 1
    );
    let _ = writeln!(v, "    wire en = !m_tvalid || m_tready;\n    assign t_ready = en;\n    wire fire = en && t_valid;\n    wire last = tap == {tw}'d{};", taps - 1);
    let _ = writeln!(v, "    reg [{}:0] merged;\n    reg [{}:0] old;\n    reg signed [{}:0] a;\n    reg signed [{}:0] b;\n    integer l;", iw - 1, iw - 1, cw - 1, cw - 1);
    let _ = writeln!(v, "    always @* begin\n        old = best[cb];\n        merged = t;\n        for (l = 0; l < {lanes}; l = l + 1) begin\n            a = {};\n            b = {};", element("t", "l", p.encoding, cw), element("old", "l", p.encoding, cw));
    let _ = writeln!(v, "            if (tap != {tw}'d0 && (TAKE_MIN[{{{}'d0, cb}} * {lanes} + l] ? b <= a : b >= a))\n                merged[l*{bits} +: {bits}] = old[l*{bits} +: {bits}];\n        end\n    end", 32usize.saturating_sub(cbw));
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n            cb <= {cbw}'d0;\n            tap <= {tw}'d0;\n        end else if (en) begin\n            m_tvalid <= fire && last;\n            if (fire) begin\n                best[cb] <= merged;\n                if (last) m_tdata <= merged;\n                if (cb == {cbw}'d{}) begin\n                    cb <= {cbw}'d0;\n                    tap <= last ? {tw}'d0 : tap + {tw}'d1;\n                end else begin\n                    cb <= cb + {cbw}'d1;\n                end\n            end\n        end\n    end\nendmodule", cb - 1);
    // The window generator is this layer's own, in its file.
    let _ = write!(
        v,
        "/* verilator lint_off DECLFILENAME */\n{}/* verilator lint_on DECLFILENAME */\n",
        taps_rtl.verilog
    );
    Ok(LayerRtl {
        verilog: v,
        memories: taps_rtl.memories,
    })
}

/// A per-slot table of 32-bit words (f32 bits): a constant when one, else a ROM read at
/// `index`. Returns the Verilog expression.
fn slot_word(
    v: &mut String,
    memories: &mut Vec<(String, String)>,
    module: &str,
    name: &str,
    words: &[u32],
    index: &str,
    slots: usize,
) -> String {
    if words.iter().all(|&w| w == words[0]) {
        return format!("32'h{:08x}", words[0]);
    }
    let file = format!("{module}_{name}.mem");
    let text: String = (0..slots)
        .map(|j| format!("{:08x}\n", words[j % words.len()]))
        .collect();
    memories.push((file.clone(), text));
    let _ = writeln!(
        v,
        "    reg [31:0] {name} [0:{}];\n    initial $readmemh(\"rtl/mem/{file}\", {name});",
        slots - 1
    );
    format!("{name}[{index}]")
}

/// A standalone threshold: a comparator bank per lane, thresholds per slot.
fn threshold(module: &str, t: &ThresholdLayer, iw: usize, ow: usize) -> LayerRtl {
    let lanes = t.lanes;
    let cb = t.channels / lanes;
    let th = &t.thresholds;
    let ib = t.input.bits() as usize;
    let ob = th.output.bits() as usize;
    let (lo, hi) = th
        .values
        .iter()
        .fold(t.input.range().unwrap_or((0, 0)), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let ab =
        (64 - (lo.unsigned_abs().max(hi.unsigned_abs())).leading_zeros() as usize + 2).max(ib + 2);
    let mut memories = Vec::new();
    let cbw = clog2(cb);
    let mut v = String::new();
    let _ = writeln!(
        v,
        "module {module} (\n    input wire clk,\n    input wire rst,\n    input wire [{}:0] s_tdata,\n    input wire s_tvalid,\n    output wire s_tready,\n    output reg [{}:0] m_tdata,\n    output reg m_tvalid,\n    input wire m_tready\n);",
        iw - 1,
        ow - 1
    );
    // Slot j's thresholds, and its direction in the top bit.
    let mut text = String::new();
    for j in 0..t.channels {
        let mut bits = Vec::new();
        for k in 0..th.levels {
            push_bits(&mut bits, th.values[j * th.levels + k], ab as u32);
        }
        bits.push(th.descending[j]);
        let _ = writeln!(text, "{}", hex_word(&bits));
    }
    let tw = th.levels * ab + 1;
    memories.push((format!("{module}_t.mem"), text));
    let _ = writeln!(v, "    reg [{}:0] thresholds [0:{}];\n    initial $readmemh(\"rtl/mem/{module}_t.mem\", thresholds);", tw - 1, t.channels - 1);
    let _ = writeln!(v, "    reg [{}:0] cb;\n    wire en = !m_tvalid || m_tready;\n    assign s_tready = en;\n    wire fire = en && s_tvalid;", cbw - 1);
    let _ = writeln!(v, "    reg [{}:0] result;\n    reg [{}:0] row;\n    reg signed [{}:0] a;\n    reg [15:0] count;\n    reg signed [23:0] code;\n    integer l;\n    integer k;\n    wire unused = ^code;", ow - 1, tw - 1, ab - 1);
    let _ = writeln!(v, "    always @* begin\n        result = {ow}'d0;\n        for (l = 0; l < {lanes}; l = l + 1) begin\n            row = thresholds[{{{}'d0, cb}} * {lanes} + l];\n            a = {};\n            count = 16'd0;", 32usize.saturating_sub(cbw), element("s_tdata", "l", t.input, ab));
    if th.levels > 0 {
        let _ = writeln!(v, "            for (k = 0; k < {}; k = k + 1)\n                if (row[{}] ? a <= $signed(row[k*{ab} +: {ab}]) : a >= $signed(row[k*{ab} +: {ab}]))\n                    count = count + 16'd1;", th.levels, tw - 1);
    }
    let _ = writeln!(
        v,
        "            code = {} + {} * $signed({{8'd0, count}});",
        sconst(24, th.offset),
        sconst(24, th.step)
    );
    if th.output == Encoding::Bipolar {
        let _ = writeln!(v, "            result[l] = code > 24'sd0;");
    } else {
        let _ = writeln!(
            v,
            "            result[l*{ob} +: {ob}] = code[{}:0];",
            ob - 1
        );
    }
    let _ = writeln!(v, "        end\n    end");
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n            cb <= {cbw}'d0;\n        end else if (en) begin\n            m_tvalid <= fire;\n            if (fire) begin\n                m_tdata <= result;\n                cb <= cb == {cbw}'d{} ? {cbw}'d0 : cb + {cbw}'d1;\n            end\n        end\n    end\nendmodule", cb - 1);
    LayerRtl {
        verilog: v,
        memories,
    }
}

/// Elementwise f32 arithmetic (`bnnc_f32_*.v`), lane by lane, one beat per cycle.
fn elementwise(
    module: &str,
    e: &Elementwise,
    iws: Vec<usize>,
    ow: usize,
) -> Result<LayerRtl, String> {
    let lanes = e.lanes;
    let cb = e.channels / lanes;
    let cbw = clog2(cb);
    let n = e.inputs.len();
    let mut memories = Vec::new();
    let mut v = String::new();
    let ports: Vec<String> = (0..n)
        .map(|k| format!("    input wire [{}:0] s{k}_tdata,\n    input wire s{k}_tvalid,\n    output wire s{k}_tready,", iws[k] - 1))
        .collect();
    let _ = writeln!(
        v,
        "module {module} (\n    input wire clk,\n    input wire rst,\n{}\n    output reg [{}:0] m_tdata,\n    output reg m_tvalid,\n    input wire m_tready\n);",
        ports.join("\n"),
        ow - 1
    );
    let all_valid = (0..n)
        .map(|k| format!("s{k}_tvalid"))
        .collect::<Vec<_>>()
        .join(" && ");
    let _ = writeln!(v, "    reg [{}:0] cb;\n    wire en = !m_tvalid || m_tready;\n    wire fire = en && {all_valid};", cbw - 1);
    for k in 0..n {
        let others: Vec<String> = (0..n)
            .filter(|&o| o != k)
            .map(|o| format!(" && s{o}_tvalid"))
            .collect();
        let _ = writeln!(v, "    assign s{k}_tready = en{};", others.join(""));
    }
    let _ = writeln!(v, "    wire [{}:0] result;", ow - 1);
    let _ = writeln!(
        v,
        "    genvar l;\n    generate\n        for (l = 0; l < {lanes}; l = l + 1) begin : lane"
    );
    let slot = format!("{{{}'d0, cb}} * {lanes} + l", 32usize.saturating_sub(cbw));
    let mut tables = 0;
    let mut table = |v: &mut String, memories: &mut Vec<(String, String)>, words: &[f32]| {
        tables += 1;
        let bits: Vec<u32> = words.iter().map(|w| w.to_bits()).collect();
        slot_word(
            v,
            memories,
            module,
            &format!("c{tables}"),
            &bits,
            &slot,
            e.channels,
        )
    };
    // The inputs' values.
    let mut body = String::new();
    for (k, (enc, dec)) in e.inputs.iter().enumerate() {
        match (enc, dec) {
            (Encoding::F32, _) => {
                let _ = writeln!(
                    body,
                    "            wire [31:0] in{k} = s{k}_tdata[l*32 +: 32];"
                );
            }
            (Encoding::Int { .. } | Encoding::Bipolar, Decode::Scaled(scales)) => {
                let b = enc.bits() as usize;
                let w = b + 1;
                let int = element(&format!("s{k}_tdata"), "l", *enc, w);
                let _ = writeln!(body, "            wire [{}:0] int{k} = {int};\n            wire [31:0] raw{k};\n            bnnc_f32_from_int #(.WIDTH({w})) from{k} (.a(int{k}), .y(raw{k}));", w - 1);
                let s = table(&mut body, &mut memories, scales);
                let _ = writeln!(body, "            wire [31:0] in{k};\n            bnnc_f32_mul scale{k} (.a(raw{k}), .b({s}), .y(in{k}));");
            }
            _ => {
                return Err(
                    "the Verilog backend has no elementwise layer on threshold levels yet".into(),
                )
            }
        }
    }
    let mut last = String::new();
    for (i, op) in e.ops.iter().enumerate() {
        let mut operand =
            |o: &Operand, body: &mut String, memories: &mut Vec<(String, String)>| -> String {
                match o {
                    Operand::Input(k) => format!("in{k}"),
                    Operand::Op(j) => format!("r{j}"),
                    Operand::Const(c) => table(body, memories, c),
                }
            };
        match op {
            ElementOp::Binary(b, p, q) => {
                let (p, q) = (
                    operand(p, &mut body, &mut memories),
                    operand(q, &mut body, &mut memories),
                );
                let _ = writeln!(body, "            wire [31:0] r{i};");
                match b {
                    bnnc_ir::BinaryOp::Add => {
                        let _ = writeln!(
                            body,
                            "            bnnc_f32_add op{i} (.a({p}), .b({q}), .y(r{i}));"
                        );
                    }
                    bnnc_ir::BinaryOp::Sub => {
                        let _ = writeln!(body, "            wire [31:0] neg{i} = {q} ^ 32'h80000000;\n            bnnc_f32_add op{i} (.a({p}), .b(neg{i}), .y(r{i}));");
                    }
                    bnnc_ir::BinaryOp::Mul => {
                        let _ = writeln!(
                            body,
                            "            bnnc_f32_mul op{i} (.a({p}), .b({q}), .y(r{i}));"
                        );
                    }
                    _ => return Err(format!("the Verilog backend has no f32 {} yet", b.name())),
                }
            }
            ElementOp::Relu(x) => {
                let x = operand(x, &mut body, &mut memories);
                // x > 0 ? x : +0 (a NaN gives +0).
                let _ = writeln!(body, "            wire [31:0] r{i} = (!{x}[31] && {x}[30:0] != 31'd0 && !{}) ? {x} : 32'd0;", f32_nan(&x));
            }
            ElementOp::BipolarQuant(x, s) => {
                let (x, s) = (
                    operand(x, &mut body, &mut memories),
                    operand(s, &mut body, &mut memories),
                );
                // (x >= 0 ? 1 : -1) * s: s, or s with its sign flipped (a NaN x gives -1).
                let _ = writeln!(body, "            wire nonneg{i} = !{} && (!{x}[31] || {x}[30:0] == 31'd0);\n            wire [31:0] r{i} = nonneg{i} ? {s} : {s} ^ 32'h80000000;", f32_nan(&x));
            }
            _ => return Err("the Verilog backend has no f32 Sign, Clip or Quant yet".into()),
        }
        last = format!("r{i}");
    }
    let _ = write!(v, "{body}");
    match e.output {
        Encoding::F32 => {
            let _ = writeln!(v, "            assign result[l*32 +: 32] = {last};");
        }
        Encoding::Bipolar if e.output_scale.iter().all(|&s| s == 1.0) => {
            // round(v / 1) of +-1: the sign.
            let _ = writeln!(v, "            assign result[l] = !{last}[31];\n            wire unused_value = ^{last};");
        }
        _ => {
            return Err(
                "the Verilog backend has no f32-to-integer conversion but to bipolar yet".into(),
            )
        }
    }
    let _ = writeln!(v, "        end\n    endgenerate");
    let _ = writeln!(v, "    always @(posedge clk) begin\n        if (rst) begin\n            m_tvalid <= 1'b0;\n            cb <= {cbw}'d0;\n        end else if (en) begin\n            m_tvalid <= fire;\n            if (fire) begin\n                m_tdata <= result;\n                cb <= cb == {cbw}'d{} ? {cbw}'d0 : cb + {cbw}'d1;\n            end\n        end\n    end\nendmodule", cb - 1);
    Ok(LayerRtl {
        verilog: v,
        memories,
    })
}

/// The Verilog test that the f32 `x` is a NaN: `bnnc_f32_unpack`'s `nan`, written inline where
/// a layer needs no other field.
fn f32_nan(x: &str) -> String {
    format!("({x}[30:23] == 8'hff && {x}[22:0] != 23'd0)")
}
