"""The systems a model is run under, each at its expert settings. ``prepare(case, budget_s)`` returns a
``Prepared``; preparing may be slow (export, compile, tune), calling it is what is timed.

``tvm_baseline``, ``tvm_tuned`` and the tsir systems build with the same ``tsir.backends.runtime`` (same
target, kernel sources and default schedules). ``tvm_tuned`` tunes the imported model's kernels with
MetaSchedule under ``TUNING`` (a fresh database per worker, so the budget is all it gets).
``tsir_library_only`` runs tsir with the ``library`` family alone (oneDNN kernels, no other rewrites), so
``tsir_exact`` against it is the share of the e-graph and the search. ``torch_compile`` compiles lazily:
its first call (``first_call_ms``) includes the compilation.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import int8_peers, peers
from .cases import Case
from .prepared import Prepared

TUNING = {"trials_per_task": 16, "max_tasks": 6, "time_s": 30.0}  # tvm_tuned's budget per model and batch
LIBRARY_FAMILIES = ("library",)


def _numpy(value) -> list[np.ndarray]:
    if isinstance(value, torch.Tensor):
        return [value.detach().numpy()]
    if isinstance(value, np.ndarray):
        return [value]
    if hasattr(value, "numpy"):
        return [value.numpy()]
    from tsir import pytree

    return [a for item in pytree.leaves(value) for a in _numpy(item)]


def _torch(module: torch.nn.Module, inputs: tuple) -> Prepared:
    def call():
        with torch.inference_mode():
            return module(*inputs)

    return Prepared(call, lambda: _numpy(call()))


def torch_eager(case: Case, budget_s: float) -> Prepared:
    return _torch(case.module, case.inputs)


def torch_compile(case: Case, budget_s: float) -> Prepared:
    import torch._inductor.config as inductor

    inductor.freezing = True
    torch.compiler.reset()
    compiled = torch.compile(case.module, mode="max-autotune-no-cudagraphs", dynamic=False)
    return _torch(compiled, case.inputs)


def _vm(executable, inputs: tuple, notes: dict) -> Prepared:
    import tvm

    from tsir.backends import runtime

    runner = runtime.Runner(executable)
    args = [tvm.runtime.tensor(x.numpy(), runner.device) for x in inputs]
    main = runner.vm["main"]
    return Prepared(lambda: main(*args), lambda: runtime.flatten(main(*args)), notes)


def _relax(case: Case):
    from tsir.frontend import export, to_relax

    return to_relax(export(case.module, case.inputs))


def tvm_baseline(case: Case, budget_s: float) -> Prepared:
    from tsir.backends import runtime, targets

    return _vm(runtime.build(_relax(case), targets.resolve("x86")), case.inputs, {})


def tvm_tuned(case: Case, budget_s: float) -> Prepared:
    from tsir.backends import targets
    from tsir.backends.kernels import fuse, kernels
    from tsir.backends.tuning import TuningDatabase

    mod = _relax(case)
    database = TuningDatabase(targets.resolve("x86").target, _tuning_dir())
    report = database.tune(kernels(fuse(mod, database.target)), TUNING["trials_per_task"], TUNING["time_s"],
                           max_tasks=TUNING["max_tasks"])
    notes = {"tuning": {"tasks_tuned": report.tasks_tuned, "trials": report.trials, "time_s": round(report.time_s, 1),
                        "skipped_for_budget": report.skipped_for_budget, "failures": report.failures[:3]}}
    return _vm(database.build(mod), case.inputs, notes)


_TUNING_DIR: list[str] = []


def _tuning_dir() -> str:
    """This worker's own tuning database folder, removed when it exits."""
    if not _TUNING_DIR:
        _TUNING_DIR.append(tempfile.mkdtemp(prefix="tsir-bench-tuning-"))
        atexit.register(shutil.rmtree, _TUNING_DIR[0], True)
    return _TUNING_DIR[0]


