"""One system in its own process: prepare it, verify it against PyTorch, then run timed blocks on request.

Separate processes keep the systems' thread pools (two OpenMP runtimes, TVM's pool, ONNX Runtime's)
from spinning against each other, and a system that crashes cannot take the harness down.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from multiprocessing.connection import Connection

from bench.systems import SYSTEMS, THREADS


def _error(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300] if text else ''}"


def serve(conn: Connection, system: str, model: str, batch: int, budget_s: float) -> None:
    """Worker body: reply to ("block", n) with the ms per call of n calls, until ("stop",)."""
    import torch

    from tsir import zoo
    from tsir.verify import compare, reference_outputs

    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    try:
        entry = zoo.load(model, batch)
        prepared = SYSTEMS[system](entry, budget_s)
        check = compare(reference_outputs(entry.module, entry.example_inputs), prepared.outputs())
        info = {"verified": check.passed, "max_abs_err": check.max_abs_error, **prepared.notes}
        if "tsir_verification" in info:  # tsir also verified itself on fresh inputs while optimizing
            info["verified"] = check.passed and info["tsir_verification"]["passed"]
    except Exception as err:  # a failing system is a result, not a crash
        conn.send({"error": _error(err), "traceback_tail": traceback.format_exc().splitlines()[-3:],
                   "prepare_s": round(time.perf_counter() - start, 2)})
        return
    conn.send({**info, "prepare_s": round(time.perf_counter() - start, 2)})
    while True:
        message = conn.recv()
        if message[0] == "stop":
            return
        calls = message[1]
        begin = time.perf_counter()
        for _ in range(calls):
            prepared.call()
        conn.send((time.perf_counter() - begin) * 1e3 / max(calls, 1))


class Worker:
    """The coordinator's handle on one system's process."""

    def __init__(self, system: str, model: str, batch: int, budget_s: float, timeout_s: float) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=serve, args=(child, system, model, batch, budget_s), daemon=True)
        self.process.start()
        child.close()
        self.info = self._recv(timeout_s)

    def _recv(self, timeout_s: float):
        if not self.conn.poll(timeout_s):
            self.close()
            raise TimeoutError(f"no answer within {timeout_s:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(5)
            raise RuntimeError(f"the system's process died (exit code {self.process.exitcode})") from None

    def sample(self, calls: int) -> float:
        self.conn.send(("block", calls))
        return self._recv(600)

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
