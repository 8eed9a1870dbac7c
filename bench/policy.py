"""The thread and wait policy every benchmarked system runs under, decided once per run.

The first process that imports ``bench`` decides (``apply``) and writes the choice into its environment;
the workers it spawns inherit that environment before they load any runtime, so every system gets the
same thread count and the same way of waiting, and a worker never decides again (``TSIR_BENCH_POLICY``
marks a decided environment).

Threads: ``THREADS`` for OpenMP (PyTorch, oneDNN) and TVM's pool alike (TVM's pool otherwise takes one
thread per physical core, 1 here, while OpenMP takes 2). ONNX Runtime and OpenVINO are given 1 and 2
and keep the faster (never more than ``THREADS``).

Waiting follows the machine's load (unless set in the environment): on a quiet machine the runtimes'
defaults (GNU OpenMP: spin a while, then sleep), what users get; on a loaded machine (1-minute load
average >= 1 at start) ``OMP_WAIT_POLICY=PASSIVE``, ``TVM_THREAD_POOL_SPIN_COUNT=0`` and no spinning in
ONNX Runtime's pool, because spinning barriers then cost milliseconds per parallel region (measured
here: a 1x64x256 oneDNN linear took 20 ms spinning, 26 µs passive; a 16x64 MLP built by TVM with
parallel kernels 16.6 ms spinning, 0.10 ms with no spin). On a quiet machine TVM's pool still gets a
short spin (``TVM_THREAD_POOL_SPIN_COUNT=1000``): with TVM's default a worker of another process kept
spinning with yields through the other systems' blocks and stalled them (0.1 ms -> 15 ms).
"""

from __future__ import annotations

import json
import os

THREADS = 2
MARKER = "TSIR_BENCH_POLICY"
KEYS = ("OMP_NUM_THREADS", "TVM_NUM_THREADS", "OMP_WAIT_POLICY", "TVM_THREAD_POOL_SPIN_COUNT")


def apply(threads: int = THREADS) -> dict[str, str]:
    """Decide the policy (once: a decided environment is kept) and set it in ``os.environ``; returns it."""
    if MARKER in os.environ:
        return json.loads(os.environ[MARKER])
    chosen = os.environ.get("OMP_WAIT_POLICY", "").upper()  # the user's choice wins over the load
    passive = chosen == "PASSIVE" if chosen else os.getloadavg()[0] >= 1.0
    os.environ["OMP_NUM_THREADS"] = os.environ["TVM_NUM_THREADS"] = str(threads)
    if passive:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0" if passive else "1000")
    policy = {k: os.environ[k] for k in KEYS if k in os.environ}
    policy["threads"] = str(threads)
    policy["passive"] = "1" if passive else "0"
    os.environ[MARKER] = json.dumps(policy)
    return policy


def threads() -> int:
    return int(apply()["threads"])


def passive() -> bool:
    """Whether idle threads must not spin (the loaded-machine policy)."""
    return apply()["passive"] == "1"


def check() -> None:
    """Raise when this process's environment is not the decided policy (a worker started outside it)."""
    policy = apply()
    wrong = {k: os.environ.get(k) for k in KEYS if os.environ.get(k) != policy.get(k)}
    if wrong:
        raise RuntimeError(f"this worker's thread policy {wrong} differs from the run's {policy}")
