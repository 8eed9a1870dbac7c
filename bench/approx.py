"""Approximate mode on the real models: ``python -m bench.approx [digits] [minilm]`` (``make bench-approx``).

Writes ``bench/results/approx.json`` as ``{"results": [{"model", "speedup", "size_ratio", "metric",
"original", "optimized", "heldout": true, ...}]}`` with the goals (>= 2.5x faster than the fp32 model
built by TVM with the same kernels, >= 4x smaller, <= 0.5 points top-1 loss / >= 0.99 mean cosine) and
whether each is met (``speedup_same_kernels``: over the exact fp32 program with the same kernels),
plus ``bench/results/approx/MODEL/`` with report.json, report.md and the Pareto PNG.
"""

from __future__ import annotations

import argparse
import json

import tsir
from tsir.approx.real import REAL

from .io import RESULTS_DIR, atomic_write

GOALS = {"speedup": 2.5, "size_ratio": 4.0}
METRIC_GOAL = {"digits": ("max_drop", 0.005), "minilm": ("min_optimized", 0.99)}


def run(name: str, budget_s: float) -> dict:
    model, inputs, budget = REAL[name]()
    result = tsir.optimize(model, inputs, mode="approx", accuracy=budget, budget_s=budget_s, model_name=name,
                           out_dir=RESULTS_DIR / "approx" / name)
    report = result.report
    held, lat, size = report["approx"]["heldout"], report["latency_ms"], report["size_bytes"]
    row = {"model": name, "speedup": lat["original"] / lat["optimized"],
           "size_ratio": size["original"] / size["optimized"], "metric": budget.name,
           "original": held["original"], "optimized": held["optimized"], "heldout": True,
           "latency_ms": lat, "size_bytes": size, "speedup_same_kernels": _same_kernels(report["approx"]),
           "layers": report["approx"]["layers"],
           "pareto_png": str((RESULTS_DIR / "approx" / name / "pareto.png").relative_to(RESULTS_DIR))}
    kind, bound = METRIC_GOAL[name]
    metric_met = (held["original"] - held["optimized"] <= bound) if kind == "max_drop" else held["optimized"] >= bound
    row["goals_met"] = {**{k: row[k] >= v for k, v in GOALS.items()}, "metric": metric_met}
    return row


def _same_kernels(approx: dict) -> float | None:
    """The exact fp32 program (same kernel sources, oneDNN included) over the pick, both timed by the
    approximate search on this machine; None when the candidates were not timed."""
    exact, picked = approx.get("exact_measured_ms"), approx.get("picked_measured_ms")
    return exact / picked if exact and picked else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.approx", description=__doc__.splitlines()[0])
    # no choices=: with nargs="*", Python 3.11's argparse checks the whole (default or empty) list against them
    parser.add_argument("models", nargs="*", help=f"any of {', '.join(REAL)} (default: all)")
    parser.add_argument("--budget", type=float, default=30.0, help="tsir search budget per model, seconds")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(REAL))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(REAL)}")
    rows = [run(name, args.budget) for name in args.models or list(REAL)]
    path = atomic_write(RESULTS_DIR / "approx.json", json.dumps({"results": rows}, indent=2))
    for r in rows:
        print(f"{r['model']}: {r['speedup']:.2f}x faster, {r['size_ratio']:.2f}x smaller, {r['metric']} "
              f"{r['original']:.4f} -> {r['optimized']:.4f} (held-out); goals met: {r['goals_met']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
