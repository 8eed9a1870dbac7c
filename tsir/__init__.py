"""TensorSynth: an e-graph + genetic-search optimizer for neural networks, built on Apache TVM."""

from tsir.api import Result, optimize
from tsir.errors import StaticShapeError, TargetError, TsirError, UnsupportedOpError, VerificationError

__all__ = [
    "Result", "StaticShapeError", "TargetError", "TsirError", "UnsupportedOpError", "VerificationError",
    "optimize",
]
