# Types of the native module (python/src/lib.rs). The public API is bnnc/__init__.py.
import os
from typing import List, Optional, Tuple, Union

import numpy as np

class CompileError(Exception):
    """A model bnnc cannot import, optimize or compile."""

    node: Optional[str]
    """The node the error is about, or None when it concerns the whole model."""
    op: Optional[str]
    """That node's op: ONNX's op_type before import, the IR's op name after."""
    reason: str
    """Why, without the node and op."""

class Model:
    """A model compiled into a native shared library and loaded."""

    def __call__(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """Runs the model on a float32 array of the input's shape or a batch of it, the
        samples split over `threads` threads (0: one per core)."""
    @property
    def input_shape(self) -> Tuple[int, ...]: ...
    @property
    def output_shape(self) -> Tuple[int, ...]: ...
    @property
    def name(self) -> str: ...
    @property
    def library_path(self) -> str: ...
    @property
    def header_path(self) -> str: ...
    def save(self, dir: Union[str, "os.PathLike[str]"]) -> List[str]:
        """Copies the library and its header into `dir`; returns the paths written."""

def compile(
    model: Union[str, bytes],
    *,
    codegen: Optional[str] = ...,
    first_last: str = ...,
    name: Optional[str] = ...,
    out_dir: Optional[str] = ...,
) -> Model: ...
def run(model: Union[str, bytes], x: np.ndarray, *, passes: bool = ..., first_last: str = ...) -> np.ndarray: ...
def inspect_json(model: Union[str, bytes], *, passes: bool = ..., first_last: str = ...) -> str: ...
def build_fpga(
    model: Union[str, bytes],
    out_dir: str,
    backend: str,
    *,
    part: str,
    clock_ns: float,
    fps: Optional[float],
    folding: Optional[str],
    tb_input: Optional[str],
    tb_expected: Optional[str],
    ap_types: Optional[str],
    name: Optional[str],
    first_last: str,
) -> str: ...
def has_llvm() -> bool: ...
