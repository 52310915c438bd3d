//! One C++ function per hardware layer, each processing one frame: the loops of FINN's
//! building blocks (`../shared/docs/fpga.md`), written out for the layer's sizes, with its
//! weights and thresholds as `static const` tables in a header of their own.

use std::fmt::Write;

use bnnc_dataflow::estimate::buffer_rows;
use bnnc_dataflow::host::{c_float, c_value};
use bnnc_dataflow::plan::{
    Decode, ElementOp, Elementwise, Encoding, Layer, LayerKind, Mac, Mvau, Operand, Plan, Pool,
    ThresholdLayer, Thresholds, Window, WindowGeometry,
};
use bnnc_ir::RoundingMode;

/// A layer's C++: its tables (a header) and its function.
pub struct LayerCode {
    /// The function's name.
    pub function: String,
    /// `static const` tables, or empty.
    pub tables: String,
    /// The function's definition.
    pub body: String,
}

/// The beat type of `lanes` elements of `encoding`.
pub fn beat(encoding: Encoding, lanes: usize) -> String {
    format!("ap_uint<{}>", encoding.bits() as usize * lanes)
}

/// The smallest C integer type holding every value of `values`.
fn c_int_type(lo: i64, hi: i64) -> &'static str {
    if lo >= i64::from(i8::MIN) && hi <= i64::from(i8::MAX) {
        "int8_t"
    } else if lo >= i64::from(i16::MIN) && hi <= i64::from(i16::MAX) {
        "int16_t"
    } else if lo >= i64::from(i32::MIN) && hi <= i64::from(i32::MAX) {
        "int32_t"
    } else {
        "int64_t"
    }
}

fn join<T: std::fmt::Display>(v: impl IntoIterator<Item = T>) -> String {
    v.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The signed value of element `i` of `beat` as a C++ expression (`ap_int`).
fn element(beat: &str, i: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Bipolar => format!("ap_int<2>({beat}[{i}] ? 1 : -1)"),
        Encoding::Int { bits, signed: true } => {
            format!("ap_int<{bits}>(ap_uint<{bits}>(BNNC_ELEM({beat}, {i}, {bits})))")
        }
        Encoding::Int {
            bits,
            signed: false,
        } => {
            format!(
                "ap_int<{}>(ap_uint<{bits}>(BNNC_ELEM({beat}, {i}, {bits})))",
                bits + 1
            )
        }
        Encoding::F32 => format!("bnnc_f32(BNNC_ELEM({beat}, {i}, 32))"),
    }
}

/// Stores integer expression `value` as element `i` of `beat`.
fn store(beat: &str, i: &str, encoding: Encoding, value: &str) -> String {
    match encoding {
        Encoding::Bipolar => format!("{beat}[{i}] = ({value}) > 0;"),
        Encoding::Int { bits, .. } => format!("BNNC_ELEM({beat}, {i}, {bits}) = ({value});"),
        Encoding::F32 => format!("BNNC_ELEM({beat}, {i}, 32) = bnnc_f32_bits({value});"),
    }
}

/// Packs `values` of `bits` each into 64-bit words, `per_word` to a word (element `s` at bit
/// `(s % per_word) * bits` of word `s / per_word`).
fn pack_words(
    values: impl Iterator<Item = u64>,
    bits: u32,
    words: usize,
    per_word: usize,
) -> Vec<u64> {
    let mut out = vec![0u64; words];
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    for (s, v) in values.enumerate() {
        out[s / per_word] |= (v & mask) << ((s % per_word) as u32 * bits);
    }
    out
}

