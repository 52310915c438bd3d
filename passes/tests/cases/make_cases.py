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

# reorder-pooling: a MaxPool before a per-channel monotone chain and quantizer pools the
# quantizer's bits (by the minimum on channels whose chain falls, a negative gamma); an
# AveragePool stays.
def pool_chain(path, gamma, pool="MaxPool", pool_attrs=None):
    c = len(gamma)
    save(path,
         [bq("x", "one", "xq"), bq("w", "one", "wq"),
          helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", kernel_shape=[3, 3]),
          helper.make_node(pool, ["acc"], ["pooled"], name="pool",
                           **(pool_attrs or {"kernel_shape": [2, 2], "strides": [2, 2]})),
          helper.make_node("BatchNormalization", ["pooled", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
          helper.make_node("Mul", ["bn", "m"], ["scaled"], name="scale"),
          bq("scaled", "one", "y")],
         [io("x", [1, 2, 7, 7])], [io("y", None)],
         {**one, "w": rng.normal(size=(c, 2, 3, 3)), "gamma": np.asarray(gamma),
          "beta": rng.normal(size=c), "mean": rng.normal(size=c), "var": rng.uniform(0.5, 2, size=c),
          "m": rng.uniform(0.5, 2, size=(1, c, 1, 1))})


pool_chain("reorder-pooling/positive_gamma_moves.onnx", [1.5, 0.25, 2.0])
pool_chain("reorder-pooling/padded_pool_moves.onnx", [0.5, 1.0, 3.0],
           pool_attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]})
