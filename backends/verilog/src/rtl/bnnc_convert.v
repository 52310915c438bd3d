// Regroups a stream's elements (bnnc, Apache-2.0): beats of FROM elements of BITS bits in,
// beats of TO out, through a shift register of FROM + TO elements. A beat goes out whenever
// TO elements are held and one comes in whenever there is room after that.
module bnnc_convert #(
    parameter integer BITS = 1,
    parameter integer FROM = 1,
    parameter integer TO = 1,
    parameter integer CW = 8
) (
    input wire clk,
    input wire rst,
    input wire [FROM*BITS-1:0] s_tdata,
    input wire s_tvalid,
    output wire s_tready,
    output wire [TO*BITS-1:0] m_tdata,
    output wire m_tvalid,
    input wire m_tready
);
    localparam integer HW = (FROM + TO) * BITS;
    reg [HW-1:0] held;
    reg [CW-1:0] have;
    wire out_fire = m_tvalid && m_tready;
    wire [CW-1:0] after = out_fire ? have - TO[CW-1:0] : have;
    assign m_tvalid = have >= TO[CW-1:0];
    assign m_tdata = held[TO*BITS-1:0];
    assign s_tready = after <= TO[CW-1:0];
    wire in_fire = s_tvalid && s_tready;
    wire [HW-1:0] kept = out_fire ? (held >> (TO * BITS)) : held;
    // The shift is in bits, wider than the element count.
    wire [31:0] shift = {{(32 - CW){1'b0}}, after} * BITS;
    wire [HW-1:0] incoming = {{(HW - FROM * BITS){1'b0}}, s_tdata} << shift;
    always @(posedge clk) begin
        if (rst) begin
            held <= {HW{1'b0}};
            have <= {CW{1'b0}};
        end else begin
            held <= in_fire ? (kept | incoming) : kept;
            have <= in_fire ? after + FROM[CW-1:0] : after;
        end
    end
endmodule
