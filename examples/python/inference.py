"""Run a bundled binary network from Python: compile it, call it, check it.

    python examples/python/inference.py [tests/data/models/cnv_w1a1]

Compiles the model (CNV-w1a1 by default: 1-bit weights and activations, CIFAR-10) into a
native library, runs the folder's input.npy through it and through bnnc's reference
interpreter, and compares both with the QONNX executor's outputs (expected.npy).
"""

import sys
import time
from pathlib import Path

import numpy as np

import bnnc

folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "tests/data/models/cnv_w1a1")

start = time.perf_counter()
model = bnnc.compile(folder / "model.onnx")
print(f"compiled {model.name} in {time.perf_counter() - start:.2f} s: {model.input_shape} -> {model.output_shape}")

x = np.load(folder / "input.npy")
y = model(x)
expected = np.load(folder / "expected.npy")
print("argmax, native:      ", y.reshape(len(x), -1).argmax(1))
print("argmax, reference:   ", expected.reshape(len(x), -1).argmax(1))
print("largest difference to the reference:", float(np.abs(y.astype(np.float64) - expected).max()))
print("interpreter agrees with native code:", np.array_equal(bnnc.run(folder / "model.onnx", x), y))

runs = 200
start = time.perf_counter()
for _ in range(runs):
    model(x[:1])
print(f"latency: {(time.perf_counter() - start) / runs * 1e6:.0f} us per image (batch 1, from Python)")

linear = [layer for layer in bnnc.inspect(folder / "model.onnx")["layers"] if layer["precision"]]
print("linear layers:", ", ".join(f"{layer['op']} {layer['precision']}" for layer in linear))
