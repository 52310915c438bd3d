//! What the command-line tests share: the bundled data and running `bnnc`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A file or folder under tests/data.
pub fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

/// Runs the `bnnc` binary under test.
pub fn bnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bnnc"))
        .args(args)
        .output()
        .expect("bnnc runs")
}
