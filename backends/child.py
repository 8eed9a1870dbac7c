"""Crash isolation: run work items in a child process, one JSON line of result per item.

``run_isolated(job, items)`` pickles the items to a child (this file run as a script) that
calls ``JOBS[job](item, context)`` for each and appends its result as one JSON line. When the child
dies (segfault, abort) or an item runs past ``timeout_s``, the parent kills it, scores that item as
failed with the reason, and starts a new child for the items left. Exceptions inside an item are
caught in the child and scored as errors. Nothing the child does can take the parent down.
With a ``deadline`` (a ``time.monotonic()`` value), the child is stopped when it passes and the items
not done get ``{"skipped": "budget"}`` (not a failure: they were never run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# job name -> function of backends/jobs.py, called as fn(item, context) -> JSON-able dict
JOBS = {"kernel": "time_kernel", "library": "time_library"}
STARTUP_TIMEOUT_S = 300.0  # importing TVM in the child, on a loaded machine


def run_isolated(job: str, items: Sequence, context: object = None, timeout_s: float = 60.0,
                 deadline: float | None = None) -> list[dict]:
    """Results of ``job`` on each item, in order; a failed item gives ``{"error": reason}``."""
    if job not in JOBS:
        raise ValueError(f"unknown child job {job!r}; known: {sorted(JOBS)}")
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="tsir-child-") as tmp:
        while len(results) < len(items):
            if deadline is not None and time.monotonic() >= deadline:
                return results + [{"skipped": "budget"}] * (len(items) - len(results))
            results.extend(_one_child(job, list(items[len(results):]), context, timeout_s, Path(tmp), deadline))
    return results


def _one_child(job: str, items: list, context: object, timeout_s: float, tmp: Path,
               deadline: float | None = None) -> list[dict]:
    """Run a child on ``items`` until it finishes or fails; return the results it produced (+ the failure)."""
    job_file, out_file = tmp / "job.pkl", tmp / "out.jsonl"
    job_file.write_bytes(pickle.dumps((job, items, context)))
    out_file.write_text("")
    with open(tmp / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, __file__, str(job_file), str(out_file)],
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    ready = Path(f"{out_file}.ready")
    ready.unlink(missing_ok=True)
    done, last, started = 0, time.monotonic(), False
    while True:
        status = proc.poll()
        lines = _complete_lines(out_file)
        if len(lines) > done:
            done, last = len(lines), time.monotonic()
        elif done == 0 and ready.exists() and not started:
            started, last = True, time.monotonic()
        if status is not None or done == len(items):
            break
        if deadline is not None and time.monotonic() >= deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return _complete_lines(out_file)  # the caller marks the rest skipped
        if time.monotonic() - last > (timeout_s if ready.exists() else max(timeout_s, STARTUP_TIMEOUT_S)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reason = f"timed out after {timeout_s:g} s" if ready.exists() else "child did not start in time"
            return [*lines, {"error": reason}]
        time.sleep(0.02)
    if status is None:
        proc.wait()
    lines = _complete_lines(out_file)
    if len(lines) == len(items):
        return lines
    stderr = (tmp / "stderr.txt").read_text(errors="replace").strip().splitlines()
    reason = f"killed by signal {-status}" if status and status < 0 else f"exited with status {status}"
    tail = f": {stderr[-1]}" if stderr else ""
    return [*lines, {"error": f"child process {reason}{tail}"}]


def _complete_lines(path: Path) -> list[dict]:
    text = path.read_text()
    return [json.loads(line) for line in text.split("\n")[:-1]] if text else []


def _load_library_kernels() -> None:
    """Load the oneDNN extension when it is built, so programs and kernels that call ``tsir.dnnl.*`` run here."""
    path = Path(os.environ.get("TSIR_DNNL_LIB", Path(__file__).resolve().parent.parent / "build" / "native" / "host"
                               / "lib" / "libtsir_dnnl.so"))
    if path.is_file():
        import ctypes

        import tvm_ffi  # noqa: F401  (the extension links libtvm_ffi: load it first)

        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def main(job_file: str, out_file: str) -> None:
    job, items, context = pickle.loads(Path(job_file).read_bytes())
    _load_library_kernels()
    spec = importlib.util.spec_from_file_location("tsir_child_jobs", Path(__file__).with_name("jobs.py"))
    jobs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jobs)
    fn = getattr(jobs, JOBS[job])
    Path(f"{out_file}.ready").touch()
    with open(out_file, "a") as out:
        for item in items:
            try:
                result = fn(item, context)
            except Exception as err:  # scored as a failed item; the child goes on with the next
                result = {"error": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
