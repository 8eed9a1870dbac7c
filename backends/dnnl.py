"""The oneDNN extension (``libtsir_dnnl.so``): load it so its ``tsir.dnnl.*`` global functions exist.

The extension is built by the top-level ``CMakeLists.txt`` (``pip install``, or ``make native`` in a checkout)
and installed as package data (``tsir.backends.native_files``).
A module that calls a library kernel (``R.call_dps_packed("tsir.dnnl.linear", ...)``) needs it loaded
in the process before it runs: ``tsir.backends.dnnl.load()`` does that, also for an exported ``.so``
loaded later with ``tvm.runtime.load_module``. ``TSIR_DNNL_LIB`` overrides the library's path.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import tvm_ffi

from tsir.backends import native_files
from tsir.errors import TsirError

FUNCTIONS = ("tsir.dnnl.matmul", "tsir.dnnl.linear", "tsir.dnnl.conv2d", "tsir.dnnl.conv2d_nhwc",
             "tsir.dnnl.conv2d_nhwc_add", "tsir.dnnl.layer_norm", "tsir.dnnl.impl", "tsir.dnnl.packed_weights")
_loaded: ctypes.CDLL | None = None


class DnnlUnavailableError(TsirError):
    """The oneDNN extension is not built or does not load."""


def library_path() -> Path:
    """Where the extension is looked for: ``$TSIR_DNNL_LIB``, else the installed package data."""
    return Path(os.environ.get("TSIR_DNNL_LIB", native_files.DNNL_LIBRARY))


def load() -> Path:
    """Load the extension once per process; raises ``DnnlUnavailableError`` saying how to build it."""
    global _loaded
    path = library_path()
    if _loaded is None:
        if not path.is_file():
            raise DnnlUnavailableError(
                f"oneDNN extension {path} is not built; {native_files.BUILD_HINT}, or point TSIR_DNNL_LIB at a "
                "built libtsir_dnnl.so")
        try:
            _loaded = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as err:
            raise DnnlUnavailableError(
                f"cannot load oneDNN extension {path}: {err}; rebuild it with `make native` after "
                "scripts/setup.sh has installed onednn-cpu-gomp") from err
    missing = [name for name in FUNCTIONS if tvm_ffi.get_global_func(name, allow_missing=True) is None]
    if missing:
        raise DnnlUnavailableError(f"{path} loaded but does not define {missing}; rebuild it with `make native`")
    return path


def impl(kind: str) -> str:
    """oneDNN's implementation name for the last ``kind`` primitive created (``matmul``, ``linear``, ``conv2d``)."""
    load()
    return str(tvm_ffi.get_global_func("tsir.dnnl.impl")(kind))
