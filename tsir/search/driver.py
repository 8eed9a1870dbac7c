"""The search stage: seeds, genetic search with cost feedback, end-to-end choice, and its report.

``cost="analytic"`` runs the genetic search on the roofline model alone. ``cost="measured"`` first
tunes (``tuning_trials`` > 0) and times the kernels of the baselines (egglog's extraction, greedy, the
input program), runs the genetic search with per-kernel measured feedback each generation, then builds
the best few programs and the baselines whole, times them, and picks the measured best.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tvm

from tsir.backends import runtime
from tsir.backends.kernel_cache import DEFAULT_DIR, KernelCache
from tsir.backends.measure import LocalMeasurer, Measurer
from tsir.backends.rpc import RemoteCost
from tsir.backends.targets import TargetSpec
from tsir.backends.tuning import TuningDatabase
from tsir.egraph import TermEGraph
from tsir.errors import TsirError
from tsir.ir.term import Graph
from tsir.lower import lower
from tsir.search.egglog_extract import egglog_extraction
from tsir.search.extract import Genome, Space, to_term
from tsir.search.genetic import GeneticConfig, SearchResult, analytic_objectives, genetic_search
from tsir.search.greedy import greedy
from tsir.search.measured import Evaluator, Program, progress_bar, spearman

COSTS = ("analytic", "measured", "rpc")  # rpc: whole programs timed on TVM RPC devices


@dataclass(frozen=True)
class SearchOptions:
    cost: str = "analytic"
    tuning_trials: int = 0  # MetaSchedule trials per kernel; 0 tunes nothing
    tuning_share: float = 0.4  # at most this share of the search budget goes to tuning
    cache_dir: str | os.PathLike = DEFAULT_DIR
    final_candidates: int = 3  # GA programs built whole and timed besides the baselines
    measure_per_generation: int = 2  # programs newly timed per kernel after each generation
    progress: bool = False

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise TsirError(f"unknown cost {self.cost!r}; choose one of: {', '.join(COSTS)}")
        if self.tuning_trials < 0:
            raise TsirError(f"tuning_trials must be >= 0, got {self.tuning_trials}")


@dataclass
class Outcome:
    genome: Genome
    report: dict


def run_search(
    egraph: TermEGraph, space: Space, graph: Graph, original_mod: tvm.IRModule, spec: TargetSpec,
    config: GeneticConfig, options: SearchOptions, inputs: list[np.ndarray], measurer: Measurer | None = None,
) -> Outcome:
    """Choose a program from ``space`` within ``config.time_s`` (tier 3 builds come after)."""
    start = time.perf_counter()
    baselines = {"egglog": egglog_extraction(egraph, space), "greedy": greedy(space), "original": space.original()}
    update, close = progress_bar(options.progress, config.time_s)
    try:
        if options.cost == "analytic":
            result = genetic_search(space, config, analytic_objectives(space), {"egglog": baselines["egglog"]},
                                    lambda gen, best, pop: update(best * 1e3) or False)
            report = _report(result, 1e3, "analytic")
            report["baselines_predicted_ms"] = {k: space.cost(g) * 1e3 for k, g in baselines.items()}
            genome = result.genome
        elif options.cost == "rpc":
            if measurer is None:
                raise TsirError("cost='rpc' needs a measurer for the RPC devices (optimize(..., rpc='host:port:key'))")
            genome, report = _remote(space, graph, original_mod, spec, config, inputs, measurer, baselines, update)
        else:
            genome, report = _measured(space, graph, original_mod, spec, config, options, inputs,
                                       measurer or LocalMeasurer(device=spec.device), baselines, update)
    finally:
        close()
    report["search_s"] = report["time_s"] = round(time.perf_counter() - start, 4)
    return Outcome(genome, report)


def _remote(space, graph, original_mod, spec, config, inputs, measurer, baselines, update):
    """Tier 3 only: candidates are built whole and timed on the RPC devices, a generation at a time so
    that every device is busy (cached per program)."""
    modules: dict[tuple[int, ...], tvm.IRModule] = {}

    def module(genome: Genome) -> tvm.IRModule:
        key = tuple(genome)
        if key not in modules:
            modules[key] = lower(graph, to_term(space, genome), original_mod)
        return modules[key]

    with tempfile.TemporaryDirectory(prefix="tsir-rpc-") as tmp:
        timed = RemoteCost(measurer, lambda mod, path: runtime.export(runtime.build(mod, spec), path, spec),
                           inputs, Path(tmp))
        result = genetic_search(
            space, config, lambda g: (timed(module(g)), float(space.size_bytes(g)), 0.0),
            {"egglog": baselines["egglog"]}, lambda gen, best, pop: update(best * 1e3) or False,
            batch=lambda genomes: timed.prefetch([module(g) for g in genomes]))
    report = _report(result, 1e3, "rpc")
    report["rpc_measured"] = len(timed.cache)  # distinct candidate programs timed on devices
    report["rpc_batch_max"] = max(timed.batches, default=0)  # most candidates timed side by side
    report["rpc_failures"] = timed.errors[:20]  # candidates that failed to build or run
    return result.genome, report


def _measured(space, graph, original_mod, spec, config, options, inputs, measurer, baselines, update):
    cache_dir = Path(options.cache_dir)
    tuning = TuningDatabase(spec.target, cache_dir) if options.tuning_trials > 0 else None
    ev = Evaluator(space, graph, original_mod, spec, KernelCache(cache_dir), tuning)
    seeds = [ev.program(g) for g in baselines.values()]
    ev.tune(seeds, options.tuning_trials, config.time_s * options.tuning_share)
    ev.measure_kernels(seeds)
    measuring = [0.0]  # seconds spent timing kernels during the genetic search

    def feedback(generation: int, best_ms: float, population: list) -> bool:
        update(best_ms)
        began = time.perf_counter()
        fresh: list[Program] = []
        for genome, _ in population:
            p = ev.program(genome)
            if p.kernel_ms is None and p.error is None and p not in fresh:
                fresh.append(p)
            if len(fresh) == options.measure_per_generation:
                break
        ev.measure_kernels(fresh)
        measuring[0] += time.perf_counter() - began
        return bool(fresh)

    # the search's own compute gets 80 % of the budget; kernel timing is bounded by measure_per_generation
    result = genetic_search(space, replace(config, time_s=0.8 * config.time_s),
                            lambda g: (ev.latency_ms(g), float(space.size_bytes(g)), 0.0),
                            {"egglog": baselines["egglog"]}, feedback, lambda: time.perf_counter() - measuring[0])
    report = _report(result, 1.0, "measured")
    genomes = {id(ev.program(g)): g for g, _ in result.ranked}
    genomes.update({id(ev.program(g)): g for g in baselines.values()})
    ranked = [ev.program(result.genome)]
    for p in sorted((ev.program(g) for g, _ in result.ranked), key=lambda p: ev.latency_ms(genomes[id(p)])):
        if p not in ranked and len(ranked) < options.final_candidates:
            ranked.append(p)
    finalists = list(ranked)
    for p in (ev.program(baselines["egglog"]), ev.program(baselines["greedy"])):
        if p not in finalists:
            finalists.append(p)
    ev.measure_end_to_end(finalists, measurer, inputs)
    timed = [p for p in finalists if p.e2e_ms is not None]
    if not timed:
        raise TsirError("every candidate failed end-to-end measurement: " +
                        "; ".join(p.error or "?" for p in finalists))
    winner = min(timed, key=lambda p: (p.e2e_ms, finalists.index(p)))
    measured = [p for p in ev.programs.values() if p.kernel_ms is not None]
    report.update({
        "baselines_ms": {k: ev.program(g).e2e_ms for k, g in baselines.items() if k != "original"},
        "winner_ms": winner.e2e_ms,
        "end_to_end": [{"latency_ms": p.e2e_ms, "kernel_sum_ms": p.kernel_ms, "analytic_ms": p.analytic_ms,
                        "error": p.error} for p in finalists],
        "rank_corr": spearman([(p.analytic_ms, p.kernel_ms) for p in measured]),
        "calibration": round(ev.calibration(), 4),
        "programs_measured": len(measured),
        "kernel_cache": {"hits": ev.cache.hits, "misses": ev.cache.misses, "dir": str(ev.cache.dir)},
        "failures": ev.kernel_failures + [p.error for p in ev.programs.values() if p.error],
        "tuning": {"trials_per_task": options.tuning_trials, "tasks_tuned": ev.tuning_report.tasks_tuned,
                   "failures": ev.tuning_report.failures},
        "tuning_s": round(ev.tuning_report.time_s, 4),
    })
    return genomes[id(winner)], report


def _report(result: SearchResult, to_ms: float, tier: str) -> dict:
    return {
        "cost_tier": tier,
        "curve": [{"generation": i, "best_ms": v * to_ms} for i, v in enumerate(result.history)],
        "pareto": [{"latency_ms": o[0] * to_ms, "size_bytes": int(o[1]), "error": o[2]} for _, o in result.front],
        "predicted_s": result.cost * to_ms / 1e3,  # the winner's latency objective (predicted or tier 2)
        "seeds_predicted_s": {k: v * to_ms / 1e3 for k, v in result.seeds.items()},
        "evaluations": result.evaluations,
        "generations": len(result.history),
        "ga_time_s": round(result.time_s, 4),
        "tuning_s": 0.0,
    }
