"""Targets by name: ``x86`` (the host CPU), ``arm[:core]`` and ``cuda[:gpu|:sm_XX]``.

Each name resolves to a ``TargetSpec``: the TVM target and what the rest of tsir needs to know about it
as data (its capabilities): the roofline of the analytic cost model, the device its libraries run on,
whether they run on this machine, whether oneDNN library kernels may be chosen, how a built program is
verified, which schedules its kernels get, and how a built library gets to a device (the cross compiler
for ``export_library``, the native runner and its emulator). Code asks these, never the kind name: this
module is the only place that tells targets apart by kind (``tests/test_targets_as_data.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.target import codegen

from tsir.backends.presets import ARM_CORES, ARM_CROSS_CC, ARM_TRIPLE, DEFAULT_ARM_CORE, DEFAULT_GPU, GPUS, Gpu
from tsir.backends.roofline import X86_HOST, Roofline
from tsir.errors import TargetError

QEMU_AARCH64 = ("qemu-aarch64", "-L", "/usr/aarch64-linux-gnu")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kind: str  # "x86", "arm" or "cuda": for messages and reports; code asks the capabilities below
    target: tvm.target.Target
    roofline: Roofline
    cc: str | None = None  # compiler for export_library; None means the host's default
    device: str = "cpu"  # the TVM device type its libraries run on ("cpu" or "cuda")
    library_kernels: bool = False  # oneDNN kernels (x86 code in tsir's extension) may be chosen for it
    verify_on: str = "in_process"  # "in_process": this CPU; "native_runner": the native runner (under its
    # emulator); "gpu": a local GPU, else a host-CPU build of the same program
    native_runner: str | None = None  # build/native/<this>/tsir_runner runs its libraries ("host", "aarch64")
    emulator: tuple[str, ...] = ()  # command prefix that runs its native runner on this machine
    nvcc_check: bool = False  # kernels compiled with nvcc at build time (TVM compiles CUDA only when loading)

    @property
    def runs_here(self) -> bool:
        """Whether a library built for this target runs on this machine without emulation or RPC."""
        if self.device == "cuda":
            return gpu_present()
        return not self.emulator

    @property
    def int8_library_kernels(self) -> bool:
        """Whether oneDNN's int8 matmul may be chosen: library kernels on a CPU with VNNI. Without VNNI, oneDNN
        adds pairs of u8 x s8 products in int16 (``vpmaddubsw``), which saturates: wrong values, not only slow."""
        return self.library_kernels and host_has_vnni()

    @property
    def cpu_schedules(self) -> bool:
        """See ``cpu_schedules(target)``."""
        return cpu_schedules(self.target)


def cpu_schedules(target: tvm.target.Target) -> bool:
    """Whether ``target`` compiles for CPU cores (LLVM): TVM's CPU pipeline with tsir's default schedules
    (``tsir.backends.schedules``) and MetaSchedule's CPU rules; otherwise the GPU pipeline (dlight)."""
    return target.kind.name == "llvm"


def tensor_intrinsics(target: tvm.target.Target) -> str | None:
    """The module of ``tvm.s_tir.tensor_intrin`` holding ``target``'s intrinsics (None for a target with none)."""
    if target.kind.name == "cuda":
        return "cuda"
    if not cpu_schedules(target):
        return None
    return "arm_cpu" if "aarch64" in str(target.attrs.get("mtriple", "")) else "x86"


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver5``)."""
    return str(codegen.llvm_get_system_cpu())


def host_has_vnni() -> bool:
    """Whether this machine's CPU has an int8 dot-product instruction (AVX512-VNNI or AVX-VNNI)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def gpu_present() -> bool:
    """Whether a CUDA GPU is visible to TVM on this machine."""
    return bool(tvm.cuda(0).exist)


def _host_target() -> dict:
    return {"kind": "llvm", "mcpu": host_cpu()}


def _x86(variant: str | None) -> TargetSpec:
    if variant is not None:
        raise _unknown(f"x86:{variant}")
    return TargetSpec("x86", "x86", tvm.target.Target(_host_target()), X86_HOST, library_kernels=True,
                      native_runner="host")


def _arm(variant: str | None) -> TargetSpec:
    core = ARM_CORES.get(variant or DEFAULT_ARM_CORE)
    if core is None:
        raise _unknown(f"arm:{variant}")
    target = tvm.target.Target({"kind": "llvm", "mtriple": ARM_TRIPLE, "mcpu": core.mcpu, "mattr": list(core.mattr)})
    return TargetSpec(f"arm:{core.mcpu}", "arm", target, core.roofline, cc=ARM_CROSS_CC, verify_on="native_runner",
                      native_runner="aarch64", emulator=QEMU_AARCH64)


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
    return TargetSpec(f"cuda:{gpu.arch}", "cuda", target, gpu.roofline, device="cuda", verify_on="gpu",
                      nvcc_check=True)


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
