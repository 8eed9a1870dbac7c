"""Targets by name: ``x86`` (the host CPU), ``arm[:core]`` and ``cuda[:gpu|:sm_XX]``.

Each name resolves to a ``TargetSpec``: the TVM target, the roofline used by the analytic cost
model, and how a built library gets to a device (the cross compiler for ``export_library``, and
whether this machine can run it directly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tvm
from tvm.target import codegen

from tsir.backends.presets import ARM_CORES, ARM_CROSS_CC, ARM_TRIPLE, DEFAULT_ARM_CORE, DEFAULT_GPU, GPUS, Gpu
from tsir.cost import X86_HOST, Roofline
from tsir.errors import TargetError


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str  # "x86", "arm" or "cuda"
    target: tvm.target.Target
    roofline: Roofline
    cc: str | None = None  # compiler for export_library; None means the host's default

    @property
    def runs_here(self) -> bool:
        """Whether a library built for this target runs on this machine without emulation or RPC."""
        if self.kind == "x86":
            return True
        return self.kind == "cuda" and gpu_present()

    @property
    def device(self) -> str:
        """The TVM device type its libraries run on ("cpu" or "cuda")."""
        return "cuda" if self.kind == "cuda" else "cpu"


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver5``)."""
    return str(codegen.llvm_get_system_cpu())


def gpu_present() -> bool:
    """Whether a CUDA GPU is visible to TVM on this machine."""
    return bool(tvm.cuda(0).exist)


def _host_target() -> dict:
    return {"kind": "llvm", "mcpu": host_cpu()}


def _x86(variant: str | None) -> TargetSpec:
    if variant is not None:
        raise _unknown(f"x86:{variant}")
    return TargetSpec("x86", "x86", tvm.target.Target(_host_target()), X86_HOST)


def _arm(variant: str | None) -> TargetSpec:
    core = ARM_CORES.get(variant or DEFAULT_ARM_CORE)
    if core is None:
        raise _unknown(f"arm:{variant}")
    target = tvm.target.Target({"kind": "llvm", "mtriple": ARM_TRIPLE, "mcpu": core.mcpu, "mattr": list(core.mattr)})
    return TargetSpec(f"arm:{core.mcpu}", "arm", target, core.roofline, cc=ARM_CROSS_CC)


def _gpu_for(variant: str | None) -> Gpu:
    if variant is None:
        if gpu_present():
            major, minor = tvm.cuda(0).compute_version.split(".")
            return _gpu_for(f"sm_{major}{minor}")
        return GPUS[DEFAULT_GPU]
    if variant in GPUS:
        return GPUS[variant]
    match = re.fullmatch(r"sm_(\d+)", variant)
    if match is None or int(match.group(1)) < 50:
        raise _unknown(f"cuda:{variant}")
    # The roofline of the newest preset GPU not newer than the requested architecture.
    older = [g for g in GPUS.values() if int(g.arch[3:]) <= int(match.group(1))] or [GPUS["t4"]]
    nearest = max(older, key=lambda g: int(g.arch[3:]))
    return Gpu(variant, nearest.roofline)


def _cuda(variant: str | None) -> TargetSpec:
    gpu = _gpu_for(variant)
    target = tvm.target.Target({"kind": "cuda", "arch": gpu.arch, **_gpu_limits()}, host=_host_target())
    return TargetSpec(f"cuda:{gpu.arch}", "cuda", target, gpu.roofline)


def _gpu_limits() -> dict:
    """Thread and memory limits MetaSchedule's GPU rules read from the target: this machine's GPU, or the
    limits every GPU from sm_50 on has (1024 threads and 48 KiB static shared memory per block)."""
    if gpu_present():
        dev = tvm.cuda(0)
        return {"max_threads_per_block": dev.max_threads_per_block, "thread_warp_size": dev.warp_size,
                "max_shared_memory_per_block": dev.max_shared_memory_per_block, "registers_per_block": 65536}
    return {"max_threads_per_block": 1024, "thread_warp_size": 32, "max_shared_memory_per_block": 49152,
            "registers_per_block": 65536}


KINDS = {"x86": _x86, "arm": _arm, "cuda": _cuda}


def valid_names() -> list[str]:
    """Every accepted target name (``cuda:sm_XX`` works for any architecture from sm_50 on)."""
    return (["x86", "arm"] + [f"arm:{c}" for c in ARM_CORES] + ["cuda"] + [f"cuda:{g}" for g in GPUS]
            + sorted({f"cuda:{g.arch}" for g in GPUS.values()}))


def _unknown(name: object) -> TargetError:
    return TargetError(f"unknown target {name!r}; known targets: {', '.join(valid_names())} (or cuda:sm_XX)")


def resolve(name: str) -> TargetSpec:
    """The target called ``name``; a clear error lists the valid names otherwise."""
    if not isinstance(name, str):
        raise _unknown(name)
    kind, _, variant = name.strip().lower().partition(":")
    if kind not in KINDS or (_ and not variant):
        raise _unknown(name)
    return KINDS[kind](variant or None)
