"""``python -m bench.search [MODEL ...]``: the genetic search against the best extraction baseline.

For every model (zoo or suite names; x86, exact mode, measured cost, MetaSchedule tuning on) the search
runs twice on one cache directory: cold (empty kernel cache, tuning database and calibration) and warm.
Each run builds whole and times, in one child and in two interleaved rounds, the GA's winner, every
baseline (egglog's extraction under tsir's cost model, greedy, fusion-aware greedy, the exact DAG-cost
extraction by integer programming) and up to ``--finalists`` more programs of the search. The table shows,
from the cold run:

- ``ga_ms``, the search's pick (``winner``: ``ga``, ``original`` for the input program, or the baseline whose
  program it is), the best baseline (its name and ms) and each baseline's ms;
- ``noise``: how far apart the two timing rounds of the winner and the best baseline were (largest);
  ``margin``: how much faster the pick is than the best baseline; ``better``: by more than the noise
  (never when the pick is a baseline's program); ``difference``: the pick's kernels (named by their fused
  ops) that the best baseline's program lacks (``+``) and the baseline's that the pick lacks (``-``);
- ``rank_corr``: Spearman rank correlation of the whole-program analytic cost, calibrated on the cache's
  kernels, with the end-to-end latency over every program timed whole (``-`` below 8 distinct programs);
  beside it the same uncalibrated (``rank_uncalibrated``) and the additive per-kernel cost's (``rank_additive``);
- ``search_s``, ``tuning_s``, ``verified``.

Writes ``bench/results/search.json``: ``{"results": [...cold rows...], "runs": {"cold": ..., "warm": ...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.__main__ import machine
from bench.io import RESULTS_DIR, atomic_write
from tsir import optimize, suite, zoo

RESULTS = RESULTS_DIR / "search.json"
COLUMNS = ["model", "ga_ms", "winner", "best_baseline", "best_baseline_ms", "egglog_ms", "greedy_ms",
           "fused_greedy_ms", "ilp_ms", "noise", "margin", "better", "difference", "rank_corr", "rank_uncalibrated",
           "rank_additive", "programs", "search_s", "tuning_s", "verified"]
BASELINES = ("egglog", "greedy", "fused_greedy", "ilp")
MIN_RANKED = 8  # distinct programs timed whole before a rank correlation is reported
SUITE_MODELS = ["resnet-basic", "mobilenet-v2", "vit", "bert", "gpt2"]  # real architectures, besides the zoo
# optimize budget per model (s), most of it for the search (tuning, kernel timing, GA, finalists)
BUDGETS = {"mlp": 60.0, "lenet": 60.0, "nasrnn": 80.0}
DEFAULT_BUDGET = 120.0


def load(name: str):
    """A zoo or suite model and its example inputs."""
    if name in zoo.names():
        entry = zoo.load(name)
        return entry.module, entry.example_inputs
    return suite.load(name)


def row(name: str, report: dict) -> dict:
    """One model's row of the table, from its optimize report."""
    s = report["search"]
    baselines = {k: s["baselines_ms"].get(k) for k in BASELINES}
    timed = {k: v for k, v in baselines.items() if v is not None}
    best = min(timed, key=timed.get) if timed else None
    ga, noise = s["winner_ms"], s["noise"]
    margin = 1 - ga / timed[best] if best and ga else None
    ranked = [p for p in s["end_to_end"] if p["latency_ms"] is not None]
    enough = len(ranked) >= MIN_RANKED
    return {"model": name, "ga_ms": ga, "best_baseline": best, "best_baseline_ms": timed.get(best),
            **{f"{k}_ms": v for k, v in baselines.items()}, "noise": noise,
            "margin": None if margin is None else round(margin, 4),
            "winner": s["winner_source"],
            "better": bool(s["winner_source"] not in BASELINES and margin is not None and margin > (noise or 0.0)),
            "difference": difference(s["versus_best_baseline"]),
            "rank_corr": s["rank_corr_end_to_end"] if enough else None,
            "rank_uncalibrated": s["rank_corr_end_to_end_uncalibrated"] if enough else None,
            "rank_additive": s["rank_corr_end_to_end_additive"] if enough else None, "programs": len(ranked),
            "search_s": s["search_s"], "tuning_s": s["tuning_s"], "verified": report["verification"]["status"]}


