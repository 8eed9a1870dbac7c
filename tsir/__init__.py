"""TensorSynth: an e-graph + genetic-search optimizer for neural networks, built on Apache TVM.

The public names below load on first use (PEP 562), so ``import tsir.backends.x`` imports only what
``x`` needs, not torch, egglog and every rule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> the module that defines it
_EXPORTS = {
    "Result": "tsir.api", "optimize": "tsir.api", "Options": "tsir.options",
    "Budget": "tsir.approx.budget", "Data": "tsir.approx.budget",
    "StaticShapeError": "tsir.errors", "TargetError": "tsir.errors", "TsirError": "tsir.errors",
    "UnsupportedOpError": "tsir.errors", "VerificationError": "tsir.errors",
    "Synthesize": "tsir.transform", "pipeline": "tsir.transform",
}
__all__ = [
    "Budget", "Data", "Options", "Result", "StaticShapeError", "Synthesize", "TargetError", "TsirError",
    "UnsupportedOpError", "VerificationError", "optimize", "pipeline",
]

if TYPE_CHECKING:
    from tsir.api import Result, optimize
    from tsir.approx.budget import Budget, Data
    from tsir.errors import StaticShapeError, TargetError, TsirError, UnsupportedOpError, VerificationError
    from tsir.options import Options
    from tsir.transform import Synthesize, pipeline


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tsir' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
