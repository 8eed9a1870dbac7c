"""The fused kernels of a Relax program.

``fuse`` runs the preparation of MetaSchedule's ``compile_relax`` (legalize, annotate, fold, FuseOps,
FuseTIR), so the kernels found here are the ones the final build compiles and the tuning database
is keyed by. ``kernels`` lists each distinct PrimFunc with a structural hash and how often ``main``
calls it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax


@dataclass(frozen=True)
class Kernel:
    name: str
    func: tvm.tirx.PrimFunc
    structural_hash: str
    calls: int

    def module(self) -> tvm.IRModule:
        """The kernel alone, as the ``main`` of its own module (how tuning tasks see it)."""
        return tvm.IRModule({"main": self.func.with_attr("global_symbol", "main")})


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    try:
        dispatch = relax.pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    passes = [*dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


def kernels(fused: tvm.IRModule) -> list[Kernel]:
    """Distinct PrimFuncs of a fused module, with the number of times ``main`` calls each."""
    calls: Counter[str] = Counter()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            calls[expr.args[0].name_hint] += 1

    relax.analysis.post_order_visit(fused["main"], visit)
    out = []
    for gv, func in fused.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and calls[gv.name_hint]:
            bare = func.without_attr("global_symbol")
            out.append(Kernel(gv.name_hint, func, f"{tvm_ffi.structural_hash(bare):x}", calls[gv.name_hint]))
    return out
