"""Where tsir's native parts are: ``_native/`` inside the installed ``tsir.backends`` package.

``pip install`` puts them there (scikit-build-core runs ``CMakeLists.txt``): ``host/tsir_runner`` and
``host/lib/libtsir_dnnl.so``. In a development checkout ``make native`` builds them under ``build/native``
and installs them into ``backends/_native``, with ``aarch64/tsir_runner`` beside them.
``TSIR_NATIVE_DIR`` points at another such folder.
"""

from __future__ import annotations

import os
from pathlib import Path

NATIVE_DIR = Path(os.environ.get("TSIR_NATIVE_DIR", Path(__file__).resolve().parent / "_native"))
DNNL_LIBRARY = NATIVE_DIR / "host" / "lib" / "libtsir_dnnl.so"
BUILD_HINT = "run `make native` in the tsir checkout, or reinstall tsir with `pip install`"


def runner(arch: str) -> Path:
    """The native runner for ``arch`` (``host`` or ``aarch64``), built or not."""
    return NATIVE_DIR / arch / "tsir_runner"
