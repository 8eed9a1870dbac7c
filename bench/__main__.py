"""``python -m bench`` (``make bench``): the zoo at batch 1 and 16 under every system, in one run.

Per (model, batch): every system is prepared in its own process (exported, compiled, optimized),
verified against PyTorch on the example inputs, then timed interleaved with the others (warm-up, rounds
of call blocks; median, p10, p90), all on 2 threads. A system that fails is recorded with its error. Writes
``bench/results/latest.json``, ``latest.md`` (ratios to tsir_exact, geomeans) and ``latest.png``.
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

from .io import RESULTS_DIR, atomic_write
from .report import chart, markdown
from .systems import SYSTEMS, THREADS
from .timing import interleaved, summary
from .worker import Worker

QUICK_MODELS = ["mlp", "lenet"]


def machine() -> dict:
    import onnxruntime
    import tvm

    from tsir.backends.targets import host_cpu

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=os.path.dirname(__file__)).stdout.strip()
    return {"cpu": cpu, "llvm_mcpu": host_cpu(), "logical_cpus": os.cpu_count(), "threads": THREADS,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (GNU OpenMP default: spin, then sleep)"),
            "tvm_thread_pool_spin_count": os.environ.get("TVM_THREAD_POOL_SPIN_COUNT", "unset (TVM default)"),
            "load_average_start": os.getloadavg(), "python": platform.python_version(), "torch": torch.__version__,
            "tvm": tvm.__version__, "onnxruntime": onnxruntime.__version__, "commit": commit,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_model(name: str, batch: int, workers: dict[str, Worker], args: argparse.Namespace) -> list[dict]:
    """Prepare, verify and time every system on one (model, batch); one result row per system."""
    rows: dict[str, dict] = {}
    ready: dict[str, Worker] = {}
    for system, worker in workers.items():
        row = rows[system] = {"model": name, "batch": batch, "system": system, "median_ms": None, "p10_ms": None,
                              "p90_ms": None, "verified": None, "max_abs_err": None, "error": None}
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
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help=f"zoo models (default: all of {zoo.names()})")
    parser.add_argument("--batches", nargs="*", type=int, default=None, help="batch sizes (default: 1 16)")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--budget-s", type=float, default=20.0, help="tsir optimize budget per model and batch")
    parser.add_argument("--rounds", type=int, default=15, help="timed samples per system")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--block-ms", type=float, default=20.0, help="length of one timed block of calls")
    parser.add_argument("--cap-s", type=float, default=6.0, help="stop sampling a slow system after this (>= 3)")
    parser.add_argument("--pause-ms", type=float, default=50.0,
                        help="idle time before each block, so that the last system's spinning threads go to sleep")
    parser.add_argument("--prepare-timeout-s", type=float, default=600, help="per system, model and batch")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS}, batch 1, 5 rounds, 5 s budget")
    parser.add_argument("--out", default=str(RESULTS_DIR / "latest"), help="path stem of .json/.md/.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.models = args.models or QUICK_MODELS
        args.batches, args.rounds, args.budget_s = args.batches or [1], 5, 5.0
    args.batches = args.batches or [1, 16]
    unknown = [m for m in args.models or [] if m not in zoo.names()]
    if unknown:
        parser.error(f"unknown zoo models {unknown}; valid: {', '.join(zoo.names())}")
    torch.set_num_threads(THREADS)
    doc = {"machine": machine(), "config": {k: v for k, v in vars(args).items() if k != "out"}, "results": []}
    workers = {system: Worker(system) for system in args.systems}
    try:
        for name in args.models or zoo.names():
            for batch in args.batches:
                start = time.perf_counter()
                doc["results"] += run_model(name, batch, workers, args)
                line = "  ".join(f"{r['system']} {r['median_ms']:.3f}" if r["median_ms"] is not None
                                 else f"{r['system']} FAIL" for r in doc["results"][-len(workers):])
                print(f"{name:16s} b{batch:<3d} {line}  ({time.perf_counter() - start:.0f} s)", flush=True)
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
