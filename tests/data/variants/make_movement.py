"""Writes the movement_* folders: Resize / Upsample (nearest, whole factors), DepthToSpace and
SpaceToDepth as single-node models on float inputs, with onnxruntime's outputs as reference.

    python make_movement.py    # needs onnx, onnxruntime, numpy
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))


def write(name, node, in_shape, out_shape, opset, initializers=()):
    graph = helper.make_graph(
        [node],
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    rng = np.random.default_rng(len(name))
    x = rng.uniform(-1, 1, size=(3,) + tuple(in_shape[1:])).astype(np.float32)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    y = np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    np.save(os.path.join(folder, "input.npy"), x)
    np.save(os.path.join(folder, "expected.npy"), y)


def const(name, values, dtype=TensorProto.FLOAT):
    return helper.make_tensor(name, dtype, [len(values)], values)


# Resize, opset 13: scales x2 (asymmetric, floor: PyTorch's nearest), sizes x3 (half_pixel,
# round_prefer_floor: the defaults), and a 3-D input by (1, 1, 4).
write(
    "movement_resize_scales",
    helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    [1, 2, 3, 4], [1, 2, 6, 8], 13, [const("scales", [1.0, 1.0, 2.0, 2.0])],
)
write(
    "movement_resize_sizes",
    helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="nearest"),
    [1, 3, 2, 3], [1, 3, 6, 9], 13, [const("sizes", [1, 3, 6, 9], TensorProto.INT64)],
)
write(
    "movement_upsample_opset9",
    helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest"),
    [1, 2, 3, 3], [1, 2, 6, 3], 9, [const("scales", [1.0, 1.0, 2.0, 1.0])],
)
write(
    "movement_depth_to_space_dcr",
    helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="DCR"),
    [1, 8, 2, 3], [1, 2, 4, 6], 13,
)
write(
    "movement_depth_to_space_crd",
    helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD"),
    [1, 8, 2, 3], [1, 2, 4, 6], 13,
)
write(
    "movement_space_to_depth",
    helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2),
    [1, 2, 4, 6], [1, 8, 2, 3], 13,
)
