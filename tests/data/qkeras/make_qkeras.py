"""Writes the folders of tests/data/qkeras: small QKeras networks (seeded weights, BatchNorm
statistics from a few training steps on random data), exported as QKeras users export them.

    python make_qkeras.py    # tensorflow 2.14.1, qkeras 0.9.0, tf2onnx 1.16.1, qonnx 0.4.0

Two exports of each network:
  NAME_qonnx    qonnx.converters.from_keras: tf2onnx with QONNX Quant nodes for the quantizers
  NAME_tf2onnx  tf2onnx.convert.from_keras alone: the quantizers as float ops (Round, Clip,
                Mul, Sign, ...), as a plain ONNX export of the QKeras model writes them
The reference (expected.npy) is the Keras model's own `predict` in float32 on input.npy (8
seeded random inputs). For the QONNX exports, qonnx's `execute_onnx` (after
`qonnx.util.cleanup`) is checked against it; both are written to info.json.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import onnx
import onnxruntime as ort
import qkeras
import qonnx
import tensorflow as tf
import tf2onnx
from qkeras import QActivation, QConv2D, QDense, binary, quantized_bits, quantized_relu
from qonnx.converters import from_keras as qonnx_from_keras
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model
from tensorflow.keras import layers

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = 8


def versions():
    return {
        "tensorflow": tf.__version__,
        "qkeras": qkeras.__version__,
        "tf2onnx": tf2onnx.__version__,
        "qonnx": qonnx.__version__ if hasattr(qonnx, "__version__") else "0.4.0",
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def train(model, in_shape, classes, seed, steps=20):
    """A few steps on random data, so that BatchNorm's statistics and the weights move."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(steps * 16,) + in_shape).astype(np.float32)
    y = rng.integers(0, classes, size=steps * 16)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-2),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)


