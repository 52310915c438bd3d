#!/usr/bin/env bash
# bnnc against onnxruntime, single-threaded, on the BNN-PYNQ networks. Each quantized
# network runs in bnnc; its float twin of the same topology in onnxruntime:
#
#   cnv_w1a1, cnv_w2a2:       tests/data/models/NAME/model.onnx  vs  <baselines>/cnv_float.onnx
#   lfc_w1a1:                 tests/data/models/lfc_w1a1/model.onnx vs <baselines>/lfc_float.onnx
#   tfc_w1a1, tfc_w2a2_qcdq:  tests/data/models/NAME/model.onnx  vs  <baselines>/tfc_float.onnx
#
# Prints the CPU, then one row per network and code generator: median latency at batch 1
# and throughput at batch 64, each with the speedup of bnnc (> 1 means bnnc is faster).
# With LLVM 16 installed, bnnc is built with its LLVM backend and every network is measured
# with both code generators (`--codegen llvm` and `--codegen cranelift`) in the same run, so
# that both ratios share one onnxruntime measurement.
#
# Environment:
#   BNNC_BENCH_VENV  virtualenv with onnxruntime and numpy, made if missing
#                    (default: target/bench-venv)
#   BNNC_SHARED      folder holding baselines/ (default: ../shared)
#   BNNC_BENCH_JSON  where the raw results go, as JSON (default: target/bench-results.json)
#   BNNC_CODEGEN     `cranelift` to build and measure without LLVM
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

# Each network and the baseline it is measured against.
models=(cnv_w1a1 cnv_w2a2 lfc_w1a1 tfc_w1a1 tfc_w2a2_qcdq)
baseline_of() { echo "${1%%_*}"; }
for m in "${models[@]}"; do
    b=$(baseline_of "$m")
    [[ -f $baselines/${b}_float.onnx ]] || die "missing baseline $baselines/${b}_float.onnx (set BNNC_SHARED)"
    [[ -f tests/data/models/$m/model.onnx ]] || die "missing tests/data/models/$m/model.onnx"
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

# The code generators: LLVM's kernels and Cranelift alone when LLVM 16 is installed, else
# Cranelift; BNNC_CODEGEN=cranelift measures Cranelift alone.
case ${BNNC_CODEGEN:-} in
    "")
        if command -v llvm-config-16 >/dev/null; then
            codegens=(llvm cranelift)
        else
            codegens=(cranelift)
        fi
        ;;
    cranelift) codegens=(cranelift) ;;
    llvm) codegens=(llvm) ;;
    *) die "BNNC_CODEGEN must be cranelift or llvm, not '$BNNC_CODEGEN'" ;;
esac
features=()
[[ ${codegens[0]} == llvm ]] && features=(--features llvm)
codegen="${codegens[*]}"
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
declare -A ort_of
for m in "${models[@]}"; do
    b=$(baseline_of "$m")
    if [[ -z ${ort_of[$b]:-} ]]; then
        echo "bench.sh: ${b}_float: onnxruntime" >&2
        ort_of[$b]=$("$python" scripts/bench_onnxruntime.py "$baselines/${b}_float.onnx" --threads 1 --json) ||
            die "onnxruntime benchmark of ${b}_float failed"
    fi
    for cg in "${codegens[@]}"; do
        echo "bench.sh: $m: bnnc ($cg)" >&2
        bnnc_json=$("$bnnc" bench "tests/data/models/$m/model.onnx" --json --codegen "$cg") ||
            die "bnnc bench of $m ($cg) failed"
        "$python" -c '
import json, sys
name, codegen, ort, bnnc = sys.argv[1:]
print(json.dumps({"name": name, "codegen": codegen, "ort": json.loads(ort), "bnnc": json.loads(bnnc)}))
' "$m" "$cg" "${ort_of[$b]}" "$bnnc_json" >>"$raw" || die "the output of a benchmark of $m is not JSON"
    done
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
    table.append((row["name"], row["codegen"], ort_lat, bnnc_lat, ort_tp, bnnc_tp))

print(f"CPU: {cpu}")
print(f"onnxruntime {rows[0]['ort'].get('onnxruntime', '?')}, 1 thread; latency: median at batch 1")
print("bnnc: `llvm` runs the XNOR and bit-serial kernels on LLVM, the rest on Cranelift;")
print("`cranelift` runs everything on Cranelift; 1 thread; throughput at batch 64")
print()
header = (
    f"{'model':<14} {'codegen':<10} {'ort latency':>14} {'bnnc latency':>14} {'speedup':>8}"
    f" {'ort throughput':>16} {'bnnc throughput':>16} {'speedup':>8}"
)
print(header)
print("-" * len(header))
for name, cg, ort_lat, bnnc_lat, ort_tp, bnnc_tp in table:
    # Both ratios read "how many times faster bnnc is": less time, or more samples per second.
    print(
        f"{name:<14} {cg:<10} {ort_lat:>11.1f} us {bnnc_lat:>11.1f} us {ort_lat / bnnc_lat:>7.2f}x"
        f" {ort_tp:>12.0f} /s {bnnc_tp:>12.0f} /s {bnnc_tp / ort_tp:>7.2f}x"
    )

os.makedirs(os.path.dirname(results) or ".", exist_ok=True)
with open(results, "w") as out:
    json.dump({"cpu": cpu, "codegen": codegen, "models": rows}, out, indent=2)
print()
print(f"raw results: {results}")
EOF
