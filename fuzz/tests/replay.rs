//! Replays what the fuzzers found and a fixed sample of mutations, on every test run and with no
//! libFuzzer: the committed corpus (`fuzz/corpus/<target>/`) through its target's stage, and
//! every small model of `tests/data` mutated with fixed seeds through code generation (one in
//! eight through native code).

use std::path::{Path, PathBuf};

use bnnc_fuzz::{mutate_bytes, run, Outcome, Stage};

/// Seeds larger than this are left to the model tests: fuzzing them is slow.
const MAX_SEED_BYTES: u64 = 256 * 1024;

/// Mutants of each seed in the replay, and their mutation counts (1 to 3).
const MUTANTS_PER_SEED: u64 = 16;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The `.onnx` files under `dir`, recursively, in a fixed order.
fn onnx_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            onnx_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "onnx") {
            out.push(path);
        }
    }
}

/// The seed corpus: every model of tests/data up to [`MAX_SEED_BYTES`] (the ONNX node tests,
/// the small networks, the invalid and regression files).
fn seeds() -> Vec<PathBuf> {
    let mut all = Vec::new();
    onnx_files(&repo().join("tests/data"), &mut all);
    all.retain(|p| p.metadata().unwrap().len() <= MAX_SEED_BYTES);
    all
}

#[test]
fn the_seed_corpus_is_the_small_models_of_tests_data() {
    let seeds = seeds();
    assert!(seeds.len() > 150, "only {} seeds", seeds.len());
    assert!(seeds
        .iter()
        .any(|p| p.ends_with("tfc_w1a1_qonnx_ts/model.onnx")));
}

#[test]
fn the_committed_corpus_replays() {
    let mut replayed = 0;
    for stage in Stage::ALL {
        let dir = repo().join("fuzz/corpus").join(stage.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            eprintln!("{}", file.display());
            run(stage, &std::fs::read(&file).unwrap());
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} inputs");
}

#[test]
fn mutated_seeds_are_answered_or_refused() {
    // `accepted`: imported, so that the later stages ran.
    let (mut accepted, mut refused, mut total) = (0, 0, 0);
    for (s, seed) in seeds().iter().enumerate() {
        let bytes = std::fs::read(seed).unwrap();
        for m in 0..MUTANTS_PER_SEED {
            let k = s as u64 * MUTANTS_PER_SEED + m;
            let Some(mutant) = mutate_bytes(&bytes, k, 1 + k as usize % 3, usize::MAX) else {
                continue;
            };
            eprintln!("{} mutated with seed {k}", seed.display());
            if matches!(run(Stage::Import, &mutant), Outcome::Accepted) {
                accepted += 1;
            }
            // One in eight also natively (each links a library): native code must give the
            // interpreter's bits.
            let stage = if k.is_multiple_of(8) {
                Stage::Native
            } else {
                Stage::Compile
            };
            match run(stage, &mutant) {
                Outcome::Accepted => {}
                Outcome::Refused(why) => {
                    if std::env::var_os("BNNC_FUZZ_VERBOSE").is_some() {
                        eprintln!("  refused: {why}");
                    }
                    refused += 1
                }
            }
            total += 1;
        }
    }
    eprintln!("{total} mutants: {accepted} imported, {refused} refused at some stage");
    // The mutations must leave many models bnnc still takes, or they only test the importer's
    // first checks.
    assert!(accepted * 10 > total, "{accepted} of {total} accepted");
}
