"""bnnc: a compiler for binary and low-bit neural networks, from Python.

Compile a quantized ONNX model (QONNX from Brevitas, FINN's formats, QuantizeLinear /
DequantizeLinear) into native code and call it on NumPy arrays::

    import bnnc, numpy as np
    model = bnnc.compile("tests/data/models/cnv_w1a1/model.onnx")
    y = model(np.load("tests/data/models/cnv_w1a1/input.npy"))

``bnnc.run`` runs the reference interpreter, which defines what every backend computes;
``bnnc.inspect`` describes a model layer by layer; ``bnnc.build_hls`` and
``bnnc.build_verilog`` write FPGA projects. A model is a path, the bytes of an ONNX file, or an
``onnx.ModelProto``. A model bnnc cannot take raises :class:`CompileError`, which names the
node, op and reason.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import numpy as np

from . import _bnnc
from ._bnnc import CompileError, Model

if TYPE_CHECKING:
    import onnx

__version__ = _version("bnnc")

__all__ = [
    "CompileError",
    "Model",
    "build_hls",
    "build_verilog",
    "compile",
    "inspect",
    "run",
]

#: What ``bnnc.compile`` and friends take as a model: a path to a ``.onnx`` file, its bytes,
#: or an ``onnx.ModelProto``.
ModelLike = Union[str, "os.PathLike[str]", bytes, bytearray, "onnx.ModelProto"]


def _source(model: ModelLike) -> Union[str, bytes]:
    """A path (as a string) or the bytes of an ONNX model."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no model at {path!r}")
        return path
    serialize = getattr(model, "SerializeToString", None)
    if callable(serialize):
        # An onnx.ModelProto. Tensors whose data lives in external files have no folder to be
        # found in: load such models with their data (onnx.load) or pass their path.
        return serialize()
    raise TypeError(
        f"a model is a path, bytes or an onnx.ModelProto, not {type(model).__name__}"
    )


def _host_target(target: str) -> None:
    """``compile`` loads what it builds, so it builds for this machine only."""
    host = platform.machine().lower()
    aliases = {"native", host, {"amd64": "x86_64", "arm64": "aarch64"}.get(host, host)}
    if target.lower() not in aliases:
        raise ValueError(
            f"bnnc.compile builds for this machine ({host}) and loads the library; "
            f"for target {target!r} run `bnnc build MODEL --target {target}`"
        )


def compile(  # noqa: A001 - the natural name; shadows the builtin only as bnnc.compile
    model: ModelLike,
    target: str = "native",
    codegen: Optional[str] = None,
    first_last: str = "keep",
    name: Optional[str] = None,
    out_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
) -> Model:
    """Compiles ``model`` for this machine into a shared library and loads it.

    Args:
        model: a path to an ONNX file, its bytes, or an ``onnx.ModelProto``.
        target: ``"native"`` (or this machine's architecture, ``"x86_64"`` / ``"aarch64"``).
        codegen: ``"auto"`` (the default: LLVM's kernels in a package built with the ``llvm``
            feature, Cranelift otherwise), ``"cranelift"``, or ``"llvm"`` (512-bit XNOR and
            bit-serial kernels; needs a package built with the ``llvm`` feature).
        first_last: ``"keep"`` float first and last layers, or quantize their weights to
            ``"int8"`` per output channel (this can change accuracy).
        name: the model's name, the prefix of the library's symbols (default: the file's stem,
            or the graph's name for bytes).
        out_dir: where to build ``libNAME.so`` and ``NAME.h`` (default: a temporary folder,
            removed with the model).

    Returns:
        The loaded :class:`Model`: call it on a float32 batch (integer and bool arrays are
        converted to float32 as ONNX's Cast to float converts them).

    Raises:
        CompileError: the model cannot be imported, optimized or compiled.
        ValueError: an argument is not one bnnc knows.
    """
    _host_target(target)
    return _bnnc.compile(
        _source(model),
        codegen=codegen,
        first_last=first_last,
        name=name,
        out_dir=None if out_dir is None else os.fspath(out_dir),
    )


def run(model: ModelLike, x: np.ndarray, passes: bool = True, first_last: str = "keep") -> np.ndarray:
    """Runs ``model`` on ``x`` with bnnc's reference interpreter.

    The interpreter defines what every backend computes (and agrees with the QONNX executor).

    Args:
        model: a path to an ONNX file, its bytes, or an ``onnx.ModelProto``.
        x: a float32 array of the model's input shape, or a batch of it on the first axis
            (integers and bools are converted as ONNX's Cast to float converts them).
        passes: run the optimization pipeline first (``False``: the model as imported).
        first_last: as for :func:`compile`.

    Returns:
        The model's output: float32, or int64 for index outputs (TopK).
    """
    return _bnnc.run(_source(model), x, passes=passes, first_last=first_last)


