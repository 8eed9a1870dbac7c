"""The approximate search: exact e-graph choices plus one knob per approximation site, under a budget.

1. calibrate: the input program's site activations on ``budget.data.calibration`` set int8 scales and
   the pruning genes' error estimates;
2. NSGA-II over (class genes, site knob genes, pruning genes) on (predicted latency, size, summed error
   estimate), seeded with int8 on all / the 75% / 50% least-error layers (the 75% one also with every
   group pruned to each level);
3. a few candidates (the int8 seeds, then final-population programs spread over the error range)
   and the exact program are built, scored on the calibration data and, with ``measure``, timed on this
   machine round-robin (a batch of each in turn, several rounds); within ``max_drop``, the fastest is
   picked (measured: the smallest of those within ``TIE`` of the fastest; else by predicted latency);
4. the pick is checked on the held-out data (never seen before); if it exceeds the budget there, the
   next calibration-passing candidate is tried, and the exact program is the last resort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import tvm
import tvm_ffi

from tsir.approx.budget import Budget, fidelity, run_batched
from tsir.approx.prune_genes import LEVELS
from tsir.approx.sites import Approximations
from tsir.backends import runtime
from tsir.backends.targets import TargetSpec
from tsir.errors import TsirError
from tsir.ir.term import Graph, Term
from tsir.lower import lower
from tsir.search.extract import Genome, Space
from tsir.search.genetic import GeneticConfig, genetic_search

MAX_CANDIDATES = 7  # candidates built and scored on the calibration data
LADDER = (1.0, 0.75, 0.5)  # shares of the layers made int8 in the seeded mixed-precision candidates
MEASURE = (5, 10)  # rounds, min_repeat_ms when candidates are timed (round-robin: one batch each per round)
TIE = 1.15  # measured latencies within 15% of the fastest count as equal (the smaller program wins)


@dataclass
class ApproxOutcome:
    graph: Graph  # with the approximations' constants and kernels
    root: Term
    module: tvm.IRModule
    report: dict


def _run_all(module: tvm.IRModule, spec: TargetSpec, arrays: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    """Every output of ``module`` over all examples (for the calibration activations)."""
    runner = runtime.Runner(runtime.build(module, spec))
    per_output: list[list[np.ndarray]] = []
    for i in range(0, len(arrays[0]), batch):
        chunk = [a[i:i + batch] for a in arrays]
        if len(chunk[0]) < batch:
            break  # calibration statistics need no padding rows
        for k, out in enumerate(runner(chunk)):
            (per_output.append([]) if k == len(per_output) else None)
            per_output[k].append(out)
    if not per_output:
        raise TsirError(f"the calibration data needs at least one full batch of {batch} examples")
    return [np.concatenate(chunks) for chunks in per_output]


def approx_search(
    space: Space, graph: Graph, original_mod: tvm.IRModule, spec: TargetSpec, config: GeneticConfig,
    budget: Budget, batch: int, seed_genome: Genome, measure: bool = False,
) -> ApproxOutcome:
    """Choose an approximate program from ``space`` within ``budget`` (see the module docstring);
    ``measure``: time every built candidate on this machine and rank them by measured latency."""
    loaded = tvm_ffi.get_global_func("tsir.dnnl.int8_matmul", allow_missing=True) is not None  # tsir's oneDNN
    approx = Approximations(space, graph, spec.roofline, spec.library_kernels and loaded,
                            spec.int8_library_kernels and loaded)
    data = budget.data
    terms = approx.activation_terms()
    activations = None
    if terms:
        activations = _run_all(lower(graph, Term("tuple", tuple(terms)), original_mod), spec, data.calibration, batch)
    approx.build_choices(activations)
    knobs = approx.knobs()
    seeds = {"egglog": list(seed_genome)}
    for level in range(1, max(knobs, default=1)):
        seeds[f"knob{level}"] = list(seed_genome) + [min(level, k - 1) for k in knobs]
    int8 = [next((i for i, c in enumerate(s.choices) if c.name == "int8"), 0) for s in approx.sites]
    ladder = sorted(range(len(int8)), key=lambda k: approx.sites[k].choices[int8[k]].error)
    unpruned = [0] * len(approx.pruning)
    for share in LADDER:  # int8 on the layers with the smallest estimates first (mixed precision)
        keep = set(ladder[:math.ceil(share * len(ladder))])
        seeds[f"int8_{share:g}"] = list(seed_genome) + [v if k in keep else 0 for k, v in enumerate(int8)] + unpruned
    for level in range(1, len(LEVELS) if len(approx.pruning) else 0):  # every group pruned, on the 75% ladder
        seeds[f"int8_0.75_keep{LEVELS[level]:g}"] = seeds["int8_0.75"][:-len(unpruned)] + [level] * len(unpruned)
    result = genetic_search(space, replace(config, knobs=knobs, max_error=math.inf), approx.objectives, seeds)

    reference = runtime.Runner(runtime.build(original_mod, spec))
    ref_cal = run_batched(reference, data.calibration, batch)
    score = budget.score
    base_cal = score(ref_cal, ref_cal, data.calibration_labels)
    exact = list(seed_genome) + [0] * len(knobs)
    ladder_seeds = [seeds[f"int8_{share:g}"] for share in LADDER]
    candidates = _spread(ladder_seeds, [g for g, _ in result.front + result.ranked], approx)
    example = [a[:batch] for a in data.calibration]

    def evaluate(genome: Genome) -> dict:
        decoded = approx.decode(genome)
        module = lower(decoded.graph, decoded.root, original_mod)
        runner = runtime.Runner(runtime.build(module, spec))
        out = run_batched(runner, data.calibration, batch)
        drop = 0.0 if genome is exact else base_cal - score(out, ref_cal, data.calibration_labels)
        return {"genome": genome, "decoded": decoded, "module": module, "calibration_drop": drop,
                "objectives": approx.objectives(genome), "size_bytes": runtime.constant_bytes(module),
                "kept": _kept(decoded.levels), "runner": runner, "measured_ms": None}

    scored = [evaluate(genome) for genome in candidates + [exact]]
    if measure:
        _time_round_robin(scored, example)
    exact_row = scored.pop()
    passing = _rank([c for c in scored if c["calibration_drop"] <= budget.max_drop], measure)
    passing.append(exact_row)

    ref_held = run_batched(reference, data.heldout, batch)
    base_held = score(ref_held, ref_held, data.heldout_labels)
    tried = []
    for pick in passing:
        out = run_batched(runtime.Runner(runtime.build(pick["module"], spec)), data.heldout, batch)
        held = score(out, ref_held, data.heldout_labels)
        tried.append(round(base_held - held, 6))
        if base_held - held <= budget.max_drop or pick["genome"] is exact:
            break
    decoded = pick["decoded"]
    chosen = {s.eclass: c for _, s, c in approx.applied(pick["genome"])}
    kept = {s.eclass: approx.kept(k, decoded.levels) for k, s in enumerate(approx.sites)}
    report = {
        "metric": budget.name, "max_drop": budget.max_drop,
        "sites": [{"layer": s.label, "eclass": s.eclass,
                   "choices": [{"name": c.name, "error_estimate": round(c.error, 6), "size_bytes": c.size_bytes}
                               for c in s.choices]} for s in approx.sites],
        "layers": [{"layer": s.label, "eclass": s.eclass, "choice": chosen.get(s.eclass, s.choices[0]).name,
                    "error_estimate": round(chosen.get(s.eclass, s.choices[0]).error, 6),
                    "kept_in": _share(kept[s.eclass][0], s.shape, s.kind, "in"),
                    "kept_out": _share(kept[s.eclass][1], s.shape, s.kind, "out")} for s in approx.sites],
        "pruning": [{"group": g.label, "kept": LEVELS[level],
                     "error_estimate": round(approx.pruning.error[i][level], 6)}
                    for i, (g, level) in enumerate(zip(approx.pruning.groups, decoded.levels, strict=True))],
        "candidates": [{"predicted_ms": c["objectives"][0] * 1e3, "size_bytes": c["size_bytes"],
                        "error_estimate": round(c["objectives"][2], 6), "kept": c["kept"],
                        "calibration_drop": round(c["calibration_drop"], 6), "measured_ms": c["measured_ms"]}
                       for c in scored],
        "exact_measured_ms": exact_row["measured_ms"], "picked_measured_ms": pick["measured_ms"],
        "ranked_by": "measured" if measure else "analytic",
        "pareto": [{"latency_ms": o[0] * 1e3, "size_bytes": int(o[1]), "error": o[2]} for _, o in result.front],
        "calibration": {"examples": len(data.calibration[0]), "original": base_cal,
                        "optimized": base_cal - pick["calibration_drop"]},
        "heldout": {"examples": len(data.heldout[0]), "original": base_held, "optimized": base_held - tried[-1],
                    "drop": tried[-1], "within_budget": tried[-1] <= budget.max_drop, "tries": tried,
                    **fidelity(out, ref_held)},
        "fell_back_to_exact": pick["genome"] is exact,
        "evaluations": result.evaluations,
    }
    return ApproxOutcome(decoded.graph, decoded.root, pick["module"], report)


def _time_round_robin(scored: list[dict], example: list[np.ndarray]) -> None:
    """Each candidate's ``measured_ms``: the median over ``MEASURE[0]`` rounds in which every candidate times
    one batch in turn, so that a load change on a shared machine hits all of them alike (timing one
    candidate after another compared programs measured minutes apart)."""
    rounds, min_ms = MEASURE
    times: list[list[float]] = [[] for _ in scored]
    for _ in range(rounds):
        for c, row in zip(scored, times, strict=True):
            row.append(c["runner"].median_ms(example, 1, min_ms))
    for c, row in zip(scored, times, strict=True):
        c["measured_ms"] = float(np.median(row))


def _kept(levels: list[int]) -> list[float]:
    """The channel share each pruning gene keeps."""
    return [LEVELS[level] for level in levels]


def _share(kept, shape: tuple[int, ...], kind: str, side: str) -> float:
    """The share of a site's input (``side`` "in") or output channels that pruning keeps."""
    if kept is None or kind == "embedding":
        return 1.0
    axis = {("matmul", "in"): 0, ("matmul", "out"): 1, ("conv", "in"): 1, ("conv", "out"): 0}[kind, side]
    return round(len(kept) / shape[axis], 4)


