"""Build a Relax module with TVM, export it for its device, run it, and time it on the local device."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tsir.backends import schedules
from tsir.backends.targets import TargetSpec, cpu_schedules
from tsir.errors import TsirError


def build(mod: tvm.IRModule, spec: TargetSpec, database=None) -> relax.VMExecutable:
    """``tvm.compile`` with the Relax pipeline for the target (and a MetaSchedule ``database``'s records).

    For CPUs (x86, and ARM as an LLVM cross-compile to the core's triple, mcpu and features) that is TVM's
    CPU pipeline with the database's records applied and default schedules for every other kernel
    (``tsir.backends.schedules``: vectorized, and parallel over the cores), except in a module that also
    calls oneDNN, whose OpenMP threads then own the cores: there every TVM kernel gets the serial default
    schedule (a record's parallel loops would compete with OpenMP); for CUDA it is TVM's default, which legalizes,
    fuses, applies the records (MetaSchedule's ``compile_relax``) and gives every other kernel dlight's
    default GPU schedule (``tvm.s_tir.dlight``: Matmul, GEMV, Reduction, GeneralReduction, Fallback).
    """
    return compile_for(mod, spec.target, database)


def compile_for(mod: tvm.IRModule, target: tvm.target.Target, database=None) -> relax.VMExecutable:
    """``build`` for a bare TVM target."""
    if cpu_schedules(target):
        # records are tuned on TVM's thread pool: beside oneDNN's OpenMP threads they would fight for the cores
        parallel = not schedules.calls_library(mod)
        records = database if parallel else None
        return tvm.compile(mod, target=target, relax_pipeline=schedules.pipeline(target, parallel, records))
    if database is not None:
        from tvm.s_tir import meta_schedule as ms

        return ms.relax_integration.compile_relax(database, mod, target, None)
    return tvm.compile(mod, target=target)


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


def cuda_source(executable: relax.VMExecutable) -> str:
    """The CUDA C source of every kernel of a CUDA build (TVM compiles it when the module loads)."""
    pending, found = [executable.mod], []
    while pending:
        module = pending.pop()
        if module.kind == "cuda":
            found.append(module.inspect_source(""))
        pending.extend(module.imports)
    if not found:
        raise TsirError("the executable holds no CUDA module; build it for a cuda target")
    return "\n".join(found)


def nvcc_compile(executable: relax.VMExecutable, spec: TargetSpec) -> bytes:
    """Compile the kernels of a CUDA build with ``nvcc`` for the target's ``sm_XX``; returns the fatbin.

    TVM 0.27 keeps CUDA source in the module and compiles it when the module is loaded on the GPU
    host; this runs the same compiler ahead of time so that a bad kernel fails at build time.
    """
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:
        raise TsirError("nvcc is not on PATH; install the CUDA toolkit to compile CUDA kernels")
    with spec.target:
        return bytes(nvcc.compile_cuda(cuda_source(executable), target_format="fatbin", compiler="nvcc"))


class Runner:
    """A loaded executable on a local device (the CPU unless given): numpy arrays in, numpy arrays out."""

    def __init__(self, executable: relax.VMExecutable, device: tvm.runtime.Device | None = None) -> None:
        self.device = device or tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.device)

    def tensors(self, inputs: Sequence[np.ndarray]) -> list:
        """``inputs`` as TVM tensors on this runner's device."""
        return [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return flatten(self.vm["main"](*self.tensors(inputs)))

    def median_ms(self, inputs: Sequence[np.ndarray], repeat: int = 9, min_repeat_ms: int = 20) -> float:
        """Median latency of ``main`` over ``repeat`` timed batches (after one warm-up call)."""
        args = self.tensors(inputs)
        self.vm["main"](*args)
        timer = self.vm.time_evaluator("main", self.device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
        return statistics.median(timer(*args).results) * 1e3


def constant_bytes(mod: tvm.IRModule) -> int:
    """Bytes of the constants (weights) that ``main`` binds: the model's size."""
    seen: dict = {}

    def visit(expr) -> None:
        if isinstance(expr, tvm.ir.expr.GenericConst):
            seen.setdefault(expr, expr.value.numpy().nbytes)
        elif isinstance(expr, relax.Call):
            for arg in expr.args:
                visit(arg)
        elif isinstance(expr, relax.Tuple):
            for field in expr.fields:
                visit(field)
        elif isinstance(expr, relax.TupleGetItem):
            visit(expr.tuple_value)

    body = mod["main"].body
    for block in body.blocks:
        for binding in block.bindings:
            visit(binding.value)
    visit(body.body)
    return sum(seen.values())


def flatten(value) -> list[np.ndarray]:
    """Outputs as a flat list of numpy arrays (tuples are walked in order)."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [a for item in value for a in flatten(item)]