/// The code of one layer.
pub fn layer_code(plan: &Plan, index: usize, layer: &Layer) -> LayerCode {
    let function = layer.symbol(index);
    let stream = |s: usize| &plan.streams[s];
    let input = |k: usize| {
        let s = stream(layer.inputs[k]);
        beat(s.encoding, s.lanes)
    };
    let output = |k: usize| {
        let s = stream(layer.outputs[k]);
        beat(s.encoding, s.lanes)
    };
    let mut tables = String::new();
    let mut body = String::new();
    let _ = writeln!(
        body,
        "/* {} ({}): {} */",
        layer.name,
        layer.kind.name(),
        join(&layer.nodes)
    );
    match &layer.kind {
        LayerKind::Mvau(m) => mvau(&mut tables, &mut body, &function, m, &input(0), &output(0)),
        LayerKind::Window(w) => window(&mut body, &function, w, &input(0), &output(0)),
        LayerKind::Pool(p) => pool(&mut tables, &mut body, &function, p, &input(0), &output(0)),
        LayerKind::Threshold(t) => threshold(
            &mut tables,
            &mut body,
            &function,
            t,
            stream(layer.inputs[0]).elements(),
            &input(0),
            &output(0),
        ),
        LayerKind::Elementwise(e) => {
            let inputs: Vec<String> = (0..layer.inputs.len()).map(input).collect();
            elementwise(
                &mut tables,
                &mut body,
                &function,
                e,
                stream(layer.outputs[0]).elements(),
                &inputs,
                &output(0),
            )
        }
        LayerKind::Duplicate { lanes } => {
            let s = stream(layer.inputs[0]);
            let ty = beat(s.encoding, *lanes);
            let outs: Vec<String> = (0..layer.outputs.len())
                .map(|k| format!("hls::stream<{ty}> &out{k}"))
                .collect();
            let _ = writeln!(
                body,
                "void {function}(hls::stream<{ty}> &in, {}) {{",
                outs.join(", ")
            );
            let _ = writeln!(
                body,
                "  for (unsigned i = 0; i < {}; i++) {{\n#pragma HLS PIPELINE II=1",
                s.elements() / lanes
            );
            let _ = writeln!(body, "    {ty} x = in.read();");
            for k in 0..layer.outputs.len() {
                let _ = writeln!(body, "    out{k}.write(x);");
            }
            let _ = writeln!(body, "  }}\n}}");
        }
        LayerKind::Convert { from, to } => {
            let s = stream(layer.inputs[0]);
            convert(
                &mut body,
                &function,
                s.encoding.bits(),
                *from,
                *to,
                s.elements(),
            );
        }
    }
    LayerCode {
        function,
        tables,
        body,
    }
}

