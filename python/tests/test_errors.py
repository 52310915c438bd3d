"""Bad models and bad inputs: a CompileError that names the node, op and reason, or a
ValueError; never a crash."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import bnnc
from conftest import DATA

TFC = DATA / "models" / "tfc_w1a1"


def graph_model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_op_names_its_node():
    model = graph_model(
        [helper.make_node("Einsum", ["x", "x"], ["y"], name="the_einsum", equation="ij,ij->ij")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(bnnc.CompileError) as error:
        bnnc.compile(model)
    assert error.value.node == "the_einsum"
    assert error.value.op == "Einsum"
    assert error.value.reason
    assert "the_einsum" in str(error.value)


def test_bad_operands_name_their_node():
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 5], np.ones(15, np.float32))
    model = graph_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [weights],
    )
    with pytest.raises(bnnc.CompileError) as error:
        bnnc.run(model, np.zeros((1, 4), np.float32))
    assert error.value.node == "mm"
    assert error.value.op is not None


def test_not_a_model():
    with pytest.raises(bnnc.CompileError) as error:
        bnnc.compile(b"\x07garbage")
    assert error.value.node is None and error.value.op is None
    assert "not an ONNX model" in error.value.reason
    with pytest.raises(bnnc.CompileError):
        bnnc.inspect(b"")


def test_missing_file_and_wrong_types():
    with pytest.raises(FileNotFoundError):
        bnnc.compile(DATA / "no_such_model.onnx")
    with pytest.raises(TypeError):
        bnnc.compile(42)


def test_truncated_models_from_tests_data():
    for path in sorted((DATA / "invalid").glob("*.onnx")):
        with pytest.raises(bnnc.CompileError):
            bnnc.compile(path)


def test_wrong_inputs_are_value_errors():
    model = bnnc.compile(TFC / "model.onnx")
    x = np.load(TFC / "input.npy")
    with pytest.raises(ValueError, match="float32"):
        model(x.astype(np.float64))
    with pytest.raises(ValueError, match="float32"):
        model(x.astype(np.float16))
    with pytest.raises(ValueError, match="does not fit"):
        model(x[:, :, :27])
    with pytest.raises(ValueError, match="does not fit"):
        model(x.reshape(16, 784))
    with pytest.raises(ValueError, match="does not fit"):
        model(np.ones((), np.float32))
    with pytest.raises(TypeError, match="numpy array"):
        model([[0.0] * 784])
    with pytest.raises(TypeError, match="numpy array"):
        model(np.float32(1.0))
    with pytest.raises(ValueError, match="does not fit"):
        bnnc.run(TFC / "model.onnx", x[:, :1, :1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="first_last"):
        bnnc.compile(TFC / "model.onnx", first_last="int4")
    with pytest.raises(ValueError, match="codegen"):
        bnnc.compile(TFC / "model.onnx", codegen="gcc")
    with pytest.raises(ValueError, match="C identifier"):
        bnnc.compile(TFC / "model.onnx", name="not a name")
    other = "aarch64" if platform.machine() in ("x86_64", "AMD64") else "x86_64"
    with pytest.raises(ValueError, match="bnnc build"):
        bnnc.compile(TFC / "model.onnx", target=other)


def test_llvm_without_the_llvm_build_says_so():
    if bnnc._bnnc.has_llvm():
        model = bnnc.compile(TFC / "model.onnx", codegen="llvm")
        x = np.load(TFC / "input.npy")
        np.testing.assert_array_equal(model(x), bnnc.compile(TFC / "model.onnx")(x))
    else:
        with pytest.raises(bnnc.CompileError, match="--features llvm"):
            bnnc.compile(TFC / "model.onnx", codegen="llvm")


def test_two_inputs_cannot_be_called():
    model = graph_model(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(bnnc.CompileError, match="one input"):
        bnnc.compile(model)
