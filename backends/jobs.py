"""Child-side jobs of ``backends/child.py``: build and time one kernel, time one library.

Imported by the child (``python -m tsir.backends.child``); it needs only TVM and numpy, and ``tsir/__init__``
loads nothing eagerly, so the child does not pay for torch, egglog or the rules.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import dlight

from tsir._compat.tvm import load_tensor_intrinsics
from tsir.backends.targets import cpu_schedules, tensor_intrinsics


def time_kernel(item: dict, context: dict) -> dict:
    """Child side: build one kernel module (``tvm.ir.save_json`` text) and time it on random inputs.

    The module's ``main`` is a PrimFunc (a TVM kernel) or a Relax function (one vendor-library call).
    On a GPU target a kernel without a tuned schedule gets dlight's default GPU schedule, as in the
    final build (``tvm.compile``'s CUDA pipeline).
    """
    mod = tvm.ir.load_json(item["module"])
    target = tvm.target.Target(context["target"])
    device = tvm.device(context.get("device", "cpu"), 0)
    if not cpu_schedules(target) and not isinstance(mod["main"], relax.Function):
        with target:
            mod = dlight.ApplyDefaultSchedule(dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
                                              dlight.gpu.GeneralReduction(), dlight.gpu.Fallback())(mod)
    rng = np.random.default_rng(0)
    shapes = [([int(s) for s in p.ty.shape], str(p.ty.dtype)) for p in mod["main"].params]
    if isinstance(mod["main"], relax.Function):
        vm = relax.VirtualMachine(tvm.compile(mod, target=target), device)
        fn, timed = vm["main"], vm
    else:
        lib = tvm.compile(mod, target=target).jit()
        fn, timed = lib["main"], lib
    args = [tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype) if "float" in dtype
                               else np.zeros(shape, dtype), device) for shape, dtype in shapes]
    fn(*args)
    timer = timed.time_evaluator("main", device, number=context.get("number", 3), repeat=context.get("repeat", 5),
                                 min_repeat_ms=context.get("min_repeat_ms", 5))
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}


def time_library(path: str, context: dict) -> dict:
    """Child side: load ``path``, run ``main`` once, then time it (median of ``repeat`` batches).

    With ``max_ms`` in the context, a slow program gets fewer batches (at least 3), so that timing it
    takes about ``max_ms``.
    """
    device = tvm.device(context.get("device", "cpu"), 0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), device)
    with np.load(context["inputs"]) as data:
        args = [tvm.runtime.tensor(data[f"arr_{i}"], device) for i in range(len(data.files))]
    began = time.perf_counter()
    vm["main"](*args)
    once_ms = (time.perf_counter() - began) * 1e3
    repeat = context["repeat"]
    if context.get("max_ms"):
        repeat = max(3, min(repeat, int(context["max_ms"] / max(once_ms, context["min_repeat_ms"]))))
    timer = vm.time_evaluator("main", device, number=1, repeat=repeat, min_repeat_ms=context["min_repeat_ms"])
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}


_TUNING_WORKERS: list = []  # this child's MetaSchedule builder and runner, made once
_CHUNK_S: list[float] = []  # how long each tuning chunk of this child took


def _in_process_builder():
    """A MetaSchedule builder that compiles candidates in this process.

    ``LocalBuilder`` starts a fresh worker pool on every call, and its default build imports
    ``tvm.s_tir.tensor_intrin`` (every target's tensor intrinsics: ~30 s, longer on a loaded machine) in
    each new worker: with a few trials per call that cost every chunk its time. The tuning child is
    already the crash boundary, so candidates are built here, as ``default_build`` builds them.
    """
    from tvm.driver import build as tvm_build
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_export
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @derived_object
    class InProcessBuilder(PyBuilder):
        def build(self, build_inputs):
            results = []
            for given in build_inputs:
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(given.mod)
                    results.append(BuilderResult(default_export(tvm_build(mod, target=given.target)), None))
                except Exception as err:  # a candidate that does not build is scored failed by MetaSchedule
                    results.append(BuilderResult(None, f"{type(err).__name__}: {err}"[:500]))
            return results

    return InProcessBuilder()


def _in_process_runner():
    """A MetaSchedule runner that times candidates in this process, as ``LocalRunner``'s worker does.

    ``LocalRunner`` first starts a worker process that imports TVM (seconds on a loaded machine, out of a
    tuning budget of a few seconds); the tuning child is the crash boundary here too.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, PyRunner
    from tvm.s_tir.meta_schedule.runner.local_runner import (
        LocalRunnerFuture,
        default_alloc_argument,
        default_cleanup,
        default_run_evaluator,
    )

    @derived_object
    class InProcessRunner(PyRunner):
        def run(self, runner_inputs):
            futures = []
            for given in runner_inputs:
                try:  # the steps of LocalRunner's worker, with its defaults
                    device = tvm.runtime.device(str(given.device_type), 0)
                    args = default_alloc_argument(device, tuple(info.as_json() for info in given.args_info), 1)
                    try:
                        costs = default_run_evaluator(tvm.runtime.load_module(str(given.artifact_path)), device,
                                                      EvaluatorConfig(), args)
                    finally:
                        default_cleanup()
                    futures.append(LocalRunnerFuture(res=costs, error_message=None))
                except Exception as err:  # scored failed by MetaSchedule
                    futures.append(LocalRunnerFuture(res=None, error_message=f"{type(err).__name__}: {err}"[:500]))
            return futures

    return InProcessRunner()


def _tensor_intrinsics(target: tvm.target.Target) -> None:
    """Register only this target's tensor intrinsics, before MetaSchedule's ``TuneContext`` imports them all.

    ``import tvm.s_tir.tensor_intrin`` registers every target's intrinsics (~25 s here, CUDA's alone ~11 s):
    paid once per tuning child, it ate small tuning budgets whole (on an H200 machine the first CUDA chunk
    of 4 trials took 46 s, the next 5.5 s). Only the target's own module is loaded.
    """
    family = tensor_intrinsics(target)
    if family is not None:
        load_tensor_intrinsics(family)


def _commit_default(mod: tvm.IRModule, target: tvm.target.Target, db, builder, runner, trace: list) -> None:
    """Time the default schedule (``trace``, JSON data) as MetaSchedule times its candidates and commit it
    as a record, so that the database's best record is never slower than the default schedule."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    sch = s_tir.Schedule(mod)
    s_tir.schedule.Trace.apply_json_to_schedule(trace, sch)
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    [built] = builder.build([ms.builder.BuilderInput(sch.mod, target)])
    if built.error_msg:
        return
    [future] = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args)])
    result = future.result()
    if result.error_msg is None:
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), result.run_secs,
                                                         target, args))


def tune_kernel(item: dict, context: dict) -> dict:
    """Child side: tune one kernel with MetaSchedule, ``chunk`` trials per call, records into the JSON database.

    No xgboost here: the design space is sampled at random (``replay-trace``, ``random`` cost model).
    Each chunk commits its records, so a child killed at the tuning deadline keeps what it measured; with a
    ``deadline`` (``time.monotonic()``, one clock for all processes) in the context, no chunk is begun that
    would end after it, so the child usually stops in time and lives on to time kernels.
    Candidates are built and timed in this process (the child is killed at the tuning deadline). The
    default schedule (``item["default"]``, a trace) is timed and committed first, as one more candidate.
    """
    import logging
    import tempfile

    from tvm.s_tir import meta_schedule as ms

    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    if not _TUNING_WORKERS:
        _TUNING_WORKERS.extend([_in_process_builder(), _in_process_runner()])
    builder, runner = _TUNING_WORKERS
    mod = tvm.ir.load_json(item["module"])
    target = tvm.target.Target(context["target"])
    _tensor_intrinsics(target)
    db = ms.database.JSONDatabase(path_workload=context["workload"], path_tuning_record=context["records"],
                                  module_equality="structural")
    if item.get("default") is not None:
        _commit_default(tvm.ir.load_json(item["module"]), target, db, builder, runner, item["default"])
    done, deadline = 0, context.get("deadline")
    while done < item["trials"]:
        if deadline is not None and _CHUNK_S and time.monotonic() + max(_CHUNK_S) > deadline:
            return {"trials": done, "skipped": "budget"}  # the next chunk would not end in time
        n = min(context.get("chunk", 4), item["trials"] - done)
        began = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="tsir-tune-") as work_dir:
            ms.tir_integration.tune_tir(mod, target, work_dir, max_trials_global=n, num_trials_per_iter=n,
                                        database=db, seed=item.get("seed", 0) + done, num_tuning_cores=1,
                                        strategy="replay-trace", cost_model="random", builder=builder, runner=runner)
        _CHUNK_S.append(time.monotonic() - began)
        done += n
    return {"trials": done}