/// A matrix-vector unit: FINN's MVAU loop, one flattened loop of `pixels * NF * SF` at II 1,
/// the input vector buffered in the first neuron fold, PE accumulators of SIMD products each.
fn mvau(tables: &mut String, body: &mut String, f: &str, m: &Mvau, in_ty: &str, out_ty: &str) {
    let (pe, simd, nf, sf) = (m.pe, m.simd, m.nf(), m.sf());
    let wbits = m.weight.bits();
    let word_bits = simd as u32 * wbits;
    // Weights: [PE][NF * SF] words of SIMD elements, none straddling a 64-bit word.
    let per_word = (64 / wbits) as usize;
    let words = simd.div_ceil(per_word);
    let wty = match word_bits {
        0..=8 => "uint8_t",
        9..=16 => "uint16_t",
        17..=32 => "uint32_t",
        _ => "uint64_t",
    };
    let dims = if words > 1 {
        format!("[{words}]")
    } else {
        String::new()
    };
    let _ = write!(
        tables,
        "static const {wty} {f}_w[{pe}][{}]{dims} = {{",
        nf * sf
    );
    for p in 0..pe {
        tables.push_str(if p == 0 { "\n  {" } else { ",\n  {" });
        for t in 0..nf * sf {
            let (n, s) = (t / sf, t % sf);
            let row = n * pe + p;
            let codes = (0..simd).map(|k| m.weight.code(m.weights[row * m.mw + s * simd + k]));
            let packed = pack_words(codes, wbits, words, per_word);
            if t > 0 {
                tables.push(',');
            }
            if words > 1 {
                let _ = write!(
                    tables,
                    "{{{}}}",
                    join(packed.iter().map(|w| format!("0x{w:x}ull")))
                );
            } else {
                let _ = write!(tables, "0x{:x}", packed[0]);
            }
        }
        tables.push('}');
    }
    tables.push_str("\n};\n");
    let acc_bits = m.acc.bits() + 2;
    let acc = format!("ap_int<{acc_bits}>");
    if let Some(t) = &m.thresholds {
        threshold_tables(tables, f, t, pe, nf);
    }
    let out_bits = m.output().bits();
    let pool = m.pool.as_ref();
    let _ = writeln!(
        body,
        "void {f}(hls::stream<{in_ty}> &in, hls::stream<{out_ty}> &out) {{"
    );
    let _ = writeln!(
        body,
        "#pragma HLS ARRAY_PARTITION variable={f}_w complete dim=1"
    );
    if m.thresholds.is_some() {
        let _ = writeln!(
            body,
            "#pragma HLS ARRAY_PARTITION variable={f}_t complete dim=1"
        );
    }
    let _ = writeln!(body, "  {in_ty} buf[{sf}];\n  {acc} acc[{pe}];\n#pragma HLS ARRAY_PARTITION variable=acc complete");
    if let Some(p) = pool {
        let _ = writeln!(body, "  {out_ty} pooled[{}][{nf}];", p.out_hw[1]);
        if p.take_min.iter().any(|&x| x) && !p.take_min.iter().all(|&x| x) {
            let _ = write!(tables, "static const uint8_t {f}_min[{pe}][{nf}] = {{");
            for pp in 0..pe {
                let row: Vec<u8> = (0..nf).map(|n| u8::from(p.take_min[n * pe + pp])).collect();
                let _ = write!(
                    tables,
                    "{}{{{}}}",
                    if pp > 0 { ", " } else { "" },
                    join(row)
                );
            }
            tables.push_str("};\n");
        }
    }
    let _ = writeln!(body, "  unsigned nf = 0, sf = 0, y = 0, x = 0;");
    let _ = writeln!(
        body,
        "  for (unsigned i = 0; i < {}; i++) {{\n#pragma HLS PIPELINE II=1",
        m.pixels * nf * sf
    );
    let _ = writeln!(body, "    {in_ty} v;\n    if (nf == 0) {{\n      v = in.read();\n      buf[sf] = v;\n    }} else {{\n      v = buf[sf];\n    }}");
    if m.mac != Mac::Xnor {
        // The beat's elements, once for every PE.
        let a_bits = m.input.bits() + 1;
        let _ = writeln!(
            body,
            "    ap_int<{a_bits}> a[{simd}];\n#pragma HLS ARRAY_PARTITION variable=a complete"
        );
        let _ = writeln!(
            body,
            "    for (unsigned s = 0; s < {simd}; s++) {{\n#pragma HLS UNROLL\n      a[s] = {};\n    }}",
            element("v", "s", m.input)
        );
    }
    let _ = writeln!(
        body,
        "    for (unsigned pe = 0; pe < {pe}; pe++) {{\n#pragma HLS UNROLL"
    );
    let _ = writeln!(body, "      {acc} sum = 0;");
    match m.mac {
        Mac::Xnor => {
            if words > 1 {
                let _ = writeln!(
                    body,
                    "      ap_uint<{word_bits}> w = bnnc_join<{word_bits}, {words}>({f}_w[pe][nf * {sf} + sf]);"
                );
            } else {
                let _ = writeln!(
                    body,
                    "      ap_uint<{word_bits}> w = {f}_w[pe][nf * {sf} + sf];"
                );
            }
            let _ = writeln!(body, "      sum = bnnc_popcount<{simd}>(~(v ^ w));");
        }
        mac => {
            let word = if words > 1 {
                format!("{f}_w[pe][nf * {sf} + sf][s / {per_word}]")
            } else {
                format!("{f}_w[pe][nf * {sf} + sf]")
            };
            let mask = if wbits >= 64 {
                u64::MAX
            } else {
                (1u64 << wbits) - 1
            };
            let _ = writeln!(
                body,
                "      for (unsigned s = 0; s < {simd}; s++) {{\n#pragma HLS UNROLL"
            );
            let _ = writeln!(
                body,
                "        uint64_t wb = ((uint64_t){word} >> ((s % {per_word}) * {wbits})) & 0x{mask:x}ull;"
            );
            let wv = match m.weight {
                Encoding::Int { bits, signed: true } => {
                    format!("ap_int<{bits}>(ap_uint<{bits}>(wb))")
                }
                Encoding::Int {
                    bits,
                    signed: false,
                } => format!("ap_int<{}>(wb)", bits + 1),
                _ => "ap_int<2>(wb ? 1 : -1)".to_string(),
            };
            let product = match mac {
                Mac::IntByBipolar => format!("(wb ? {acc}(a[s]) : {acc}(-a[s]))"),
                _ => format!("{acc}(a[s] * {wv})"),
            };
            let _ = writeln!(body, "        sum += {product};\n      }}");
        }
    }
    let _ = writeln!(
        body,
        "      acc[pe] = (sf == 0 ? {acc}(0) : acc[pe]) + sum;\n    }}"
    );
    // The output stage.
    let _ = writeln!(body, "    if (sf == {}) {{\n      {out_ty} o = 0;", sf - 1);
    let _ = writeln!(
        body,
        "      for (unsigned pe = 0; pe < {pe}; pe++) {{\n#pragma HLS UNROLL"
    );
    let dot = if m.mac == Mac::Xnor {
        format!("{acc}(2 * acc[pe] - {})", m.mw)
    } else {
        "acc[pe]".to_string()
    };
    let _ = writeln!(body, "        {acc} a = {dot};");
    match &m.thresholds {
        Some(t) => {
            let code = threshold_count(body, f, t, "a", "[pe][nf]", "        ");
            let _ = writeln!(body, "        {}", store("o", "pe", t.output, &code));
        }
        None => {
            let _ = writeln!(body, "        {}", store("o", "pe", m.acc, "a"));
        }
    }
    let _ = writeln!(body, "      }}");
    match pool {
        None => {
            let _ = writeln!(body, "      out.write(o);");
        }
        Some(p) => {
            let (kh, kw) = (p.kernel[0], p.kernel[1]);
            let _ = writeln!(
                body,
                "      if (y / {kh} < {} && x / {kw} < {}) {{",
                p.out_hw[0], p.out_hw[1]
            );
            let _ = writeln!(
                body,
                "        {out_ty} prev = pooled[x / {kw}][nf], merged = 0;"
            );
            let _ = writeln!(body, "        bool opens = y % {kh} == 0 && x % {kw} == 0;");
            let _ = writeln!(
                body,
                "        for (unsigned pe = 0; pe < {pe}; pe++) {{\n#pragma HLS UNROLL"
            );
            let enc = m.output();
            let (new, old) = (element("o", "pe", enc), element("prev", "pe", enc));
            let take_min = if p.take_min.iter().all(|&x| x) {
                "true".to_string()
            } else if p.take_min.iter().any(|&x| x) {
                format!("{f}_min[pe][nf]")
            } else {
                "false".to_string()
            };
            let _ = writeln!(
                body,
                "          bool take = opens || ({take_min} ? {new} < {old} : {new} > {old});"
            );
            let _ = writeln!(body, "          BNNC_ELEM(merged, pe, {out_bits}) = take ? BNNC_ELEM(o, pe, {out_bits}) : BNNC_ELEM(prev, pe, {out_bits});\n        }}");
            let _ = writeln!(body, "        pooled[x / {kw}][nf] = merged;");
            let _ = writeln!(
                body,
                "        if ((y % {kh} == {} || y == {}) && (x % {kw} == {} || x == {})) out.write(merged);\n      }}",
                kh - 1,
                p.in_hw[0] - 1,
                kw - 1,
                p.in_hw[1] - 1
            );
        }
    }
    let _ = writeln!(body, "    }}");
    let (oh, ow) = (m.out_hw[0], m.out_hw[1]);
    let _ = writeln!(
        body,
        "    if (++sf == {sf}) {{\n      sf = 0;\n      if (++nf == {nf}) {{\n        nf = 0;\n        if (++x == {ow}) {{\n          x = 0;\n          if (++y == {oh}) y = 0;\n        }}\n      }}\n    }}"
    );
    let _ = writeln!(body, "  }}\n}}");
}

