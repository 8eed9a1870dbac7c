"""The Python API: ``tsir.optimize`` runs the pipeline as a flat list of named stages.

import -> tsir -> saturate -> search -> lower -> build -> verify -> measure. Each stage records what
it did in the report; a result that fails verification is never returned.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from tsir.backends import execute, runtime, targets
from tsir.backends import rpc as remote
from tsir.convert import relax_to_tsir
from tsir.egraph import Limits, TermEGraph
from tsir.errors import TsirError
from tsir.frontend import export, to_relax
from tsir.ir.term import Term, postorder
from tsir.lower import lower
from tsir.rewrites import FAMILIES, rule_names
from tsir.search.extract import Space, to_term
from tsir.search.genetic import GeneticConfig, genetic_search
from tsir.verify import DEFAULT_TOLERANCE, Verification, fresh_inputs, verify

REPORT_VERSION = 1
MODES = ("exact",)


@dataclass
class Result:
    """An optimized, verified model."""

    module: tvm.IRModule  # the optimized Relax module
    executable: relax.VMExecutable
    report: dict
    model: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    spec: targets.TargetSpec | None = None  # what it was built for; None means the host CPU

    def run(self, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """Run the optimized model (on its target, see ``backends.execute``); returns numpy arrays."""
        with tempfile.TemporaryDirectory(prefix="tsir-run-") as tmp:
            return self._on_device(Path(tmp))([x.numpy() for x in inputs])

    def verify(self, inputs: Sequence[torch.Tensor], tolerance: float = DEFAULT_TOLERANCE) -> Verification:
        """Check the optimized model against the original on ``inputs``; raises VerificationError."""
        with tempfile.TemporaryDirectory(prefix="tsir-verify-") as tmp:
            return verify(self.model, self._on_device(Path(tmp)), inputs, tolerance)

    def _on_device(self, workdir: Path) -> execute.Run:
        return execute.on_device(self.module, self.executable, self.spec or targets.resolve("x86"), workdir)[0]

    def export(self, path: str | os.PathLike) -> Path:
        """Write the compiled library (``.so``) atomically: a failed write leaves nothing behind."""
        path = Path(path)
        writable_dir(path.parent)
        return runtime.export(self.executable, path, self.spec or targets.resolve("x86"))

    def save_report(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        writable_dir(path.parent)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(self.report, f, indent=2)
        os.replace(f.name, path)
        return path


def writable_dir(path: Path) -> None:
    """Create ``path`` if needed; raise a clear error when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TsirError(f"cannot create output directory {str(path)!r}: {err.strerror}; choose another --out") from err
    if not os.access(path, os.W_OK):
        raise TsirError(f"output directory {str(path)!r} is not writable; choose another or fix its permissions")


