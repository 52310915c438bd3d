//! The text form read back: every op kind printed in full, parsed, and printed again to the
//! same text; and the errors the parser gives, with their line and column.

use bnnc_ir::text::{parse_graph, print_graph, print_graph_full};

/// Parses `text` and prints it back in full: the same text.
fn check(text: &str) {
    let graph = parse_graph(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print_graph_full(&graph), text);
    // The summary reads the same graph, so it is what the printer alone gives.
    assert!(print_graph(&graph).starts_with("graph "));
}

/// `text` fails to parse with an error at `line`, `column` whose message contains `part`.
fn check_error(text: &str, line: usize, column: usize, part: &str) {
    let e = parse_graph(text).expect_err("the text must not parse");
    assert!(
        e.message.contains(part),
        "message `{}` lacks `{part}`",
        e.message
    );
    assert_eq!((e.line, e.column), (line, column), "{e}");
}

#[test]
fn quantizers() {
    check(
        "graph q (%x: f32[1,4]) {
  %s: f32[] = const 0.5
  %z: f32[] = const 0.0
  %b: f32[] = const 4.0
  %b2: f32[] = const 2.0
  %cs: f32[4] = const [0.5, 0.25, 1.0, 2.0]
  %q: i4*0.5[1,4] = quant %x, %s, %z, %b {signed, narrow, rounding=half_even}  ; Quant_0
  %u: u4*0.5[1,4] = quant %x, %s, %z, %b {rounding=floor}  ; Quant_1
  %c: i4*[0.5, 0.25, 1.0, 2.0]@1[1,4] = quant %x, %cs, %z, %b {signed, rounding=half_up}  ; per channel
  %p: bipolar*0.5[1,4] = bipolar_quant %x, %s  ; BipolarQuant_0
  %t: f32[1,4] = trunc %q, %s, %z, %b, %b2 {rounding=down}  ; Trunc_0
  %v: f32[1,4] = trunc %q, %s, %z, %b, %b2, %s {rounding=ceil, signed, narrow, v2}  ; Trunc_1
  return %q, %u, %c, %p, %t, %v
}
",
    );
}

#[test]
fn thresholds_and_linear_quantizers() {
    check(
        "graph t (%x: f32[1,2,2,2], %acc: i8[1,2]) {
  %T: f32[2,3] = const [-1.0, 0.0, 1.0, -0.5, 0.5, 1.5]
  %Ti: i8[2,3] = const [-3.0, 0.0, 3.0, -1.0, 1.0, 2.0]
  %dir: f32[2] = const [1.0, -1.0]
  %s: f32[] = const 0.25
  %zp: f32[] = const 0.0
  %m: u2[1,2,2,2] = multithreshold %x, %T {out=u2, out_scale=1.0, out_bias=0.0, channel_axis=1}  ; MultiThreshold_0
  %h: i2*0.5[1,2] = threshold %acc, %Ti, %dir {out=i2*0.5, out_scale=0.5, out_bias=-1.0, channel_axis=1}  ; thr
  %ql: u8[1,2,2,2] = quantize_linear %x, %s, %zp {axis=1, out=u8}  ; QuantizeLinear_0
  %dq: u8*0.25[1,2,2,2] = dequantize_linear %ql, %s, %zp {axis=1}  ; DequantizeLinear_0
  %cl: u8*0.25[1,2,2,2] = clip %dq {min=-1.0, max=inf}  ; Clip_0
  return %m, %h, %cl
}
",
    );
}

#[test]
fn linear_layers() {
    check(
        "graph l (%x: f32[1,2,3,3], %a: f32[2,3]) {
  %w: f32[2,2,1,1] = const [1.0, 2.0, 3.0, 4.0]
  %bias: f32[2] = const [0.5, -0.5]
  %b: f32[3,2] = const [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
  %g: f32[2,1,2,2] = const [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
  %gamma: f32[2] = const [1.0, -2.0]
  %beta: f32[2] = const [0.0, 1.0]
  %mean: f32[2] = const [0.5, 0.5]
  %var: f32[2] = const [1.0, 4.0]
  %c: f32[1,2,3,3] = conv %x, %w, %bias {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=1}  ; Conv_0
  %dw: f32[1,2,2,2] = conv %x, %g {kernel=[2,2], strides=[2,2], pads=[0,0,1,1], dilations=[1,1], group=2}  ; depthwise
  %gm: f32[3,3] = gemm %a, %b {alpha=0.5, beta=1.0, trans_a, trans_b}  ; Gemm_0
  %mm: f32[2,2] = matmul %a, %b  ; MatMul_0
  %bn: f32[1,2,3,3] = batchnorm %c, %gamma, %beta, %mean, %var {epsilon=1e-5}  ; BatchNormalization_0
  return %dw, %gm, %mm, %bn
}
",
    );
}

#[test]
fn pools_reductions_and_elementwise() {
    check(
        "graph p (%x: f32[1,2,4,4], %y: f32[1,2,4,4]) {
  %two: f32[] = const 2.0
  %mp: f32[1,2,2,2] = maxpool %x {kernel=[2,2], strides=[2,2], pads=[0,0,0,0], dilations=[1,1]}  ; MaxPool_0
  %cm: f32[1,2,2,2] = maxpool %x {kernel=[3,3], strides=[2,2], pads=[0,0,0,0], dilations=[1,1], ceil_mode}  ; MaxPool_1
  %ap: f32[1,2,4,4] = avgpool %x {kernel=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], count_include_pad}  ; AveragePool_0
  %gap: f32[1,2,1,1] = global_avgpool %x  ; GlobalAveragePool_0
  %rm: f32[1,2] = reduce_mean %x {axes=[2,3]}  ; ReduceMean_0
  %rk: f32[1,2,1,1] = reduce_mean %x {axes=[2,3], keep_dims}  ; ReduceMean_1
  %add: f32[1,2,4,4] = add %x, %y  ; Add_0
  %sub: f32[1,2,4,4] = sub %add, %y  ; Sub_0
  %mul: f32[1,2,4,4] = mul %sub, %two  ; Mul_0
  %div: f32[1,2,4,4] = div %mul, %two  ; Div_0
  %pow: f32[1,2,4,4] = pow %div, %two  ; Pow_0
  %relu: f32[1,2,4,4] = relu %pow  ; Relu_0
  %sign: i2[1,2,4,4] = sign %relu  ; Sign_0
  return %mp, %cm, %ap, %gap, %rm, %rk, %sign
}
",
    );
}

