"""A TVM RPC device farm on 127.0.0.1: one tracker and ``n`` servers, the host CPU standing in for
boards. For tests, the docs, and trying ``--rpc`` without hardware; every process is stopped on exit.

    with LoopbackFarm(servers=2, key="loop") as farm:
        RpcMeasurer(farm.tracker, "loop").measure(...)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from tvm import rpc

from tsir.errors import TsirError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackFarm:
    """Context manager: tracker + ``servers`` RPC servers on loopback with key ``key``."""

    def __init__(self, servers: int = 2, key: str = "loop", start_timeout_s: float = 60.0) -> None:
        self.key, self.count, self.start_timeout_s = key, servers, start_timeout_s
        self.port = free_port()
        self.tracker = f"127.0.0.1:{self.port}"
        self.tracker_proc: subprocess.Popen | None = None
        self.servers: list[subprocess.Popen] = []

    def _spawn(self, *args: str) -> subprocess.Popen:
        # Own process group, so that stopping a server also stops the worker process it forks.
        return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)

    def __enter__(self) -> LoopbackFarm:
        try:
            # All at once: starting Python + TVM is most of the wait, and a server that finds no tracker
            # yet retries on its own.
            self.tracker_proc = self._spawn("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                                            "--port-end", str(self.port + 1), "--silent")
            for _ in range(self.count):
                self.add_server()
            self._wait(lambda: self._registered() >= self.count, f"{self.count} servers to register")
        except BaseException:
            self.__exit__()
            raise
        return self

    def add_server(self) -> subprocess.Popen:
        port = free_port()
        proc = self._spawn("tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port), "--port-end",
                           str(port + 1), "--tracker", self.tracker, "--key", self.key, "--silent")
        self.servers.append(proc)
        return proc

    def kill_server(self, index: int) -> None:
        """Kill server ``index`` and everything it started, as a board losing power would."""
        _killpg(self.servers[index], signal.SIGKILL)

    def _registered(self) -> int:
        """Servers registered with our key, or -1 while the tracker does not answer yet."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            tracker = rpc.connect_tracker("127.0.0.1", self.port)
        except (OSError, RuntimeError):
            return -1
        try:
            return sum(1 for s in tracker.summary()["server_info"] if s["key"] == f"server:{self.key}")
        finally:
            tracker.close()

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while not ready():
            if time.monotonic() > deadline:
                raise TsirError(f"loopback RPC farm: timed out after {self.start_timeout_s:g} s waiting for {what}")
            time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        for proc in [*self.servers, self.tracker_proc]:
            if proc is not None:
                _killpg(proc, signal.SIGTERM)
        for proc in [*self.servers, self.tracker_proc]:
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _killpg(proc, signal.SIGKILL)
                    proc.wait(timeout=10)


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