def optimize(
    model: torch.nn.Module | torch.export.ExportedProgram,
    example_inputs: Sequence[torch.Tensor],
    *,
    target: str = "x86",
    rpc: str | None = None,
    mode: str = "exact",
    budget_s: float = 60.0,
    seed: int = 0,
    families: Sequence[str] = tuple(FAMILIES),
    custom_convert_map: dict[str, Callable] | None = None,
    out_dir: str | os.PathLike | None = None,
    measure: bool = True,
    log: Callable[[str], None] = lambda msg: None,
) -> Result:
    """Optimize ``model`` for ``target``; returns a verified ``Result`` (see the module docstring).

    ``model`` is a ``torch.nn.Module`` (exported here with static shapes) or an ``ExportedProgram``.
    ``target`` is a name from ``tsir.backends.targets.valid_names()``. ``rpc="host:port:key"`` measures
    candidates on the devices with that key of a TVM RPC tracker (cost tier "rpc"); without it the search
    uses the target's analytic roofline model.
    """
    if mode not in MODES:
        raise TsirError(f"unknown mode {mode!r}; this version supports: {', '.join(MODES)}")
    if not isinstance(budget_s, (int, float)) or budget_s <= 0:
        raise TsirError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    spec = targets.resolve(target)
    measurer = None
    if rpc is not None:
        host, port, key = remote.parse_rpc(rpc)
        measurer = remote.RpcMeasurer(f"{host}:{port}", key)
    if out_dir is not None:
        writable_dir(Path(out_dir))
    example_inputs = tuple(example_inputs)
    stages: dict[str, float] = {}

    def stage(name: str, fn: Callable):
        log(f"[{name}] ...")
        start = time.perf_counter()
        value = fn()
        stages[name] = round(time.perf_counter() - start, 4)
        log(f"[{name}] done in {stages[name]:.2f} s")
        return value

    if isinstance(model, torch.export.ExportedProgram):
        program, model = model, model.module()
    else:
        program = stage("export", lambda: export(model, example_inputs))
    original_mod = stage("import", lambda: to_relax(program, custom_convert_map))
    graph = stage("tsir", lambda: relax_to_tsir(original_mod))
    egraph = TermEGraph(graph, tuple(families))
    limits = Limits(time_s=max(0.3 * budget_s, 0.1))
    saturation = stage("saturate", lambda: egraph.saturate(limits))
    view = egraph.view()
    space = Space.of(view, spec.roofline)
    config = GeneticConfig(seed=seed, time_s=max(budget_s - sum(stages.values()), 0.1) * 0.5)
    workdir = tempfile.TemporaryDirectory(prefix="tsir-")
    arrays = [t.numpy() for t in example_inputs]
    cost = None
    if measurer is not None:
        rpc_cost = remote.RemoteCost(measurer, lambda mod, path: runtime.export(runtime.build(mod, spec), path, spec),
                                     arrays, Path(workdir.name))
        cost = lambda genome: rpc_cost(lower(graph, to_term(space, genome), original_mod))  # noqa: E731
    search = stage("search", lambda: genetic_search(space, config, cost))
    chosen = to_term(space, search.genome)
    optimized_mod = stage("lower", lambda: lower(graph, chosen, original_mod))
    executable = stage("build", lambda: runtime.build(optimized_mod, spec))
    if spec.kind == "cuda":
        stage("nvcc", lambda: runtime.nvcc_compile(executable, spec))
    run, verified_on = execute.on_device(optimized_mod, executable, spec, Path(workdir.name))
    checked = stage("verify", lambda: verify(model, run, fresh_inputs(example_inputs, seed + 1)))
    report = {
        "version": REPORT_VERSION,
        "target": {"name": spec.name, "tvm": str(spec.target), "verified_on": verified_on},
        "mode": mode,
        "egraph": {
            "iterations": saturation.iterations, "eclasses": len(view.classes), "enodes": saturation.enodes,
            "stop_reason": saturation.stop_reason, "time_s": round(saturation.time_s, 4),
            "enodes_per_iteration": saturation.enodes_per_iteration,
        },
        "rules_fired": _fired_by_family(saturation.matches_per_rule, families),
        "search": {
            "predicted_s": search.cost, "seeds_predicted_s": search.seeds, "history": search.history,
            "evaluations": search.evaluations, "time_s": round(search.time_s, 4),
            "cost_tier": "rpc" if measurer else "analytic",
        },
        "program": {"original": _op_counts(graph.root), "optimized": _op_counts(chosen)},
        "verification": {"max_abs_error": checked.max_abs_error, "relative_error": checked.relative_error,
                         "tolerance": checked.tolerance, "passed": checked.passed},
        "stages_s": stages,
    }
    if measurer is not None:
        report["search"]["rpc_measured"] = len(rpc_cost.cache)  # distinct candidate programs timed on devices
        report["search"]["rpc_failures"] = rpc_cost.errors[:20]  # candidates that failed to build or run
    if measure and measurer is not None:
        report["latency_ms"] = stage("measure", lambda: _measure_rpc(measurer, original_mod, executable, spec,
                                                                     arrays, Path(workdir.name)))
        report["target"]["measured_on"] = f"rpc {rpc}"
    elif measure and spec.runs_here:
        report["latency_ms"] = stage("measure", lambda: _measure(model, example_inputs, original_mod, run, spec))
        report["target"]["measured_on"] = verified_on
    elif measure:
        report["target"]["measured_on"] = f"not measured: no {spec.kind} device here; pass rpc='host:port:key'"
    workdir.cleanup()
    result = Result(optimized_mod, executable, report, model, example_inputs, spec)
    if out_dir is not None:
        result.export(Path(out_dir) / "model.so")
        result.save_report(Path(out_dir) / "report.json")
    return result


def _fired_by_family(matches: dict[str, int], families: Sequence[str]) -> dict[str, dict[str, int]]:
    return {f: {r: matches[r] for r in rule_names(f) if matches.get(r)} for f in families}


def _op_counts(root: Term) -> dict[str, int]:
    return dict(Counter(t.op for t in postorder(root) if t.op not in ("weight", "input")))


def _measure_rpc(measurer, original_mod, executable, spec, arrays, workdir: Path) -> dict[str, float]:
    """Latency of the original and the optimized build on the RPC devices (measured side by side)."""
    libraries = [runtime.export(runtime.build(original_mod, spec), workdir / "original.so", spec),
                 runtime.export(executable, workdir / "optimized.so", spec)]
    original, optimized = measurer.measure(libraries, arrays)
    failed = [m.error for m in (original, optimized) if m.error]
    if failed:
        raise TsirError(f"RPC measurement failed: {'; '.join(failed)}")
    return {"original": original.median_ms, "optimized": optimized.median_ms}


def _measure(model, example_inputs, original_mod, runner, spec) -> dict[str, float]:
    """Latency of the original (same TVM build, no rewrites), the optimized model, and PyTorch eager."""
    arrays = [t.numpy() for t in example_inputs]
    baseline = runtime.Runner(runtime.build(original_mod, spec), runner.device)
    return {
        "original": baseline.median_ms(arrays),
        "optimized": runner.median_ms(arrays),
        "torch_eager": _torch_median_ms(model, example_inputs),
    }


def _torch_median_ms(model: torch.nn.Module, inputs: tuple, repeat: int = 20) -> float:
    times = []
    with torch.inference_mode():
        model(*inputs)
        for _ in range(repeat):
            start = time.perf_counter()
            model(*inputs)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3
