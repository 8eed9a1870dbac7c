"""Whole-program measurement on the local CPU, each library timed in a child process.

The measurer contract (shared with ``backends/rpc.py``): ``measure(libraries, inputs)`` takes
``export_library`` outputs of Relax VM executables whose entry is ``main`` and returns one
``Measurement`` per library; a library that fails to load, crashes or hangs gets ``error`` set and
``median_ms`` None, and the others are still measured.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tsir.backends.child import run_isolated


@dataclass(frozen=True)
class Measurement:
    median_ms: float | None
    error: str | None


class Measurer(Protocol):
    def measure(self, libraries: Sequence[pathlib.Path], inputs: Sequence[np.ndarray]) -> list[Measurement]: ...


@dataclass(frozen=True)
class LocalMeasurer:
    """Times libraries on this machine's CPU, in a child process that may crash without harm."""

    repeat: int = 7
    min_repeat_ms: int = 20
    timeout_s: float = 120.0

    def measure(self, libraries: Sequence[pathlib.Path], inputs: Sequence[np.ndarray]) -> list[Measurement]:
        with tempfile.TemporaryDirectory(prefix="tsir-inputs-") as tmp:
            arrays = pathlib.Path(tmp) / "inputs.npz"
            np.savez(arrays, *[np.ascontiguousarray(x) for x in inputs])
            context = {"inputs": str(arrays), "repeat": self.repeat, "min_repeat_ms": self.min_repeat_ms}
            rows = run_isolated("library", [str(p) for p in libraries], context, self.timeout_s)
        return [Measurement(r.get("median_ms"), r.get("error")) for r in rows]
