// Copies a stream to N streams (bnnc, Apache-2.0): a beat moves when every reader takes it.
module bnnc_duplicate #(
    parameter integer WIDTH = 8,
    parameter integer N = 2
) (
    input wire clk,
    input wire rst,
    input wire [WIDTH-1:0] s_tdata,
    input wire s_tvalid,
    output wire s_tready,
    output wire [N*WIDTH-1:0] m_tdata,
    output wire [N-1:0] m_tvalid,
    input wire [N-1:0] m_tready
);
    assign s_tready = &m_tready;
    assign m_tvalid = {N{s_tvalid && s_tready}};
    assign m_tdata = {N{s_tdata}};
    wire unused = clk ^ rst;
endmodule
