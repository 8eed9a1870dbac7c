"""The search stage: seeds, genetic search with cost feedback, end-to-end choice, and its report.

``cost="analytic"`` runs the genetic search on the roofline model alone (calibrated on measured kernels
when the cache holds a calibration of the target). ``cost="measured"`` keeps to ``config.time_s`` on
one clock, cold cache or warm: it tunes a few kernels of the baselines (``tuning_trials`` > 0; egglog's
extraction, greedy, the input program), times their kernels, runs the genetic search with per-kernel
measured feedback each generation, then builds the best few programs and the baselines whole, times
them in interleaved rounds and picks the measured best (a baseline unless beaten by more than
``NOISE``). Afterwards it reports the held-out rank correlation of the calibrated analytic model and
refits the target's calibration on every kernel measured so far.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tvm

from tsir.backends import runtime
from tsir.backends.kernel_cache import DEFAULT_DIR, KernelCache, write_atomic
from tsir.backends.measure import Measurer
from tsir.backends.rpc import RemoteCost
from tsir.backends.targets import TargetSpec
from tsir.backends.tuning import TuningDatabase
from tsir.egraph import TermEGraph
from tsir.errors import TsirError
from tsir.ir.term import Graph
from tsir.lower import lower
from tsir.search import calibration
from tsir.search.egglog_extract import egglog_extraction
from tsir.search.extract import Genome, Space, to_term
from tsir.search.genetic import GeneticConfig, SearchResult, analytic_objectives, genetic_search
from tsir.search.greedy import fused_greedy, greedy
from tsir.search.ilp import ilp_extraction
from tsir.search.measured import CachedExecutable, Evaluator, Program, WorkerMeasurer, progress_bar, spearman

COSTS = ("analytic", "measured", "rpc")  # rpc: whole programs timed on TVM RPC devices


@dataclass(frozen=True)
class SearchOptions:
    cost: str = "analytic"
    tuning_trials: int = 0  # MetaSchedule trials per kernel; 0 tunes nothing
    tuning_share: float = 0.3  # at most this share of the search budget goes to tuning
    tuning_tasks: int = 3  # kernels of the baselines tuned per search (GEMM/conv first, heaviest first)
    cache_dir: str | os.PathLike = DEFAULT_DIR
    # programs built whole and timed besides the baselines (time permitting): the GA's best half, and the rest
    # spread over the programs it explored by analytic cost (what the end-to-end rank correlation ranks)
    final_candidates: int = 3
    final_share: float = 0.35  # share of the search budget kept for building and timing the finalists whole
    measure_per_generation: int = 2  # programs newly timed per kernel after each generation
    progress: bool = False
    budget_s: float | None = None  # the user's budget: a rerun replays a search only under the same one

    def __post_init__(self) -> None:
        if self.cost not in COSTS:
            raise TsirError(f"unknown cost {self.cost!r}; choose one of: {', '.join(COSTS)}")
        if self.tuning_trials < 0:
            raise TsirError(f"tuning_trials must be >= 0, got {self.tuning_trials}")


@dataclass
class Outcome:
    genome: Genome
    report: dict
    library: Path | None = None  # the measured tier's build of the winner, when it kept one

    def executable(self) -> CachedExecutable | None:
        """The winner as built by the end-to-end tier (None when it was not built there)."""
        return CachedExecutable(self.library) if self.library is not None and self.library.exists() else None


def run_search(
    egraph: TermEGraph, space: Space, graph: Graph, original_mod: tvm.IRModule, spec: TargetSpec,
    config: GeneticConfig, options: SearchOptions, inputs: list[np.ndarray], measurer: Measurer | None = None,
) -> Outcome:
    """Choose a program from ``space`` within ``config.time_s`` (tier 3 builds come after)."""
    start, clock_start = time.perf_counter(), time.monotonic()
    library = None
    # the analytic tier uses the target's calibration when one was fitted; the measured tier keeps the
    # plain roofline (scaled by its own measurements), so its baselines and a warm rerun stay the same
    cal = calibration.load(options.cache_dir, str(spec.target.export())) if options.cost == "analytic" else None
    if cal is not None:
        space = Space.of(space.view, cal.roofline(spec.roofline, tuned=options.tuning_trials > 0))
    baselines, extraction = _baselines(space, config.time_s)
    update, close = progress_bar(options.progress, config.time_s)
    try:
        if options.cost == "analytic":
            result = genetic_search(space, replace(config, polish_share=POLISH_SHARE), analytic_objectives(space),
                                    _seeds(baselines),
                                    lambda gen, best, pop: update(best * 1e3) or False)
            report = _report(result, 1e3, "analytic")
            report["baselines_predicted_ms"] = {k: space.cost(g) * 1e3 for k, g in baselines.items()}
            genome = result.genome
            best = min((k for k in BASELINES if k in baselines), key=lambda k: space.cost(baselines[k]))
            report["versus_best_baseline"] = kernel_difference(space, genome, baselines[best], best)
        elif options.cost == "rpc":
            if measurer is None:
                raise TsirError("cost='rpc' needs a measurer for the RPC devices (optimize(..., rpc='host:port:key'))")
            genome, report = _remote(space, graph, original_mod, spec, config, inputs, measurer, baselines, update)
        else:
            genome, report, library = _measured(space, graph, original_mod, spec, config, options, inputs,
                                       measurer, baselines, update, clock_start)
    finally:
        close()
    report["search_s"] = report["time_s"] = round(time.perf_counter() - start, 4)
    report["calibrated"] = cal is not None
    report["extraction"] = extraction
    return Outcome(genome, report, library)


POLISH_SHARE = 0.25  # of the analytic search's time, kept for the hill climb from the GA's winner
BASELINES = ("egglog", "greedy", "fused_greedy", "ilp")  # the extractions the search is measured against
ILP_SHARE = 0.1  # of the search budget, at most, for the exact extraction (at least half a second)


def _baselines(space: Space, time_s: float) -> tuple[dict[str, Genome], dict]:
    """The extractions under tsir's per-kernel cost (egglog's tree cost, greedy, the exact DAG cost by integer
    programming when it solves in time), greedy under a fusion-aware tree cost, and the input program; and how
    the extraction by ILP went."""
    baselines = {"egglog": egglog_extraction(space), "greedy": greedy(space), "fused_greedy": fused_greedy(space)}
    ilp = ilp_extraction(space, time_limit_s=max(0.5, ILP_SHARE * time_s))
    if ilp.status == "optimal":  # a best-so-far at the time limit is no exact baseline (often worse than greedy)
        baselines["ilp"] = ilp.genome
    baselines["original"] = space.original()
    return baselines, {"ilp": {"status": ilp.status, "time_s": round(ilp.time_s, 4), "variables": ilp.variables}}


def _seeds(baselines: dict[str, Genome]) -> dict[str, Genome]:
    """The genetic search's seeds besides the two it always takes (the input program and greedy)."""
    return {k: g for k, g in baselines.items() if k in ("egglog", "ilp", "fused_greedy")}


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
            _seeds(baselines), lambda gen, best, pop: update(best * 1e3) or False,
            batch=lambda genomes: timed.prefetch([module(g) for g in genomes]))
    report = _report(result, 1e3, "rpc")
    report["rpc_measured"] = len(timed.cache)  # distinct candidate programs timed on devices
    report["rpc_batch_max"] = max(timed.batches, default=0)  # most candidates timed side by side
    report["rpc_failures"] = timed.errors[:20]  # candidates that failed to build or run
    return result.genome, report


