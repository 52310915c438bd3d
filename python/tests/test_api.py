"""The API around a compiled model: how models are given, where libraries go, shapes."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import onnx

import bnnc
from conftest import DATA, assert_matches_reference

CNV = DATA / "models" / "cnv_w1a1"
TFC = DATA / "models" / "tfc_w1a1"


def test_path_bytes_and_model_proto_give_the_same_model():
    x = np.load(TFC / "input.npy")
    by_path = bnnc.compile(TFC / "model.onnx")(x)
    by_str = bnnc.compile(str(TFC / "model.onnx"))(x)
    by_bytes = bnnc.compile((TFC / "model.onnx").read_bytes())(x)
    by_proto = bnnc.compile(onnx.load(str(TFC / "model.onnx")))(x)
    for y in (by_str, by_bytes, by_proto):
        np.testing.assert_array_equal(y, by_path)
    np.testing.assert_array_equal(bnnc.run(onnx.load(str(TFC / "model.onnx")), x), bnnc.run(TFC / "model.onnx", x))
    assert bnnc.inspect((TFC / "model.onnx").read_bytes())["totals"] == bnnc.inspect(TFC / "model.onnx")["totals"]


def test_shapes_name_and_files(tmp_path: Path):
    model = bnnc.compile(CNV / "model.onnx", name="cifar", out_dir=tmp_path / "build")
    assert model.input_shape == (1, 3, 32, 32)
    assert model.output_shape == (1, 10)
    assert model.name == "cifar"
    assert Path(model.library_path) == tmp_path / "build" / "libcifar.so"
    assert Path(model.header_path) == tmp_path / "build" / "cifar.h"
    assert "cifar_run" in Path(model.header_path).read_text()
    assert "cifar" in repr(model)


def test_default_name_is_the_models_folder():
    assert bnnc.compile(CNV / "model.onnx").name == "cnv_w1a1"


def test_saved_library_runs_from_c(tmp_path: Path):
    model = bnnc.compile(TFC / "model.onnx")
    written = [Path(p) for p in model.save(tmp_path / "out")]
    assert sorted(p.name for p in written) == ["libtfc_w1a1.so", "tfc_w1a1.h"]
    lib = ctypes.CDLL(str(tmp_path / "out" / "libtfc_w1a1.so"))
    lib.tfc_w1a1_input_len.restype = ctypes.c_size_t
    lib.tfc_w1a1_output_len.restype = ctypes.c_size_t
    assert lib.tfc_w1a1_input_len() == 28 * 28
    x = np.ascontiguousarray(np.load(TFC / "input.npy")[:1])
    y = np.zeros(10, np.float32)
    f = ctypes.POINTER(ctypes.c_float)
    code = lib.tfc_w1a1_run(x.ctypes.data_as(f), ctypes.c_size_t(x.size), y.ctypes.data_as(f), ctypes.c_size_t(y.size))
    assert code == 0
    np.testing.assert_array_equal(y, model(x)[0])


def test_temporary_library_goes_with_the_model():
    model = bnnc.compile(TFC / "model.onnx")
    path = Path(model.library_path)
    assert path.exists()
    del model
    assert not path.exists()


def test_batches_of_any_size_and_layout():
    model = bnnc.compile(CNV / "model.onnx")
    x = np.load(CNV / "input.npy")
    y = model(x)
    assert model(x[:0]).shape == (0, 10)
    assert model(x[3:4]).shape == (1, 10)
    # Not contiguous: reversed along the batch, and a Fortran-ordered copy.
    np.testing.assert_array_equal(model(x[::-1]), y[::-1])
    np.testing.assert_array_equal(model(np.asfortranarray(x)), y)
    # The input is not written to.
    x.setflags(write=False)
    np.testing.assert_array_equal(model(x), y)


def test_index_outputs_are_int64():
    folder = DATA / "external" / "finn_tfc_w1a1_streamlined"
    x = np.load(folder / "input.npy")
    y = bnnc.compile(folder / "model.onnx")(x)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, np.load(folder / "expected.npy"))


def test_first_last_int8_keeps_the_argmax_on_cnv():
    x = np.load(CNV / "input.npy")
    y = bnnc.compile(CNV / "model.onnx", first_last="int8")(x)
    assert y.shape == (16, 10)
    # An 8-bit first layer on 8-bit pixels changes nothing on CNV, whose first layer is
    # already integer: the reference argmax holds.
    np.testing.assert_array_equal(y.argmax(1), np.load(CNV / "expected.npy").argmax(1))


def test_interpreter_before_and_after_the_passes_agree_exactly_on_integers():
    x = np.load(DATA / "external" / "finn_tfc_w1a1_streamlined" / "input.npy")
    model = DATA / "external" / "finn_tfc_w1a1_streamlined" / "model.onnx"
    np.testing.assert_array_equal(bnnc.run(model, x, passes=False), bnnc.run(model, x))


def test_an_empty_result_is_a_result(tmp_path: Path):
    # ONNX's Shape with start past end: an output of no elements, which the library
    # computes by checking its input and writing nothing.
    folder = DATA / "onnx-node" / "test_shape_start_greater_than_end"
    model = bnnc.compile(folder / "model.onnx", name="empty")
    assert model.output_shape == (0,)
    x = np.zeros(model.input_shape, np.float32)
    y = model(x)
    assert y.shape == (0,) and y.dtype == np.int64
    model.save(tmp_path)
    lib = ctypes.CDLL(str(tmp_path / "libempty.so"))
    lib.empty_output_len.restype = ctypes.c_size_t
    assert lib.empty_output_len() == 0
    f = ctypes.POINTER(ctypes.c_float)
    size = ctypes.c_size_t
    # No output buffer at all: a length of 0, and NULL.
    assert lib.empty_run(x.ctypes.data_as(f), size(x.size), None, size(0)) == 0
    # The lengths are still checked: an input of no sample, an output that is not empty.
    assert lib.empty_run(x.ctypes.data_as(f), size(0), None, size(0)) == 1
    one = np.zeros(1, np.float32)
    assert lib.empty_run(x.ctypes.data_as(f), size(x.size), one.ctypes.data_as(f), size(1)) == 2


def test_integer_and_bool_inputs_are_taken_as_their_cast_to_float():
    # Values beyond 2^24 round as Cast to float (and numpy's astype) rounds them.
    for kind in ("int64", "uint64", "int32_dq", "bool"):
        folder = DATA / "variants" / f"integer_input_{kind}"
        x = np.load(folder / "input.npy")
        assert x.dtype != np.float32
        model = bnnc.compile(folder / "model.onnx")
        np.testing.assert_array_equal(model(x), model(x.astype(np.float32)))
        np.testing.assert_array_equal(bnnc.run(folder / "model.onnx", x), model(x))
        assert_matches_reference(model(x), np.load(folder / "expected.npy"))