/// Threshold tables `[PE][NF][levels]` (and directions) for rows `nf * PE + pe`.
fn threshold_tables(tables: &mut String, f: &str, t: &Thresholds, pe: usize, nf: usize) {
    let (lo, hi) = t
        .values
        .iter()
        .fold((0i64, 0i64), |(a, b), &v| (a.min(v), b.max(v)));
    let levels = t.levels.max(1);
    let _ = write!(
        tables,
        "static const {} {f}_t[{pe}][{nf}][{levels}] = {{",
        c_int_type(lo, hi)
    );
    for p in 0..pe {
        let rows: Vec<String> = (0..nf)
            .map(|n| {
                let r = n * pe + p;
                let row = &t.values[r * t.levels..(r + 1) * t.levels];
                format!(
                    "{{{}}}",
                    if row.is_empty() {
                        "0".into()
                    } else {
                        join(row)
                    }
                )
            })
            .collect();
        let _ = write!(
            tables,
            "{}\n  {{{}}}",
            if p > 0 { "," } else { "" },
            rows.join(", ")
        );
    }
    tables.push_str("\n};\n");
    if t.descending.iter().any(|&d| d) {
        let _ = write!(tables, "static const uint8_t {f}_d[{pe}][{nf}] = {{");
        for p in 0..pe {
            let row = (0..nf).map(|n| u8::from(t.descending[n * pe + p]));
            let _ = write!(tables, "{}{{{}}}", if p > 0 { ", " } else { "" }, join(row));
        }
        tables.push_str("};\n");
    }
}