def _tsir(case: Case, budget_s: float, **options) -> Prepared:
    """tsir's optimizer in a child process (``bench.tsir_child``), the library it exports loaded here: this
    process then holds what a deployment does (TVM's runtime, the oneDNN extension, the model's library), not
    the e-graph and the compiler's memory; the child's peak is the row's ``optimize_peak_rss_mb``."""
    with tempfile.TemporaryDirectory(prefix="tsir-bench-") as tmp:
        directory = Path(tmp)
        torch.save({"module": case.module, "inputs": case.inputs, "budget_s": budget_s, "options": options},
                   directory / "case.pt")
        proc = subprocess.run([sys.executable, "-m", f"{__package__}.tsir_child", tmp], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]  # the exception, after its traceback
            raise RuntimeError(f"tsir optimize failed (exit {proc.returncode}): {last}")
        prepared = _library(directory / "model.so", case.inputs)  # loaded before the directory goes (mapped)
        prepared.notes = json.loads((directory / "notes.json").read_text())
    return prepared


def tsir_exact(case: Case, budget_s: float) -> Prepared:
    return _tsir(case, budget_s)


def tsir_library_only(case: Case, budget_s: float) -> Prepared:
    return _tsir(case, budget_s, families=LIBRARY_FAMILIES)


def tsir_library(case: Case, budget_s: float, library: str) -> Prepared:
    """The ``model.so`` a ``tsir optimize`` run wrote (``bench.headline``)."""
    return _library(Path(library), case.inputs)


def _library(path: Path, inputs: tuple) -> Prepared:
    """An exported tsir library, loaded as a deployment loads it (the oneDNN extension first)."""
    import tvm
    from tvm import relax

    from tsir.backends import dnnl, runtime

    dnnl.load()
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(path)), tvm.cpu())
    args = [tvm.runtime.tensor(x.numpy(), tvm.cpu()) for x in inputs]
    main = vm["main"]
    return Prepared(lambda: main(*args), lambda: runtime.flatten(main(*args)))


def tsir_approx(case: Case, budget_s: float) -> Prepared:
    """Approximate mode with the fidelity default (zoo models have random weights and no data): relative
    output error <= 1% on random held-out inputs; that budget, not the fp32 tolerance, is its check."""
    from tsir import optimize
    from tsir.approx.budget import random_budget

    result = optimize(case.module, case.inputs, mode="approx", accuracy=random_budget(case.inputs),
                      budget_s=budget_s)  # measure: candidates are ranked by latency timed here
    approx = result.report["approx"]
    notes = {"approx": {**approx["heldout"], "layers": approx["layers"]}, "size_bytes": result.report["size_bytes"]}
    return _vm(result.executable, case.inputs, notes)


SYSTEMS: dict[str, Callable[[Case, float], Prepared]] = {
    "tsir_exact": tsir_exact,
    "tsir_library_only": tsir_library_only,
    "onnxruntime": peers.onnxruntime,
    "openvino": peers.openvino,
    "torch_compile": torch_compile,
    "tvm_tuned": tvm_tuned,
    "tvm_baseline": tvm_baseline,
    "torch_eager": torch_eager,
    "tsir_approx": tsir_approx,
    "tsir_library": tsir_library,
    "onnxruntime_int8": int8_peers.onnxruntime_int8,
    "openvino_int8": int8_peers.openvino_int8,
}
DEFAULT = [s for s in SYSTEMS if s not in ("tsir_approx", "tsir_library", "onnxruntime_int8", "openvino_int8")]
KEEPS_MODULE = ("torch_eager", "torch_compile")  # the systems that run the torch module itself

SETTINGS = {
    **peers.SETTINGS,
    **int8_peers.SETTINGS,
    "torch_compile": {"mode": "max-autotune-no-cudagraphs", "torch._inductor.config.freezing": True,
                      "dynamic": False, "first_call": "includes the compilation"},
    "tvm_tuned": {"meta_schedule": TUNING, "database": "fresh per run"},
    "tsir_library_only": {"families": list(LIBRARY_FAMILIES)},
    "tsir_exact": {"families": "all", "mode": "exact"},
}
