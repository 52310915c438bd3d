#!/usr/bin/env bash
# A mutation-fuzzing campaign with cargo-fuzz (libFuzzer): models of tests/data mutated at the
# protobuf level (fuzz/src/mutate.rs) run through one stage of bnnc (fuzz/src/stage.rs).
#
#   scripts/fuzz.sh TARGET MINUTES [libFuzzer flags...]   TARGET: import, optimize, compile, native
#
# libFuzzer grows its working corpus in target/fuzz-corpus/TARGET, starting from the small
# models of tests/data and the committed corpus fuzz/corpus/TARGET. A crash, a timeout or an
# out-of-memory input goes to fuzz/artifacts/TARGET; once fixed, it is committed to
# fuzz/corpus/TARGET (which tests/replay.rs replays on every test run) and, where it says
# something of its own, becomes a test in frontend-onnx/tests/untrusted.rs or a filetest.
# Long unattended runs: add `-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1`.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It runs on stable Rust without a sanitizer
# (`-s none`): what it finds are panics (debug assertions, overflow checks included), aborts,
# timeouts, the memory limit, and the stages' own checks. The native target also builds the
# LLVM kernels (feature `llvm`, LLVM 16).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?"usage: scripts/fuzz.sh import|optimize|compile MINUTES [libFuzzer flags...]"}
minutes=${2:?"usage: scripts/fuzz.sh TARGET MINUTES"}
shift 2

# The seed corpus: every model of tests/data up to 256 KiB (as fuzz/tests/replay.rs takes it).
seeds=target/fuzz-seeds
rm -rf "$seeds"
mkdir -p "$seeds" "target/fuzz-corpus/$target" "fuzz/corpus/$target"
find tests/data -name '*.onnx' -size -257k | sort | while read -r f; do
    cp "$f" "$seeds/$(echo "$f" | tr / _)"
done

features=libfuzzer
[ "$target" != native ] || features=libfuzzer,llvm
cargo fuzz run "$target" --features "$features" -s none \
    "target/fuzz-corpus/$target" "fuzz/corpus/$target" "$seeds" -- \
    -max_total_time=$((minutes * 60)) -max_len=262144 -timeout=20 -rss_limit_mb=4096 \
    -print_final_stats=1 "$@"
