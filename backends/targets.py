"""Targets by name. ``x86`` is the host CPU, with LLVM's ``mcpu`` detected so vector units are used."""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.target import codegen

from tsir.cost import X86_HOST, Roofline
from tsir.errors import TargetError


@dataclass(frozen=True)
class TargetSpec:
    name: str
    target: tvm.target.Target
    roofline: Roofline


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver5``)."""
    return str(codegen.llvm_get_system_cpu())


def _x86() -> TargetSpec:
    return TargetSpec("x86", tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()}), X86_HOST)


TARGETS = {"x86": _x86}


def resolve(name: str) -> TargetSpec:
    """The target called ``name``; a clear error lists the known names otherwise."""
    if not isinstance(name, str) or name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]()
