"""Writes finn_lowered_tfc/, finn_lowered_cnv/ and finn_quant_avgpool/. The TFC: a binary MLP as FINN's
streamlining leaves it (MultiThreshold to BINARY, XnorPopcountMatMul, MultiThreshold, ...).
The CNV: a small binary CNV in the form FINN's streamlining leaves it
(`LowerConvsToMatMul`, `MakeMaxPoolNHWC`, `ConvertBipolarMatMulToXnorPopcount`): an NHWC
image through Im2Col and MatMul, MultiThreshold on the channels-last axis, MaxPoolNHWC,
XnorPopcountMatMul on bits, a flatten and a last XnorPopcountMatMul.

The expected outputs are qonnx's own executor's (`qonnx.core.onnx_exec.execute_onnx`,
qonnx 1.0.0, which runs the standard nodes with onnxruntime):

    python3 -m venv venv && venv/bin/pip install qonnx==1.0.0
    venv/bin/python make_finn_lowered.py
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

rng = np.random.default_rng(2026)
here = os.path.dirname(os.path.abspath(__file__))
FINN = "qonnx.custom_op.general"


def save(w, name, x):
    out_dir = os.path.join(here, name)
    os.makedirs(out_dir, exist_ok=True)
    w.save(os.path.join(out_dir, "model.onnx"))
    y = np.concatenate([execute_onnx(w, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    np.save(os.path.join(out_dir, "input.npy"), x)
    np.save(os.path.join(out_dir, "expected.npy"), y.astype(np.float32))
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump({"exporter": "hand-built in FINN's lowered form (make_finn_lowered.py)",
                   "reference": "qonnx 1.0.0 execute_onnx", "qonnx": "1.0.0",
                   "onnx": onnx.__version__}, f, indent=2)
        f.write("\n")
    print(name, y[:2])


def wrap(nodes, name, x_shape, y_shape, inits, shapes, datatypes):
    """The model of `nodes` (value_info for every intermediate shape, which qonnx's executor
    needs for the custom ops), with FINN datatypes on the named tensors."""
    info = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    graph = helper.make_graph(nodes, name, [info("x", x_shape)], [info("y", y_shape)], inits,
                              value_info=[info(n, s) for n, s in shapes.items()])
    model = helper.make_model(graph, producer_name="bnnc-tests",
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(FINN, 1)])
    w = ModelWrapper(model)
    for tensor, dt in datatypes:
        w.set_tensor_datatype(tensor, DataType[dt])
    return w


def tfc():
    ins = [helper.make_tensor("t_in", TensorProto.FLOAT, [1, 1], [0.0])]
    nodes = [helper.make_node("MultiThreshold", ["x", "t_in"], ["a0"], domain=FINN,
                              out_dtype="BINARY")]
    sizes = [32, 24, 16, 10]
    shapes = {"a0": [1, 32]}
    for i in range(3):
        k, m = sizes[i], sizes[i + 1]
        w = rng.integers(0, 2, size=(k, m)).astype(np.float32)
        ins.append(helper.make_tensor(f"w{i}", TensorProto.FLOAT, [k, m], w.flatten()))
        out = "y" if i == 2 else f"acc{i}"
        nodes.append(helper.make_node("XnorPopcountMatMul", [f"a{i}", f"w{i}"], [out], domain=FINN))
        if i < 2:
            # One threshold per neuron on its popcount, near half of its inputs.
            t = rng.integers(k // 2 - 3, k // 2 + 4, size=(m, 1)).astype(np.float32)
            ins.append(helper.make_tensor(f"t{i}", TensorProto.FLOAT, [m, 1], t.flatten()))
            nodes.append(helper.make_node("MultiThreshold", [f"acc{i}", f"t{i}"], [f"a{i + 1}"],
                                          domain=FINN, out_dtype="BINARY"))
            shapes[f"acc{i}"] = [1, m]
            shapes[f"a{i + 1}"] = [1, m]
    w = wrap(nodes, "finn_lowered_tfc", [1, 32], [1, 10], ins, shapes,
             [(t, "BINARY") for t in ["a0", "a1", "a2", "w0", "w1", "w2"]])
    save(w, "finn_lowered_tfc", rng.uniform(-1, 1, size=(8, 32)).astype(np.float32))


def quant_avgpool():
    """Brevitas' QuantAvgPool2d as FINN exports it: 3-bit levels pooled 2x2 (NCHW, shifted to
    4 bits), then 3x3 with stride 1 on the NHWC image (shifted to 5 bits)."""
    t = np.sort(rng.uniform(-1, 1, size=(4, 7)), axis=1).astype(np.float32)
    ins = [helper.make_tensor("t", TensorProto.FLOAT, [4, 7], t.flatten())]
    nodes = [
        helper.make_node("MultiThreshold", ["x", "t"], ["q"], domain=FINN, out_dtype="UINT3"),
        helper.make_node("QuantAvgPool2d", ["q"], ["p0"], domain=FINN, kernel=2, stride=2,
                         ibits=3, obits=4, signed=0),
        helper.make_node("Transpose", ["p0"], ["p0_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("QuantAvgPool2d", ["p0_nhwc"], ["y"], domain=FINN, kernel=3, stride=1,
                         ibits=4, obits=5, signed=0, data_layout="NHWC"),
    ]
    shapes = {"q": [1, 4, 10, 10], "p0": [1, 4, 5, 5], "p0_nhwc": [1, 5, 5, 4]}
    w = wrap(nodes, "finn_quant_avgpool", [1, 4, 10, 10], [1, 3, 3, 4], ins, shapes,
             [("q", "UINT3")])
    save(w, "finn_quant_avgpool", rng.uniform(-1, 1, size=(8, 4, 10, 10)).astype(np.float32))


tfc()


def thresholds(channels, levels, lo, hi):
    t = np.sort(rng.integers(lo, hi, size=(channels, levels)), axis=1)
    return t.astype(np.float32)


nodes, inits = [], []


def init(name, value):
    inits.append(helper.make_tensor(name, TensorProto.FLOAT, value.shape, value.flatten()))


# Input quantizer: 2-bit levels of the float image (NCHW, as the exporter left it).
init("t_in", np.array([[-0.5, 0.0, 0.5]] * 3, dtype=np.float32))
nodes.append(helper.make_node("MultiThreshold", ["x", "t_in"], ["xq"], domain=FINN,
                              out_dtype="UINT2"))
nodes.append(helper.make_node("Transpose", ["xq"], ["xq_nhwc"], perm=[0, 2, 3, 1]))
# Layer 0: 3x3, pad 1, 3 -> 16 channels, 2-bit weights, integer sums.
nodes.append(helper.make_node("Im2Col", ["xq_nhwc"], ["cols0"], domain=FINN,
                              stride=[1, 1], kernel_size=[3, 3], input_shape="(1, 8, 8, 3)",
                              pad_amount=[1, 1, 1, 1]))
init("w0", rng.integers(-2, 2, size=(27, 16)).astype(np.float32))
nodes.append(helper.make_node("MatMul", ["cols0", "w0"], ["acc0"]))
init("t0", thresholds(16, 1, -6, 6))
nodes.append(helper.make_node("MultiThreshold", ["acc0", "t0"], ["a0"], domain=FINN,
                              out_dtype="BINARY", data_layout="NHWC"))
nodes.append(helper.make_node("MaxPoolNHWC", ["a0"], ["p0"], domain=FINN,
                              kernel_shape=[2, 2], pads=[0, 0, 0, 0], strides=[2, 2]))
# Layer 1: 3x3, no pad, 16 -> 24 channels, XNOR-popcount on bits.
nodes.append(helper.make_node("Im2Col", ["p0"], ["cols1"], domain=FINN,
                              stride=[1, 1], kernel_size=[3, 3], input_shape="(1, 4, 4, 16)"))
init("w1", rng.integers(0, 2, size=(144, 24)).astype(np.float32))
nodes.append(helper.make_node("XnorPopcountMatMul", ["cols1", "w1"], ["acc1"], domain=FINN))
init("t1", thresholds(24, 1, 62, 82))
nodes.append(helper.make_node("MultiThreshold", ["acc1", "t1"], ["a1"], domain=FINN,
                              out_dtype="BINARY", data_layout="NHWC"))
# Flatten (channels last, as FINN leaves it) and a classifier of popcounts.
init("flat_shape", np.array([1, 96], dtype=np.float32))
inits[-1] = helper.make_tensor("flat_shape", TensorProto.INT64, [2], [1, 96])
nodes.append(helper.make_node("Reshape", ["a1", "flat_shape"], ["flat"]))
init("w2", rng.integers(0, 2, size=(96, 10)).astype(np.float32))
nodes.append(helper.make_node("XnorPopcountMatMul", ["flat", "w2"], ["y"], domain=FINN))

shapes = {"xq": [1, 3, 8, 8], "xq_nhwc": [1, 8, 8, 3], "cols0": [1, 8, 8, 27],
          "acc0": [1, 8, 8, 16], "a0": [1, 8, 8, 16], "p0": [1, 4, 4, 16],
          "cols1": [1, 2, 2, 144], "acc1": [1, 2, 2, 24], "a1": [1, 2, 2, 24], "flat": [1, 96]}
w = wrap(nodes, "finn_lowered_cnv", [1, 3, 8, 8], [1, 10], inits, shapes,
         [("xq", "UINT2"), ("xq_nhwc", "UINT2"), ("cols0", "UINT2"), ("w0", "INT2"),
          ("a0", "BINARY"), ("p0", "BINARY"), ("cols1", "BINARY"), ("w1", "BINARY"),
          ("a1", "BINARY"), ("flat", "BINARY"), ("w2", "BINARY")])
save(w, "finn_lowered_cnv", rng.uniform(-1, 1, size=(8, 3, 8, 8)).astype(np.float32))
quant_avgpool()
