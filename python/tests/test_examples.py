"""The inference example of examples/python runs as README shows it. (brevitas_mlp.py needs
PyTorch and Brevitas, which the tests do not install.)"""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_inference_example():
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python" / "inference.py")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
    assert lines["argmax, native"].split() == lines["argmax, reference"].split()
    assert lines["interpreter agrees with native code"].strip() == "True"
