"""The stages of ``tsir.optimize``, each a small function with a typed result, in the order they run:

import -> tsir -> saturate -> search -> approx or lower -> build -> (nvcc) -> verify -> measure.
``Stages`` runs a stage: it times it, logs it and tells ``on_stage``. ``tsir.api.optimize`` is the sequence.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from tsir import report as report_files
from tsir.approx.search import ApproxOutcome, approx_search
from tsir.backends import dnnl, execute, runtime, targets
from tsir.backends import rpc as remote
from tsir.backends.kernel_cache import DEFAULT_DIR
from tsir.backends.tuning import TuningDatabase
from tsir.draws import random_draws, user_draws
from tsir.egraph import SaturationReport
from tsir.errors import TsirError, VerificationError
from tsir.failure import internal_error
from tsir.ir.term import Graph, Term, is_constant, postorder
from tsir.lower import lower
from tsir.native_log import native_stderr_to
from tsir.options import Options
from tsir.rewrites import rule_names
from tsir.search.driver import Outcome, SearchOptions
from tsir.search.extract import Space, to_term
from tsir.search.genetic import GeneticConfig
from tsir.source import Model, Source
from tsir.verify import as_report, check_reference, distance, verify_all

REPORT_VERSION = report_files.SCHEMA_VERSION


class Stages:
    """Runs named stages: logs each, times it into ``seconds``, tells ``on_stage`` when it starts and ends. With an
    ``out_dir``, TVM's native warnings go to its ``tvm.log``; a failure that is not bad input names the stage."""

    def __init__(self, log: Callable[[str], None], on_stage: Callable[[str, float | None], None],
                 out_dir: Path | None = None) -> None:
        self.log, self.on_stage, self.out_dir = log, on_stage, out_dir
        self.seconds: dict[str, float] = {}
        self._new_log = out_dir is not None and not (out_dir / report_files.NATIVE_LOG).exists()

    def discard_log(self) -> None:
        """Remove the native log this run created (a run that stops on bad input leaves nothing behind)."""
        if self._new_log:
            (self.out_dir / report_files.NATIVE_LOG).unlink(missing_ok=True)

    def __call__(self, name: str, fn: Callable, *args, reproduce: tuple[tvm.IRModule, Callable] | None = None):
        """Run ``fn(*args)`` as stage ``name``. ``reproduce`` (the module the stage builds, and how to build one
        op of it): on an internal failure, the failing op is found and a reproducer written to ``out_dir``."""
        self.log(f"[{name}] ...")
        self.on_stage(name, None)
        start = time.perf_counter()
        log = nullcontext() if self.out_dir is None else native_stderr_to(self.out_dir / report_files.NATIVE_LOG)
        with log:
            try:
                value = fn(*args)
            except TsirError:
                raise
            except Exception as error:  # noqa: BLE001  a valid model failed inside tsir or TVM
                module, build_one = reproduce or (None, None)
                raise internal_error(name, error, module, build_one, self.out_dir) from error
        self.seconds[name] = round(time.perf_counter() - start, 4)
        self.log(f"[{name}] done in {self.seconds[name]:.2f} s")
        self.on_stage(name, self.seconds[name])
        return value

    @property
    def total_s(self) -> float:
        return sum(self.seconds.values())


@dataclass(frozen=True)
class Plan:
    """What the options resolve to before any stage runs."""

    spec: targets.TargetSpec
    families: tuple[str, ...]  # the rule families that apply to the target
    search: SearchOptions
    measurer: remote.RpcMeasurer | None  # RPC devices that time whole candidates, when ``rpc`` is given


def plan(options: Options) -> Plan:
    """Resolve the target, its rule families and the cost tier; fail early on what cannot work."""
    spec = targets.resolve(options.target)
    families = tuple(options.families)
    if not spec.library_kernels or options.rpc is not None:  # oneDNN kernels: x86 code in tsir's extension
        families = tuple(f for f in families if f != "library")
    if "library" in families:
        dnnl.load()  # library kernels run in this process (verify, measure); a clear error if not built
    measurer, cost = None, options.cost
    if options.rpc is not None:
        host, port, key = remote.parse_rpc(options.rpc)
        measurer = remote.RpcMeasurer(f"{host}:{port}", key)
        cost = "rpc"
    if cost == "measured" and not spec.runs_here:
        raise TsirError(f"cost='measured' times kernels on the target's device, and no {spec.kind} device is on this "
                        "machine; use cost='analytic', or measure on a device with rpc='host:port:key'")
    search = SearchOptions(cost, options.tuning_trials, cache_dir=options.cache_dir or DEFAULT_DIR,
                           final_candidates=options.finalists, progress=options.progress, budget_s=options.budget_s)
    if options.out_dir is not None:
        writable_dir(Path(options.out_dir))
    return Plan(spec, families, search, measurer)


