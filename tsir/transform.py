"""tsir inside TVM: ``Synthesize`` is a Relax module pass, ``pipeline`` a ``relax_pipeline`` for ``tvm.compile``.

``Synthesize`` runs ``tsir.optimize`` on the module's ``main`` (imported or hand-written in TVMScript) and
returns the optimized module, stamped so a second run leaves it as it is. Like ``optimize``, it verifies
the new program against the input module (both built by TVM, random inputs of the declared shapes)
and raises ``VerificationError`` instead of replacing a module it could not verify.

``pipeline`` is ``Synthesize``, then (with ``database``) the MetaSchedule tuning records applied to
the legalized kernels, then TVM's default Relax build pipeline.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from tsir import errors
from tsir.api import optimize
from tsir.backends import targets

STAMP = "tsir.synthesized"  # function attribute on main: "<target>/<mode>" of the run that produced it

for _error in (errors.TsirError, errors.UnsupportedOpError, errors.StaticShapeError, errors.TargetError,
               errors.VerificationError):
    tvm_ffi.register_error(_error)  # raised inside a pass, they reach the caller as themselves, not RuntimeError


@tvm.transform.module_pass(opt_level=0, name="tsir.Synthesize")
class Synthesize:
    """Replace ``main`` with tsir's verified, optimized program for ``target``.

    ``example_inputs`` (arrays or tensors, one per parameter of ``main``) default to random inputs of
    the declared shapes. After a run, ``.report`` holds the report dict of that run (None when the
    module was already optimized for this target and mode and was returned unchanged).
    """

    def __init__(self, target: str = "x86", mode: str = "exact", budget_s: float = 60.0, seed: int = 0,
                 example_inputs: Sequence[np.ndarray] | None = None) -> None:
        targets.resolve(target)  # a bad target fails when the pass is made, not deep inside a build
        self.target, self.mode, self.budget_s, self.seed = target, mode, budget_s, seed
        self.example_inputs = example_inputs
        self.report: dict | None = None

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        stamp = f"{self.target}/{self.mode}"
        main = mod["main"]
        if main.attrs is not None and str(main.attrs.get(STAMP, "")) == stamp:
            self.report = None
            return mod
        result = optimize(mod, self.example_inputs, target=self.target, mode=self.mode, budget_s=self.budget_s,
                          seed=self.seed, measure=False)
        self.report = result.report
        optimized = result.module.clone()
        gv = optimized.get_global_var("main")
        optimized.update_func(gv, optimized["main"].with_attr(STAMP, stamp))
        return optimized


def pipeline(target: str = "x86", mode: str = "exact", budget_s: float = 60.0, seed: int = 0,
             database: str | os.PathLike | None = None) -> tvm.transform.Pass:
    """``Synthesize`` then TVM's lowering: ``tvm.compile(mod, tvm_target(target), relax_pipeline=pipeline())``.

    ``database`` is a MetaSchedule work directory (``database_workload.json`` and
    ``database_tuning_record.json``): its best schedules replace the default kernels.
    """
    spec = targets.resolve(target)
    tuning = []
    if database is not None:  # where tuned kernels enter the build: legalize to TIR, then apply the records
        with spec.target:  # the database pass reads the target when it is made
            tuning = [relax.get_pipeline("zero"), relax.transform.MetaScheduleApplyDatabase(os.fspath(database))]
    passes = [Synthesize(target, mode, budget_s, seed), *tuning, relax.get_pipeline("default")]

    @tvm.transform.module_pass(opt_level=0, name="tsir.pipeline")
    def run(mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with spec.target:
            return tvm.transform.Sequential(passes)(mod)

    return run


def tvm_target(target: str = "x86") -> tvm.target.Target:
    """The TVM ``Target`` tsir builds for under ``target`` (e.g. LLVM with the host's ``mcpu``)."""
    return targets.resolve(target).target