#[test]
fn rounding_min_max_and_comparisons() {
    check(
        "graph c (%x: f32[1,2,4,4], %y: f32[1,2,4,4]) {
  %half: f32[] = const 0.5
  %abs: f32[1,2,4,4] = abs %x  ; Abs_0
  %round: f32[1,2,4,4] = round %abs  ; Round_0
  %min: f32[1,2,4,4] = min %round, %y  ; Min_0
  %max: f32[1,2,4,4] = max %min, %half  ; Max_0
  %lt: binary[1,2,4,4] = less %x, %y  ; Less_0
  %le: binary[1,2,4,4] = less_equal %x, %half  ; LessOrEqual_0
  %gt: binary[1,2,4,4] = greater %x, %y  ; Greater_0
  %ge: binary[1,2,4,4] = greater_equal %x, %y  ; GreaterOrEqual_0
  %eq: binary[1,2,4,4] = equal %le, %lt  ; Equal_0
  %ri: binary[1,2,4,4] = round %eq  ; Round_1
  return %max, %gt, %ge, %ri
}
",
    );
}

#[test]
fn layout_and_heads() {
    check(
        "graph h (%x: f32[1,2,3], %y: f32[1,2,3]) {
  %r: f32[1,6] = reshape %x {shape=[1,6]}  ; Reshape_0
  %t: f32[1,3,2] = transpose %x {perm=[0,2,1]}  ; Transpose_0
  %p: f32[1,2,5] = pad %x {pads=[0,0,1,0,0,1], value=-0.5}  ; Pad_0
  %c: f32[1,4,3] = concat %x, %y {axis=1}  ; Concat_0
  %s: f32[1,6] = softmax %r {axis=1}  ; Softmax_0
  %s2: f32[1,2,3] = softmax %x {axis=1, coerce_2d}  ; Softmax_1
  %v: f32[1,2,2], %i: i64[1,2,2] = topk %x {k=2, axis=2, largest, sorted}  ; TopK_0
  return %t, %p, %c, %s, %s2, %v, %i
}
",
    );
}

#[test]
fn lowered_binary_ops() {
    check(
        "graph b (%x: bipolar[1,2,3,3], %a: bipolar[1,70], %q: u2*0.5[1,2,3,3], %qa: u2[1,3]) {
  %wc: i64[2,1,1,1] = const [1, -6148914691236517206]
  %wm: i64[3,2] = const [1, 2, 3, 4, 5, 63]
  %wb: i2[2,2,1,1] = const [1.0, -1.0, -2.0, 0.0]
  %wbm: i2[3,2] = const [1.0, -1.0, -2.0, 0.0, 1.0, 1.0]
  %T: i4[2,1] = const [0.0, 1.0]
  %xc: i3[1,2,3,3] = xnor_conv %x, %wc {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], group=1}  ; XnorConv_0
  %th: bipolar[1,2,3,3] = fused threshold %xc, %T {out=bipolar, out_scale=2.0, out_bias=-1.0, channel_axis=1}  ; XnorConv_0.threshold
  %pool: bipolar[1,2,1,1] = fused minmaxpool %th {kernel=[3,3], strides=[3,3], pads=[0,0,0,0], dilations=[1,1], min_channels=[1]}  ; MaxPool_0
  %xm: i8[1,3] = xnor_matmul %a, %wm  ; XnorMatMul_0
  %bc: i5[1,2,3,3] = bitserial_conv %q, %wb {kernel=[1,1], strides=[1,1], pads=[0,0,0,0], dilations=[1,1], a_scale=0.5}  ; BitSerialConv_0
  %bm: i6[1,2] = bitserial_matmul %qa, %wbm {a_scale=1.0}  ; BitSerialMatMul_0
  return %pool, %xm, %bc, %bm
}
",
    );
}