/// Emits the threshold count of accumulator `a` against row `index` of `f_t`, returns the
/// element's integer expression.
fn threshold_count(
    body: &mut String,
    f: &str,
    t: &Thresholds,
    a: &str,
    index: &str,
    indent: &str,
) -> String {
    let _ = writeln!(body, "{indent}ap_uint<16> count = 0;");
    let _ = writeln!(
        body,
        "{indent}for (unsigned k = 0; k < {}; k++) {{\n#pragma HLS UNROLL",
        t.levels
    );
    let cmp = if t.descending.iter().all(|&d| d) {
        format!("{a} <= {f}_t{index}[k]")
    } else if t.descending.iter().any(|&d| d) {
        format!("({f}_d{index} ? {a} <= {f}_t{index}[k] : {a} >= {f}_t{index}[k])")
    } else {
        format!("{a} >= {f}_t{index}[k]")
    };
    let _ = writeln!(body, "{indent}  count += ({cmp}) ? 1 : 0;\n{indent}}}");
    format!(
        "ap_int<24>({}) + ap_int<24>({}) * ap_int<24>(count)",
        t.offset, t.step
    )
}

/// The loop of a window generator or pool: a circular buffer of rows, one read and one write
/// (or reduction step) per cycle, writes starting once the rows of the current output row
/// are in, reads running ahead as far as the buffer allows.
struct WindowLoop<'a> {
    g: &'a WindowGeometry,
    lanes: usize,
    in_ty: &'a str,
}

impl WindowLoop<'_> {
    /// Emits the loop; `emit` writes the statements for one tap beat `t` (bits of the tap or
    /// zeros; `valid` says which) at counters `oy, ox, ky, kx, cb`.
    fn emit(&self, body: &mut String, emit: &dyn Fn(&mut String)) {
        let g = self.g;
        let cb = g.channels / self.lanes;
        let rows = buffer_rows(g);
        let (h, w) = (g.in_hw[0], g.in_hw[1]);
        let reads = h * w * cb;
        let writes = g.out_hw[0] * g.out_hw[1] * g.taps() * cb;
        let in_ty = self.in_ty;
        let _ = writeln!(body, "  {in_ty} rows[{rows}][{w}][{cb}];");
        let _ = writeln!(
            body,
            "  unsigned ry = 0, rx = 0, rc = 0;   /* next input beat */"
        );
        let _ = writeln!(
            body,
            "  unsigned oy = 0, ox = 0, ky = 0, kx = 0, cb = 0, written = 0;   /* next tap beat */"
        );
        let _ = writeln!(body, "  while (ry < {h} || written < {writes}) {{\n#pragma HLS PIPELINE II=1\n#pragma HLS LOOP_TRIPCOUNT min={} max={}", writes.max(reads), writes + reads);
        // Rows the current output row needs.
        let _ = writeln!(
            body,
            "    int first = int(oy * {}) - {};\n    int last = first + {};\n    if (first < 0) first = 0;\n    if (last > {}) last = {};",
            g.stride[0],
            g.pads[0],
            g.row_span() - 1,
            h - 1,
            h - 1
        );
        let _ = writeln!(
            body,
            "    bool can_write = written < {writes} && int(ry) > last;"
        );
        let _ = writeln!(
            body,
            "    bool can_read = ry < {h} && (written == {writes} || int(ry) < first + {rows});"
        );
        let _ = writeln!(body, "    if (can_write) {{");
        let _ = writeln!(
            body,
            "      int iy = int(oy * {}) - {} + int(ky * {}), ix = int(ox * {}) - {} + int(kx * {});",
            g.stride[0], g.pads[0], g.dilation[0], g.stride[1], g.pads[1], g.dilation[1]
        );
        let _ = writeln!(
            body,
            "      bool valid = iy >= 0 && iy < {h} && ix >= 0 && ix < {w};"
        );
        let _ = writeln!(body, "      {in_ty} t = valid ? rows[unsigned(iy) % {rows}][valid ? unsigned(ix) : 0][cb] : {in_ty}(0);");
        emit(body);
        let _ = writeln!(
            body,
            "      written++;\n      if (++cb == {cb}) {{\n        cb = 0;\n        if (++kx == {}) {{\n          kx = 0;\n          if (++ky == {}) {{\n            ky = 0;\n            if (++ox == {}) {{\n              ox = 0;\n              oy++;\n            }}\n          }}\n        }}\n      }}",
            g.kernel[1], g.kernel[0], g.out_hw[1]
        );
        let _ = writeln!(body, "    }}");
        let _ = writeln!(
            body,
            "    if (can_read) {{\n      rows[ry % {rows}][rx][rc] = in.read();\n      if (++rc == {cb}) {{\n        rc = 0;\n        if (++rx == {w}) {{\n          rx = 0;\n          ry++;\n        }}\n      }}\n    }}"
        );
        let _ = writeln!(body, "  }}");
    }
}

