"""``python -m bench.search [MODEL ...]``: the genetic search against egglog's and greedy extraction.

For every zoo model (x86, exact mode, measured cost) the search runs twice on one cache directory:
cold (empty kernel cache and tuning database) and warm. The table shows the cold run's measured
end-to-end latencies of the GA winner, egglog's extraction and greedy extraction (all timed in the
same run), search and tuning time, and the Spearman correlation of analytic vs measured program cost.
Writes ``bench/results/search.json``.
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


def run(models: list[str], cache_dir: Path, budget_s: float, tuning_trials: int) -> tuple[list[dict], float]:
    rows, start = [], time.perf_counter()
    for name in models:
        entry = zoo.load(name)
        report = optimize(entry.module, entry.example_inputs, budget_s=budget_s, measure=False, cost="measured",
                          tuning_trials=tuning_trials, cache_dir=cache_dir).report
        s = report["search"]
        rows.append({"model": name, "ga_ms": s["winner_ms"], "egglog_ms": s["baselines_ms"]["egglog"],
                     "greedy_ms": s["baselines_ms"]["greedy"], "search_s": s["search_s"], "tuning_s": s["tuning_s"],
                     "rank_corr": s["rank_corr"], "verified": report["verification"]["passed"]})
    return rows, time.perf_counter() - start


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=zoo.names())
    parser.add_argument("--budget", type=float, default=60.0, help="optimize budget per model (s)")
    parser.add_argument("--tuning-trials", type=int, default=0, help="MetaSchedule trials per kernel")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary directory")
    args = parser.parse_args()
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="tsir-bench-cache-"))
    try:
        cold, cold_s = run(args.models, cache_dir, args.budget, args.tuning_trials)
        warm, warm_s = run(args.models, cache_dir, args.budget, args.tuning_trials)
    finally:
        if args.cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    columns = ["model", "ga_ms", "egglog_ms", "greedy_ms", "search_s", "tuning_s", "rank_corr", "verified"]
    print(" ".join(f"{c:>14s}" for c in columns))
    for row in cold:
        print(" ".join(f"{_fmt(row[c]):>14s}" for c in columns))
    not_worse = sum(r["ga_ms"] <= min(r["egglog_ms"], r["greedy_ms"]) for r in cold)
    better = sum(r["ga_ms"] < min(r["egglog_ms"], r["greedy_ms"]) for r in cold)
    print(f"GA <= both baselines on {not_worse}/{len(cold)} models, strictly better on {better}/{len(cold)}")
    print(f"end to end: cold {cold_s:.1f} s, warm {warm_s:.1f} s, {cold_s / warm_s:.1f}x faster warm")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = {"results": cold, "warm_results": warm, "cold_s": round(cold_s, 2), "warm_s": round(warm_s, 2),
            "warm_speedup": round(cold_s / warm_s, 2), "budget_s": args.budget, "tuning_trials": args.tuning_trials,
            "cpu_load_1min": os.getloadavg()[0]}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
