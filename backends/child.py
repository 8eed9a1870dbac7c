"""Crash isolation: run work items in a child process, one JSON line of result per item.

A ``Worker`` keeps one child (``python -m tsir.backends.child``) alive across batches: each batch is pickled
to a file whose name the child reads on its stdin; the child calls ``JOBS[job](item, context)`` for
each item and appends its result to the batch's output as one JSON line. When the child dies
(segfault, abort) or an item runs past ``timeout_s``, the parent kills it, scores that item as failed
with the reason, and starts a new child for the items left. Exceptions inside an item are caught in
the child and scored as errors. Nothing the child does can take the parent down.
With a ``deadline`` (a ``time.monotonic()`` value), the child finishes the item it is on when the
deadline passes and the items not begun get ``{"skipped": "budget"}`` (not a failure: never run).
``run_isolated(job, items)`` runs one batch in a worker of its own.
"""

from __future__ import annotations

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
JOBS = {"kernel": "time_kernel", "library": "time_library", "tune": "tune_kernel"}
STARTUP_TIMEOUT_S = 300.0  # importing TVM in the child, on a loaded machine


def run_isolated(job: str, items: Sequence, context: object = None, timeout_s: float = 60.0,
                 deadline: float | None = None) -> list[dict]:
    """Results of ``job`` on each item, in order; a failed item gives ``{"error": reason}``."""
    with Worker(timeout_s) as worker:
        return worker.run(job, items, context, deadline)


class Worker:
    """One child process reused by successive ``run`` calls; restarted after a crash, a hang or a deadline."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._tmp = tempfile.TemporaryDirectory(prefix="tsir-child-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen | None = None
        self.batches = 0
        self.starts = 0
        self.started_at = 0.0

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._kill()
        self._tmp.cleanup()

    def run(self, job: str, items: Sequence, context: object = None, deadline: float | None = None,
            hard: bool = False, timeout_s: float | None = None) -> list[dict]:
        """Results of ``job`` on ``items``; ``hard``: at the deadline the child is killed, not let finish its item;
        ``timeout_s`` replaces the worker's per-item timeout for this call."""
        if job not in JOBS:
            raise ValueError(f"unknown child job {job!r}; known: {sorted(JOBS)}")
        if timeout_s is not None:
            saved, self.timeout_s = self.timeout_s, timeout_s
            try:
                return self.run(job, items, context, deadline, hard)
            finally:
                self.timeout_s = saved
        results: list[dict] = []
        while len(results) < len(items):
            if deadline is not None and time.monotonic() >= deadline:
                return results + [{"skipped": "budget"}] * (len(items) - len(results))
            results.extend(self._batch(job, list(items[len(results):]), context, deadline, hard))
        return results

    def _start(self) -> None:
        self.starts += 1
        self.started_at = time.monotonic()
        ready = self.dir / "ready"
        ready.unlink(missing_ok=True)
        with open(self.dir / "stderr.txt", "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", __name__, str(self.dir)], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, text=True)

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def _batch(self, job: str, items: list, context: object, deadline: float | None, hard: bool) -> list[dict]:
        """Run ``items`` until they are done or the child fails; the results produced (+ the failure)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.batches += 1
        name = f"batch{self.batches}"
        job_file, out_file = self.dir / f"{name}.pkl", self.dir / f"{name}.jsonl"
        job_file.write_bytes(pickle.dumps((job, items, context)))
        out_file.write_text("")
        try:
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # the child is gone: found below
        ready = self.dir / "ready"
        done, last = 0, time.monotonic()
        while True:
            status = self.proc.poll()
            lines = _complete_lines(out_file)
            if len(lines) > done:
                done, last = len(lines), time.monotonic()
            if done == len(items):
                return lines
            if status is not None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                if hard:
                    self._kill()
                    return lines  # the caller marks the rest skipped
                (self.dir / f"{name}.stop").touch()  # the child skips the items it has not begun
            now = time.monotonic()
            if not ready.exists():  # still importing: an item's clock starts when the child is ready
                last = now
                if now - self.started_at > max(self.timeout_s, STARTUP_TIMEOUT_S):
                    self._kill()
                    return [*lines, {"error": "child did not start in time"}]
            elif now - last > self.timeout_s:
                self._kill()
                return [*lines, {"error": f"timed out after {self.timeout_s:g} s"}]
            time.sleep(0.01)
        lines = _complete_lines(out_file)
        if len(lines) == len(items):
            return lines
        stderr = (self.dir / "stderr.txt").read_text(errors="replace").strip().splitlines()
        reason = f"killed by signal {-status}" if status and status < 0 else f"exited with status {status}"
        tail = f": {stderr[-1]}" if stderr else ""
        self.proc = None
        return [*lines, {"error": f"child process {reason}{tail}"}]

def _complete_lines(path: Path) -> list[dict]:
    text = path.read_text()
    return [json.loads(line) for line in text.split("\n")[:-1]] if text else []


def _load_library_kernels() -> None:
    """Load the oneDNN extension when it is built, so programs and kernels that call ``tsir.dnnl.*`` run here."""
    from tsir.backends.dnnl import library_path

    path = library_path()
    if path.is_file():
        import ctypes

        import tvm_ffi  # noqa: F401  (the extension links libtvm_ffi: load it first)

        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)


def main(work_dir: str) -> None:
    from tsir.backends import jobs  # here, not at the top: the parent never needs TVM's build stack for it

    _load_library_kernels()
    Path(work_dir, "ready").touch()
    for line in sys.stdin:
        name = line.strip()
        job, items, context = pickle.loads(Path(work_dir, f"{name}.pkl").read_bytes())
        fn = getattr(jobs, JOBS[job])
        with open(Path(work_dir, f"{name}.jsonl"), "a") as out:
            for item in items:
                if Path(work_dir, f"{name}.stop").exists():
                    out.write(json.dumps({"skipped": "budget"}) + "\n")
                    out.flush()
                    continue
                try:
                    result = fn(item, context)
                except Exception as err:  # scored as a failed item; the child goes on with the next
                    result = {"error": f"{type(err).__name__}: {err}".splitlines()[0][:500]}
                out.write(json.dumps(result) + "\n")
                out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
