// IEEE 754 single precision in combinational logic (bnnc, Apache-2.0): conversion from
// integers, multiplication and addition, each rounded to nearest, ties to even, with
// subnormals, signed zeros and infinities; a NaN result is the quiet NaN 7fc00000. What the
// interpreter computes in f32 for a residual path, this computes bit for bit.

// Rounds sign * n * 2^x to single precision. n is exact (an addend too small to matter is
// folded into a sticky bit by the caller).
module bnnc_f32_round (
    input wire sign,
    input wire [63:0] n,
    input wire signed [15:0] x,
    output reg [31:0] y
);
    integer i;
    reg [6:0] msb;
    reg signed [15:0] e;
    reg signed [15:0] shift;
    reg [63:0] m;
    reg [63:0] lost;
    reg [63:0] half;
    reg up;
    always @* begin
        msb = 7'd0;
        for (i = 0; i < 64; i = i + 1)
            if (n[i]) msb = i[6:0];
        // Normal: n's leading one becomes the hidden bit.
        e = x + {9'd0, msb} + 16'sd127;
        shift = {9'd0, msb} - 16'sd23;
        if (e < 16'sd1) begin
            // Subnormal: fewer significant bits, the exponent field 0.
            shift = shift + (16'sd1 - e);
            e = 16'sd0;
        end
        if (shift > 16'sd63) begin
            m = 64'd0;
            lost = n;
            half = 64'd0;
            up = 1'b0;
        end else if (shift > 16'sd0) begin
            m = n >> shift;
            lost = n & ((64'd1 << shift) - 64'd1);
            half = 64'd1 << (shift - 16'sd1);
            up = lost > half || (lost == half && m[0]);
        end else begin
            m = n << (-shift);
            lost = 64'd0;
            half = 64'd0;
            up = 1'b0;
        end
        if (shift > 16'sd63) up = 1'b0;
        m = m + {63'd0, up};
        if (m[24]) begin
            m = m >> 1;
            e = e + 16'sd1;
        end
        if (e == 16'sd0 && m[23]) e = 16'sd1;
        if (n == 64'd0)
            y = {sign, 31'd0};
        else if (e >= 16'sd255)
            y = {sign, 8'hff, 23'd0};
        else
            y = {sign, e[7:0], m[22:0]};
    end
    wire unused = ^{lost[63:0], half[0], m[63:25]};
endmodule