pool_chain("reorder-pooling/negative_gamma_pools_by_min.onnx", [1.0, -0.5, 2.0])
pool_chain("reorder-pooling/average_pool_stays.onnx", [1.0, 0.5, 2.0], pool="AveragePool")
save("reorder-pooling/relu_quant_moves.onnx",
     [bq("x", "one", "xq"), bq("w", "one", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", kernel_shape=[3, 3]),
      helper.make_node("MaxPool", ["acc"], ["pooled"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
      helper.make_node("Mul", ["pooled", "m"], ["scaled"], name="scale"),
      helper.make_node("Add", ["scaled", "b"], ["biased"], name="bias"),
      helper.make_node("Relu", ["biased"], ["relu"], name="relu"),
      helper.make_node("Quant", ["relu", "qs", "zero", "bits"], ["y"], name="quant", domain=QONNX,
                       signed=0, narrow=0, rounding_mode="ROUND")],
     [io("x", [1, 2, 7, 7])], [io("y", None)],
     {**one, "w": rng.normal(size=(3, 2, 3, 3)), "m": rng.uniform(0.1, 0.5, size=(3, 1, 1)),
      "b": rng.normal(size=(1, 3, 1, 1)), "qs": np.asarray(0.5), "zero": np.asarray(0.0),
      "bits": np.asarray(2.0)})

# cleanup: a bias on a layer of scaled integers (a scale that is not a power of two) becomes
# an Add after the layer's scaled sum; with a power-of-two scale the float layer keeps it.
tenths = {"s_w": np.asarray([0.3])}
save("cleanup/split_bias_scaled_gemm.onnx",
     [bq("x", "one", "xq"), bq("w", "s_w", "wq"),
      helper.make_node("Gemm", ["xq", "wq", "b"], ["y"], name="fc", transB=1)],
     [io("x", [1, 6])], [io("y", [1, 4])],
     {**one, **tenths, "w": rng.normal(size=(4, 6)), "b": rng.normal(size=(4,))})
save("cleanup/split_bias_scaled_conv.onnx",
     [bq("x", "one", "xq"), bq("w", "s_w", "wq"),
      helper.make_node("Conv", ["xq", "wq", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3])],
     [io("x", [1, 2, 4, 4])], [io("y", [1, 3, 4, 4])],
     {**one, **tenths, "w": rng.normal(size=(3, 2, 3, 3)), "b": rng.normal(size=(3,))})
save("cleanup/power_of_two_bias_stays.onnx",
     [bq("x", "one", "xq"), bq("w", "half", "wq"),
      helper.make_node("Gemm", ["xq", "wq", "b"], ["y"], name="fc", transB=1)],
     [io("x", [1, 6])], [io("y", [1, 4])],
     {**one, "half": np.asarray([0.5]), "w": rng.normal(size=(4, 6)), "b": rng.normal(size=(4,))})

# fold-batchnorm-to-threshold: a BatchNorm before a quantizer folds; one before a real-valued
# residual add (Bi-Real) becomes its affine map, a mul and an add.
bn = {f"{p}{i}": v for i in range(2) for p, v in
      [("gamma", rng.uniform(0.5, 1.5, 3)), ("beta", rng.normal(size=3)),
       ("mean", rng.normal(size=3)), ("var", rng.uniform(0.5, 2.0, 3))]}
save("fold-batchnorm-to-threshold/residual_batchnorm_becomes_affine.onnx",
     [bq("x", "one", "xq"), bq("w0", "s_w", "w0q"), bq("w1", "s_w", "w1q"),
      helper.make_node("Conv", ["xq", "w0q"], ["acc0"], name="conv0", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
      helper.make_node("BatchNormalization", ["acc0", "gamma0", "beta0", "mean0", "var0"], ["bn0"], name="bn0"),
      bq("bn0", "one", "a1"),
      helper.make_node("Conv", ["a1", "w1q"], ["acc1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
      helper.make_node("BatchNormalization", ["acc1", "gamma1", "beta1", "mean1", "var1"], ["bn1"], name="bn1"),
      helper.make_node("Add", ["bn0", "bn1"], ["y"], name="residual")],
     [io("x", [1, 3, 4, 4])], [io("y", [1, 3, 4, 4])],
     {**one, **tenths, **bn, "w0": rng.normal(size=(3, 3, 3, 3)), "w1": rng.normal(size=(3, 3, 3, 3))})

# lower-xnor-popcount: XNOR-Net weights (bipolar times a per-channel scale, one negative)
# lower to xnor_conv times the scale, and the folded threshold after them moves onto the
# integers, its direction turned around where the scale is negative.
save("lower-xnor-popcount/per_channel_scale_moves_threshold.onnx",
     [bq("x", "one", "xq"), bq("w", "alpha", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
      helper.make_node("BatchNormalization", ["acc", "gamma0", "beta0", "mean0", "var0"], ["bn"], name="bn"),
      bq("bn", "one", "y")],
     [io("x", [1, 3, 4, 4])], [io("y", [1, 3, 4, 4])],
     {**one, **{k: v for k, v in bn.items() if k.endswith("0")},
      "alpha": np.asarray([0.3, -0.2, 0.7]).reshape(3, 1, 1, 1), "w": rng.normal(size=(3, 3, 3, 3))})

# first-last-precision: a float first layer (f32 input, f32 weights) stays float by default;
# `--first-last int8` quantizes its weights (tests/first_last.rs).
save("first-last-precision/float_first_layer.onnx",
     [helper.make_node("Gemm", ["x", "w0", "b0"], ["acc0"], name="fc0", transB=1),
      bq("acc0", "one", "a1"), bq("w1", "one", "w1q"),
      helper.make_node("Gemm", ["a1", "w1q"], ["y"], name="fc1", transB=1)],
     [io("x", [1, 6])], [io("y", [1, 3])],
     {**one, "w0": rng.normal(size=(4, 6)), "b0": rng.normal(size=(4,)), "w1": rng.normal(size=(3, 4))})

# lower-xnor-popcount: 3-bit signed activations against 2-bit signed weights (scaled) become
# bitserial_matmul times the scale (two's complement planes, the top one negative); the
# threshold after it moves onto the integers.
def quant(x, s, z, b, y, signed=1, narrow=0):
    return helper.make_node("Quant", [x, s, z, b], [y], name=f"q_{y}", domain=QONNX,
                            signed=signed, narrow=narrow, rounding_mode="ROUND")
save("lower-xnor-popcount/bit_serial_signed.onnx",
     [quant("x", "s_a", "zero", "three", "xq"), quant("w", "s_w", "zero", "two", "wq"),
      helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
      helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
      quant("bn", "s_y", "zero", "two", "y", signed=0)],
     [io("x", [1, 256])], [io("y", [1, 128])],
     {"s_a": np.asarray(0.25), "s_w": np.asarray(0.3), "s_y": np.asarray(0.5),
      "zero": np.asarray(0.0), "three": np.asarray(3.0), "two": np.asarray(2.0),
      "w": rng.normal(size=(256, 128)) * 0.4, "g": rng.uniform(0.5, 1.5, 128),
      "b": rng.normal(size=128), "m": rng.normal(size=128) * 2, "v": rng.uniform(1, 9, 128)})

# lower-xnor-popcount: an 8-bit first layer (power-of-two scales, no padding) whose threshold
# feeds an XNOR layer: the backend's integer kernel, with filters of ±1 weights (summed from
# the taps of the rarer sign and the sum of all taps) and filters of other small integers.
q_w = rng.integers(-2, 2, size=(16, 3, 3, 3)).astype(np.float64)
q_w[:8] = np.where(rng.random(size=(8, 3, 3, 3)) < 0.3, 1.0, -1.0)
q_w[8] = 1.0
save("lower-xnor-popcount/int8_first_layer.onnx",
     [quant("x", "s_in", "zero", "eight", "xq"), quant("w", "half", "zero", "two", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv0", kernel_shape=[3, 3]),
      helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
      bq("bn", "one", "a1"), bq("w1", "one", "w1q"),
      helper.make_node("Conv", ["a1", "w1q"], ["y"], name="conv1", kernel_shape=[3, 3])],
     [io("x", [1, 3, 12, 12])], [io("y", [1, 4, 8, 8])],
     {**one, "s_in": np.asarray(2.0 ** -5), "half": np.asarray(0.5), "zero": np.asarray(0.0),
      "eight": np.asarray(8.0), "two": np.asarray(2.0), "w": q_w * 0.5,
      "g": rng.uniform(0.5, 1.5, 16) * np.where(np.arange(16) % 5 == 0, -1, 1),
      "b": rng.normal(size=16), "m": rng.normal(size=16), "v": rng.uniform(0.5, 2, 16),
      "w1": rng.normal(size=(4, 16, 3, 3))})

# lower-xnor-popcount: a MaxPool on the bits of a thresholded XNOR layer, whose 7x7 output
# the 2x2 windows do not tile (floor drops the last row and column, ceil keeps them as partial
# windows); the backend pools in the layer's output stage.
for mode in (0, 1):
    save(f"lower-xnor-popcount/pooled_bits_ceil{mode}.onnx",
         [bq("x", "one", "xq"), bq("w", "one", "wq"),
          helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv0", kernel_shape=[3, 3]),
          helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
          bq("bn", "one", "a1"),
          helper.make_node("MaxPool", ["a1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2],
                           ceil_mode=mode),
          bq("w1", "one", "w1q"),
          helper.make_node("Conv", ["p1", "w1q"], ["y"], name="conv1", kernel_shape=[3, 3])],
         [io("x", [1, 8, 9, 9])], [io("y", None)],
         {**one, "w": rng.normal(size=(70, 8, 3, 3)), "g": rng.uniform(-1.5, 1.5, 70),
          "b": rng.normal(size=70), "m": rng.normal(size=70) * 3, "v": rng.uniform(1, 9, 70),
          "w1": rng.normal(size=(4, 70, 3, 3))})

# lower-xnor-popcount: 2-bit signed activations against bipolar weights (w1a2) become
# bitserial_matmul with the weights as one plane b, w = 2b - 1.
save("lower-xnor-popcount/bit_serial_bipolar_weights.onnx",
     [quant("x", "half", "zero", "two", "xq"), bq("w", "one", "wq"),
      helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
      helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
      quant("bn", "half", "zero", "two", "y", signed=0)],
     [io("x", [1, 300])], [io("y", [1, 96])],
     {**one, "half": np.asarray(0.5), "zero": np.asarray(0.0), "two": np.asarray(2.0),
      "w": rng.normal(size=(300, 96)), "g": rng.uniform(-1.5, 1.5, 96),
      "b": rng.normal(size=96), "m": rng.normal(size=96) * 4, "v": rng.uniform(1, 30, 96)})

# reorder-pooling: channels of both directions (70, two words of bits), the pool moved onto
# bits read by an XNOR layer: OR on rising channels, AND on falling ones, with and without
# padding (a padded tap counts for neither).
for name, attrs in [("mixed_directions_on_bits", {"kernel_shape": [2, 2], "strides": [2, 2]}),
                    ("mixed_directions_padded", {"kernel_shape": [3, 3], "strides": [2, 2],
                                                 "pads": [1, 1, 1, 1]})]:
    save(f"reorder-pooling/{name}.onnx",
         [bq("x", "one", "xq"), bq("w", "one", "wq"),
          helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", kernel_shape=[3, 3]),
          helper.make_node("MaxPool", ["acc"], ["pooled"], name="pool", **attrs),
          helper.make_node("BatchNormalization", ["pooled", "g", "b", "m", "v"], ["bn"], name="bn"),
          bq("bn", "one", "a1"), bq("w1", "one", "w1q"),
          helper.make_node("Conv", ["a1", "w1q"], ["y"], name="conv1", kernel_shape=[1, 1])],
         [io("x", [1, 6, 9, 9])], [io("y", None)],
         {**one, "w": rng.normal(size=(70, 6, 3, 3)), "g": rng.uniform(0.5, 1.5, 70) * np.where(np.arange(70) % 3 == 0, -1, 1),
          "b": rng.normal(size=70), "m": rng.normal(size=70) * 3, "v": rng.uniform(1, 9, 70),
          "w1": rng.normal(size=(5, 70, 1, 1))})

# fuse-scales: constant steps after an integer accumulator collapse where one affine map is
# exact on every integer of its range ((2x + 3) * 0.5 - 1 is x + 0.5); a BatchNorm written
# as Sub, Div, Mul, Add rounds differently and stays.
def affine_chain(path, steps):
    nodes = [bq("x", "one", "xq"), bq("w", "one", "wq"),
             helper.make_node("MatMul", ["xq", "wq"], ["v0"], name="mm")]
    inits = {**one, "w": rng.normal(size=(6, 3))}
    for i, (op, c) in enumerate(steps):
        inits[f"c{i}"] = np.asarray(c)
        out = "y" if i + 1 == len(steps) else f"v{i + 1}"
        nodes.append(helper.make_node(op, [f"v{i}", f"c{i}"], [out], name=f"{op.lower()}{i}"))
    save(path, nodes, [io("x", [1, 6])], [io("y", [1, 3])], inits)
affine_chain("fuse-scales/exact_chain_collapses.onnx",
             [("Mul", 2.0), ("Add", 3.0), ("Mul", 0.5), ("Sub", 1.0)])
affine_chain("fuse-scales/rounding_chain_stays.onnx",
             [("Sub", 1.3055943), ("Div", 14.613561), ("Mul", 1.7354248), ("Add", -0.20374633)])

# lower-xnor-popcount: a 2-bit convolution (unsigned activations, signed weights scaled per
# output channel, zero padding) becomes bitserial_conv times its scales.
save("lower-xnor-popcount/bit_serial_conv.onnx",
     [quant("x", "half", "zero", "two", "xq", signed=0), quant("w", "s_c", "zero", "two", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
      helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
      quant("bn", "half", "zero", "two", "y", signed=0)],
     [io("x", [1, 32, 6, 6])], [io("y", [1, 64, 6, 6])],
     {"half": np.asarray(0.5), "zero": np.asarray(0.0), "two": np.asarray(2.0),
      "s_c": rng.uniform(0.1, 0.4, size=(64, 1, 1, 1)), "w": rng.normal(size=(64, 32, 3, 3)) * 0.3,
      "g": rng.uniform(-1.5, 1.5, 64), "b": rng.normal(size=64), "m": rng.normal(size=64) * 4,
      "v": rng.uniform(1, 30, 64)})

# cleanup: a transpose that moves only an axis of extent 1 is a reshape; two transposes
# that cancel are nothing.
save("cleanup/fold_transposes.onnx",
     [helper.make_node("Transpose", ["x"], ["t1"], name="t1", perm=[0, 2, 1, 3]),
      helper.make_node("Transpose", ["t1"], ["t2"], name="t2", perm=[0, 1, 3, 2]),
      helper.make_node("Transpose", ["t2"], ["y"], name="t3", perm=[0, 1, 3, 2])],
     [io("x", [1, 4, 1, 3])], [io("y", [1, 1, 4, 3])], {})

# fuse-output-stages: a threshold that alone reads a layer's sums runs in its output stage,
# and so does a max-pool after it whose windows tile the image (by the minimum on falling
# channels); an overlapping pool, or sums read twice, stay apart.
def fused_conv(path, pool_attrs, shared=False):
    nodes = [bq("x", "one", "xq"), bq("w", "one", "wq"),
             helper.make_node("Conv", ["xq", "wq"], ["acc"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
             bq("bn", "one", "a1")]
    if shared:
        nodes.append(helper.make_node("Add", ["a1", "acc"], ["y"], name="residual"))
    else:
        nodes.append(helper.make_node("MaxPool", ["a1"], ["y"], name="pool", **pool_attrs))
    save(path, nodes, [io("x", [1, 4, 9, 9])], [io("y", None)],
         {**one, "w": rng.normal(size=(5, 4, 3, 3)), "g": rng.uniform(0.5, 1.5, 5),
          "b": rng.normal(size=5), "m": rng.normal(size=5) * 3, "v": rng.uniform(1, 9, 5)})


fused_conv("fuse-output-stages/threshold_and_tiling_pool.onnx", {"kernel_shape": [2, 2], "strides": [2, 2]})
fused_conv("fuse-output-stages/overlapping_pool_stays_apart.onnx", {"kernel_shape": [3, 3], "strides": [2, 2]})
fused_conv("fuse-output-stages/shared_sums_stay_apart.onnx", None, shared=True)
pool_chain("fuse-output-stages/min_pool_on_falling_channels.onnx", [1.0, -0.5, 2.0])
save("fuse-output-stages/multi_level_bit_serial.onnx",
     [quant("x", "half", "zero", "two", "xq"), quant("w", "half", "zero", "two", "wq"),
      helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"),
      helper.make_node("BatchNormalization", ["acc", "g", "b", "m", "v"], ["bn"], name="bn"),
      quant("bn", "half", "zero", "two", "y", signed=0)],
     [io("x", [1, 200])], [io("y", [1, 32])],
     {**one, "half": np.asarray(0.5), "zero": np.asarray(0.0), "two": np.asarray(2.0),
      "w": rng.normal(size=(200, 32)), "g": rng.uniform(-1.5, 1.5, 32),
      "b": rng.normal(size=32), "m": rng.normal(size=32) * 4, "v": rng.uniform(1, 30, 32)})
# lower-xnor-popcount: grouped layers lower too. A depthwise binary conv (one channel per
# group, padded) and a grouped one (two channels per group) become xnor_conv with each
# filter's words packing its group's channels, and their folded thresholds move onto the
# integers; a grouped 2-bit conv with 64 channels per group and 64 filters becomes
# bitserial_conv (the cost model prefers it).
save("lower-xnor-popcount/grouped_and_depthwise_xnor.onnx",
     [bq("x", "one", "xq"), bq("w0", "one", "w0q"), bq("w1", "one", "w1q"),
      helper.make_node("Conv", ["xq", "w0q"], ["acc0"], name="depthwise", group=4,
                       pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
      helper.make_node("BatchNormalization", ["acc0", "g", "b", "m", "v"], ["bn0"], name="bn0"),
      bq("bn0", "one", "a1"),
      helper.make_node("Conv", ["a1", "w1q"], ["y"], name="grouped", group=2, kernel_shape=[3, 3])],
     [io("x", [1, 4, 5, 5])], [io("y", [1, 2, 3, 3])],
     {**one, "w0": rng.normal(size=(4, 1, 3, 3)), "w1": rng.normal(size=(2, 2, 3, 3)),
      "g": rng.uniform(0.5, 1.5, 4), "b": rng.normal(size=4), "m": rng.normal(size=4),
      "v": rng.uniform(0.5, 2.0, 4)})
save("lower-xnor-popcount/grouped_bit_serial_conv.onnx",
     [quant("x", "half", "zero", "two", "xq", signed=0), quant("w", "half", "zero", "two", "wq"),
      helper.make_node("Conv", ["xq", "wq"], ["y"], name="grouped", group=2, kernel_shape=[3, 3])],
     [io("x", [1, 128, 4, 4])], [io("y", [1, 64, 2, 2])],
     {"half": np.asarray(0.5), "zero": np.asarray(0.0), "two": np.asarray(2.0),
      "w": rng.normal(size=(64, 64, 3, 3))})

# cleanup: tf2onnx's NHWC ops between NCHW ones, transposes on either side of each (QKeras'
# quantized ReLU, its SelectV2 as tf2onnx writes it): the region of elementwise nodes runs in one axis order, its NHWC
# constants transposed, and no transpose is left. A region whose paths disagree on the order
# (x + transpose(x)) stays as it is.
def nhwc(x, y):
    return helper.make_node("Transpose", [x], [y], name=y, perm=[0, 2, 3, 1])


def nchw(x, y):
    return helper.make_node("Transpose", [x], [y], name=y, perm=[0, 3, 1, 2])


save("cleanup/transposes_across_elementwise.onnx",
     [helper.make_node("Mul", ["x", "sixteen"], ["m"], name="m"),
      nhwc("m", "t_m"), helper.make_node("Round", ["t_m"], ["r"], name="r"), nchw("r", "t_r"),
      helper.make_node("Mul", ["m", "minus_one"], ["neg"], name="neg"),
      helper.make_node("Add", ["neg", "t_r"], ["frac"], name="frac"),
      nhwc("x", "t_x"),
      helper.make_node("LessOrEqual", ["t_x", "half"], ["le"], name="le"),
      helper.make_node("Cast", ["le"], ["le_f"], name="le_f", to=TensorProto.FLOAT),
      helper.make_node("Mul", ["le_f", "t_x"], ["kept"], name="kept"),
      helper.make_node("Equal", ["le_f", "zero"], ["gt"], name="gt"),
      helper.make_node("Cast", ["gt"], ["gt_f"], name="gt_f", to=TensorProto.FLOAT),
      helper.make_node("Mul", ["gt_f", "per_channel"], ["other"], name="other"),
      helper.make_node("Add", ["kept", "other"], ["sel"], name="sel"),
      nchw("sel", "t_sel"),
      helper.make_node("Add", ["frac", "t_sel"], ["sum"], name="sum"),
      quant("t_x", "scales", "zero", "four", "q"), nchw("q", "t_q"),
      helper.make_node("Add", ["sum", "t_q"], ["y"], name="y")],
     [io("x", [1, 4, 3, 3])], [io("y", [1, 4, 3, 3])],
     {"sixteen": np.asarray(16.0), "minus_one": np.asarray(-1.0), "half": np.asarray(0.5),
      "per_channel": rng.normal(size=(1, 1, 1, 4)), "scales": np.asarray([0.25, 0.5, 0.125, 1.0]),
      "zero": np.asarray(0.0), "four": np.asarray(4.0)})

save("cleanup/transposes_disagree_stay.onnx",
     [helper.make_node("Transpose", ["x"], ["t"], name="t", perm=[0, 2, 1]),
      helper.make_node("Add", ["x", "t"], ["y"], name="y")],
     [io("x", [1, 3, 3])], [io("y", [1, 3, 3])], {})
