"""One system in its own process: prepare a model, verify it against PyTorch, run timed blocks on request,
and report the process's peak resident memory.

Separate processes keep the systems' thread pools (two OpenMP runtimes, TVM's pool, ONNX Runtime's,
OpenVINO's) from spinning against each other, make each peak memory that system's own, and a system that
crashes cannot take the harness down. A worker lives for the whole run (imports are paid once) and
prepares one (model, batch) after another; the kernel's peak-RSS mark (``VmHWM``) is reset before each.

Memory per row: ``prepare_peak_rss_mb`` over preparing (export, compile, tune), ``peak_rss_mb`` over the
first call, verification and timing, after the torch module was dropped by the systems that do not run it
(both include the process's imports: Python, torch, TVM and tsir in every worker, and the system's runtime;
``base_rss_mb`` is what the process held before preparing: imports, the torch model, its reference outputs).
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing as mp
import os
import time
import traceback
from multiprocessing.connection import Connection

from . import policy
from .prepared import Prepared
from .systems import KEEPS_MODULE, SYSTEMS

VERIFIED = ("verified", "verified-on-host", "within-budget")  # tsir's statuses of a verified result


def _error(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mb() -> float:
    """This process's peak resident memory since the last ``reset_peak`` (VmHWM), in MiB."""
    return _status_mb("VmHWM")


def reset_peak() -> None:
    """Return freed memory to the OS, then set the peak-RSS mark to the current RSS (Linux >= 4.0)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _prepare(system: str, model: str, batch: int, budget_s: float, extra: dict) -> tuple[Prepared | None, dict]:
    from tsir.verify import compare, reference_outputs

    from .cases import load

    info: dict = {}
    start = time.perf_counter()
    try:
        case = load(model, batch)
        reference = reference_outputs(case.module, case.inputs)
        reset_peak()
        info["base_rss_mb"] = _status_mb("VmRSS")  # imports, the torch model and its reference outputs
        prepared = SYSTEMS[system](case, budget_s, **extra)
        info["prepare_s"] = round(time.perf_counter() - start, 2)
        info["prepare_peak_rss_mb"] = peak_rss_mb()
        if system not in KEEPS_MODULE:
            case.module = None
        reset_peak()
        if prepared.first_call_ms is None:
            begin = time.perf_counter()
            prepared.call()
            prepared.first_call_ms = (time.perf_counter() - begin) * 1e3
        info["first_call_ms"] = round(prepared.first_call_ms, 3)
        check = compare(reference, prepared.outputs())
        info.update({"verified": check.passed, "max_abs_err": check.max_abs_error, **prepared.notes})
        if not check.passed:
            info["verification_problem"] = check.problem
        if "tsir_verification" in info:  # tsir also verified itself on fresh inputs while optimizing
            info["verified"] = check.passed and info["tsir_verification"]["status"] in VERIFIED
        if "approx" in info:  # approximate outputs differ by design: its held-out budget is the check
            info["verified"] = info["approx"]["within_budget"]
    except Exception as err:  # a failing system is a result, not a crash
        prepared = None
        info.update({"error": _error(err), "traceback_tail": traceback.format_exc().splitlines()[-3:]})
    info.setdefault("prepare_s", round(time.perf_counter() - start, 2))
    return prepared, info


def serve(conn: Connection, system: str, log: str | None = None) -> None:
    """Worker body: ("prepare", model, batch, budget_s, the system's extra keywords) -> info dict;
    ("block", n) -> ms per call; ("memory",) -> peak RSS in MiB since the prepare's first call; ("stop",).
    With ``log``, everything the process writes to stderr (Python and native) is appended there."""
    if log is not None:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    import torch

    policy.check()
    torch.set_num_threads(policy.threads())
    prepared = None
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "prepare":
            prepared = None
            prepared, info = _prepare(system, *message[1:])
            conn.send(info)
        elif message[0] == "memory":
            conn.send(peak_rss_mb())
        else:
            calls = message[1]
            begin = time.perf_counter()
            for _ in range(calls):
                prepared.call()
            conn.send((time.perf_counter() - begin) * 1e3 / max(calls, 1))


class Worker:
    """The coordinator's handle on one system's process (started again if it died)."""

    def __init__(self, system: str, log: str | os.PathLike | None = None) -> None:
        self.system = system
        self.log = None if log is None else str(log)
        self.process = None
        self.conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, self.system, self.log), daemon=True)
        self.process.start()
        child.close()

    def _ask(self, message: tuple, timeout_s: float):
        self.conn.send(message)
        if not self.conn.poll(timeout_s):
            self.close()
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            code = self.process.exitcode
            self.process = None
            raise RuntimeError(f"the system's process died (exit code {code})") from None

    def prepare(self, model: str, batch: int, budget_s: float, timeout_s: float, **extra) -> dict:
        if self.process is None or not self.process.is_alive():
            self._start()
        return self._ask(("prepare", model, batch, budget_s, extra), timeout_s)

    def sample(self, calls: int) -> float:
        return self._ask(("block", calls), 600)

    def peak_rss_mb(self) -> float:
        return self._ask(("memory",), 60)

    def close(self) -> None:
        if self.process is None:
            return
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.process = None
