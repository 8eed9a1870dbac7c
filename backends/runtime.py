"""Build a Relax module with TVM, export it for its device, run it, and time it on the local device."""

from __future__ import annotations

import os
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tsir.backends.targets import TargetSpec


def build(mod: tvm.IRModule, spec: TargetSpec) -> relax.VMExecutable:
    """``tvm.compile`` with TVM's default Relax pipeline for the target.

    For CUDA that pipeline legalizes, fuses and gives every kernel dlight's default GPU schedule
    (``tvm.s_tir.dlight``: Matmul, GEMV, Reduction, GeneralReduction, Fallback); for ARM it is an
    LLVM cross-compile to the core's triple, mcpu and features.
    """
    return tvm.compile(mod, target=spec.target)


def export(executable: relax.VMExecutable, path: str | os.PathLike, spec: TargetSpec) -> Path:
    """``export_library`` with the target's compiler (the aarch64 cross g++ for ARM), written atomically."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        if spec.cc is None:
            executable.export_library(str(staged))
        else:
            executable.export_library(str(staged), cc=spec.cc)
        os.replace(staged, path)
    return path


class Runner:
    """A loaded executable on the CPU: call it with numpy arrays, get numpy arrays back."""

    def __init__(self, executable: relax.VMExecutable) -> None:
        self.device = tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.device)

    def _tensors(self, inputs: Sequence[np.ndarray]) -> list:
        return [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return flatten(self.vm["main"](*self._tensors(inputs)))

    def median_ms(self, inputs: Sequence[np.ndarray], repeat: int = 9, min_repeat_ms: int = 20) -> float:
        """Median latency of ``main`` over ``repeat`` timed batches (after one warm-up call)."""
        args = self._tensors(inputs)
        self.vm["main"](*args)
        timer = self.vm.time_evaluator("main", self.device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
        return statistics.median(timer(*args).results) * 1e3


def flatten(value) -> list[np.ndarray]:
    """Outputs as a flat list of numpy arrays (tuples are walked in order)."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [a for item in value for a in flatten(item)]
