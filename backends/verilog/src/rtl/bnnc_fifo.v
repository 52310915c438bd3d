// A first-in first-out queue between two layers (bnnc, Apache-2.0): ready and valid come
// from registers only, so no combinational path crosses it.
module bnnc_fifo #(
    parameter integer WIDTH = 8,
    parameter integer DEPTH = 2,
    parameter integer AW = 1
) (
    input wire clk,
    input wire rst,
    input wire [WIDTH-1:0] s_tdata,
    input wire s_tvalid,
    output wire s_tready,
    output wire [WIDTH-1:0] m_tdata,
    output wire m_tvalid,
    input wire m_tready
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    reg [AW-1:0] rd;
    reg [AW-1:0] wr;
    reg [AW:0] count;
    wire push = s_tvalid && s_tready;
    wire pop = m_tvalid && m_tready;
    assign s_tready = count != DEPTH[AW:0];
    assign m_tvalid = count != {(AW + 1){1'b0}};
    assign m_tdata = mem[rd];
    always @(posedge clk) begin
        if (rst) begin
            rd <= {AW{1'b0}};
            wr <= {AW{1'b0}};
            count <= {(AW + 1){1'b0}};
        end else begin
            if (push) begin
                mem[wr] <= s_tdata;
                wr <= (wr == DEPTH[AW-1:0] - 1'b1) ? {AW{1'b0}} : wr + 1'b1;
            end
            if (pop) rd <= (rd == DEPTH[AW-1:0] - 1'b1) ? {AW{1'b0}} : rd + 1'b1;
            if (push && !pop) count <= count + 1'b1;
            else if (pop && !push) count <= count - 1'b1;
        end
    end
endmodule
