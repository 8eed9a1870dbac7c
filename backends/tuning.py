"""MetaSchedule tuning with a reusable JSON database per target, applied when building.

``TuningDatabase(target, root)`` keeps ``root/tuning/<target digest>/database_*.json`` and an index
(structural hash of a kernel -> digest of its best record) used as the kernel's source in the kernel
cache. ``tune`` tunes the kernels it is given that have no record yet, GEMM/conv-class kernels first and
the heaviest first, in chunks of a few trials, and starts no chunk that would end after its deadline;
``build`` compiles a Relax program with the records applied (``MetaScheduleApplyDatabase`` after
FuseOps/FuseTIR), untuned kernels keep TVM's default code. There is no xgboost here: the search samples
the design space at random (``replay-trace`` with the ``random`` cost model), which needs no training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from tsir.backends.kernel_cache import DEFAULT_DIR, write_atomic
from tsir.backends.kernels import Kernel

BUILD_TIMEOUT_S = 300  # a MetaSchedule worker imports TVM first: slow on a loaded machine
CHUNK_TRIALS = 4  # trials per MetaSchedule call; the deadline is checked between calls
HEAVY_CLASSES = ("conv2d", "matmul")  # tuned first: where TVM's default code loses most
_POOLS: dict[str, tuple[ms.builder.Builder, ms.runner.Runner]] = {}  # worker pools, started once per process


@dataclass
class TuningReport:
    tasks_tuned: int = 0
    trials: int = 0
    time_s: float = 0.0
    skipped_for_budget: int = 0
    failures: list[str] = field(default_factory=list)


class TuningDatabase:
    """The tuning records of one target."""

    def __init__(self, target: tvm.target.Target, root: str | os.PathLike = DEFAULT_DIR) -> None:
        self.target = _with_num_cores(target)
        digest = hashlib.sha256(str(self.target.export()).encode()).hexdigest()[:16]
        self.dir = Path(root) / "tuning" / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = ms.database.JSONDatabase(
            path_workload=str(self.dir / "database_workload.json"),
            path_tuning_record=str(self.dir / "database_tuning_record.json"), module_equality="structural")
        try:
            self.index: dict[str, str] = json.loads((self.dir / "index.json").read_text())
        except (OSError, ValueError):
            self.index = {}

    def record_digest(self, kernel: Kernel) -> str | None:
        """A digest of the best record for ``kernel`` (None when it was never tuned)."""
        record = self.db.query_tuning_record(kernel.module(), self.target, "main")
        if record is None:
            return None
        return hashlib.sha256(str(record.trace).encode()).hexdigest()[:16]

    def source(self, structural_hash: str) -> str:
        """How the kernel with this structural hash is built: ``tuned:<record digest>`` or ``untuned``."""
        digest = self.index.get(structural_hash)
        return f"tuned:{digest}" if digest else "untuned"

    def scheduled(self, kernel: Kernel) -> tvm.IRModule:
        """``kernel``'s module with its best schedule applied, or unchanged when it has no record."""
        schedule = self.db.query_schedule(kernel.module(), self.target, "main")
        return kernel.module() if schedule is None else schedule.mod

    def tune(self, kernels: Sequence[Kernel], trials_per_task: int, time_s: float, seed: int = 0,
             flops: dict[str, float] | None = None) -> TuningReport:
        """Tune the kernels without a record, GEMM/conv first and heaviest first, within trials and ``time_s``.

        ``flops`` (structural hash -> FLOPs) orders the kernels; trials run in chunks of ``CHUNK_TRIALS``
        and a chunk starts only when the last one's duration still fits before the deadline.
        """
        report = TuningReport()
        start = time.perf_counter()
        deadline = start + time_s
        todo: dict[str, Kernel] = {}
        for k in kernels:
            if k.structural_hash not in todo and k.structural_hash not in self.index:
                todo[k.structural_hash] = k
        flops = flops or {}
        order = sorted(todo.values(), key=lambda k: (k.op_class not in HEAVY_CLASSES, -flops.get(k.structural_hash, 0)))
        chunk_s = 0.0  # duration of the last chunk: the estimate for the next one
        for kernel in order:
            done = 0
            while done < trials_per_task:
                if time.perf_counter() + chunk_s > deadline:
                    break
                began = time.perf_counter()
                n = min(CHUNK_TRIALS, trials_per_task - done)
                try:
                    self._tune_chunk(kernel, n, seed + done)
                except Exception as err:  # a task MetaSchedule cannot tune keeps its default code; reported
                    report.failures.append(f"{kernel.name}: {type(err).__name__}: {err}".splitlines()[0][:300])
                    break
                done += n
                chunk_s = time.perf_counter() - began
            if done:
                report.tasks_tuned += 1
                report.trials += done
                # "" marks a kernel tuned without a valid record: built untuned, not tuned again
                self.index[kernel.structural_hash] = self.record_digest(kernel) or ""
            elif time.perf_counter() + chunk_s > deadline:
                report.skipped_for_budget += 1
        if report.tasks_tuned:
            write_atomic(self.dir / "index.json", self.index)
        report.time_s = time.perf_counter() - start
        return report

    def _tune_chunk(self, kernel: Kernel, trials: int, seed: int) -> None:
        builder, runner = _pools()
        with tempfile.TemporaryDirectory(prefix="tsir-tune-") as work_dir:
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
            ms.tir_integration.tune_tir(
                kernel.module(), self.target, work_dir, max_trials_global=trials, num_trials_per_iter=trials,
                database=self.db, seed=seed, num_tuning_cores=1, strategy="replay-trace", cost_model="random",
                builder=builder, runner=runner,
            )

    def build(self, mod: tvm.IRModule) -> relax.VMExecutable:
        """Compile ``mod`` with the records of this database applied."""
        return ms.relax_integration.compile_relax(self.db, mod, self.target, None)


def _pools() -> tuple[ms.builder.Builder, ms.runner.Runner]:
    """One builder and one runner worker per process (starting them imports TVM in each: seconds)."""
    if "local" not in _POOLS:
        _POOLS["local"] = (ms.builder.LocalBuilder(max_workers=1, timeout_sec=BUILD_TIMEOUT_S),
                           ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S))
    return _POOLS["local"]


def _with_num_cores(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule needs ``num-cores`` on CPU targets; default it to this machine's core count."""
    config = dict(target.export())
    if target.kind.name == "llvm" and "num-cores" not in config:
        config["num-cores"] = os.cpu_count() or 1
    return tvm.target.Target(config)
