// IEEE 754 single precision in combinational logic (bnnc, Apache-2.0): conversion from
// integers, multiplication and addition, each rounded to nearest, ties to even, with
// subnormals, signed zeros and infinities; a NaN result is the quiet NaN 7fc00000. What the
// interpreter computes in f32 for a residual path, this computes bit for bit.

// The fields of a as the arithmetic reads them: the sign, NaN and infinity, the exponent (a
// subnormal's is 1, as the smallest normal's), the significand with its hidden bit (0 for a
// subnormal).
module bnnc_f32_unpack (
    input wire [31:0] a,
    output wire sign,
    output wire nan,
    output wire inf,
    output wire [7:0] exponent,
    output wire [23:0] significand
);
    wire [7:0] field = a[30:23];
    assign sign = a[31];
    assign nan = field == 8'hff && a[22:0] != 23'd0;
    assign inf = field == 8'hff && a[22:0] == 23'd0;
    assign exponent = field == 8'd0 ? 8'd1 : field;
    assign significand = {field != 8'd0, a[22:0]};
endmodule
