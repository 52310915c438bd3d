#!/usr/bin/env python3
"""Times onnxruntime on a float ONNX model: the baseline that `bnnc bench` is compared with.

    bench_onnxruntime.py MODEL.onnx [--batch N] [--runs R] [--threads T] [--json]

Latency is the median over R runs of one sample (batch 1), in microseconds. Throughput is
samples per second at batch N when the model's batch axis (axis 0 of every input) is dynamic;
when it is fixed, it is measured by running N single samples back to back, as a caller
without batching would. Both follow warm-up runs that are not timed.

By default onnxruntime gets one thread (intra- and inter-op), sequential execution and every
graph optimization, so that it is compared with bnnc's single-threaded code on equal terms.
Needs `onnxruntime` and `numpy` (scripts/bench.sh makes a virtualenv with both).
"""

import argparse
import json
import math
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

# ONNX tensor types onnxruntime reports, as numpy dtypes. Only float models are meant to be
# timed here, but an integer side input (e.g. a sequence length) should not stop the script.
DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

# Time spent timing throughput, in seconds: enough for a stable median without making a slow
# model take minutes at batch 64.
THROUGHPUT_SECONDS = 2.0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a float ONNX model")
    parser.add_argument("--batch", type=int, default=64, help="samples per run for throughput (default 64)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs for the latency median (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before timing (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    for name in ("batch", "runs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    return args


def make_session(path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for every failure
        sys.exit(f"error: onnxruntime cannot load {path}: {error}")


def is_fixed(dim):
    return isinstance(dim, int) and dim > 0


def batch_is_dynamic(session):
    """Whether axis 0 of every input is symbolic, so that any batch size can be fed."""
    return all(len(i.shape) > 0 and not is_fixed(i.shape[0]) for i in session.get_inputs())


def make_feeds(session, batch, rng):
    """Random inputs with axis 0 set to `batch` (where it is dynamic). Other dynamic axes have
    no size to guess, so they are an error rather than a silently arbitrary benchmark."""
    feeds = {}
    for node in session.get_inputs():
        if node.type not in DTYPES:
            sys.exit(f"error: input {node.name!r} has type {node.type}, which this script cannot generate")
        shape = []
        for axis, dim in enumerate(node.shape):
            if is_fixed(dim):
                shape.append(dim)
            elif axis == 0:
                shape.append(batch)
            else:
                sys.exit(
                    f"error: axis {axis} of input {node.name!r} (shape {node.shape}) is dynamic; "
                    "only the batch axis (0) may be"
                )
        dtype = DTYPES[node.type]
        if np.issubdtype(dtype, np.floating):
            feeds[node.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[node.name] = np.zeros(shape, dtype=dtype)
    return feeds


def time_runs(run, count):
    """Durations in seconds of `count` calls of `run`."""
    durations = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        durations.append(time.perf_counter() - start)
    return durations


def main(argv):
    args = parse_args(argv)
    session = make_session(args.model, args.threads)
    rng = np.random.default_rng(args.seed)
    outputs = [o.name for o in session.get_outputs()]

    # Latency: one sample per run.
    single = make_feeds(session, 1, rng)
    run_single = lambda: session.run(outputs, single)  # noqa: E731
    time_runs(run_single, args.warmup)
    latency_s = statistics.median(time_runs(run_single, args.runs))

    # Throughput: a batch per run when the model takes one, else `batch` single runs.
    dynamic = batch_is_dynamic(session)
    if dynamic:
        batched = make_feeds(session, args.batch, rng)
        run_batch = lambda: session.run(outputs, batched)  # noqa: E731
        mode = "batched"
    else:
        # A fixed axis 0 (usually 1) is how many samples one run takes.
        per_run = session.get_inputs()[0].shape[0] if session.get_inputs()[0].shape else 1
        repeats = max(1, math.ceil(args.batch / per_run))

        def run_batch():
            for _ in range(repeats):
                session.run(outputs, single)

        mode = "repeated"
    warmup = time_runs(run_batch, max(1, min(args.warmup, 5)))
    # As many timed runs as fit in THROUGHPUT_SECONDS, at least 5, at most --runs.
    estimate = max(min(warmup), 1e-9)
    count = max(5, min(args.runs, math.ceil(THROUGHPUT_SECONDS / estimate)))
    samples = args.batch if dynamic else repeats * per_run
    throughput = samples / statistics.median(time_runs(run_batch, count))

    result = {
        "model": args.model,
        "latency_us": round(latency_s * 1e6, 3),
        "throughput_per_s": round(throughput, 3),
        "batch": samples,
        "throughput_mode": mode,
        "runs": args.runs,
        "threads": args.threads,
        "onnxruntime": ort.__version__,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: latency {result['latency_us']:.1f} us (median of {args.runs}, batch 1), "
            f"throughput {result['throughput_per_s']:.0f} samples/s (batch {samples}, {mode}), "
            f"{args.threads} thread(s), onnxruntime {ort.__version__}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