/// A sliding-window generator (zero padding; bipolar bits become 2-bit integers when padded).
fn window(body: &mut String, f: &str, w: &Window, in_ty: &str, out_ty: &str) {
    let _ = writeln!(
        body,
        "void {f}(hls::stream<{in_ty}> &in, hls::stream<{out_ty}> &out) {{"
    );
    let widen = w.input != w.output;
    let simd = w.simd;
    WindowLoop {
        g: &w.geometry,
        lanes: simd,
        in_ty,
    }
    .emit(body, &|body: &mut String| {
        if widen {
            // Bipolar to 2-bit integers: +1 = 01, -1 = 11, padding 00.
            let _ = writeln!(body, "      {out_ty} o = 0;\n      for (unsigned s = 0; s < {simd}; s++) {{\n#pragma HLS UNROLL\n        BNNC_ELEM(o, s, 2) = valid ? (t[s] ? 1 : 3) : 0;\n      }}\n      out.write(o);");
        } else {
            let _ = writeln!(body, "      out.write(t);");
        }
    });
    let _ = writeln!(body, "}}");
}

/// A max (min) pool: the window loop reducing each window's taps, padded taps skipped.
fn pool(tables: &mut String, body: &mut String, f: &str, p: &Pool, in_ty: &str, out_ty: &str) {
    let lanes = p.lanes;
    let cb = p.geometry.channels / lanes;
    let mixed = p.take_min.iter().any(|&x| x) && !p.take_min.iter().all(|&x| x);
    if mixed {
        let _ = write!(tables, "static const uint8_t {f}_min[{lanes}][{cb}] = {{");
        for l in 0..lanes {
            let row = (0..cb).map(|c| u8::from(p.take_min[c * lanes + l]));
            let _ = write!(tables, "{}{{{}}}", if l > 0 { ", " } else { "" }, join(row));
        }
        tables.push_str("};\n");
    }
    let take_min = if mixed {
        format!("{f}_min[s][cb]")
    } else {
        p.take_min.first().copied().unwrap_or(false).to_string()
    };
    let bits = p.encoding.bits();
    let taps = p.geometry.taps();
    let _ = writeln!(
        body,
        "void {f}(hls::stream<{in_ty}> &in, hls::stream<{out_ty}> &out) {{"
    );
    let _ = writeln!(body, "  {out_ty} best[{cb}];\n  bool seen[{cb}];");
    let enc = p.encoding;
    WindowLoop {
        g: &p.geometry,
        lanes,
        in_ty,
    }
    .emit(body, &|body: &mut String| {
        let _ = writeln!(body, "      bool open = ky == 0 && kx == 0;");
        let _ = writeln!(body, "      if (open) seen[cb] = false;");
        let _ = writeln!(body, "      if (valid) {{\n        {out_ty} merged = 0, prev = best[cb];");
        let _ = writeln!(body, "        for (unsigned s = 0; s < {lanes}; s++) {{\n#pragma HLS UNROLL");
        let (new, old) = (element("t", "s", enc), element("prev", "s", enc));
        let _ = writeln!(
            body,
            "          bool take = !seen[cb] || ({take_min} ? {new} < {old} : {new} > {old});\n          BNNC_ELEM(merged, s, {bits}) = take ? BNNC_ELEM(t, s, {bits}) : BNNC_ELEM(prev, s, {bits});\n        }}"
        );
        let _ = writeln!(body, "        best[cb] = merged;\n        seen[cb] = true;\n      }}");
        let _ = writeln!(body, "      if (ky * {} + kx == {}) out.write(best[cb]);", p.geometry.kernel[1], taps - 1);
    });
    let _ = writeln!(body, "}}");
}

