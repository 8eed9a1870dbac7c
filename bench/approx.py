"""Approximate mode on the real models against the int8 tools a user would pick instead:
``python -m bench.approx [digits] [minilm]`` (``make bench-approx``).

Per model: tsir's approximate mode (in this process, its library written to ``bench/results/approx/MODEL/``
with report.json, report.md and the Pareto PNG), then that library, ONNX Runtime's int8 and OpenVINO's
int8 (``bench.int8_peers``, quantized with the same calibration data) each in its own worker process,
scored on the same held-out data, timed interleaved under one thread policy, with each one's artifact
bytes and peak resident memory while it runs.

Writes ``bench/results/approx.json``: per model the tsir row (speed-up and size ratio over the original
fp32 model, ``speedup_same_kernels`` over the exact fp32 program with the same kernels, the goals: >= 2.5x
faster, >= 4x smaller, <= 0.5 points top-1 loss / >= 0.99 mean cosine), one row per system (``systems``),
and tsir against each peer (``vs_peers``: the peer's ms over tsir's, held-out metric difference, the
peer's artifact and memory over tsir's).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

import tsir
from tsir.approx.real import REAL
from tsir.verify import reference_outputs

from . import policy
from .int8_peers import write_data
from .io import RESULTS_DIR, atomic_write
from .timing import interleaved, summary
from .worker import Worker

GOALS = {"speedup": 2.5, "size_ratio": 4.0}
METRIC_GOAL = {"digits": ("max_drop", 0.005), "minilm": ("min_optimized", 0.99)}
PEERS = ["onnxruntime_int8", "openvino_int8"]
TIMING = {"warmup": 3, "rounds": 10, "block_ms": 50.0, "cap_s": 4.0, "pause_ms": 50.0}


def run(name: str, budget_s: float, peers: list[str]) -> dict:
    model, inputs, budget = REAL[name]()
    out_dir = RESULTS_DIR / "approx" / name
    result = tsir.optimize(model, inputs, mode="approx", accuracy=budget, budget_s=budget_s, model_name=name,
                           out_dir=out_dir)
    report = result.report
    held, lat, size = report["approx"]["heldout"], report["latency_ms"], report["size_bytes"]
    row = {"model": name, "speedup": lat["original"] / lat["optimized"],
           "size_ratio": size["original"] / size["optimized"], "metric": budget.name,
           "original": held["original"], "optimized": held["optimized"], "heldout": True,
           "latency_ms": lat, "size_bytes": size, "speedup_same_kernels": _same_kernels(report["approx"]),
           "layers": report["approx"]["layers"],
           "pareto_png": str((out_dir / "pareto.png").relative_to(RESULTS_DIR))}
    kind, bound = METRIC_GOAL[name]
    metric_met = (held["original"] - held["optimized"] <= bound) if kind == "max_drop" else held["optimized"] >= bound
    row["goals_met"] = {**{k: row[k] >= v for k, v in GOALS.items()}, "metric": metric_met}
    tsir_row = {"approx": {"metric": budget.name, "original": held["original"], "optimized": held["optimized"],
                           "within_budget": held["within_budget"]},
                "artifact_bytes": (out_dir / "model.so").stat().st_size}
    with tempfile.TemporaryDirectory(prefix="tsir-bench-approx-") as tmp:
        data = write_data(Path(tmp) / "data.npz", budget, _reference(model, budget.data.heldout, len(inputs[0])))
        row["systems"] = _systems(name, len(inputs[0]), budget_s, peers, out_dir / "model.so", data, tsir_row)
    row["vs_peers"] = _versus(row["systems"])
    return row


def _reference(model: torch.nn.Module, heldout: list[np.ndarray], batch: int) -> np.ndarray:
    """The original model's first output on the held-out inputs, ``batch`` examples at a time."""
    chunks = [tuple(torch.from_numpy(np.ascontiguousarray(a[i:i + batch])) for a in heldout)
              for i in range(0, len(heldout[0]), batch)]
    return np.concatenate([reference_outputs(model, chunk)[0] for chunk in chunks])


