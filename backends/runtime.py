"""Build a Relax module with TVM, run it, and time it on the local device."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np
import tvm
from tvm import relax

from tsir.backends.targets import TargetSpec


def build(mod: tvm.IRModule, spec: TargetSpec) -> relax.VMExecutable:
    """``tvm.compile`` with TVM's default Relax pipeline for the target."""
    return tvm.compile(mod, target=spec.target)


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
