//! Runs one sample through a model compiled by `bnnc build`:
//!
//! ```text
//! cargo run -p bnnc-runtime --example run_model -- libcnv_w1a1.so [input.f32]
//! ```
//!
//! The model's name comes from the library's file name (`libcnv_w1a1.so` → `cnv_w1a1`).
//! `input.f32` holds one sample of raw little-endian float32 values; without it the sample is
//! all zeros. Prints the outputs and their argmax.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

use bnnc_runtime::Model;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() > 2 {
        eprintln!("usage: run_model LIBRARY.so [INPUT.f32]");
        return ExitCode::from(2);
    }
    match run(&args[0], args.get(1).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(library: &str, input_path: Option<&str>) -> Result<(), Box<dyn Error>> {
    let model = Model::load_default(Path::new(library))?;
    println!(
        "model {}: input_len {}, output_len {}",
        model.name(),
        model.input_len(),
        model.output_len()
    );
    let input = match input_path {
        Some(path) => read_sample(path, model.input_len())?,
        None => vec![0.0; model.input_len()],
    };
    let output = model.run_batch(&input)?;
    for (i, value) in output.iter().enumerate() {
        println!("output[{i}] = {value}");
    }
    // The first of equal maxima, as numpy's argmax; NaN never wins a comparison.
    let argmax = output
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > output[best] { i } else { best });
    println!("argmax: {argmax}");
    Ok(())
}

/// One sample of `len` little-endian float32 values; the file must hold exactly that, since
/// a longer file is more likely a batch or the wrong model than something to truncate.
fn read_sample(path: &str, len: usize) -> Result<Vec<f32>, Box<dyn Error>> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() != len * 4 {
        return Err(format!(
            "{path} has {} bytes; one sample is {len} float32 values ({} bytes)",
            bytes.len(),
            len * 4
        )
        .into());
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
