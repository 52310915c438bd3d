//! Fuzzing bnnc with models mutated at the protobuf level.
//!
//! Two fuzzers guard bnnc against untrusted models. The differential one
//! (`tests/differential.rs`) builds random *valid* networks and checks that every path computes
//! the same numbers. This crate is the other: it takes real models (the seed corpus is
//! `tests/data`) and [`mutate`]s them where files go wrong, then runs each through a [`stage`]
//! of bnnc, where the answer must be a result or a clear error.
//!
//! The cargo-fuzz targets in `fuzz_targets/` (built with the `libfuzzer` feature, see
//! TESTING.md) drive this with libFuzzer's coverage guidance; `tests/replay.rs` replays the
//! committed corpus and a fixed set of mutations on every test run, with no libFuzzer.

pub mod mutate;
pub mod stage;

pub use mutate::mutate_bytes;
pub use stage::{run, Outcome, Stage};

/// Mutations per libFuzzer mutation step: a few, so that changes combine.
pub const MUTATIONS_PER_STEP: usize = 2;
