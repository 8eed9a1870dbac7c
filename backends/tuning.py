"""MetaSchedule tuning with a reusable JSON database per target, applied when building.

``TuningDatabase(target, root)`` keeps ``root/tuning/<target digest>/database_*.json``. ``tune``
tunes the fused kernels it is given that have no record yet (largest first) within a trial and
wall-clock budget; ``build`` compiles a Relax program with the records applied
(``MetaScheduleApplyDatabase`` after FuseOps/FuseTIR), untuned kernels keep TVM's default code.
"""

from __future__ import annotations

import hashlib
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

from tsir.backends.kernel_cache import DEFAULT_DIR
from tsir.backends.kernels import Kernel

BUILD_TIMEOUT_S = 300  # a MetaSchedule worker imports TVM first: slow on a loaded machine


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

    def record_digest(self, kernel: Kernel) -> str | None:
        """A digest of the best record for ``kernel`` (None when it was never tuned)."""
        record = self.db.query_tuning_record(kernel.module(), self.target, "main")
        if record is None:
            return None
        return hashlib.sha256(str(record.trace).encode()).hexdigest()[:16]

    def scheduled(self, kernel: Kernel) -> tvm.IRModule:
        """``kernel``'s module with its best schedule applied, or unchanged when it has no record."""
        schedule = self.db.query_schedule(kernel.module(), self.target, "main")
        if schedule is None:
            return kernel.module()
        # marked, so that a GPU build's default schedules (dlight) leave the tuned kernel alone
        return tvm.IRModule({"main": schedule.mod["main"].with_attr("tirx.is_scheduled", True)})

    def tune(self, kernels: Sequence[Kernel], trials_per_task: int, time_s: float, seed: int = 0) -> TuningReport:
        """Tune the kernels without a record, heaviest first, until trials or ``time_s`` run out."""
        report = TuningReport()
        start = time.perf_counter()
        todo = [k for k in kernels if self.record_digest(k) is None]
        seen: set[str] = set()
        for kernel in todo:
            if kernel.structural_hash in seen:
                continue
            seen.add(kernel.structural_hash)
            if time.perf_counter() - start >= time_s:
                report.skipped_for_budget += 1
                continue
            try:
                self._tune_one(kernel, trials_per_task, seed)
                report.tasks_tuned += 1
                report.trials += trials_per_task
            except Exception as err:  # a task MetaSchedule cannot tune keeps its default code; reported
                report.failures.append(f"{kernel.name}: {type(err).__name__}: {err}".splitlines()[0][:300])
        report.time_s = time.perf_counter() - start
        return report

    def _tune_one(self, kernel: Kernel, trials: int, seed: int) -> None:
        with tempfile.TemporaryDirectory(prefix="tsir-tune-") as work_dir:
            logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
            ms.tir_integration.tune_tir(
                kernel.module(), self.target, work_dir, max_trials_global=trials, num_trials_per_iter=min(trials, 16),
                database=self.db, seed=seed, num_tuning_cores=1, strategy="replay-trace", cost_model="random",
                builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=BUILD_TIMEOUT_S),
                runner=ms.runner.LocalRunner(timeout_sec=BUILD_TIMEOUT_S),
            )

    def build(self, mod: tvm.IRModule) -> relax.VMExecutable:
        """Compile ``mod`` with the records of this database applied."""
        return ms.relax_integration.compile_relax(self.db, mod, self.target, None)


def _with_num_cores(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule needs ``num-cores`` on CPU targets; default it to this machine's core count."""
    config = dict(target.export())
    if target.kind.name == "llvm" and "num-cores" not in config:
        config["num-cores"] = os.cpu_count() or 1
    return tvm.target.Target(config)