def _systems(name: str, batch: int, budget_s: float, peers: list[str], library: Path, data: Path,
             tsir_row: dict) -> dict[str, dict]:
    """tsir's library and each peer, each in its own worker: prepared, timed interleaved, memory read."""
    extra = {"tsir_approx": ("tsir_library", {"library": str(library)}),
             **{p: (p, {"data": str(data)}) for p in peers}}
    workers = {label: Worker(system) for label, (system, _) in extra.items()}
    rows: dict[str, dict] = {}
    try:
        for label, worker in workers.items():
            try:
                rows[label] = worker.prepare(name, batch, budget_s, timeout_s=600, **extra[label][1])
            except (RuntimeError, TimeoutError) as err:
                rows[label] = {"error": f"while preparing: {err}"}
        rows["tsir_approx"].update(tsir_row)  # its held-out check is tsir's own, on the same data
        ready = {label: w for label, w in workers.items() if not rows[label].get("error")}
        samples, errors = interleaved({label: w.sample for label, w in ready.items()}, **TIMING)
        for label, values in samples.items():
            rows[label].update(summary(values))
            rows[label]["peak_rss_mb"] = ready[label].peak_rss_mb()
        for label, error in errors.items():
            rows[label]["error"] = error
    finally:
        for worker in workers.values():
            worker.close()
    for r in rows.values():  # approximate outputs are checked by the held-out budget, not fp32 tolerance
        r["verified"] = bool(r.get("approx", {}).get("within_budget")) and not r.get("error")
    return rows


def _versus(systems: dict[str, dict]) -> dict[str, dict]:
    """tsir against each verified peer: speed (peer ms / tsir ms), held-out metric difference, artifact and
    memory ratios (peer / tsir); empty where either failed or went over its budget."""
    mine = systems["tsir_approx"]
    if not mine["verified"] or "median_ms" not in mine:
        return {}
    out = {}
    for label, peer in systems.items():
        if label == "tsir_approx" or not peer["verified"] or "median_ms" not in peer:
            continue
        out[label] = {"speed_ratio": peer["median_ms"] / mine["median_ms"],
                      "metric_difference": mine["approx"]["optimized"] - peer["approx"]["optimized"],
                      "artifact_ratio": peer["artifact_bytes"] / mine["artifact_bytes"],
                      "memory_ratio": peer["peak_rss_mb"] / mine["peak_rss_mb"]}
    return out


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
    parser.add_argument("--peers", nargs="*", default=PEERS, help=f"int8 peers to run (default: {' '.join(PEERS)})")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.models) - set(REAL)) + sorted(set(args.peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown model(s) or peer(s) {', '.join(unknown)}: models {', '.join(REAL)}; peers "
                     f"{', '.join(PEERS)}")
    torch.set_num_threads(policy.threads())
    rows = [run(name, args.budget, args.peers) for name in args.models or list(REAL)]
    path = atomic_write(RESULTS_DIR / "approx.json", json.dumps({"policy": policy.apply(), "results": rows},
                                                                indent=2, default=str))
    for r in rows:
        print(f"{r['model']}: {r['speedup']:.2f}x faster, {r['size_ratio']:.2f}x smaller, {r['metric']} "
              f"{r['original']:.4f} -> {r['optimized']:.4f} (held-out); goals met: {r['goals_met']}")
        for label, s in r["systems"].items():
            held = s.get("approx", {})
            print(f"  {label:18s} " + (f"{s['median_ms']:.3f} ms, {s['artifact_bytes'] / 1e6:.2f} MB, "
                                       f"{s['peak_rss_mb']:.0f} MiB, {held.get('metric')} {held.get('optimized'):.4f}"
                                       f"{'' if s['verified'] else ' (outside budget)'}"
                                       if "median_ms" in s else f"FAILED: {s.get('error')}"))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
