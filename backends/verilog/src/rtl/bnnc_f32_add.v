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
    wire [7:0] ea = a[30:23];
    wire [7:0] eb = b[30:23];
    wire nan_a = ea == 8'hff && a[22:0] != 23'd0;
    wire nan_b = eb == 8'hff && b[22:0] != 23'd0;
    wire inf_a = ea == 8'hff && a[22:0] == 23'd0;
    wire inf_b = eb == 8'hff && b[22:0] == 23'd0;
    // The larger magnitude first.
    wire swap = b[30:0] > a[30:0];
    wire [31:0] p = swap ? b : a;
    wire [31:0] q = swap ? a : b;
    wire [7:0] ep = p[30:23] == 8'd0 ? 8'd1 : p[30:23];
    wire [7:0] eq = q[30:23] == 8'd0 ? 8'd1 : q[30:23];
    wire [23:0] mp = {p[30:23] != 8'd0, p[22:0]};
    wire [23:0] mq = {q[30:23] != 8'd0, q[22:0]};
    wire [7:0] d = ep - eq;
    // Aligned to q's exponent when close; otherwise q only decides the rounding, as one
    // unit far below p's last bit.
    wire close = d <= 8'd30;
    wire [63:0] np = close ? ({40'd0, mp} << d) : ({40'd0, mp} << 32);
    wire [63:0] nq = close ? {40'd0, mq} : {63'd0, mq != 24'd0};
    wire signed [15:0] x = close ? $signed({8'd0, eq}) - 16'sd150 : $signed({8'd0, ep}) - 16'sd182;
    wire subtract = p[31] ^ q[31];
    wire [63:0] n = subtract ? np - nq : np + nq;
    // An exact zero is +0, but for -0 + -0.
    wire sign = n == 64'd0 ? (a[31] && b[31]) : p[31];
    wire [31:0] rounded;
    bnnc_f32_round r (.sign(sign), .n(n), .x(x), .y(rounded));
    assign y = (nan_a || nan_b || (inf_a && inf_b && a[31] != b[31])) ? 32'h7fc00000
        : inf_a ? a
        : inf_b ? b
        : rounded;
endmodule
