"""Every model of tests/data, compiled with bnnc.compile and run with bnnc.run, against the
reference executor's outputs."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

import bnnc
from conftest import assert_matches_reference, model_dirs

MODELS = model_dirs()
IDS = [f"{d.parent.name}/{d.name}" for d in MODELS]
# The folders that also hold a held-out split (test_x.npy, test_y.npy, test_expected.npy).
WITH_TEST_SET = [d for d in MODELS if (d / "test_x.npy").exists()]


@functools.lru_cache(maxsize=None)
def compiled(folder: Path) -> bnnc.Model:
    """Each model is compiled once for all the tests that run it."""
    return bnnc.compile(folder / "model.onnx")


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_native_matches_reference(folder: Path):
    x = np.load(folder / "input.npy")
    assert_matches_reference(compiled(folder)(x), np.load(folder / "expected.npy"))


@pytest.mark.parametrize("folder", WITH_TEST_SET, ids=[f"{d.parent.name}/{d.name}" for d in WITH_TEST_SET])
def test_native_test_set(folder: Path):
    assert len(WITH_TEST_SET) >= 7
    model = compiled(folder)
    x = np.load(folder / "test_x.npy").astype(np.float32)
    y = model(x)
    assert_matches_reference(y, np.load(folder / "test_expected.npy"))
    labels = np.load(folder / "test_y.npy")
    reference = np.load(folder / "test_expected.npy").reshape(len(labels), -1).argmax(1)
    assert (y.reshape(len(labels), -1).argmax(1) == labels).mean() == (reference == labels).mean()


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_native_one_sample_at_a_time(folder: Path):
    model = compiled(folder)
    x = np.load(folder / "input.npy")
    batched = model(x)
    for i in range(min(len(x), 3)):
        np.testing.assert_array_equal(model(x[i : i + 1]), batched[i : i + 1])


@pytest.mark.parametrize("passes", [True, False], ids=["optimized", "imported"])
@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_interpreter_matches_reference(folder: Path, passes: bool):
    y = bnnc.run(folder / "model.onnx", np.load(folder / "input.npy"), passes=passes)
    assert_matches_reference(y, np.load(folder / "expected.npy"))


@pytest.mark.parametrize("folder", MODELS, ids=IDS)
def test_inspect_describes_layers(folder: Path):
    report = bnnc.inspect(folder / "model.onnx")
    assert set(report) >= {"model", "inputs", "ops", "layers", "totals"}
    assert report["totals"]["layers"] == len(report["layers"]) > 0
    assert report["totals"]["macs"] == sum(layer["macs"] for layer in report["layers"])