/// Names that need quotes, node names with spaces and punctuation, a fused node in a quoted
/// name, scalars, and an empty i64 constant.
#[test]
fn names_and_odd_constants() {
    check(
        r#"graph "my model" (%"in put": f32[2]) {
  %"w;1": f32[2] = const [1e-7, -0.0]
  %e: i64[0] = const []
  %s: f32[] = const NaN
  %"a\\b": f32[2] = mul %"in put", %"w;1"  ; /block.1/Mul ; with spaces
  %r: f32[2] = add %"a\\b", %s  ; "  padded\n"
  return %r, %e
}
"#,
    );
}

/// Every constant element is in the full text, so a large constant reads back; the summary
/// is refused.
#[test]
fn large_constants_in_full_and_summarized() {
    let values: Vec<String> = (0..20).map(|i| format!("{:?}", i as f32 * 0.5)).collect();
    let full = format!(
        "graph c (%x: f32[20]) {{\n  %w: f32[20] = const [{}]\n  %y: f32[20] = mul %x, %w  ; Mul_0\n  return %y\n}}\n",
        values.join(", ")
    );
    check(&full);
    let summary = print_graph(&parse_graph(&full).unwrap());
    assert!(summary.contains(".. 20 values, fnv"), "{summary}");
    check_error(&summary, 2, 44, "constant `%w` is summarized");
}

#[test]
fn a_summarized_per_channel_scale_is_refused() {
    let text = "graph s (%x: i4*[2]@1[1,2]) {\n  return %x\n}\n";
    check_error(text, 1, 17, "per-channel scale written as its count");
}

#[test]
fn errors_say_where() {
    let head = "graph e (%x: f32[1,2]) {\n";
    check_error(
        &format!("{head}  %y: f32[1,2] = relu %z  ; r\n  return %y\n}}\n"),
        2,
        23,
        "`%z` is not defined",
    );
    check_error(
        &format!("{head}  %y: f32[1,3] = relu %x  ; r\n  return %y\n}}\n"),
        2,
        7,
        "`%y` is written f32[1,3], but its op gives f32[1,2]",
    );
    check_error(
        &format!("{head}  %y: f32[1,2] = frobnicate %x\n  return %y\n}}\n"),
        2,
        18,
        "unknown op `frobnicate`",
    );
    check_error(
        &format!("{head}  %y: f32[1,2] = relu %x {{alpha=1.0}}\n  return %y\n}}\n"),
        2,
        27,
        "`relu` has no attribute `alpha`",
    );
    check_error(
        &format!("{head}  %y: f32[1,1] = reduce_mean %x {{axes=[1,x]}}\n  return %y\n}}\n"),
        2,
        42,
        "expected axes",
    );
    check_error(
        &format!("{head}  %c: f32[2] = const [1.0, 2]\n  return %x\n}}\n"),
        2,
        28,
        "`2` is an integer in a constant of floats",
    );
    check_error(
        &format!("{head}  %c: f32[3] = const [1.0, 2.0]\n  return %x\n}}\n"),
        2,
        22,
        "has 2 elements, its type f32[3] holds 3",
    );
    check_error(
        &format!("{head}  %c: bipolar[1] = const [0.0]\n  return %x\n}}\n"),
        2,
        3,
        "not a value of type bipolar",
    );
    check_error(
        &format!("{head}  %y: f32[1,2] = relu %x  ; r\n"),
        3,
        1,
        "without `return`",
    );
    check_error(
        "graph e (%x: i99[1]) {\n",
        1,
        14,
        "`i99` is not an integer type",
    );
    check_error(
        "graph e (%x: f32[1]) {\n  return %x\n}\n}",
        4,
        1,
        "expected the end",
    );
    check_error("", 1, 1, "expected `graph`");
}

/// A fused mark the verifier rejects is an error of the parse, not a graph that breaks later.
#[test]
fn the_parsed_graph_is_verified() {
    check_error(
        "graph f (%x: f32[1,2]) {\n  %y: f32[1,2] = fused relu %x  ; r\n  return %y\n}\n",
        4,
        2,
        "only thresholds and pools run in an output stage",
    );
}

proptest::proptest! {
    /// Any f32 constant and any value name read back exactly: the same bits (NaN's payload
    /// aside, which the text does not keep) and the same name.
    #[test]
    fn constants_and_names_read_back_exactly(
        values in proptest::collection::vec(proptest::num::f32::ANY, 1..40),
        name in "\\PC{1,12}",
    ) {
        let mut g = bnnc_ir::Graph::new("p");
        let n = values.len();
        let c = g
            .add_const(name.clone(), None, bnnc_ir::Tensor::f32(vec![n], values.clone()))
            .unwrap();
        g.set_outputs(vec![c]);
        let text = print_graph_full(&g);
        let back = parse_graph(&text).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
        let v = back.outputs()[0];
        proptest::prop_assert_eq!(&back.value(v).name, &name);
        let got = back.const_data(v).unwrap().as_f32().unwrap();
        for (a, b) in got.iter().zip(&values) {
            proptest::prop_assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
        }
        proptest::prop_assert_eq!(print_graph_full(&back), text);
    }
}
