"""``python -m bench`` (``make bench``): tsir against its peers at their best, on the real suite and the zoo.

Per (model, batch): every system is prepared in its own process (exported, compiled, tuned, optimized),
its first call timed, verified against PyTorch on the example inputs, then timed interleaved with the
others (warm-up, rounds of call blocks; median, p10, p90), all under one thread and wait policy
(``bench.policy``), and its peak resident memory read. A system that fails is recorded with its error.
Writes ``bench/results/latest.json`` (with the machine and its fp32 peak measured in the same run),
``latest.md`` (each row against the best of ONNX Runtime and OpenVINO, geomeans) and ``latest.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from tsir import zoo

from . import cases, policy
from .io import RESULTS_DIR, atomic_write
from .report import chart, markdown
from .systems import DEFAULT, SETTINGS, SYSTEMS
from .timing import interleaved, summary
from .worker import Worker

QUICK_MODELS = ["mlp", "bert"]


def machine(peak_repeat: int = 30) -> dict:
    """The CPU, LLVM's name for it, the policy, versions, and the fp32 peak (oneDNN sgemm) measured now."""
    import onnxruntime
    import openvino
    import tvm

    from tsir.backends import targets

    from .ops import PEAK_SHAPE, peak_gflops

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
    return {"cpu": cpu, "llvm_mcpu": targets.host_cpu(), "logical_cpus": os.cpu_count(), "threads": policy.threads(),
            "policy": policy.apply(), "peak_gflops": round(peak_gflops(targets.resolve("x86"), peak_repeat), 1),
            "peak_shape": "x".join(map(str, PEAK_SHAPE)), "load_average_start": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__, "tvm": tvm.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__, "commit": commit,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_model(name: str, batch: int, workers: dict[str, Worker], args: argparse.Namespace) -> list[dict]:
    """Prepare, verify and time every system on one (model, batch); one result row per system."""
    rows: dict[str, dict] = {}
    ready: dict[str, Worker] = {}
    for system, worker in workers.items():
        row = rows[system] = {"model": name, "batch": batch, "system": system, "median_ms": None, "p10_ms": None,
                              "p90_ms": None, "first_call_ms": None, "peak_rss_mb": None, "verified": None,
                              "max_abs_err": None, "error": None}
        try:
            row.update(worker.prepare(name, batch, args.budget_s, timeout_s=args.prepare_timeout_s))
        except (RuntimeError, TimeoutError) as err:
            row["error"] = f"while preparing: {err}"
        if row["error"] is None:
            ready[system] = worker
    samples, errors = interleaved({s: w.sample for s, w in ready.items()}, warmup=args.warmup,
                                  rounds=args.rounds, block_ms=args.block_ms, cap_s=args.cap_s, pause_ms=args.pause_ms)
    for system, values in samples.items():
        rows[system].update(summary(values))
    for system, error in errors.items():
        rows[system]["error"] = error
    for system, worker in ready.items():
        try:
            rows[system]["peak_rss_mb"] = worker.peak_rss_mb()
        except (RuntimeError, TimeoutError) as err:
            rows[system]["error"] = rows[system]["error"] or f"while reading memory: {err}"
    return list(rows.values())


def _progress(name: str, batch: int, rows: list[dict], seconds: float) -> str:
    cells = [f"{r['system']} {r['median_ms']:.3f}" if r["median_ms"] is not None else f"{r['system']} FAIL"
             for r in rows]
    return f"{name:16s} b{batch:<3d} {'  '.join(cells)}  ({seconds:.0f} s)"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None,
                        help="zoo or suite models (default: the --suite set and --zoo models)")
    parser.add_argument("--suite", default="default", choices=["default", "ci", "all", "none"],
                        help=f"suite models: default {cases.DEFAULT_SUITE}, ci (all CI-sized), all (also real size)")
    parser.add_argument("--zoo", nargs="*", default=None, help=f"zoo models (default: {cases.DEFAULT_ZOO})")
    parser.add_argument("--batches", nargs="*", type=int, default=None, help="batch sizes (default: 1 8)")
    parser.add_argument("--systems", nargs="*", default=DEFAULT, choices=list(SYSTEMS))
    parser.add_argument("--budget-s", type=float, default=15.0, help="tsir optimize budget per model and batch")
    parser.add_argument("--rounds", type=int, default=10, help="timed samples per system")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block-ms", type=float, default=20.0, help="length of one timed block of calls")
    parser.add_argument("--cap-s", type=float, default=4.0, help="stop sampling a slow system after this (>= 3)")
    parser.add_argument("--pause-ms", type=float, default=50.0,
                        help="idle time before each block, so that the last system's spinning threads go to sleep")
    parser.add_argument("--prepare-timeout-s", type=float, default=300,
                        help="per system, model and batch (preparing, first call and verification)")
    parser.add_argument("--quick", action="store_true", help=f"smoke: {QUICK_MODELS}, batch 1, 5 rounds, 5 s budget")
    parser.add_argument("--out", default=str(RESULTS_DIR / "latest"), help="path stem of .json/.md/.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = args.models or QUICK_MODELS
        args.batches, args.rounds, args.budget_s = args.batches or [1], 5, 5.0
    if args.models is None:
        args.models = cases.names(args.suite) + (cases.DEFAULT_ZOO if args.zoo is None else args.zoo)
    args.batches = args.batches or [1, 8]
    unknown = [m for m in args.models if not cases.known(m)]
    if unknown:
        parser.error(f"unknown models {unknown}; valid: zoo {', '.join(zoo.names())}; suite "
                     f"{', '.join(cases.names('all'))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(policy.threads())
    config = {k: v for k, v in vars(args).items() if k != "out"}
    doc = {"machine": machine(), "config": config, "systems": {s: SETTINGS.get(s, {}) for s in args.systems},
           "results": []}
    print(f"{doc['machine']['cpu']} ({doc['machine']['llvm_mcpu']}), {doc['machine']['threads']} threads, "
          f"fp32 peak {doc['machine']['peak_gflops']} GFLOP/s; {len(args.models)} models x batches {args.batches} "
          f"x {len(args.systems)} systems", flush=True)
    workers = {system: Worker(system) for system in args.systems}
    try:
        for i, name in enumerate(args.models):
            for batch in args.batches:
                start = time.perf_counter()
                rows = run_model(name, batch, workers, args)
                doc["results"] += rows
                print(f"[{i + 1}/{len(args.models)}] {_progress(name, batch, rows, time.perf_counter() - start)}",
                      flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    doc["machine"]["load_average_end"] = os.getloadavg()
    stem = os.path.abspath(args.out)
    atomic_write(Path(stem + ".json"), json.dumps(doc, indent=2, default=str))
    table = markdown(doc)
    atomic_write(Path(stem + ".md"), table)
    atomic_write(Path(stem + ".png"), chart(doc))
    print(table)
    print(f"wrote {stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