/// A threshold on each element, thresholds per slot.
fn threshold(
    tables: &mut String,
    body: &mut String,
    f: &str,
    t: &ThresholdLayer,
    elements: usize,
    in_ty: &str,
    out_ty: &str,
) {
    let lanes = t.lanes;
    let cb = t.channels / lanes;
    // Rows by [lane][beat of the pixel]: slot = beat * lanes + lane.
    let mut th = t.thresholds.clone();
    let mut values = Vec::with_capacity(th.values.len());
    let mut descending = Vec::with_capacity(th.descending.len());
    for c in 0..cb {
        for l in 0..lanes {
            let slot = c * lanes + l;
            values.extend_from_slice(&th.values[slot * th.levels..(slot + 1) * th.levels]);
            descending.push(th.descending[slot]);
        }
    }
    // threshold_tables indexes rows as nf * PE + pe: here nf = beat, PE = lanes.
    th.values = values;
    th.descending = descending;
    threshold_tables(tables, f, &th, lanes, cb);
    let _ = writeln!(
        body,
        "void {f}(hls::stream<{in_ty}> &in, hls::stream<{out_ty}> &out) {{"
    );
    let _ = writeln!(
        body,
        "#pragma HLS ARRAY_PARTITION variable={f}_t complete dim=1"
    );
    let _ = writeln!(body, "  unsigned cb = 0;");
    let _ = writeln!(
        body,
        "  for (unsigned i = 0; i < {}; i++) {{\n#pragma HLS PIPELINE II=1",
        elements / lanes
    );
    let _ = writeln!(body, "    {in_ty} v = in.read();\n    {out_ty} o = 0;");
    let _ = writeln!(
        body,
        "    for (unsigned s = 0; s < {lanes}; s++) {{\n#pragma HLS UNROLL"
    );
    let _ = writeln!(
        body,
        "      ap_int<{}> a = {};",
        t.input.bits() + 1,
        element("v", "s", t.input)
    );
    let code = threshold_count(body, f, &th, "a", "[s][cb]", "      ");
    let _ = writeln!(body, "      {}\n    }}", store("o", "s", th.output, &code));
    let _ = writeln!(
        body,
        "    out.write(o);\n    if (++cb == {cb}) cb = 0;\n  }}\n}}"
    );
}

/// The f32 value of input `k`'s element `s` in slot `j`.
fn decoded(
    tables: &mut String,
    f: &str,
    k: usize,
    encoding: Encoding,
    decode: &Decode,
    lanes: usize,
    cb: usize,
) -> String {
    let raw = element(&format!("x{k}"), "s", encoding);
    c_value(decode, &format!("{raw}.to_int()"), &mut |scales| {
        per_slot(tables, &format!("{f}_s{k}"), scales, lanes, cb)
    })
    .unwrap_or(raw)
}

/// A per-slot constant as `name[s][cb]` (a table), or a literal when all slots agree.
fn per_slot(tables: &mut String, name: &str, values: &[f32], lanes: usize, cb: usize) -> String {
    if values.len() == 1 {
        return c_float(values[0]);
    }
    let _ = write!(tables, "static const float {name}[{lanes}][{cb}] = {{");
    for l in 0..lanes {
        let row = (0..cb).map(|c| c_float(values[(c * lanes + l) % values.len()]));
        let _ = write!(tables, "{}{{{}}}", if l > 0 { ", " } else { "" }, join(row));
    }
    tables.push_str("};\n");
    format!("{name}[s][cb]")
}

