// IEEE 754 single precision in combinational logic (bnnc, Apache-2.0): conversion from
// integers, multiplication and addition, each rounded to nearest, ties to even, with
// subnormals, signed zeros and infinities; a NaN result is the quiet NaN 7fc00000. What the
// interpreter computes in f32 for a residual path, this computes bit for bit.

// a * b.
module bnnc_f32_mul (
    input wire [31:0] a,
    input wire [31:0] b,
    output wire [31:0] y
);
    wire sign_a, sign_b, nan_a, nan_b, inf_a, inf_b;
    wire [7:0] ea, eb;
    wire [23:0] ma, mb;
    bnnc_f32_unpack ua (.a(a), .sign(sign_a), .nan(nan_a), .inf(inf_a), .exponent(ea), .significand(ma));
    bnnc_f32_unpack ub (.a(b), .sign(sign_b), .nan(nan_b), .inf(inf_b), .exponent(eb), .significand(mb));
    // Zeros, the only values without a significand bit.
    wire zero_a = ma == 24'd0;
    wire zero_b = mb == 24'd0;
    wire sign = sign_a ^ sign_b;
    // a = ma * 2^xa, b = mb * 2^xb.
    wire signed [15:0] xa = $signed({8'd0, ea}) - 16'sd150;
    wire signed [15:0] xb = $signed({8'd0, eb}) - 16'sd150;
    wire [47:0] product = ma * mb;
    wire [31:0] rounded;
    bnnc_f32_round r (.sign(sign), .n({16'd0, product}), .x(xa + xb), .y(rounded));
    assign y = (nan_a || nan_b || (inf_a && zero_b) || (inf_b && zero_a)) ? 32'h7fc00000
        : (inf_a || inf_b) ? {sign, 8'hff, 23'd0}
        : rounded;
endmodule
