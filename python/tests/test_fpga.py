"""bnnc.build_hls and bnnc.build_verilog write the projects `bnnc build --target hls|verilog`
writes, and they simulate exactly (g++ with the ap_int headers; Icarus Verilog)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bnnc
from conftest import DATA

TFC = DATA / "models" / "tfc_w1a1"


def ap_types() -> str:
    # scripts/test fetches the Apache-2.0 ap_int headers and points BNNC_AP_TYPES at them.
    path = os.environ.get("BNNC_AP_TYPES")
    assert path, "BNNC_AP_TYPES must name the ap_int headers' folder (scripts/test sets it)"
    return path


def simulate(project: Path, target: str) -> str:
    done = subprocess.run(["make", "-C", str(project), target], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_hls_project_simulates_exactly(tmp_path: Path):
    x, expected = np.load(TFC / "input.npy"), np.load(TFC / "expected.npy")
    report = bnnc.build_hls(TFC / "model.onnx", tmp_path / "hls", tb_input=x, tb_expected=expected, ap_types=ap_types())
    assert report == json.loads((tmp_path / "hls" / "report.json").read_text())
    assert (tmp_path / "hls" / "src" / "tfc_w1a1_top.cpp").exists()
    assert "16 passed, 0 failed" in simulate(tmp_path / "hls", "csim")


def test_verilog_design_simulates_exactly(tmp_path: Path):
    report = bnnc.build_verilog(
        TFC / "model.onnx",
        tmp_path / "rtl",
        tb_input=TFC / "input.npy",
        tb_expected=TFC / "expected.npy",
        fps=100000,
    )
    assert report["fps"] >= 100000
    assert "16 passed, 0 failed" in simulate(tmp_path / "rtl", "sim")


def test_folding_as_a_dict(tmp_path: Path):
    first = bnnc.build_hls(TFC / "model.onnx", tmp_path / "a", fps=50000)
    folding = json.loads((tmp_path / "a" / "folding.json").read_text())
    again = bnnc.build_hls(TFC / "model.onnx", tmp_path / "b", folding=folding)
    assert [layer["cycles"] for layer in again["layers"]] == [layer["cycles"] for layer in first["layers"]]


def test_fpga_errors():
    with pytest.raises(bnnc.CompileError, match="part"):
        bnnc.build_hls(TFC / "model.onnx", "unused", part="no-such-part")
    with pytest.raises(TypeError):
        bnnc.build_verilog(TFC / "model.onnx", "unused", ap_types="x")
