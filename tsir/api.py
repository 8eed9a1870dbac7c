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
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import tvm
from tvm import relax

from tsir import report as report_files
from tsir.approx.budget import Budget
from tsir.approx.search import approx_search
from tsir.backends import dnnl, execute, runtime, targets
from tsir.backends import rpc as remote
from tsir.backends.kernel_cache import DEFAULT_DIR
from tsir.backends.tuning import TuningDatabase
from tsir.convert import relax_to_tsir
from tsir.egraph import Limits, TermEGraph
from tsir.errors import TsirError
from tsir.failure import internal_error
from tsir.ir.term import Term, postorder
from tsir.lower import lower
from tsir.native_log import native_stderr_to
from tsir.rewrites import FAMILIES, rule_names
from tsir.search.driver import SearchOptions, run_search
from tsir.search.extract import Space, to_term
from tsir.search.genetic import GeneticConfig
from tsir.source import Model, Source, load
from tsir.verify import DEFAULT_TOLERANCE, Verification, compare, fresh_inputs, reference_outputs, verify

REPORT_VERSION = report_files.SCHEMA_VERSION
MODES = ("exact", "approx")


@dataclass
class Result:
    """An optimized, verified model."""

    module: tvm.IRModule  # the optimized Relax module
    executable: relax.VMExecutable
    report: dict
    model: Callable  # the original, in its own framework (torch module, ONNX Runtime, TVM): the reference
    example_inputs: tuple[torch.Tensor, ...]
    spec: targets.TargetSpec | None = None  # what it was built for; None means the host CPU

    def run(self, inputs: Sequence[torch.Tensor | np.ndarray]) -> list[np.ndarray]:
        """Run the optimized model on tensors or arrays (on its target, see ``backends.execute``)."""
        with tempfile.TemporaryDirectory(prefix="tsir-run-") as tmp:
            return self._on_device(Path(tmp))([np.asarray(x) for x in inputs])

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
        """Write ``report.json`` at ``path``, with ``report.md`` and its plots beside it (atomically)."""
        path = Path(path)
        writable_dir(path.parent)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(self.report, f, indent=2)
        os.replace(f.name, path)
        report_files.write_markdown(self.report, path.parent)
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
    model: Model,
    example_inputs: Sequence[torch.Tensor | np.ndarray] | None = None,
    *,
    target: str = "x86",
    rpc: str | None = None,
    mode: str = "exact",
    budget_s: float = 60.0,
    seed: int = 0,
    families: Sequence[str] = tuple(FAMILIES),
    custom_convert_map: dict[str, Callable] | None = None,
    out_dir: str | os.PathLike | None = None,
    model_name: str | None = None,
    measure: bool = True,
    log: Callable[[str], None] = lambda msg: None,
    cost: str = "analytic",
    tuning_trials: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_stage: Callable[[str, float | None], None] = lambda name, seconds: None,
    accuracy: Budget | None = None,
) -> Result:
    """Optimize ``model`` for ``target``; returns a verified ``Result`` (see the module docstring).

    ``model`` is a ``torch.nn.Module`` (exported here with static shapes) or an ``ExportedProgram``
    (both need ``example_inputs``), a path to an ``.onnx`` file, or a Relax ``tvm.IRModule`` (for
    these two, ``example_inputs`` default to random inputs of the declared shapes). ``target`` is a
    name from ``tsir.backends.targets.valid_names()``. ``on_stage(name, None)`` is called when a stage
    starts and ``on_stage(name, seconds)`` when it ends.
    ``cost`` is ``"analytic"`` (roofline model only) or ``"measured"`` (kernels timed on the target, the
    final candidates built and timed whole); ``tuning_trials`` MetaSchedule trials per kernel (0: none);
    ``cache_dir`` holds the kernel cache and tuning database (default ``$TSIR_CACHE_DIR``, else ``~/.cache/tsir``).
    ``rpc="host:port:key"`` times whole candidates on the devices with that key of a TVM RPC tracker
    (cost tier "rpc") instead.
    ``mode="approx"`` also chooses low-rank / int8 approximations per layer within ``accuracy`` (a
    ``tsir.Budget``): picked on its calibration data, checked on its held-out data (``report["approx"]``).
    """
    if mode == "approx" and not isinstance(accuracy, Budget):
        raise TsirError("mode='approx' needs accuracy=tsir.Budget(data=tsir.Data(calibration, heldout), "
                        "metric=..., max_drop=...)")
    if mode not in MODES:
        raise TsirError(f"unknown mode {mode!r}; this version supports: {', '.join(MODES)}")
    if not isinstance(budget_s, (int, float)) or budget_s <= 0:
        raise TsirError(f"budget_s must be a positive number of seconds, got {budget_s!r}")
    spec = targets.resolve(target)
    if spec.kind != "x86" or rpc is not None:  # oneDNN kernels: x86 code in tsir's extension, not on RPC devices
        families = tuple(f for f in families if f != "library")
    if "library" in families:
        dnnl.load()  # library kernels run in this process (verify, measure); a clear error if not built
    measurer = None
    if rpc is not None:
        host, port, key = remote.parse_rpc(rpc)
        measurer = remote.RpcMeasurer(f"{host}:{port}", key)
        cost = "rpc"
    if cost == "measured" and not spec.runs_here:
        raise TsirError(f"cost='measured' times kernels on the target's device, and no {spec.kind} device is on this "
                        "machine; use cost='analytic', or measure on a device with rpc='host:port:key'")
    options = SearchOptions(cost, tuning_trials, cache_dir=cache_dir or DEFAULT_DIR, progress=progress)
    if out_dir is not None:
        writable_dir(Path(out_dir))
    stages: dict[str, float] = {}

    def stage(name: str, fn: Callable, module: tvm.IRModule | None = None, build_one: Callable | None = None):
        """Run stage ``name``; a failure that is not bad input names the stage (and, given the ``module`` it
        builds and how, the failing op, with a reproducer in ``out_dir``)."""
        log(f"[{name}] ...")
        on_stage(name, None)
        start = time.perf_counter()
        with nullcontext() if out_dir is None else native_stderr_to(Path(out_dir) / report_files.NATIVE_LOG):
            try:
                value = fn()
            except TsirError:
                raise
            except Exception as error:  # noqa: BLE001  a valid model failed inside tsir or TVM
                raise internal_error(name, error, module, build_one, out_dir and Path(out_dir)) from error
        stages[name] = round(time.perf_counter() - start, 4)
        log(f"[{name}] done in {stages[name]:.2f} s")
        on_stage(name, stages[name])
        return value

    source: Source = stage("import", lambda: load(model, example_inputs, custom_convert_map))
    model_name = model_name or _default_name(model, source)
    model, example_inputs, original_mod = source.reference, source.example_inputs, source.module
    graph = stage("tsir", lambda: relax_to_tsir(original_mod))
    egraph = TermEGraph(graph, tuple(families))
    limits = Limits(time_s=max(0.3 * budget_s, 0.1))
    saturation = stage("saturate", lambda: egraph.saturate(limits))
    view = egraph.view()
    space = Space.of(view, spec.roofline)
    config = GeneticConfig(seed=seed, time_s=max(budget_s - sum(stages.values()), 0.1) * 0.5)
    workdir = tempfile.TemporaryDirectory(prefix="tsir-")
    arrays = [np.asarray(t) for t in example_inputs]
    search = stage("search", lambda: run_search(egraph, space, graph, original_mod, spec, config, options, arrays,
                                                measurer))
    approx = None
    if mode == "approx":
        approx = stage("approx", lambda: approx_search(space, graph, original_mod, spec, config, accuracy,
                                                       len(arrays[0]), search.genome, measure and spec.runs_here))
        chosen, optimized_mod, lowered_graph = approx.root, approx.module, approx.graph
        search.report["pareto"] = approx.report["pareto"]  # the (latency, size, error) front of the approx search
    else:
        chosen, lowered_graph = to_term(space, search.genome), graph
        optimized_mod = stage("lower", lambda: lower(graph, chosen, original_mod))
    build = TuningDatabase(spec.target, options.cache_dir).build if tuning_trials else partial(runtime.build, spec=spec)
    built = search.executable() if approx is None else None  # the measured tier's build of the same program
    executable = stage("build", lambda: built if built is not None else build(optimized_mod), optimized_mod,
                       partial(runtime.build, spec=spec))
    if spec.kind == "cuda":
        stage("nvcc", lambda: runtime.nvcc_compile(executable, spec))
    run, verified_on = execute.on_device(optimized_mod, executable, spec, Path(workdir.name))
    if approx is None:
        checked = stage("verify", lambda: verify(model, run, fresh_inputs(example_inputs, seed + 1)))
    else:  # approximate outputs differ by design: the budget on held-out data is the check
        fresh = fresh_inputs(example_inputs, seed + 1)
        checked = stage("verify", lambda: compare(reference_outputs(model, fresh), run([t.numpy() for t in fresh]),
                                                  DEFAULT_TOLERANCE))
    report = {
        "version": REPORT_VERSION,
        "input": {"kind": source.kind, "name": model_name,
                  "inputs": [{"shape": list(x.shape), "dtype": str(np.asarray(x).dtype)} for x in example_inputs]},
        "target": {"name": spec.name, "tvm": str(spec.target), "verified_on": verified_on},
        "mode": mode,
        "egraph": {
            "iterations": saturation.iterations, "eclasses": len(view.classes), "enodes": saturation.enodes,
            "stop_reason": saturation.stop_reason, "time_s": round(saturation.time_s, 4),
            "enodes_per_iteration": saturation.enodes_per_iteration,
        },
        "rules_fired": _fired_by_family(saturation.matches_per_rule, families),
        "search": search.report,
        "program": {"original": _op_counts(graph.root), "optimized": _op_counts(chosen)},
        "layers": report_files.layers(lowered_graph, chosen, tuned=tuning_trials > 0),
        "size_bytes": {"original": report_files.constant_bytes(original_mod),
                       "optimized": report_files.constant_bytes(optimized_mod)},
        "verification": {"max_abs_error": checked.max_abs_error, "relative_error": checked.relative_error,
                         "tolerance": checked.tolerance,
                         "passed": checked.passed if approx is None else approx.report["heldout"]["within_budget"],
                         "reference": source.reference_name},
        "stages_s": stages,
    }
    if approx is not None:
        report["approx"] = approx.report
    if measure and measurer is not None:
        report["latency_ms"] = stage("measure", lambda: _measure_rpc(measurer, original_mod, executable, spec,
                                                                     arrays, Path(workdir.name)))
        report["target"]["measured_on"] = f"rpc {rpc}"
    elif measure and spec.runs_here:
        report["latency_ms"] = stage("measure", lambda: _measure(source, run, spec))
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


def _measure(source: Source, runner: runtime.Runner, spec: targets.TargetSpec) -> dict[str, float]:
    """Latency of the original (same TVM build, no rewrites), the optimized model, and the reference
    framework (PyTorch eager or ONNX Runtime; a Relax input has none besides the original)."""
    arrays = [np.asarray(t) for t in source.example_inputs]
    baseline = runtime.Runner(runtime.build(source.module, spec), runner.device)
    latency = {"original": baseline.median_ms(arrays), "optimized": runner.median_ms(arrays)}
    if source.kind != "relax":
        latency[source.reference_name] = source.reference_ms()
    return latency


def _default_name(model: Model, source: Source) -> str:
    if source.kind == "onnx":
        return Path(model).name
    return type(model).__name__ if source.kind == "torch" else "Relax module"
