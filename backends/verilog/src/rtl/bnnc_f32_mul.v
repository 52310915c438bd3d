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
    wire [7:0] ea = a[30:23];
    wire [7:0] eb = b[30:23];
    wire nan_a = ea == 8'hff && a[22:0] != 23'd0;
    wire nan_b = eb == 8'hff && b[22:0] != 23'd0;
    wire inf_a = ea == 8'hff && a[22:0] == 23'd0;
    wire inf_b = eb == 8'hff && b[22:0] == 23'd0;
    wire zero_a = a[30:0] == 31'd0;
    wire zero_b = b[30:0] == 31'd0;
    wire sign = a[31] ^ b[31];
    // Significands with the hidden bit; a subnormal's exponent is 1.
    wire [23:0] ma = {ea != 8'd0, a[22:0]};
    wire [23:0] mb = {eb != 8'd0, b[22:0]};
    wire signed [15:0] xa = $signed({8'd0, (ea == 8'd0 ? 8'd1 : ea)}) - 16'sd150;
    wire signed [15:0] xb = $signed({8'd0, (eb == 8'd0 ? 8'd1 : eb)}) - 16'sd150;
    wire [47:0] product = ma * mb;
    wire [31:0] rounded;
    bnnc_f32_round r (.sign(sign), .n({16'd0, product}), .x(xa + xb), .y(rounded));
    assign y = (nan_a || nan_b || (inf_a && zero_b) || (inf_b && zero_a)) ? 32'h7fc00000
        : (inf_a || inf_b) ? {sign, 8'hff, 23'd0}
        : rounded;
endmodule