def mlp_w4a4():
    q4 = lambda: quantized_bits(4, 0, alpha=1)
    inp = layers.Input((16,), name="x")
    h = QDense(32, kernel_quantizer=q4(), bias_quantizer=q4(), name="fc1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = QActivation(quantized_relu(4), name="relu1")(h)
    h = QDense(32, kernel_quantizer=q4(), bias_quantizer=q4(), name="fc2")(h)
    h = layers.BatchNormalization(name="bn2")(h)
    h = QActivation(quantized_relu(4), name="relu2")(h)
    out = QDense(5, kernel_quantizer=q4(), bias_quantizer=q4(), name="fc3")(h)
    return tf.keras.Model(inp, out, name="mlp_w4a4"), (16,), 5


def mlp_binary():
    inp = layers.Input((16,), name="x")
    h = QDense(64, kernel_quantizer=binary(alpha=1), use_bias=False, name="fc1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = QActivation(binary(alpha=1), name="act1")(h)
    h = QDense(64, kernel_quantizer=binary(alpha=1), use_bias=False, name="fc2")(h)
    h = layers.BatchNormalization(name="bn2")(h)
    h = QActivation(binary(alpha=1), name="act2")(h)
    h = QDense(5, kernel_quantizer=quantized_bits(1, 0, alpha=1), use_bias=False, name="fc3")(h)
    out = layers.BatchNormalization(name="bn3")(h)
    return tf.keras.Model(inp, out, name="mlp_binary"), (16,), 5


def conv_w4a4():
    q4 = lambda: quantized_bits(4, 0, alpha=1)
    inp = layers.Input((12, 12, 3), name="x")
    h = QConv2D(8, (3, 3), kernel_quantizer=q4(), bias_quantizer=q4(), name="conv1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = QActivation(quantized_relu(4), name="relu1")(h)
    h = layers.MaxPooling2D((2, 2), name="pool1")(h)
    h = QConv2D(16, (3, 3), padding="same", kernel_quantizer=q4(), bias_quantizer=q4(), name="conv2")(h)
    h = QActivation(quantized_relu(4), name="relu2")(h)
    h = layers.MaxPooling2D((2, 2), name="pool2")(h)
    h = layers.Flatten(name="flatten")(h)
    out = QDense(10, kernel_quantizer=q4(), bias_quantizer=q4(), name="fc")(h)
    return tf.keras.Model(inp, out, name="conv_w4a4"), (12, 12, 3), 10


def conv_binary():
    inp = layers.Input((12, 12, 3), name="x")
    h = QConv2D(8, (3, 3), kernel_quantizer=binary(alpha=1), use_bias=False, name="conv1")(inp)
    h = layers.BatchNormalization(name="bn1")(h)
    h = QActivation(binary(alpha=1), name="act1")(h)
    h = layers.MaxPooling2D((2, 2), name="pool1")(h)
    h = QConv2D(16, (3, 3), padding="same", kernel_quantizer=binary(alpha=1), use_bias=False, name="conv2")(h)
    h = layers.BatchNormalization(name="bn2")(h)
    h = QActivation(binary(alpha=1), name="act2")(h)
    h = layers.MaxPooling2D((2, 2), name="pool2")(h)
    h = layers.Flatten(name="flatten")(h)
    h = QDense(10, kernel_quantizer=binary(alpha=1), use_bias=False, name="fc")(h)
    out = layers.BatchNormalization(name="bn3")(h)
    return tf.keras.Model(inp, out, name="conv_binary"), (12, 12, 3), 10


NETWORKS = {
    "mlp_w4a4": mlp_w4a4,
    "mlp_binary": mlp_binary,
    "conv_w4a4": conv_w4a4,
    "conv_binary": conv_binary,
}

# The networks that qonnx 0.4.0 converts to QONNX. It cannot convert `binary`: a QActivation
# is stripped to a linear Activation, which leaves no TensorFlow op for its handlers to find
# (the activation vanishes), and binary weights become a 1-bit narrow signed Quant, whose
# range QONNX defines as {0}.
QONNX = {"mlp_w4a4", "conv_w4a4"}


class without_gemm_rewriter:
    """tf2onnx fuses MatMul + BiasAdd into Gemm before any custom handler runs, so qonnx 0.4.0's
    MatMul and BiasAdd handlers never see a QDense with a bias, and its weights and bias are
    written unquantized. Without that rewriter, the QONNX export quantizes them as QKeras does
    (MatMul and Add instead of Gemm)."""

    def __enter__(self):
        self.saved = tf2onnx.tfonnx.rewrite_gemm
        tf2onnx.tfonnx.rewrite_gemm = lambda g, ops: ops

    def __exit__(self, *exc):
        tf2onnx.tfonnx.rewrite_gemm = self.saved


def qonnx_reference(model_proto, x):
    wrapped = cleanup_model(ModelWrapper(model_proto))
    iname = wrapped.graph.input[0].name
    oname = wrapped.graph.output[0].name
    return np.concatenate(
        [execute_onnx(wrapped, {iname: x[i : i + 1]})[oname] for i in range(len(x))]
    )


def ort_reference(model_proto, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    iname = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {iname: x[i : i + 1]})[0] for i in range(len(x))])


def rel_err(a, b):
    scale = np.maximum(np.abs(b).max(axis=1, keepdims=True), 1e-30)
    return float((np.abs(a.astype(np.float64) - b) / scale).max())


def write(folder, model_proto, x, y, info):
    path = os.path.join(HERE, folder)
    os.makedirs(path, exist_ok=True)
    onnx.save(model_proto, os.path.join(path, "model.onnx"))
    np.save(os.path.join(path, "input.npy"), x)
    np.save(os.path.join(path, "expected.npy"), y)
    with open(os.path.join(path, "info.json"), "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")


def main(names):
    for seed, (name, make) in enumerate(NETWORKS.items()):
        if names and name not in names:
            continue
        tf.keras.utils.set_random_seed(seed)
        model, in_shape, classes = make()
        train(model, in_shape, classes, seed)
        rng = np.random.default_rng(100 + seed)
        x = rng.uniform(-1, 1, size=(SAMPLES,) + in_shape).astype(np.float32)
        y = model.predict(x, verbose=0).astype(np.float32)
        spec = (tf.TensorSpec((1,) + in_shape, tf.float32, name="x"),)

        if name in QONNX:
            with without_gemm_rewriter():
                proto, _ = qonnx_from_keras(model, name=name, input_signature=spec, opset=13)
            got = qonnx_reference(proto, x)
            info = {
                "network": name,
                "exporter": "qonnx.converters.from_keras (tf2onnx, opset 13, without its Gemm rewriter)",
                "reference": "keras Model.predict, float32",
                "versions": versions(),
                "qonnx_execute_onnx_rel_err": rel_err(got, y),
            }
            print(f"{name}_qonnx: execute_onnx vs keras {info['qonnx_execute_onnx_rel_err']:.3g}")
            assert info["qonnx_execute_onnx_rel_err"] <= 1e-4, "the QONNX export is not the Keras model"
            write(f"{name}_qonnx", proto, x, y, info)

        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
        got = ort_reference(proto, x)
        info = {
            "network": name,
            "exporter": "tf2onnx.convert.from_keras (opset 13)",
            "reference": "keras Model.predict, float32",
            "versions": versions(),
            "onnxruntime_rel_err": rel_err(got, y),
        }
        print(f"{name}_tf2onnx: onnxruntime vs keras {info['onnxruntime_rel_err']:.3g}")
        write(f"{name}_tf2onnx", proto, x, y, info)


if __name__ == "__main__":
    main(sys.argv[1:])
