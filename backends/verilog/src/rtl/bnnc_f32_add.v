// IEEE 754 single precision in combinational logic (bnnc, Apache-2.0): conversion from
// integers, multiplication and addition, each rounded to nearest, ties to even, with
// subnormals, signed zeros and infinities; a NaN result is the quiet NaN 7fc00000. What the
// interpreter computes in f32 for a residual path, this computes bit for bit.

// a + b.
module bnnc_f32_add (
    input wire [31:0] a,
    input wire [31:0] b,
    output wire [31:0] y
);
    wire sign_a, sign_b, nan_a, nan_b, inf_a, inf_b;
    wire [7:0] ea, eb;
    wire [23:0] ma, mb;
    bnnc_f32_unpack ua (.a(a), .sign(sign_a), .nan(nan_a), .inf(inf_a), .exponent(ea), .significand(ma));
    bnnc_f32_unpack ub (.a(b), .sign(sign_b), .nan(nan_b), .inf(inf_b), .exponent(eb), .significand(mb));
    // The larger magnitude p first, the other q.
    wire swap = b[30:0] > a[30:0];
    wire sp = swap ? sign_b : sign_a;
    wire sq = swap ? sign_a : sign_b;
    wire [7:0] ep = swap ? eb : ea;
    wire [7:0] eq = swap ? ea : eb;
    wire [23:0] mp = swap ? mb : ma;
    wire [23:0] mq = swap ? ma : mb;
    wire [7:0] d = ep - eq;
    // Aligned to q's exponent when close; otherwise q only decides the rounding, as one
    // unit far below p's last bit.
    wire close = d <= 8'd30;
    wire [63:0] np = close ? ({40'd0, mp} << d) : ({40'd0, mp} << 32);
    wire [63:0] nq = close ? {40'd0, mq} : {63'd0, mq != 24'd0};
    wire signed [15:0] x = close ? $signed({8'd0, eq}) - 16'sd150 : $signed({8'd0, ep}) - 16'sd182;
    wire subtract = sp ^ sq;
    wire [63:0] n = subtract ? np - nq : np + nq;
    // An exact zero is +0, but for -0 + -0.
    wire sign = n == 64'd0 ? (sign_a && sign_b) : sp;
    wire [31:0] rounded;
    bnnc_f32_round r (.sign(sign), .n(n), .x(x), .y(rounded));
    assign y = (nan_a || nan_b || (inf_a && inf_b && sign_a != sign_b)) ? 32'h7fc00000
        : inf_a ? a
        : inf_b ? b
        : rounded;
endmodule