def _rank(candidates: list[dict], measured: bool) -> list[dict]:
    """Candidates in the order they are tried on the held-out data. Measured: those within ``TIE`` of the
    fastest measured latency first, smallest first (timings on a loaded machine differ by more than
    that), then the rest by latency. Analytic: by (predicted latency, size, error)."""
    if not measured or not candidates:
        return sorted(candidates, key=lambda c: c["objectives"])
    fastest = min(c["measured_ms"] for c in candidates)
    close = sorted((c for c in candidates if c["measured_ms"] <= TIE * fastest), key=lambda c: c["size_bytes"])
    return close + sorted((c for c in candidates if c["measured_ms"] > TIE * fastest), key=lambda c: c["measured_ms"])


def _spread(first: list[Genome], genomes: list[Genome], approx: Approximations) -> list[Genome]:
    """The distinct approximate programs of ``first``, then of ``genomes`` spread over the error-estimate
    range, ``MAX_CANDIDATES`` in all, so that a tight budget still finds a candidate that passes."""
    def distinct(gs: list[Genome], taken: set) -> list[Genome]:
        out = []
        for g in gs:
            key = (tuple(sorted({(s.weight_class, c.name) for _, s, c in approx.applied(g)})), tuple(approx.levels(g)))
            if key != ((), tuple([0] * len(approx.pruning))) and key not in taken:
                taken.add(key)
                out.append(g)
        return out

    taken: set = set()
    head = distinct(first, taken)[:MAX_CANDIDATES]
    rest = sorted(distinct(genomes, taken), key=lambda g: approx.objectives(g)[2])
    room = min(MAX_CANDIDATES - len(head), len(rest))
    step = len(rest) / room if room else 0.0
    return head + [rest[int(i * step)] for i in range(room)]