def writable_dir(path: Path) -> None:
    """Create ``path`` if needed; raise a clear error when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TsirError(f"cannot create output directory {str(path)!r}: {err.strerror}; choose another --out") from err
    if not os.access(path, os.W_OK):
        raise TsirError(f"output directory {str(path)!r} is not writable; choose another or fix its permissions")


def search_config(options: Options, spent_s: float) -> GeneticConfig:
    """The genetic search's settings: a share of the budget the stages before it left. Half, as the winner is
    built, verified and timed afterwards; in exact mode with measured cost four fifths, as the search has
    already built and timed its winner (the build stage reuses that library)."""
    share = 0.8 if options.cost == "measured" and options.mode == "exact" else 0.5
    return GeneticConfig(seed=options.seed, time_s=max(options.budget_s - spent_s, 0.1) * share)


@dataclass(frozen=True)
class Chosen:
    """The program the search chose, as a term and as the Relax module it lowers to."""

    root: Term
    module: tvm.IRModule
    graph: Graph  # the graph ``root`` lives in (with the approximations' constants and kernels, in approx mode)
    approx: ApproxOutcome | None = None


def lower_exact(space: Space, graph: Graph, search: Outcome, original: tvm.IRModule) -> Chosen:
    """The lower stage: the search's winner as a Relax module."""
    root = to_term(space, search.genome)
    return Chosen(root, lower(graph, root, original), graph)


def approximate(space: Space, graph: Graph, source: Source, plan: Plan, config: GeneticConfig, options: Options,
                search: Outcome) -> Chosen:
    """The approx stage: approximations chosen within the accuracy budget, around the exact winner."""
    measure = options.measure and plan.spec.runs_here
    approx = approx_search(space, graph, source.module, plan.spec, config, options.accuracy,
                           len(source.example_inputs[0]), search.genome, measure)
    search.report["pareto"] = approx.report["pareto"]  # the (latency, size, error) front of the approx search
    return Chosen(approx.root, approx.module, approx.graph, approx)


def build(chosen: Chosen, search: Outcome, plan: Plan, tuning_trials: int) -> relax.VMExecutable:
    """The build stage: the measured tier's build of the same program when it kept one, else a new build."""
    built = search.executable() if chosen.approx is None else None
    if built is not None:
        return built
    if tuning_trials:
        return TuningDatabase(plan.spec.target, plan.search.cache_dir).build(chosen.module)
    return runtime.build(chosen.module, plan.spec)


@dataclass(frozen=True)
class VerifyInputs:
    """The inputs verification runs on (label -> inputs), and how the report describes them."""

    inputs: dict[str, list]
    described: dict


def verification_inputs(options: Options, source: Source) -> VerifyInputs:
    """The user's ``verify_data``, else ``verify_draws`` random draws in each input's valid range; raises when
    the original's outputs are not finite on them (a comparison there proves nothing)."""
    if options.verify_data is not None:
        inputs, described = user_draws(options.verify_data, source.module, source.example_inputs)
    else:
        seeds = range(options.seed + 1, options.seed + 1 + options.verify_draws)
        inputs, described = random_draws(source.module, source.example_inputs, seeds)
    check_reference(source.reference, inputs)
    return VerifyInputs(inputs, described)


@dataclass(frozen=True)
class Checked:
    """The verify stage's result: how to run the optimized program, where it ran, and the report's numbers."""

    run: execute.Run
    verified_on: str
    report: dict  # report["verification"] without the inputs and the reference (see ``verification``)


def verify_stage(stage: Stages, source: Source, chosen: Chosen, executable: relax.VMExecutable,
                 spec: targets.TargetSpec, draws: VerifyInputs, workdir: Path) -> Checked:
    """Run the optimized program on its target's device and check it against the original (the verify stage)."""
    run, verified_on = execute.on_device(chosen.module, executable, spec, workdir)
    report = stage("verify", verification, source.reference, run, draws.inputs, chosen.approx, verified_on)
    return Checked(run, verified_on, report)