/// Elementwise f32 arithmetic, each operation in the interpreter's order.
fn elementwise(
    tables: &mut String,
    body: &mut String,
    f: &str,
    e: &Elementwise,
    elements: usize,
    in_tys: &[String],
    out_ty: &str,
) {
    let lanes = e.lanes;
    let cb = e.channels / lanes;
    let ports: Vec<String> = in_tys
        .iter()
        .enumerate()
        .map(|(k, t)| format!("hls::stream<{t}> &in{k}"))
        .collect();
    let _ = writeln!(
        body,
        "void {f}({}, hls::stream<{out_ty}> &out) {{",
        ports.join(", ")
    );
    let _ = writeln!(body, "  unsigned cb = 0;");
    let _ = writeln!(
        body,
        "  for (unsigned i = 0; i < {}; i++) {{\n#pragma HLS PIPELINE II=1",
        elements / lanes
    );
    for (k, t) in in_tys.iter().enumerate() {
        let _ = writeln!(body, "    {t} x{k} = in{k}.read();");
    }
    let _ = writeln!(
        body,
        "    {out_ty} o = 0;\n    for (unsigned s = 0; s < {lanes}; s++) {{\n#pragma HLS UNROLL"
    );
    for (k, (enc, dec)) in e.inputs.iter().enumerate() {
        let v = decoded(tables, f, k, *enc, dec, lanes, cb);
        let _ = writeln!(body, "      float in_{k} = {v};");
    }
    let mut consts = 0;
    let mut operand = |o: &Operand, tables: &mut String| -> String {
        match o {
            Operand::Input(k) => format!("in_{k}"),
            Operand::Op(k) => format!("r{k}"),
            Operand::Const(c) => {
                consts += 1;
                per_slot(tables, &format!("{f}_c{consts}"), c, lanes, cb)
            }
        }
    };
    for (k, op) in e.ops.iter().enumerate() {
        let expr = match op {
            ElementOp::Binary(b, p, q) => {
                let (p, q) = (operand(p, tables), operand(q, tables));
                match b {
                    bnnc_ir::BinaryOp::Add => format!("{p} + {q}"),
                    bnnc_ir::BinaryOp::Sub => format!("{p} - {q}"),
                    bnnc_ir::BinaryOp::Mul => format!("{p} * {q}"),
                    bnnc_ir::BinaryOp::Div => format!("{p} / {q}"),
                    bnnc_ir::BinaryOp::Pow => format!("powf({p}, {q})"),
                    // Never planned: the dataflow lowering keeps min and max off hardware.
                    bnnc_ir::BinaryOp::Min => format!("fminf({p}, {q})"),
                    bnnc_ir::BinaryOp::Max => format!("fmaxf({p}, {q})"),
                }
            }
            ElementOp::Relu(x) => {
                let x = operand(x, tables);
                format!("{x} > 0.0f ? {x} : 0.0f")
            }
            ElementOp::BipolarQuant(x, s) => {
                let (x, s) = (operand(x, tables), operand(s, tables));
                format!("({x} >= 0.0f ? 1.0f : -1.0f) * {s}")
            }
            ElementOp::Sign(x) => {
                let x = operand(x, tables);
                format!("bnnc_sign({x})")
            }
            ElementOp::Clip(x, lo, hi) => {
                let x = operand(x, tables);
                format!("bnnc_clip({x}, {}, {})", c_float(*lo), c_float(*hi))
            }
            ElementOp::Quant {
                x,
                scale,
                zero,
                min,
                max,
                bipolar,
                rounding,
            } => {
                let (x, s, z) = (
                    operand(x, tables),
                    operand(scale, tables),
                    operand(zero, tables),
                );
                let mode = match rounding {
                    RoundingMode::HalfEven => 0,
                    RoundingMode::Ceil => 1,
                    RoundingMode::Floor => 2,
                    RoundingMode::Up => 3,
                    RoundingMode::Down => 4,
                    RoundingMode::HalfUp => 5,
                    RoundingMode::HalfDown => 6,
                };
                format!(
                    "bnnc_quant({x}, {s}, {z}, {}, {}, {bipolar}, {mode})",
                    c_float(*min),
                    c_float(*max)
                )
            }
        };
        let _ = writeln!(body, "      float r{k} = {expr};");
    }
    let last = format!("r{}", e.ops.len() - 1);
    if e.output == Encoding::F32 {
        let _ = writeln!(body, "      {}", store("o", "s", e.output, &last));
    } else {
        let scale = per_slot(tables, &format!("{f}_out"), &e.output_scale, lanes, cb);
        let _ = writeln!(
            body,
            "      {}",
            store(
                "o",
                "s",
                e.output,
                &format!("ap_int<33>((long long)roundf({last} / {scale}))")
            )
        );
    }
    let _ = writeln!(
        body,
        "    }}\n    out.write(o);\n    if (++cb == {cb}) cb = 0;\n  }}\n}}"
    );
}

/// Regroups `elements` from beats of `from` to beats of `to` through a shift register of
/// `from + to` elements: each cycle one beat out when enough are held, and one in when there
/// is room.
fn convert(body: &mut String, f: &str, bits: u32, from: usize, to: usize, elements: usize) {
    let (bi, bo) = (bits as usize * from, bits as usize * to);
    let bg = bits as usize * (from + to);
    let (reads, writes) = (elements / from, elements / to);
    let _ = writeln!(
        body,
        "void {f}(hls::stream<ap_uint<{bi}>> &in, hls::stream<ap_uint<{bo}>> &out) {{"
    );
    let _ = writeln!(body, "  ap_uint<{bg}> held = 0;\n  unsigned have = 0, reads = 0, writes = 0;   /* elements held, beats moved */");
    let _ = writeln!(body, "  while (reads < {reads} || writes < {writes}) {{\n#pragma HLS PIPELINE II=1\n#pragma HLS LOOP_TRIPCOUNT min={m} max={m}", m = reads.max(writes) + 1);
    let _ = writeln!(body, "    if (have >= {to}) {{\n      out.write(ap_uint<{bo}>(held.range({}, 0)));\n      held >>= {bo};\n      have -= {to};\n      writes++;\n    }}", bo - 1);
    let _ = writeln!(body, "    if (reads < {reads} && have <= {to}) {{\n      ap_uint<{bg}> x = in.read();\n      held |= x << (have * {bits});\n      have += {from};\n      reads++;\n    }}\n  }}\n}}");
}
