"""Writes the integer_input_* folders: networks whose graph input is uint8 or int8 (camera
pixels, sensor codes), as exporters write them, with onnxruntime's outputs (optimizations
off) as reference. bnnc takes the same numbers as float32 (input.npy), onnxruntime the
integers.

    python make_integer_inputs.py    # needs onnx, onnxruntime, numpy
"""

import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)


def write(name, nodes, x_type, in_shape, out_shape, initializers, x, as_float32=True):
    """Writes folder `name`: the model, input.npy (`x`, as float32 or in its own dtype) and
    onnxruntime's outputs on `x`."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", x_type, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    folder = os.path.join(HERE, name)
    os.makedirs(folder, exist_ok=True)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    y = np.concatenate([session.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])
    np.save(os.path.join(folder, "input.npy"), x.astype(np.float32) if as_float32 else x)
    np.save(os.path.join(folder, "expected.npy"), y)


def uniform(x_type, in_shape, low, high):
    """Eight samples of integers uniform in `low..=high`, in `x_type`'s dtype."""
    dtype = helper.tensor_dtype_to_np_dtype(x_type)
    return rng.integers(low, high + 1, size=(8,) + tuple(in_shape[1:])).astype(dtype)


def f32(*shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# uint8 pixels: Cast to float, scaled to [-1, 1], a 3x3 convolution, Relu, a classifier.
write(
    "integer_input_uint8",
    [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["xf", "d"], ["x01"]),
        helper.make_node("Mul", ["x01", "two"], ["x02"]),
        helper.make_node("Sub", ["x02", "one"], ["xs"]),
        helper.make_node("Conv", ["xs", "w", "b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ],
    TensorProto.UINT8,
    [1, 1, 8, 8],
    [1, 10],
    {
        "d": np.array(255.0, np.float32),
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "w": f32(4, 1, 3, 3),
        "b": f32(4, scale=0.1),
        "w2": f32(10, 144, scale=0.1),
        "b2": f32(10, scale=0.1),
    },
    uniform(TensorProto.UINT8, [1, 1, 8, 8], 0, 255),
)

# int8 codes with a zero point: DequantizeLinear, a dense layer.
write(
    "integer_input_int8_dq",
    [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xd"]),
        helper.make_node("MatMul", ["xd", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ],
    TensorProto.INT8,
    [1, 16],
    [1, 4],
    {
        "s": np.array(0.05, np.float32),
        "z": np.array(3, np.int8),
        "w": f32(16, 4),
        "b": f32(4, scale=0.1),
    },
    uniform(TensorProto.INT8, [1, 16], -128, 127),
)


# The wider integers and bool, written with their own dtype in input.npy: bnnc takes them as
# float32 (their Cast to float), or in their own type with `bnnc build --input-type`. Values
# beyond 2^24 round, as Cast to float does.
def write_typed(name, nodes, x_type, in_shape, out_shape, initializers, x):
    write(name, nodes, x_type, in_shape, out_shape, initializers, x, as_float32=False)


def wide(dtype, shape):
    """Integers of every magnitude, 2^0 to the type's top bit (log-uniform), of either sign for
    a signed type, with the type's extremes among them."""
    info = np.iinfo(dtype)
    bits = info.bits - (1 if info.min < 0 else 0)
    x = [int(2.0 ** rng.uniform(0, bits)) for _ in range(int(np.prod(shape)))]
    if info.min < 0:
        x = [-v if rng.random() < 0.5 else v for v in x]
    x[0], x[1] = int(info.min), int(info.max)
    return np.array([min(max(v, int(info.min)), int(info.max)) for v in x], dtype=dtype).reshape(shape)


# int64 features (counts, timestamps): Cast to float, scaled by 2^-40, a dense layer.
write_typed(
    "integer_input_int64",
    [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "s"], ["xs"]),
        helper.make_node("Gemm", ["xs", "w", "b"], ["y"], transB=1),
    ],
    TensorProto.INT64,
    [1, 12],
    [1, 3],
    {"s": np.array(2.0**-60, np.float32), "w": f32(3, 12), "b": f32(3, scale=0.1)},
    wide(np.int64, (8, 12)),
)

# uint64 and uint32 values likewise: the unsigned conversions, the top bit set.
write_typed(
    "integer_input_uint64",
    [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "s"], ["xs"]),
        helper.make_node("Gemm", ["xs", "w", "b"], ["y"], transB=1),
    ],
    TensorProto.UINT64,
    [1, 12],
    [1, 3],
    {"s": np.array(2.0**-62, np.float32), "w": f32(3, 12), "b": f32(3, scale=0.1)},
    wide(np.uint64, (8, 12)),
)
write_typed(
    "integer_input_uint32",
    [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "s"], ["xs"]),
        helper.make_node("Gemm", ["xs", "w", "b"], ["y"], transB=1),
    ],
    TensorProto.UINT32,
    [1, 12],
    [1, 3],
    {"s": np.array(2.0**-30, np.float32), "w": f32(3, 12), "b": f32(3, scale=0.1)},
    wide(np.uint32, (8, 12)),
)

# int32 accumulator codes through DequantizeLinear (int32 has no zero point).
write_typed(
    "integer_input_int32_dq",
    [
        helper.make_node("DequantizeLinear", ["x", "s"], ["xd"]),
        helper.make_node("MatMul", ["xd", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["y"]),
    ],
    TensorProto.INT32,
    [1, 16],
    [1, 4],
    {"s": np.array(2.0**-28, np.float32), "w": f32(16, 4), "b": f32(4, scale=0.1)},
    wide(np.int32, (8, 16)),
)

# A bool mask: Cast to float, made bipolar, a 3x3 convolution and a classifier.
write_typed(
    "integer_input_bool",
    [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xf", "two"], ["x2"]),
        helper.make_node("Sub", ["x2", "one"], ["xs"]),
        helper.make_node("Conv", ["xs", "w", "b"], ["c"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ],
    TensorProto.BOOL,
    [1, 1, 6, 6],
    [1, 5],
    {
        "two": np.array(2.0, np.float32),
        "one": np.array(1.0, np.float32),
        "w": f32(3, 1, 3, 3),
        "b": f32(3, scale=0.1),
        "w2": f32(5, 48, scale=0.1),
        "b2": f32(5, scale=0.1),
    },
    rng.integers(0, 2, size=(8, 1, 6, 6)).astype(np.bool_),
)