def difference(versus: dict | None) -> str:
    """The pick's kernels that the best baseline lacks and vice versa: ``+2 conv2d+add+relu -2 dnnl_conv2d``."""
    if not versus:
        return ""
    return " ".join([*(f"+{n} {k}" for k, n in versus["gained"].items()),
                     *(f"-{n} {k}" for k, n in versus["lost"].items())])


def run(models: list[str], cache_dir: Path, budget_s: float | None, tuning_trials: int, finalists: int,
        label: str) -> tuple[list[dict], dict]:
    rows, details, start = [], {}, time.perf_counter()
    for name in models:
        module, inputs = load(name)
        began = time.perf_counter()
        report = optimize(module, inputs, budget_s=budget_s or BUDGETS.get(name, DEFAULT_BUDGET), measure=False,
                          cost="measured", tuning_trials=tuning_trials, cache_dir=cache_dir,
                          finalists=finalists).report
        s = report["search"]
        rows.append(row(name, report))
        details[name] = {"optimize_s": round(time.perf_counter() - began, 2), "budget_s": s["budget_s"],
                         "winner_source": s["winner_source"], "extraction": s["extraction"],
                         "rank_corr_kernels": s["rank_corr"], "end_to_end": s["end_to_end"],
                         "tuning": s["tuning"], "kernel_cache": s["kernel_cache"], "generations": s["generations"],
                         "curve": s["curve"], "phases_s": s["phases_s"], "stages_s": report["stages_s"]}
        r = rows[-1]
        print(f"[{label}] {name}: {details[name]['optimize_s']:.1f} s, GA {_fmt(r['ga_ms'])} ms vs "
              f"{r['best_baseline']} {_fmt(r['best_baseline_ms'])} (margin {_fmt(r['margin'])}, noise "
              f"{_fmt(r['noise'])}), rank_corr {_fmt(r['rank_corr'])} over {r['programs']}", flush=True)
    return rows, {"total_s": round(time.perf_counter() - start, 2), "models": details}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=zoo.names() + SUITE_MODELS)
    parser.add_argument("--budget", type=float, default=None, help="optimize budget per model (s); default per model")
    parser.add_argument("--tuning-trials", type=int, default=4, help="MetaSchedule trials per kernel (0: no tuning)")
    parser.add_argument("--finalists", type=int, default=MIN_RANKED, help="search programs timed whole at the end")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in zoo.names() and m not in suite.names(ci=False)]
    if unknown:
        parser.error(f"unknown models {unknown}; choose zoo names ({', '.join(zoo.names())}) or suite names "
                     f"({', '.join(suite.names(ci=False))})")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="tsir-bench-cache-"))
    host = machine()
    try:
        cold, cold_run = run(args.models, cache_dir, args.budget, args.tuning_trials, args.finalists, "cold")
        warm, warm_run = run(args.models, cache_dir, args.budget, args.tuning_trials, args.finalists, "warm")
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(table(cold))
    compared = [r for r in cold if r["ga_ms"] is not None and r["best_baseline_ms"] is not None]
    not_worse = sum(r["ga_ms"] <= r["best_baseline_ms"] for r in compared)
    better = [r["model"] for r in cold if r["better"]]
    print(f"GA <= the best baseline on {not_worse}/{len(cold)} models; faster beyond noise on {len(better)}/"
          f"{len(cold)}: {', '.join(better) or 'none'}")
    cold_s, warm_s = cold_run["total_s"], warm_run["total_s"]
    print(f"end to end: cold {cold_s:.1f} s, warm {warm_s:.1f} s")
    data = {"machine": host, "results": cold, "runs": {"cold": cold_run, "warm": {**warm_run, "results": warm}},
            "cold_s": cold_s, "warm_s": warm_s, "tuning_trials": args.tuning_trials, "finalists": args.finalists,
            "load_average_end": os.getloadavg()}
    atomic_write(RESULTS, json.dumps(data, indent=2))
    atomic_write(RESULTS.with_suffix(".md"), table(cold) + "\n")
    print(f"wrote {RESULTS} and {RESULTS.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
