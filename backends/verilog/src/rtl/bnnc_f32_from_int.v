// IEEE 754 single precision in combinational logic (bnnc, Apache-2.0): conversion from
// integers, multiplication and addition, each rounded to nearest, ties to even, with
// subnormals, signed zeros and infinities; a NaN result is the quiet NaN 7fc00000. What the
// interpreter computes in f32 for a residual path, this computes bit for bit.

// A signed integer of WIDTH bits as f32.
module bnnc_f32_from_int #(
    parameter integer WIDTH = 16
) (
    input wire [WIDTH-1:0] a,
    output wire [31:0] y
);
    wire negative = a[WIDTH-1];
    wire [WIDTH-1:0] magnitude = negative ? (~a + {{(WIDTH - 1){1'b0}}, 1'b1}) : a;
    bnnc_f32_round r (.sign(negative), .n({{(64 - WIDTH){1'b0}}, magnitude}), .x(16'sd0), .y(y));
endmodule
