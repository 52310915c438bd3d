"""From training to native code: a binary MLP trained with Brevitas, exported as QONNX,
compiled with bnnc, checked against the QONNX executor and timed against onnxruntime.

    pip install . brevitas qonnx onnxruntime      # brevitas brings PyTorch
    python examples/python/brevitas_mlp.py

It trains for a few seconds on the real MNIST digits bundled in tests/data (397 of them, so
expect a modest accuracy: the point is the path, not the model).
"""

import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from brevitas.export import export_qonnx
from brevitas.nn import QuantIdentity, QuantLinear
from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup

import bnnc

DIGITS = Path(__file__).parents[2] / "tests/data/models/tfc_w1a1"
HIDDEN = 256


def binary_mlp() -> torch.nn.Module:
    """TFC's shape: 784 -> 256 -> 256 -> 10, 1-bit weights and activations, BatchNorm between."""

    def binary_linear(n_in: int, n_out: int) -> QuantLinear:
        return QuantLinear(n_in, n_out, bias=False, weight_quant=SignedBinaryWeightPerTensorConst)

    def sign() -> QuantIdentity:
        return QuantIdentity(act_quant=SignedBinaryActPerTensorConst)

    return torch.nn.Sequential(
        torch.nn.Flatten(),
        sign(),
        binary_linear(784, HIDDEN),
        torch.nn.BatchNorm1d(HIDDEN),
        sign(),
        binary_linear(HIDDEN, HIDDEN),
        torch.nn.BatchNorm1d(HIDDEN),
        sign(),
        binary_linear(HIDDEN, 10),
        torch.nn.BatchNorm1d(10),
    )


def float_twin() -> torch.nn.Module:
    """The same network in float, as a user would run it with onnxruntime instead."""
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(784, HIDDEN, bias=False),
        torch.nn.BatchNorm1d(HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN, bias=False),
        torch.nn.BatchNorm1d(HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 10, bias=False),
        torch.nn.BatchNorm1d(10),
    ).eval()


def per_sample_us(run, x: np.ndarray, runs: int = 300) -> float:
    """Median latency of one sample, in microseconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)


def main() -> None:
    torch.manual_seed(0)
    # Pixels in [0, 1] -> [-1, 1], so that the input's sign is the pixel's ink.
    x = np.load(DIGITS / "test_x.npy").astype(np.float32) * 2 - 1
    labels = np.load(DIGITS / "test_y.npy").astype(np.int64)
    train, held_out = slice(0, 320), slice(320, None)

    model = binary_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    inputs, targets = torch.from_numpy(x[train]), torch.from_numpy(labels[train])
    start = time.perf_counter()
    model.train()
    for _ in range(60):
        for batch in torch.randperm(len(inputs)).split(64):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x[held_out])).numpy()
    accuracy = (torch_out.argmax(1) == labels[held_out]).mean()
    print(f"trained in {time.perf_counter() - start:.1f} s; held-out accuracy {accuracy:.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "binary_mlp.onnx"
        export_qonnx(model, input_t=torch.from_numpy(x[:1]), export_path=str(path))

        # bnnc takes the export as it is.
        start = time.perf_counter()
        compiled = bnnc.compile(path)
        print(f"bnnc compiled the QONNX export in {time.perf_counter() - start:.2f} s")

        # The QONNX executor (the reference) against bnnc's native code, sample by sample.
        # The executor wants QONNX's cleanup first (shapes inferred, constants folded).
        clean = Path(tmp) / "binary_mlp_clean.onnx"
        cleanup(str(path), out_file=str(clean))
        qonnx_model = ModelWrapper(str(clean))
        name = qonnx_model.graph.input[0].name
        reference = np.concatenate(
            [execute_onnx(qonnx_model, {name: x[i : i + 1]})[qonnx_model.graph.output[0].name] for i in range(320, len(x))]
        )
        native = compiled(x[held_out])
        print(f"largest difference to the QONNX executor: {np.abs(native - reference).max():.2e}")
        print(f"argmax identical on all {len(native)} held-out digits: {bool((native.argmax(1) == reference.argmax(1)).all())}")

        twin = Path(tmp) / "float_mlp.onnx"
        torch.onnx.export(float_twin(), (torch.from_numpy(x[:1]),), str(twin), verbose=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(twin), options, providers=["CPUExecutionProvider"])
        ort_input = session.get_inputs()[0].name
        one = x[:1]
        ort_us = per_sample_us(lambda s: session.run(None, {ort_input: s}), one)
        bnnc_us = per_sample_us(compiled, one)
        print(f"batch 1, one thread: onnxruntime on the float twin {ort_us:.1f} us, bnnc {bnnc_us:.1f} us ({ort_us / bnnc_us:.1f}x)")


if __name__ == "__main__":
    main()
