"""Run a built program where its target lives, for verification: on this CPU, on a local GPU, or
for ARM through the aarch64 native runner under qemu. A CUDA build with no GPU here is checked
through a host-CPU build of the same Relax module; ``where`` says which was used."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tsir.backends import runtime
from tsir.backends.runner import NativeRunner
from tsir.backends.targets import TargetSpec, gpu_present, resolve

Run = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
ON_TARGET = ("host cpu", "local cuda gpu")  # where ``on_device`` runs the target itself (not a stand-in for it)


def on_device(mod: tvm.IRModule, executable: relax.VMExecutable, spec: TargetSpec, workdir: Path) -> tuple[Run, str]:
    """A function running ``main`` on numpy inputs, and where it runs (for the report)."""
    if spec.verify_on == "in_process":
        return runtime.Runner(executable), "host cpu"
    if spec.verify_on == "native_runner":
        library = runtime.export(executable, Path(workdir) / f"verify_{spec.kind}.so", spec)
        runner = NativeRunner.for_target(spec)
        return (lambda inputs: runner(library, inputs)), "qemu-aarch64 (native runner)"
    if gpu_present():
        return runtime.Runner(executable, tvm.cuda(0)), "local cuda gpu"
    host = runtime.Runner(runtime.build(mod, resolve("x86")))
    return host, "host cpu build of the same program (no GPU here; CUDA kernels compiled with nvcc, not run)"