def _measured(space, graph, original_mod, spec, config, options, inputs, measurer, baselines, update, start):
    """Tune, time kernels, search and time the finalists whole, all within ``config.time_s``.

    The budget is split by deadlines, all on one clock: tuning may use ``tuning_share`` of it, the
    baselines are built whole, the end-to-end tier keeps for itself at the end ``final_share`` or, when
    more, what one more build and its timing rounds take (``end_to_end_s``), and the genetic search (with
    its kernel timing) has what is left in between, and at least ``GA_FLOOR_SHARE`` of the budget. A warm
    cache skips the tuning and timing already done, so the search then stops on its generation and patience
    limits long before the budget.
    """
    budget = config.time_s  # counted from ``start``, when the search stage began (seeds included)
    final_at = start + (1.0 - options.final_share) * budget  # the end-to-end tier starts by then
    cache_dir = Path(options.cache_dir)
    tuning = TuningDatabase(spec.target, cache_dir) if options.tuning_trials > 0 else None
    target = str(spec.target.export())
    ev = Evaluator(space, graph, original_mod, spec, KernelCache(cache_dir), tuning, deadline=final_at)
    try:
        return _measured_with(_Measuring(ev, space, spec, config, options, inputs, baselines, update, start, cache_dir,
                                         target), measurer, final_at)
    finally:
        if ev.worker is not None:
            ev.worker.close()


