"""Writes the malformed models that tests/cli.rs feeds to bnnc (needs the `onnx` package).

Each file is small and wrong in one way; the test checks that bnnc names the culprit.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(graph, name, opset=13):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, name)


x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

# An op bnnc does not support, with a distinctive node name.
save(helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], name="mystery_einsum", equation="ij,ij->ij")],
                       "unsupported", [x], [y]), "unsupported_op.onnx")

# A Gemm whose weight does not match its input (4 vs 5).
w = numpy_helper.from_array(np.ones((3, 5), np.float32), "w")
save(helper.make_graph([helper.make_node("Gemm", ["x", "w"], ["y"], name="bad_gemm", transB=1)],
                       "shape_conflict", [x], [y], [w]), "shape_conflict.onnx")

# An initializer whose external data lies outside the model's directory.
t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 2])
t.data_location = TensorProto.EXTERNAL
for k, v in [("location", "../../../etc/passwd"), ("length", "32")]:
    e = t.external_data.add()
    e.key, e.value = k, v
save(helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                       "escape", [x], [y], [t]), "external_escape.onnx")

# A BipolarQuant with one operand (it takes two: x and scale).
g = helper.make_graph([helper.make_node("BipolarQuant", ["x"], ["y"], name="lonely_bq",
                                        domain="qonnx.custom_op.general")], "bq", [x], [y])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)])
m.ir_version = 8
onnx.save(m, "bipolarquant_arity.onnx")

# Not a protobuf at all.
with open("garbage.onnx", "wb") as f:
    f.write(b"\xff\xfe this is not an ONNX model \x00\x01\x02" * 3)
