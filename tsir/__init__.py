"""TensorSynth: an e-graph + genetic-search optimizer for neural networks, built on Apache TVM."""

from tsir.api import Result, optimize
from tsir.approx.budget import Budget, Data
from tsir.errors import StaticShapeError, TargetError, TsirError, UnsupportedOpError, VerificationError
from tsir.transform import Synthesize, pipeline

__all__ = [
    "Budget", "Data", "Result", "StaticShapeError", "Synthesize", "TargetError", "TsirError", "UnsupportedOpError",
    "VerificationError", "optimize", "pipeline",
]