def verification(model: Callable, run: execute.Run, draws: dict, approx: ApproxOutcome | None,
                 verified_on: str) -> dict:
    """The check that applies and the status it earns; raises when none holds."""
    exact = approx is None or approx.report["fell_back_to_exact"]
    checked = verify_all(model, run, draws) if exact else distance(model, run, draws)
    status = "verified" if verified_on in execute.ON_TARGET else "verified-on-host"
    out = {"status": status, "verified_on": verified_on, **as_report(checked)}
    if approx is None:
        return out
    held, metric, max_drop = approx.report["heldout"], approx.report["metric"], approx.report["max_drop"]
    out["heldout"] = {"metric": metric, "max_drop": max_drop,
                      **{k: held[k] for k in ("examples", "original", "optimized", "drop")}}
    if exact:
        return out
    if not held["within_budget"]:  # approximate outputs differ by design: the held-out budget is the check
        raise VerificationError(f"the approximate program's held-out {metric} drops by {held['drop']:.4g}, over "
                                f"the budget {max_drop:g}; raise max_drop or give more calibration data")
    return {**out, "status": "within-budget"}


def make_report(options: Options, plan: Plan, model_name: str, source: Source, graph: Graph,
                saturation: SaturationReport, space: Space, search: Outcome, chosen: Chosen, draws: VerifyInputs,
                checked: Checked, stages: Stages) -> dict:
    """``report.json``'s content (tsir/report.schema.json), before the measure stage adds latencies."""
    spec, approx = plan.spec, chosen.approx
    report = {
        "version": REPORT_VERSION,
        "input": {"kind": source.kind, "name": model_name,
                  "inputs": [{"shape": list(x.shape), "dtype": str(np.asarray(x).dtype)}
                             for x in source.example_inputs]},
        "target": {"name": spec.name, "tvm": str(spec.target), "verified_on": checked.verified_on},
        "mode": options.mode,
        "egraph": {
            "iterations": saturation.iterations, "eclasses": len(space.view.classes), "enodes": saturation.enodes,
            "stop_reason": saturation.stop_reason, "time_s": round(saturation.time_s, 4),
            "enodes_per_iteration": saturation.enodes_per_iteration,
        },
        "rules_fired": _fired_by_family(saturation.matches_per_rule, plan.families),
        "search": search.report,
        "program": {"original": _op_counts(graph.root), "optimized": _op_counts(chosen.root),
                    "opaque": _opaque_calls(chosen.graph, chosen.root)},
        "layers": report_files.layers(chosen.graph, chosen.root, tuned=options.tuning_trials > 0),
        "size_bytes": {"original": runtime.constant_bytes(source.module),
                       "optimized": runtime.constant_bytes(chosen.module)},
        "verification": {**checked.report, "inputs": draws.described, "passed": True,
                         "reference": source.reference_name},
        "stages_s": stages.seconds,
    }
    if approx is not None:
        report["approx"] = approx.report
    return report


def measure(stage: Stages, options: Options, plan: Plan, source: Source, executable: relax.VMExecutable,
            checked: Checked, workdir: Path) -> tuple[dict[str, float] | None, str]:
    """The measure stage: latencies of the original and the optimized model (None when the target is not
    here and no RPC devices are given), and where they were measured."""
    spec = plan.spec
    if plan.measurer is not None:
        arrays = [np.asarray(t) for t in source.example_inputs]
        return (stage("measure", _measure_rpc, plan.measurer, source.module, executable, spec, arrays, workdir),
                f"rpc {options.rpc}")
    if spec.runs_here:
        return stage("measure", _measure, source, checked.run, spec), checked.verified_on
    return None, f"not measured: no {spec.kind} device here; pass rpc='host:port:key'"


def _fired_by_family(matches: dict[str, int], families: Sequence[str]) -> dict[str, dict[str, int]]:
    return {f: {r: matches[r] for r in rule_names(f) if matches.get(r)} for f in families}


def _op_counts(root: Term) -> dict[str, int]:
    """The ops that run: constant subterms (folded weights, masks made from shapes) are computed at build time."""
    constant: dict[int, bool] = {}
    return dict(Counter(t.op for t in postorder(root) if t.op != "input" and not is_constant(t, constant)))


def _opaque_calls(graph: Graph, root: Term) -> dict[str, int]:
    """The Relax ops tsir does not model that the program keeps (kept as they were): op name -> count."""
    calls = (graph.opaque_calls[t.attrs[0]].call for t in postorder(root) if t.op == "opaque")
    return dict(Counter(str(getattr(call.op, "name", call.op)) for call in calls))


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


def default_name(model: Model, source: Source) -> str:
    """The report's name for a model: its file name (ONNX), its class name (torch), else "Relax module"."""
    if source.kind == "onnx":
        return Path(model).name
    return type(model).__name__ if source.kind == "torch" else "Relax module"
