"""Shared by the tests: the models of tests/data and how outputs are compared."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"

# Float outputs may differ from the reference executor's by float32 rounding of the final
# affine layers, relative to the largest magnitude of their row (as tests/models.rs holds
# the command line to).
REL_TOL = 1e-4


def model_dirs() -> List[Path]:
    """Every model folder of tests/data/models, external, variants and qkeras."""
    dirs = sorted(
        d
        for group in ("models", "external", "variants", "qkeras")
        for d in (DATA / group).iterdir()
        if (d / "model.onnx").exists()
    )
    assert len(dirs) >= 18, f"expected the models of tests/data, found {len(dirs)}"
    return dirs


def assert_matches_reference(got: np.ndarray, expected: np.ndarray) -> None:
    """Integers exactly; floats within REL_TOL of their row's magnitude, argmax identical."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
    if np.issubdtype(expected.dtype, np.integer):
        np.testing.assert_array_equal(got, expected)
        return
    rows_got = got.reshape(got.shape[0], -1).astype(np.float64)
    rows_expected = expected.reshape(expected.shape[0], -1).astype(np.float64)
    scale = np.maximum(np.abs(rows_expected).max(axis=1, keepdims=True), 1e-30)
    error = (np.abs(rows_got - rows_expected) / scale).max()
    assert error <= REL_TOL, f"largest difference {error:.3g} of the row's magnitude"
    if rows_expected.shape[1] > 1:
        np.testing.assert_array_equal(rows_got.argmax(axis=1), rows_expected.argmax(axis=1))
