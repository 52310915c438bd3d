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

/// The libFuzzer target of one [`Stage`], for a binary in `fuzz_targets/` (which depends on
/// libfuzzer-sys): runs each input through the stage, and mutates mostly with [`mutate_bytes`]
/// and, one step in four (and for what does not decode), with libFuzzer's byte mutations,
/// which keep the protobuf decoder tested.
#[macro_export]
macro_rules! fuzz_stage {
    ($stage:expr) => {
        ::libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
            $crate::run($stage, bytes);
        });

        ::libfuzzer_sys::fuzz_mutator!(|data: &mut [u8],
                                        size: usize,
                                        max_size: usize,
                                        seed: u32| {
            if !seed.is_multiple_of(4) {
                let mutations = $crate::MUTATIONS_PER_STEP;
                if let Some(out) =
                    $crate::mutate_bytes(&data[..size], seed.into(), mutations, max_size)
                {
                    data[..out.len()].copy_from_slice(&out);
                    return out.len();
                }
            }
            ::libfuzzer_sys::fuzzer_mutate(data, size, max_size)
        });
    };
}