@dataclass(frozen=True)
class _Measuring:
    """What the measured tier works with, for one search."""

    ev: Evaluator
    space: Space
    spec: TargetSpec
    config: GeneticConfig
    options: SearchOptions
    inputs: list[np.ndarray]
    baselines: dict[str, Genome]  # egglog, greedy, original
    update: Callable[[float], None]  # the progress bar
    start: float  # time.monotonic() when the search stage began
    cache_dir: Path
    target: str  # the TVM target as JSON text (a cache key)


def _measured_with(run: _Measuring, measurer: Measurer | None, final_at: float):
    """``_measured``'s body: tune, time kernels, search, time the finalists; ``final_at`` when the end-to-end
    tier starts at the latest."""
    ev, space, spec, config, options, inputs = run.ev, run.space, run.spec, run.config, run.options, run.inputs
    baselines, update, start, cache_dir, target = run.baselines, run.update, run.start, run.cache_dir, run.target
    budget = config.time_s
    seeds = [ev.program(g) for g in baselines.values()]
    phases = {}
    ev.tune(seeds, options.tuning_trials, min(options.tuning_share * budget, final_at - time.monotonic()),
            options.tuning_tasks)
    phases["tuning"] = time.monotonic() - start
    # the baselines are always built whole: build them now, and start the end-to-end tier early enough for
    # one more build (the GA's winner) and the timing rounds, however long this model takes to build
    ev.prebuild([ev.program(baselines[k]) for k in BASELINES if k in baselines])
    phases["baseline_builds"] = time.monotonic() - start - sum(phases.values())
    measurer = measurer or WorkerMeasurer(ev, deadline=start + budget)
    final_at = ev.deadline = min(final_at, start + budget - end_to_end_s(ev, seeds))
    ev.measure_kernels(seeds)
    final_at = ev.deadline = min(final_at, start + budget - end_to_end_s(ev, seeds))  # with measured latencies
    phases["seed_kernels"] = time.monotonic() - start - sum(phases.values())

    def feedback(generation: int, best_ms: float, population: list) -> bool:
        update(best_ms)
        fresh: list[Program] = []
        for genome, _ in population:
            p = ev.program(genome)
            if p.kernel_ms is None and p.error is None and p not in fresh:
                fresh.append(p)
            if len(fresh) == options.measure_per_generation:
                break
        if not fresh or time.monotonic() >= final_at:
            return False
        ev.measure_kernels(fresh)
        return any(p.kernel_ms is not None or p.error for p in fresh)

    # a rerun on the same cache and budget runs as many generations as the first run completed within it, so
    # it replays that run from the caches (same programs, same result) instead of measuring new ones; a
    # larger budget searches on (a quick first run does not cap a long one)
    log = _generations_log(cache_dir, ev, target, config, options)
    replayed = _read_json(log)
    # the generations themselves are cheap (unmeasured programs are priced analytically), so the search runs
    # some even when timing the seeds took its share: it then measures nothing more, but still explores
    ga_config = replace(config, time_s=max(final_at - time.monotonic(), GA_FLOOR_SHARE * budget))
    if replayed is not None:
        ga_config = replace(ga_config, generations=min(config.generations, int(replayed["generations"])))
    result = genetic_search(space, ga_config, lambda g: (ev.latency_ms(g), float(space.size_bytes(g)), 0.0),
                            _seeds(baselines), feedback, time.monotonic)
    if replayed is None:
        write_atomic(log, {"generations": len(result.history)})
    phases["genetic_search"] = time.monotonic() - start - sum(phases.values())
    report = _report(result, 1.0, "measured")
    genomes = {id(ev.program(g)): g for g, _ in result.ranked}
    genomes.update({id(ev.program(g)): g for g in baselines.values()})
    base = [ev.program(baselines[k]) for k in BASELINES if k in baselines]
    others = sorted((ev.program(g) for g, _ in result.ranked), key=lambda p: ev.latency_ms(genomes[id(p)]))
    finalists: list[Program] = []

    def add(programs, limit: int) -> None:
        for p in programs:
            if p not in finalists and len(finalists) < limit:
                finalists.append(p)

    add([ev.program(result.genome), *base], 1 + len(base))
    required = len(finalists)
    add(others, required + (options.final_candidates + 1) // 2)  # the GA's best; then what it explored, spread
    spread = _spread(space, result.explored, required + options.final_candidates - len(finalists), config.seed)
    genomes.update({id(ev.program(g)): g for g in spread})
    add(map(ev.program, spread), required + options.final_candidates)
    ev.measure_end_to_end(finalists, measurer, inputs, start + budget, required)
    phases["end_to_end"] = time.monotonic() - start - sum(phases.values())
    timed = [p for p in finalists if p.e2e_ms is not None]
    if not timed:
        raise TsirError("every candidate failed end-to-end measurement: " +
                        "; ".join(p.error or "?" for p in finalists))
    winner = _pick(timed, base)
    for p in finalists:  # only the winner's library is kept in the cache (the final build reuses it)
        if p is not winner and p.library is not None:
            p.library.unlink(missing_ok=True)
    measured = [p for p in ev.programs.values() if p.kernel_ms is not None]
    held_out = _held_out_rank_corr(space, spec, cache_dir, target, options, ev, measured)
    fitted = calibration.refit(cache_dir, spec.roofline, target)
    report.update({
        "baselines_ms": {k: ev.program(g).e2e_ms for k, g in baselines.items() if k != "original"},
        "winner_ms": winner.e2e_ms,
        "winner_source": next((k for k in baselines if ev.program(baselines[k]) is winner), "ga"),
        "versus_best_baseline": _versus_best_baseline(space, ev, winner, baselines),
        "noise": _noise(winner, base),
        "end_to_end": [{"latency_ms": p.e2e_ms, "spread": p.e2e_spread, "kernel_sum_ms": p.kernel_ms,
                        "analytic_ms": p.analytic_ms, "additive_ms": space.node_sum(p.genome) * 1e3,
                        "error": p.error} for p in finalists],
        **_end_to_end_rank_corr(space, spec.roofline, fitted, options, timed),
        "rank_corr": held_out["rank_corr"],
        "rank_corr_uncalibrated": _rank_corr(space, spec.roofline, measured),
        "rank_corr_in_search": spearman([(p.analytic_ms, p.kernel_ms) for p in measured]),
        "calibration": {"held_out_kernels": held_out["kernels"], "refit_kernels": fitted.kernels if fitted else 0,
                        "path": str(calibration.path(cache_dir, target)) if fitted else None,
                        "measured_over_analytic": round(ev.calibration(), 4)},
        "programs_measured": len(measured),
        "kernel_cache": {"hits": ev.cache.hits, "misses": ev.cache.misses, "dir": str(ev.cache.dir),
                         "skipped_for_budget": ev.skipped_for_budget},
        "failures": ev.kernel_failures + [p.error for p in ev.programs.values() if p.error],
        "tuning": {"trials_per_task": options.tuning_trials, "tasks_tuned": ev.tuning_report.tasks_tuned,
                   "trials": ev.tuning_report.trials, "skipped_for_budget": ev.tuning_report.skipped_for_budget,
                   "failures": ev.tuning_report.failures},
        "tuning_s": round(ev.tuning_report.time_s, 4),
        "budget_s": round(budget, 4),
        "replayed": replayed is not None,
        "phases_s": {k: round(v, 3) for k, v in phases.items()},
    })
    return genomes[id(winner)], report, winner.library


SPREAD_POOL = 256  # explored programs priced to choose the spread finalists from


def _spread(space: Space, explored: list[tuple[int, ...]], count: int, seed: int) -> list[Genome]:
    """``count`` programs the search explored whose analytic costs spread evenly from its cheapest to its
    dearest (distinct costs), so that the end-to-end rank correlation ranks programs that differ, not only the
    near-equal best ones."""
    if count <= 0 or not explored:
        return []
    pool = random.Random(seed).sample(explored, min(SPREAD_POOL, len(explored)))
    priced = sorted({space.cost(list(g)): list(g) for g in pool}.items())
    if len(priced) <= count:
        return [g for _, g in priced]
    return [priced[round(i * (len(priced) - 1) / (count - 1))][1] if count > 1 else priced[-1][1]
            for i in range(count)]


def end_to_end_s(ev: Evaluator, seeds: list[Program]) -> float:
    """Time the end-to-end tier needs for its required part: one whole build (as long as the longest so far)
    and two timing rounds of the winner and both baselines, each about as long as the slowest seed's."""
    slowest_ms = max((p.kernel_ms or p.analytic_ms * ev.calibration() for p in seeds), default=0.0)
    return ev.build_s + 2 * 3 * WorkerMeasurer(ev).timing_s(slowest_ms)


def _generations_log(cache_dir: Path, ev: Evaluator, target: str, config, options) -> Path:
    """Where the generation count of a search of this model, target, seed and settings is kept."""
    text = repr((ev.model_digest, target, config.seed, config.population, config.generations, config.patience,
                 config.mutation_rate, config.region_mutation_rate, config.tournament, options.tuning_trials,
                 options.tuning_tasks, options.measure_per_generation, options.budget_s))
    return cache_dir / "searches" / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


GA_FLOOR_SHARE = 0.05  # of the search budget: the least time the genetic search gets, however late it starts
NOISE = 0.02  # a GA program must beat the best baseline by this fraction end to end to be picked over it


def _pick(timed: list[Program], baselines: list[Program]) -> Program:
    """The measured best; a baseline stays the pick unless another program beats it by more than ``NOISE``."""
    best = min(timed, key=lambda p: p.e2e_ms)
    base = [p for p in baselines if p in timed]
    if best in base or not base:
        return best
    best_base = min(base, key=lambda p: p.e2e_ms)
    return best if best.e2e_ms < (1 - NOISE) * best_base.e2e_ms else best_base


def _end_to_end_rank_corr(space: Space, base, fitted, options: SearchOptions, timed: list[Program]) -> dict:
    """Spearman of the analytic cost vs end-to-end latency over the programs timed whole: the whole-program
    cost calibrated on the cache's kernels (when fitted), uncalibrated, and the additive per-kernel cost."""
    calibrated = Space.of(space.view, fitted.roofline(base, tuned=options.tuning_trials > 0)) if fitted else None
    return {
        "rank_corr_end_to_end": calibrated and spearman([(calibrated.cost(p.genome), p.e2e_ms) for p in timed]),
        "rank_corr_end_to_end_uncalibrated": spearman([(p.analytic_ms, p.e2e_ms) for p in timed]),
        "rank_corr_end_to_end_additive": spearman([(space.node_sum(p.genome), p.e2e_ms) for p in timed]),
    }


def kernel_difference(space: Space, genome: Genome, other: Genome, name: str) -> dict:
    """How the kernels of ``genome``'s program differ from those of ``other`` (baseline ``name``): each kernel
    named by its fused ops (``conv2d+add+relu``), counted in ``gained`` (only in ``genome``) or ``lost``."""
    def kernels(g: Genome) -> Counter:
        return Counter("+".join(space.node(g, c).op for c in group) for group in space.kernel_groups(list(g)))

    mine, theirs = kernels(genome), kernels(other)
    return {"baseline": name, "gained": dict(sorted((mine - theirs).items())),
            "lost": dict(sorted((theirs - mine).items()))}


def _versus_best_baseline(space: Space, ev: Evaluator, winner: Program, baselines: dict[str, Genome]) -> dict | None:
    """``kernel_difference`` of the winner from the baseline fastest end to end (None when none was timed)."""
    timed = [k for k in BASELINES if k in baselines and ev.program(baselines[k]).e2e_ms is not None]
    if not timed:
        return None
    best = min(timed, key=lambda k: ev.program(baselines[k]).e2e_ms)
    return kernel_difference(space, winner.genome, baselines[best], best)


def _noise(winner: Program, baselines: list[Program]) -> float | None:
    """The relative spread of the two timing rounds, largest of the winner's and the best baseline's."""
    timed = [p for p in baselines if p.e2e_ms is not None]
    best = min(timed, key=lambda p: p.e2e_ms, default=None)
    spreads = [p.e2e_spread for p in (winner, best) if p is not None and p.e2e_spread is not None]
    return round(max(spreads), 4) if spreads else None


def _rank_corr(space: Space, roofline, measured: list[Program]) -> float | None:
    """Spearman of ``roofline``'s analytic cost vs the tier-2 latency of the ``measured`` programs."""
    priced = Space.of(space.view, roofline)
    return spearman([(priced.cost(list(p.genome)), p.kernel_ms) for p in measured])


def _held_out_rank_corr(space, spec, cache_dir, target, options, ev: Evaluator, measured: list[Program]) -> dict:
    """Spearman of the calibrated analytic cost vs tier 2 over this search's measured programs, where the
    calibration is fitted only on cached kernels that none of these programs contains (other models, runs)."""
    data = calibration.samples(ev.cache, target, exclude=ev.kernel_keys())
    cal = calibration.fit(data, spec.roofline, target)
    if cal is None:
        return {"rank_corr": None, "kernels": 0}
    roofline = cal.roofline(spec.roofline, tuned=options.tuning_trials > 0)
    return {"rank_corr": _rank_corr(space, roofline, measured), "kernels": len(data)}


def _report(result: SearchResult, to_ms: float, tier: str) -> dict:
    return {
        "cost_tier": tier,
        "curve": [{"generation": i, "best_ms": v * to_ms} for i, v in enumerate(result.history)],
        "pareto": [{"latency_ms": o[0] * to_ms, "size_bytes": int(o[1]), "error": o[2]} for _, o in result.front],
        "predicted_s": result.cost * to_ms / 1e3,  # the winner's latency objective (predicted or tier 2)
        "seeds_predicted_s": {k: v * to_ms / 1e3 for k, v in result.seeds.items()},
        "evaluations": result.evaluations,
        "generations": len(result.history),
        "polish": {"moves": result.polished, "before_s": result.before_polish * to_ms / 1e3},
        "ga_time_s": round(result.time_s, 4),
        "tuning_s": 0.0,
    }
