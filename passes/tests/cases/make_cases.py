"""Writes the small models of the pass snapshot tests (needs the `onnx` and `numpy` packages).

Each case is a file `<pass>/<case>.onnx`; passes/tests/pass_cases.rs runs the pipeline on it
up to that pass and snapshots the IR after it. Adding a case is adding a model here.
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"
rng = np.random.default_rng(7)


def save(path, nodes, inputs, outputs, inits, shapes=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tensors = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()]
    tensors += [numpy_helper.from_array(np.asarray(v, dtype=np.int64), k) for k, v in (shapes or {}).items()]
    graph = helper.make_graph(nodes, os.path.basename(path)[:-5], inputs, outputs, tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    onnx.save(model, path)


def io(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def bq(x, s, y):
    return helper.make_node("BipolarQuant", [x, s], [y], name=f"bq_{y}", domain=QONNX)


one = {"one": np.ones(1)}

# cleanup: weight quantizers fold into bipolar constants, x*1 and reshape(reshape(x)) go.
save("cleanup/fold_weight_quantizer.onnx",
     [bq("x", "one", "xq"), bq("w", "one", "wq"),
      helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
      helper.make_node("Mul", ["acc", "one"], ["y"], name="times_one")],
     [io("x", [1, 5])], [io("y", [1, 3])], {**one, "w": rng.normal(size=(5, 3))})
save("cleanup/merge_reshapes.onnx",
     [helper.make_node("Reshape", ["x", "s1"], ["r1"], name="r1"),
      helper.make_node("Reshape", ["r1", "s2"], ["y"], name="r2")],
     [io("x", [1, 2, 3])], [io("y", [1, 6])], {}, shapes={"s1": [3, 2], "s2": [1, 6]})

# lower-xnor-popcount: bipolar x bipolar layers lower; others stay.
save("lower-xnor-popcount/gemm_trans_b.onnx",
     [bq("x", "one", "xq"), bq("w", "one", "wq"),
      helper.make_node("Gemm", ["xq", "wq"], ["y"], name="fc", transB=1)],
     [io("x", [1, 6])], [io("y", [1, 4])], {**one, "w": rng.normal(size=(4, 6))})
save("lower-xnor-popcount/conv_zero_padding.onnx",
     [bq("x", "one", "xq"), bq("w", "one", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
     [io("x", [1, 2, 4, 4])], [io("y", [1, 3, 4, 4])], {**one, "w": rng.normal(size=(3, 2, 3, 3))})
save("lower-xnor-popcount/float_input_stays.onnx",
     [bq("w", "one", "wq"), helper.make_node("MatMul", ["x", "wq"], ["y"], name="mm")],
     [io("x", [1, 5])], [io("y", [1, 3])], {**one, "w": rng.normal(size=(5, 3))})
save("lower-xnor-popcount/gemm_with_bias_stays.onnx",
     [bq("x", "one", "xq"), bq("w", "one", "wq"),
      helper.make_node("Gemm", ["xq", "wq", "b"], ["y"], name="fc", transB=1)],
     [io("x", [1, 6])], [io("y", [1, 4])], {**one, "w": rng.normal(size=(4, 6)), "b": rng.normal(size=4)})