def inspect(model: ModelLike, passes: bool = True, first_last: str = "keep") -> Dict[str, Any]:
    """What ``bnnc inspect --json`` prints: ``model``, ``inputs``, ``ops`` (a count per op),
    ``layers`` (op, shapes, element types, precision, MACs, weight bits) and ``totals``.

    Args:
        model: a path to an ONNX file, its bytes, or an ``onnx.ModelProto``.
        passes: inspect the optimized model (``False``: as imported).
        first_last: as for :func:`compile`.
    """
    return json.loads(_bnnc.inspect_json(_source(model), passes=passes, first_last=first_last))


def _build_fpga(
    backend: str,
    model: ModelLike,
    out_dir: Union[str, "os.PathLike[str]"],
    part: str = "xc7z020clg400-1",
    clock_ns: float = 10.0,
    fps: Optional[float] = None,
    folding: Optional[Union[str, "os.PathLike[str]", Dict[str, Any]]] = None,
    tb_input: Optional[Union[str, "os.PathLike[str]", np.ndarray]] = None,
    tb_expected: Optional[Union[str, "os.PathLike[str]", np.ndarray]] = None,
    ap_types: Optional[Union[str, "os.PathLike[str]"]] = None,
    name: Optional[str] = None,
    first_last: str = "keep",
) -> Dict[str, Any]:
    if tb_expected is not None and tb_input is None:
        raise ValueError("tb_expected needs tb_input")
    with tempfile.TemporaryDirectory(prefix="bnnc-") as scratch:

        def as_file(value: Any, file: str, save: Any) -> Optional[str]:
            # Arrays and dicts go through files, as the command line takes them.
            if value is None or isinstance(value, (str, os.PathLike)):
                return None if value is None else os.fspath(value)
            path = os.path.join(scratch, file)
            save(path, value)
            return path

        def save_json(path: str, value: Any) -> None:
            with open(path, "w") as f:
                json.dump(value, f)

        def save_npy(path: str, value: Any) -> None:
            np.save(path, np.asarray(value))

        report = _bnnc.build_fpga(
            _source(model),
            os.fspath(out_dir),
            backend,
            part=part,
            clock_ns=float(clock_ns),
            fps=None if fps is None else float(fps),
            folding=as_file(folding, "folding.json", save_json),
            tb_input=as_file(tb_input, "tb_input.npy", save_npy),
            tb_expected=as_file(tb_expected, "tb_expected.npy", save_npy),
            ap_types=None if ap_types is None else os.fspath(ap_types),
            name=name,
            first_last=first_last,
        )
    return json.loads(report)


def build_hls(model: ModelLike, out_dir: Union[str, "os.PathLike[str]"], **options: Any) -> Dict[str, Any]:
    """Writes a Vitis HLS project of ``model`` into ``out_dir``, as
    ``bnnc build MODEL --target hls -o OUT_DIR`` does; returns its ``report.json``.

    ``make -C OUT_DIR csim`` then proves it exact by C simulation with g++.

    Options (all optional): ``part`` (default ``"xc7z020clg400-1"``), ``clock_ns`` (10.0),
    ``fps`` (frames per second to reach; default: as fast as fits the part), ``folding`` (a
    folding file's path, or its dict ``{"Conv_1": {"PE": 4, "SIMD": 16}, ...}``), ``tb_input``
    and ``tb_expected`` (the testbench's vectors, arrays or .npy paths; default: seeded random
    inputs and the interpreter's outputs), ``ap_types`` (the ap_int headers' folder), ``name``,
    ``first_last``.
    """
    return _build_fpga("hls", model, out_dir, **options)


def build_verilog(model: ModelLike, out_dir: Union[str, "os.PathLike[str]"], **options: Any) -> Dict[str, Any]:
    """Writes a Verilog design of ``model`` into ``out_dir``, as
    ``bnnc build MODEL --target verilog -o OUT_DIR`` does; returns its ``report.json``.

    ``make -C OUT_DIR sim`` simulates it with Icarus Verilog (``SIM=verilator`` for Verilator).
    Takes the options of :func:`build_hls` but ``ap_types``.
    """
    if "ap_types" in options:
        raise TypeError("build_verilog() takes no ap_types (the ap_int headers are for HLS)")
    return _build_fpga("verilog", model, out_dir, **options)
