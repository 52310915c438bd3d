//! The Verilog f32 arithmetic (`rtl/bnnc_f32_*.v`) against Rust's f32 on operands chosen to
//! reach every path: random normals over the whole exponent range, subnormals, zeros of
//! both signs, infinities, sums that cancel, products that overflow or underflow. Runs
//! Icarus Verilog (`scripts/test` installs it).

use std::fmt::Write;
use std::process::Command;

/// xorshift, so the vectors are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn f32(&mut self) -> f32 {
        let r = self.next();
        match r % 16 {
            0 => f32::from_bits((r >> 32) as u32 & 0x807f_ffff), // subnormal or zero
            1 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0, -1.0][(r >> 8) as usize % 6],
            2 => f32::from_bits(((r >> 32) as u32 & 0x80ff_ffff) | 0x0080_0000), // near the subnormals
            3 => f32::from_bits(((r >> 32) as u32 & 0x80ff_ffff) | 0x7e00_0000), // near overflow
            _ => f32::from_bits((r >> 32) as u32 & 0xbfff_ffff | ((r & 1) as u32) << 30),
        }
    }
}

fn nan_or(v: f32) -> u32 {
    if v.is_nan() {
        0x7fc0_0000
    } else {
        v.to_bits()
    }
}

#[test]
fn f32_add_mul_and_from_int_round_as_ieee() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut cases = Vec::new();
    for i in 0..4000 {
        let a = rng.f32();
        let mut b = rng.f32();
        if i % 7 == 0 {
            // Cancellation: a nearby value of the other sign.
            b = f32::from_bits((a.to_bits() ^ 0x8000_0000).wrapping_add((rng.next() % 5) as u32));
        }
        let n = (rng.next() as i32) >> (rng.next() % 32);
        cases.push((a, b, n));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut vectors = String::new();
    for (a, b, n) in &cases {
        let _ = writeln!(
            vectors,
            "{:08x}{:08x}{:08x}",
            a.to_bits(),
            b.to_bits(),
            *n as u32
        );
    }
    std::fs::write(dir.path().join("vectors.hex"), vectors).unwrap();
    let tb = format!(
        r#"module tb;
    reg [95:0] v [0:{last}];
    reg [31:0] a, b, n;
    wire [31:0] sum, product, converted;
    bnnc_f32_add add (.a(a), .b(b), .y(sum));
    bnnc_f32_mul mul (.a(a), .b(b), .y(product));
    bnnc_f32_from_int #(.WIDTH(32)) conv (.a(n), .y(converted));
    integer i;
    initial begin
        $readmemh("vectors.hex", v);
        for (i = 0; i <= {last}; i = i + 1) begin
            {{a, b, n}} = v[i];
            #1 $display("%h %h %h", sum, product, converted);
        end
        $finish;
    end
endmodule
"#,
        last = cases.len() - 1
    );
    std::fs::write(dir.path().join("tb.v"), tb).unwrap();
    let rtl = concat!(env!("CARGO_MANIFEST_DIR"), "/src/rtl");
    let build = Command::new("iverilog")
        .current_dir(dir.path())
        .args(["-g2005", "-o", "tb.vvp", "tb.v"])
        .args(
            ["unpack", "round", "from_int", "mul", "add"].map(|m| format!("{rtl}/bnnc_f32_{m}.v")),
        )
        .output()
        .expect("iverilog runs (scripts/test installs it)");
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let out = Command::new("vvp")
        .current_dir(dir.path())
        .args(["-n", "tb.vvp"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.len() == 26).collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    let mut wrong = Vec::new();
    for ((a, b, n), line) in cases.iter().zip(lines) {
        let got: Vec<u32> = line
            .split(' ')
            .map(|h| u32::from_str_radix(h, 16).unwrap())
            .collect();
        let want = [nan_or(a + b), nan_or(a * b), (*n as f32).to_bits()];
        for (k, what) in ["+", "*", "from"].iter().enumerate() {
            if got[k] != want[k] {
                wrong.push(format!(
                    "{a:e} {what} {b:e} (n {n}): got {:08x}, expected {:08x}",
                    got[k], want[k]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}
