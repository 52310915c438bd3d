#!/usr/bin/env bash
# bnnc against onnxruntime, single-threaded, on the BNN-PYNQ networks:
#
#   cnv: <baselines>/cnv_float.onnx  vs  tests/data/models/cnv_w1a1/model.onnx
#   lfc: <baselines>/lfc_float.onnx  vs  tests/data/models/lfc_w1a1/model.onnx
#   tfc: <baselines>/tfc_float.onnx  vs  tests/data/models/tfc_w1a1/model.onnx
#
# onnxruntime runs the float networks (the same topologies, float weights), bnnc the binary
# ones it compiles. Prints the CPU, then one row per network: median latency at batch 1 and
# throughput, each with the speedup of bnnc (> 1 means bnnc is faster).
#
# Environment:
#   BNNC_BENCH_VENV  virtualenv with onnxruntime and numpy, made if missing
#                    (default: target/bench-venv)
#   BNNC_SHARED      folder holding baselines/ (default: ../shared)
#   BNNC_BENCH_JSON  where the raw results go, as JSON (default: target/bench-results.json)
# Relative paths given in the environment are taken from the current directory; the defaults
# from the repository's root.
#
# Any failure (missing model, failed build, a benchmark that errs or prints no figures) stops
# the script with a non-zero status: a table with a hole would be worse than none.
set -euo pipefail

die() {
    echo "bench.sh: error: $*" >&2
    exit 1
}

# An environment path made absolute against the caller's directory, before we cd.
from_caller() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s\n' "$PWD/$1" ;;
    esac
}

venv=${BNNC_BENCH_VENV:+$(from_caller "$BNNC_BENCH_VENV")}
shared=${BNNC_SHARED:+$(from_caller "$BNNC_SHARED")}
results=${BNNC_BENCH_JSON:+$(from_caller "$BNNC_BENCH_JSON")}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
venv=${venv:-$root/target/bench-venv}
shared=${shared:-$root/../shared}
results=${results:-$root/target/bench-results.json}
baselines=$shared/baselines

models=(cnv lfc tfc)
for m in "${models[@]}"; do
    [[ -f $baselines/${m}_float.onnx ]] || die "missing baseline $baselines/${m}_float.onnx (set BNNC_SHARED)"
    [[ -f tests/data/models/${m}_w1a1/model.onnx ]] || die "missing tests/data/models/${m}_w1a1/model.onnx"
done

# The virtualenv: reused when it already imports both packages, (re)made otherwise.
python=$venv/bin/python
if ! [[ -x $python ]] || ! "$python" -c 'import onnxruntime, numpy' 2>/dev/null; then
    echo "bench.sh: setting up $venv with onnxruntime and numpy" >&2
    command -v python3 >/dev/null || die "python3 is needed to make the virtualenv"
    python3 -m venv "$venv" || die "cannot create a virtualenv at $venv (is python3-venv installed?)"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet onnxruntime numpy
    "$python" -c 'import onnxruntime, numpy' || die "onnxruntime or numpy does not import in $venv"
fi

# The XNOR convolutions' code generator: LLVM (512-bit vectors) when LLVM 16 is installed,
# else Cranelift; BNNC_CODEGEN=cranelift|llvm chooses.
codegen=${BNNC_CODEGEN:-}
if [[ -z $codegen ]]; then
    if command -v llvm-config-16 >/dev/null; then codegen=llvm; else codegen=cranelift; fi
fi
case $codegen in
    llvm) features=(--features llvm) ;;
    cranelift) features=() ;;
    *) die "BNNC_CODEGEN must be cranelift or llvm, not '$codegen'" ;;
esac
echo "bench.sh: building bnnc (release, codegen $codegen)" >&2
cargo build --release --package bnnc --bin bnnc "${features[@]}"
bnnc=$root/target/release/bnnc
[[ -x $bnnc ]] || die "cargo build succeeded but $bnnc is missing"

command -v lscpu >/dev/null || die "lscpu is needed to name the CPU (util-linux)"
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
[[ -n $cpu ]] || die "lscpu names no CPU model"

# One JSON object per line: {"name", "ort", "bnnc"}, built by python so that the outputs of
# the benchmarks are parsed (and validated) as JSON, never by text matching.
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
for m in "${models[@]}"; do
    echo "bench.sh: $m: onnxruntime" >&2
    ort_json=$("$python" scripts/bench_onnxruntime.py "$baselines/${m}_float.onnx" --threads 1 --json) ||
        die "onnxruntime benchmark of $m failed"
    echo "bench.sh: $m: bnnc" >&2
    bnnc_json=$("$bnnc" bench "tests/data/models/${m}_w1a1/model.onnx" --json --codegen "$codegen") ||
        die "bnnc bench of $m failed"
    "$python" -c '
import json, sys
name, ort, bnnc = sys.argv[1:]
print(json.dumps({"name": name, "ort": json.loads(ort), "bnnc": json.loads(bnnc)}))
' "$m" "$ort_json" "$bnnc_json" >>"$raw" || die "the output of a benchmark of $m is not JSON"
done

"$python" - "$raw" "$cpu" "$results" "$codegen" <<'EOF'
import json
import os
import sys

raw, cpu, results, codegen = sys.argv[1:]
rows = [json.loads(line) for line in open(raw)]


def figure(row, tool, key):
    value = row[tool].get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        sys.exit(f"bench.sh: error: {tool} printed no positive {key!r} for {row['name']}: {row[tool]}")
    return float(value)


# Every figure is checked before anything is printed, so a failure leaves no half table.
table = []
for row in rows:
    ort_lat, bnnc_lat = figure(row, "ort", "latency_us"), figure(row, "bnnc", "latency_us")
    ort_tp, bnnc_tp = figure(row, "ort", "throughput_per_s"), figure(row, "bnnc", "throughput_per_s")
    table.append((row["name"], ort_lat, bnnc_lat, ort_tp, bnnc_tp))

print(f"CPU: {cpu}")
print(f"onnxruntime {rows[0]['ort'].get('onnxruntime', '?')}, 1 thread; latency: median at batch 1")
print(f"bnnc: XNOR convolutions by {codegen}, the rest by cranelift; 1 thread")
print()
header = (
    f"{'model':<6} {'ort latency':>14} {'bnnc latency':>14} {'speedup':>8}"
    f" {'ort throughput':>16} {'bnnc throughput':>16} {'speedup':>8}"
)
print(header)
print("-" * len(header))
for name, ort_lat, bnnc_lat, ort_tp, bnnc_tp in table:
    # Both ratios read "how many times faster bnnc is": less time, or more samples per second.
    print(
        f"{name:<6} {ort_lat:>11.1f} us {bnnc_lat:>11.1f} us {ort_lat / bnnc_lat:>7.2f}x"
        f" {ort_tp:>12.0f} /s {bnnc_tp:>12.0f} /s {bnnc_tp / ort_tp:>7.2f}x"
    )

os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
with open(results, "w") as out:
    json.dump({"cpu": cpu, "codegen": codegen, "models": rows}, out, indent=2)
print()
print(f"raw results: {results}")
EOF
