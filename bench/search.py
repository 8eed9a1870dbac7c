"""``python -m bench.search [MODEL ...]``: the genetic search against egglog's and greedy extraction.

For every zoo model (x86, exact mode, measured cost, MetaSchedule tuning on) the search runs twice on one
cache directory: cold (empty kernel cache, tuning database and calibration) and warm. The table shows the
cold run's measured end-to-end latencies of the GA winner, egglog's extraction and greedy extraction (all
built the same way and timed in the same child, in interleaved rounds), search and tuning time, and the
held-out rank correlation of the calibrated analytic model with measured kernel time (``rank_corr``:
Spearman over the programs the search measured, the calibration fitted only on kernels of other
programs: earlier models of the run, or earlier runs; ``-`` when there were none yet). Writes
``bench/results/search.json``: ``{"results": [...cold rows...], "runs": {"cold": ..., "warm": ...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from tsir import optimize, zoo

RESULTS = Path(__file__).parent / "results" / "search.json"
COLUMNS = ["model", "ga_ms", "egglog_ms", "greedy_ms", "search_s", "tuning_s", "rank_corr", "verified"]
# optimize budget per model (s); about half of it goes to the search (tuning, kernel timing, GA, finalists):
# the cold run of the whole zoo takes about 10 minutes on 2 cores, the warm run replays it from the caches
BUDGETS = {"mlp": 60.0, "lenet": 60.0, "nasrnn": 80.0, "bert_layer": 100.0, "hf_bert": 100.0,
           "inception_block": 100.0, "resnext_block": 100.0, "squeezenet": 120.0, "mobilenet_v2": 120.0,
           "resnet18": 120.0}
DEFAULT_BUDGET = 100.0


def run(models: list[str], cache_dir: Path, budget_s: float | None, tuning_trials: int,
        label: str) -> tuple[list[dict], dict]:
    rows, details, start = [], {}, time.perf_counter()
    for name in models:
        entry = zoo.load(name)
        began = time.perf_counter()
        report = optimize(entry.module, entry.example_inputs, budget_s=budget_s or BUDGETS.get(name, DEFAULT_BUDGET),
                          measure=False, cost="measured", tuning_trials=tuning_trials, cache_dir=cache_dir).report
        s = report["search"]
        rows.append({"model": name, "ga_ms": s["winner_ms"], "egglog_ms": s["baselines_ms"]["egglog"],
                     "greedy_ms": s["baselines_ms"]["greedy"], "search_s": s["search_s"], "tuning_s": s["tuning_s"],
                     "rank_corr": s["rank_corr"], "verified": report["verification"]["status"]})
        details[name] = {"optimize_s": round(time.perf_counter() - began, 2), "budget_s": report["search"]["budget_s"],
                         "winner_source": s["winner_source"], "rank_corr_uncalibrated": s["rank_corr_uncalibrated"],
                         "tuning": s["tuning"], "kernel_cache": s["kernel_cache"], "generations": s["generations"],
                         "phases_s": s["phases_s"],
                         "stages_s": report["stages_s"]}
        print(f"[{label}] {name}: {details[name]['optimize_s']:.1f} s (search {s['search_s']:.1f} s of "
              f"{s['budget_s']:.1f}, tuning {s['tuning_s']:.1f} s), GA {_fmt(s['winner_ms'])} ms vs egglog "
              f"{_fmt(s['baselines_ms']['egglog'])} / greedy {_fmt(s['baselines_ms']['greedy'])}", flush=True)
    return rows, {"total_s": round(time.perf_counter() - start, 2), "models": details}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=zoo.names())
    parser.add_argument("--budget", type=float, default=None, help="optimize budget per model (s); default per model")
    parser.add_argument("--tuning-trials", type=int, default=4, help="MetaSchedule trials per kernel (0: no tuning)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="tsir-bench-cache-"))
    try:
        cold, cold_run = run(args.models, cache_dir, args.budget, args.tuning_trials, "cold")
        warm, warm_run = run(args.models, cache_dir, args.budget, args.tuning_trials, "warm")
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    print(" ".join(f"{c:>14s}" for c in COLUMNS))
    for row in cold:
        print(" ".join(f"{_fmt(row[c]):>14s}" for c in COLUMNS))
    ok = [r for r in cold if None not in (r["ga_ms"], r["egglog_ms"], r["greedy_ms"])]
    not_worse = sum(r["ga_ms"] <= min(r["egglog_ms"], r["greedy_ms"]) for r in ok)
    better = sum(r["ga_ms"] < min(r["egglog_ms"], r["greedy_ms"]) for r in ok)
    print(f"GA <= both baselines on {not_worse}/{len(cold)} models, strictly better on {better}/{len(cold)}")
    cold_s, warm_s = cold_run["total_s"], warm_run["total_s"]
    print(f"end to end: cold {cold_s:.1f} s, warm {warm_s:.1f} s, {cold_s / warm_s:.1f}x faster warm")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = {"results": cold, "runs": {"cold": cold_run, "warm": {**warm_run, "results": warm}},
            "cold_s": cold_s, "warm_s": warm_s, "warm_speedup": round(cold_s / warm_s, 2),
            "tuning_trials": args.tuning_trials, "cpu_load_1min": os.getloadavg()[0]}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
