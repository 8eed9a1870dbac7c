"""TVM's private APIs that tsir uses, for want of public ones (tested with ``TESTED_WITH``).

- ``sys.modules`` surgery on ``tvm.s_tir.tensor_intrin``: importing the package registers every target's
  tensor intrinsics (CUDA's alone take ~20 s on a loaded machine); there is no public way to load one
  target's module without the package's ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

TESTED_WITH = "0.27.0.post1"
TENSOR_INTRIN = "tvm.s_tir.tensor_intrin"


def load_tensor_intrinsics(family: str) -> None:
    """Register only ``tvm.s_tir.tensor_intrin.<family>`` (``x86``, ``arm_cpu``, ``cuda``), unless the package
    is loaded.

    The package is entered empty (its ``__init__``, which imports every family, is not run), so that
    MetaSchedule's later ``import tvm.s_tir.tensor_intrin`` finds it and imports nothing more.
    """
    if TENSOR_INTRIN in sys.modules:
        return
    spec = importlib.util.find_spec(TENSOR_INTRIN)
    sys.modules[TENSOR_INTRIN] = importlib.util.module_from_spec(spec)  # the package, its __init__ not run
    importlib.import_module(f"{TENSOR_INTRIN}.{family}")
