"""One system in its own process: prepare a model, verify it against PyTorch, run timed blocks on request.

Separate processes keep the systems' thread pools (two OpenMP runtimes, TVM's pool, ONNX Runtime's)
from spinning against each other, and a system that crashes cannot take the harness down. A worker
lives for the whole run (imports are paid once) and prepares one (model, batch) after another.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from multiprocessing.connection import Connection

from .systems import SYSTEMS, THREADS, Prepared

VERIFIED = ("verified", "verified-on-host", "within-budget")  # tsir's statuses of a verified result


def _error(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


def _prepare(system: str, model: str, batch: int, budget_s: float) -> tuple[Prepared | None, dict]:
    from tsir import zoo
    from tsir.verify import compare, reference_outputs

    start = time.perf_counter()
    try:
        entry = zoo.load(model, batch)
        prepared = SYSTEMS[system](entry, budget_s)
        check = compare(reference_outputs(entry.module, entry.example_inputs), prepared.outputs())
        info = {"verified": check.passed, "max_abs_err": check.max_abs_error, **prepared.notes}
        if not check.passed:
            info["verification_problem"] = check.problem
        if "tsir_verification" in info:  # tsir also verified itself on fresh inputs while optimizing
            info["verified"] = check.passed and info["tsir_verification"]["status"] in VERIFIED
        if "approx" in info:  # approximate outputs differ by design: its held-out budget is the check
            info["verified"] = info["approx"]["within_budget"]
    except Exception as err:  # a failing system is a result, not a crash
        prepared, info = None, {"error": _error(err), "traceback_tail": traceback.format_exc().splitlines()[-3:]}
    return prepared, {**info, "prepare_s": round(time.perf_counter() - start, 2)}


def serve(conn: Connection, system: str) -> None:
    """Worker body: ("prepare", model, batch, budget_s) -> info dict; ("block", n) -> ms per call; ("stop",)."""
    import torch

    torch.set_num_threads(THREADS)
    prepared = None
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        if message[0] == "prepare":
            prepared = None
            prepared, info = _prepare(system, *message[1:])
            conn.send(info)
            continue
        calls = message[1]
        begin = time.perf_counter()
        for _ in range(calls):
            prepared.call()
        conn.send((time.perf_counter() - begin) * 1e3 / max(calls, 1))


class Worker:
    """The coordinator's handle on one system's process (started again if it died)."""

    def __init__(self, system: str) -> None:
        self.system = system
        self.process = None
        self.conn = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, self.system), daemon=True)
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

    def prepare(self, model: str, batch: int, budget_s: float, timeout_s: float) -> dict:
        if self.process is None or not self.process.is_alive():
            self._start()
        return self._ask(("prepare", model, batch, budget_s), timeout_s)

    def sample(self, calls: int) -> float:
        return self._ask(("block", calls), 600)

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
