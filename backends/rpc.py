"""Measure exported libraries on devices registered with a TVM RPC tracker.

``RpcMeasurer(tracker="host:port", key=...)`` follows the measurer contract: ``measure(libraries,
inputs)`` returns one ``Measurement`` per library, in order. Libraries are spread over every device
with that key in parallel, one tracker session per job, each session bounded by ``timeout_s`` (the
server kills it past that). A job that fails (a candidate that crashes, a timeout, a device that
dies mid-run) goes back in the queue and runs again, on whichever device is free, up to
``retries`` more times; the tracker forgets a dead server, so later jobs no longer go there.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm import relax, rpc

from tsir.backends.measure import Measurement
from tsir.errors import TsirError


def parse_rpc(spec: str) -> tuple[str, int, str]:
    """``"host:port:key"`` -> (host, port, key); a clear error otherwise."""
    parts = spec.rsplit(":", 2) if isinstance(spec, str) else []
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        raise TsirError(f"bad rpc {spec!r}: expected host:port:key of a TVM RPC tracker, e.g. 127.0.0.1:9190:rasp4")
    return parts[0], int(parts[1]), parts[2]


def _parse_tracker(tracker: str) -> tuple[str, int]:
    host, _, port = tracker.rpartition(":")
    if not host or not port.isdigit():
        raise TsirError(f"bad tracker address {tracker!r}: expected host:port, e.g. 127.0.0.1:9190")
    return host, int(port)


@dataclass
class _Job:
    index: int
    library: Path
    attempt: int = 0


class RpcMeasurer:
    """Times ``main`` of exported Relax VM libraries on the tracker's devices with key ``key``."""

    def __init__(
        self, tracker: str, key: str, *, timeout_s: float = 60.0, retries: int = 2, repeat: int = 5,
        number: int = 1, min_repeat_ms: int = 0, device: str = "cpu", max_parallel: int | None = None,
    ) -> None:
        self.host, self.port = _parse_tracker(tracker)
        self.key = key
        self.timeout_s, self.retries = timeout_s, retries
        self.repeat, self.number, self.min_repeat_ms = repeat, number, min_repeat_ms
        self.device, self.max_parallel = device, max_parallel
        self.log: list[str] = []  # one line per failed attempt, for reports and debugging

    def devices(self) -> int:
        """How many servers are registered with ``key`` (free or busy) right now."""
        try:
            tracker = rpc.connect_tracker(self.host, self.port)
        except RuntimeError as err:
            raise TsirError(f"cannot reach the RPC tracker at {self.host}:{self.port}; start it with "
                            f"python -m tvm.exec.rpc_tracker --port {self.port}, or fix the rpc address") from err
        try:
            servers = tracker.summary()["server_info"]
        finally:
            tracker.close()
        return sum(1 for s in servers if s["key"] == f"server:{self.key}")

    def measure(self, libraries: Sequence[Path], inputs: Sequence[np.ndarray]) -> list[Measurement]:
        libraries = [Path(p) for p in libraries]
        missing = [str(p) for p in libraries if not p.is_file()]
        if missing:
            raise TsirError(f"libraries to measure do not exist: {', '.join(missing)}")
        if not libraries:
            return []
        devices = self.devices()
        if devices == 0:
            raise TsirError(f"no device with key {self.key!r} on tracker {self.host}:{self.port}; start one with "
                            f"python -m tvm.exec.rpc_server --tracker {self.host}:{self.port} --key {self.key}")
        jobs: queue.Queue[_Job] = queue.Queue()
        for i, lib in enumerate(libraries):
            jobs.put(_Job(i, lib))
        results: dict[int, Measurement] = {}
        done = threading.Condition()
        workers = min(devices, len(libraries), self.max_parallel or devices)
        stop = threading.Event()
        sessions: list[rpc.client.TrackerSession] = []

        def finish(job: _Job, measurement: Measurement) -> None:
            with done:
                results[job.index] = measurement
                done.notify_all()

        def work() -> None:
            while not stop.is_set():
                try:
                    job = jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    ms = self._run(sessions, job.library, inputs)
                except Exception as err:  # noqa: BLE001 - any failure of a remote run is retried, then reported
                    message = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
                    self.log.append(f"{job.library.name} attempt {job.attempt + 1}: {message}")
                    if job.attempt < self.retries and not stop.is_set():
                        jobs.put(_Job(job.index, job.library, job.attempt + 1))
                    else:
                        finish(job, Measurement(None, message))
                    continue
                finish(job, Measurement(ms, None))

        threads = [threading.Thread(target=work, daemon=True, name=f"rpc-measure-{i}") for i in range(workers)]
        for t in threads:
            t.start()
        # Every job can use all its attempts one after another, plus time to wait for a device.
        budget_s = (self.retries + 1) * self.timeout_s * -(-len(libraries) // workers) + 30
        deadline = time.monotonic() + budget_s
        with done:
            while len(results) < len(libraries) and time.monotonic() < deadline:
                done.wait(timeout=0.5)
        stop.set()
        for session in list(sessions):
            session.close()  # unblocks a worker still waiting on the tracker for a device
        for t in threads:
            t.join(timeout=5)
        return [results.get(i, Measurement(None, f"no result within {budget_s:.0f} s: devices busy or gone"))
                for i in range(len(libraries))]

    def _run(self, sessions: list, library: Path, inputs: Sequence[np.ndarray]) -> float:
        """One attempt: a fresh session from the tracker, upload, load, time ``main``; milliseconds."""
        tracker = rpc.connect_tracker(self.host, self.port)
        sessions.append(tracker)
        try:
            remote = tracker.request(self.key, priority=1, session_timeout=self.timeout_s, max_retry=3)
            name = f"tsir-{uuid.uuid4().hex[:12]}.so"
            remote.upload(str(library), target=name)
            dev = remote.device(self.device, 0)
            vm = relax.VirtualMachine(remote.load_module(name), dev)
            args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
            timer = vm.time_evaluator("main", dev, number=self.number, repeat=self.repeat,
                                      min_repeat_ms=self.min_repeat_ms)
            return statistics.median(timer(*args).results) * 1e3
        finally:
            sessions.remove(tracker)
            tracker.close()


class RemoteCost:
    """Search fitness measured on the RPC devices: a candidate Relax module's median latency in
    seconds (``inf`` when it fails to build or run), cached per structurally equal module.

    ``prefetch(mods)`` builds the modules not timed yet and measures them in one ``measure`` call, so
    a generation's candidates are spread over every device at once; ``cost(mod)`` then reads the cache.
    """

    def __init__(self, measurer: RpcMeasurer, build, inputs: Sequence[np.ndarray], workdir: Path) -> None:
        self.measurer, self.build, self.inputs, self.workdir = measurer, build, list(inputs), Path(workdir)
        self.cache: dict[int, float] = {}
        self.errors: list[str] = []
        self.batches: list[int] = []  # libraries per measure call, for the report

    def prefetch(self, mods: Sequence[tvm.IRModule]) -> None:
        todo: dict[int, Path] = {}
        for mod in mods:
            key = tvm_ffi.structural_hash(mod)
            if key in self.cache or key in todo:
                continue
            library = self.workdir / f"candidate_{len(self.cache) + len(todo)}.so"
            try:
                self.build(mod, library)
            except Exception as err:  # noqa: BLE001 - a candidate that does not build is unfit, not fatal
                self.errors.append(f"build: {err}")
                self.cache[key] = float("inf")
                continue
            todo[key] = library
        if not todo:
            return
        self.batches.append(len(todo))
        for key, result in zip(todo, self.measurer.measure(list(todo.values()), self.inputs), strict=True):
            if result.error:
                self.errors.append(result.error)
            self.cache[key] = float("inf") if result.median_ms is None else result.median_ms / 1e3

    def __call__(self, mod: tvm.IRModule) -> float:
        key = tvm_ffi.structural_hash(mod)
        if key not in self.cache:
            self.prefetch([mod])
        return self.cache[key]
