"""MetaSchedule tuning with a reusable JSON database per target, applied when building.

``TuningDatabase(target, root)`` keeps ``root/tuning/<target digest>/database_*.json`` and an index
(structural hash of a kernel -> digest of its best record) used as the kernel's source in the kernel
cache. ``tune`` tunes the first few kernels it is given (GEMM/conv-class first, the heaviest first) that have
not been tuned yet, in a child process killed at its deadline (records committed by then are kept);
``build`` compiles a Relax program as ``runtime.build`` does, with the records applied after
FuseOps/FuseTIR: a kernel without a record gets the default schedule (``schedules.py`` on CPUs).
There is no xgboost here: the search samples the design space at random (``replay-trace`` with the
``random`` cost model), which needs no training. MetaSchedule's candidates are built and timed in the
tuning child itself (``jobs.tune_kernel``), not in fresh processes per call, and the default CPU
schedule is timed there as one more candidate, so the best record is never slower than the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

from tsir.backends import runtime, schedules
from tsir.backends.child import Worker
from tsir.backends.kernel_cache import DEFAULT_DIR, write_atomic
from tsir.backends.kernels import KERNEL_CLASSES, Kernel, fuse
from tsir.backends.targets import cpu_schedules

CHUNK_TRIALS = 4  # trials per MetaSchedule call; the deadline is checked between calls
HEAVY_CLASSES = KERNEL_CLASSES  # GEMM-class kernels are tuned first: where TVM's default code loses most


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
        if schedule is None:
            return kernel.module()
        # marked, so that a GPU build's default schedules (dlight) leave the tuned kernel alone
        return tvm.IRModule({"main": schedule.mod["main"].with_attr("tirx.is_scheduled", True)})

    def tune(self, kernels: Sequence[Kernel], trials_per_task: int, time_s: float, seed: int = 0,
             flops: dict[str, float] | None = None, worker: Worker | None = None,
             max_tasks: int | None = None) -> TuningReport:
        """Tune the kernels without a record, GEMM/conv first and heaviest first, within trials and ``time_s``.

        Tuning runs in a child process (``worker``, or one of its own) that begins no chunk of trials it
        could not end within ``time_s`` and is killed if still tuning when ``time_s`` has passed; the
        records committed by then stay in the database (a torn last line is dropped). Only the first
        ``max_tasks`` kernels in that order are tuned. Each of them counts as tuned afterwards, with
        whatever record it got before the deadline (or none), so a rerun on the same cache tunes nothing.
        """
        report = TuningReport()
        start = time.perf_counter()
        distinct = {k.structural_hash: k for k in kernels}
        flops = flops or {}
        ranked = sorted(distinct.values(),
                        key=lambda k: (k.op_class not in HEAVY_CLASSES, -flops.get(k.structural_hash, 0), k.name))
        order = [k for k in ranked[:max_tasks] if k.structural_hash not in self.index]
        if not order or time_s <= 0 or trials_per_task <= 0:
            report.skipped_for_budget = len(order)
            return report
        items = [{"module": tvm.ir.save_json(k.module()), "trials": trials_per_task, "seed": seed,
                  "default": default_trace(k, self.target)} for k in order]
        deadline = time.monotonic() + time_s
        context = {"target": self.target.export(), "workload": str(self.dir / "database_workload.json"),
                   "records": str(self.dir / "database_tuning_record.json"), "chunk": CHUNK_TRIALS,
                   "deadline": deadline}
        own = worker is None
        worker = worker or Worker()
        try:
            rows = worker.run("tune", items, context, deadline, hard=True, timeout_s=time_s + 60)
        finally:
            if own:
                worker.close()
        self._reload()
        for kernel, row in zip(order, rows, strict=True):
            digest = self.record_digest(kernel)
            if row.get("error"):
                report.failures.append(f"{kernel.name}: {row['error']}"[:300])
            elif row.get("skipped") and digest is None:
                report.skipped_for_budget += 1
            else:
                report.tasks_tuned += 1
                report.trials += row.get("trials", 0)
            # "" marks a kernel tuned without a valid record: built untuned, not tuned again
            self.index[kernel.structural_hash] = digest or ""
        write_atomic(self.dir / "index.json", self.index)
        report.time_s = time.perf_counter() - start
        return report

    def _reload(self) -> None:
        """Drop a torn last line (a child killed while writing), then reopen the database files."""
        for name in ("database_workload.json", "database_tuning_record.json"):
            path = self.dir / name
            if path.exists():
                lines = path.read_text().splitlines()
                kept = [line for line in lines if _parses(line)]
                if len(kept) != len(lines):
                    write_lines_atomic(path, kept)
        self.db = ms.database.JSONDatabase(
            path_workload=str(self.dir / "database_workload.json"),
            path_tuning_record=str(self.dir / "database_tuning_record.json"), module_equality="structural")

    def apply(self, mod: tvm.IRModule) -> tvm.IRModule:
        """``mod`` fused as the build fuses it, each kernel with a record replaced by its tuned schedule."""
        fused = fuse(mod, self.target)
        with self.target, self.db, tvm.transform.PassContext(opt_level=3):
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused)

    def build(self, mod: tvm.IRModule) -> relax.VMExecutable:
        """Compile ``mod`` as ``runtime.build`` does, each kernel with a record built from its tuned schedule."""
        return runtime.compile_for(mod, self.target, self.db)


def default_trace(kernel: Kernel, target: tvm.target.Target) -> list | None:
    """The trace of ``kernel``'s default CPU schedule (``schedules.rules``) as JSON data; None when no rule
    applies or the target is not a CPU. Tuning commits it as a candidate: a few random trials often find
    nothing as fast, and the best record is what the build applies."""
    if not cpu_schedules(target):
        return None
    func = tvm.ir.load_json(tvm.ir.save_json(kernel.module()))["main"]  # a copy: scheduling edits in place
    with target:
        for rule in schedules.rules(parallel=True):
            sch = rule.apply(func, target, False)
            if sch is not None:
                return _plain(sch.trace.as_json(remove_postproc=False))
    return None


def _plain(value):
    """TVM FFI containers (arrays, maps, strings, numbers) as plain Python data."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "value"):
        return value.value
    return [_plain(v) for v in value]


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def write_lines_atomic(path: Path, lines: list[str]) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write("".join(line + "\n" for line in lines))
    os.replace(f.name, path)


def _with_num_cores(target: tvm.target.Target) -> tvm.target.Target:
    """MetaSchedule needs ``num-cores`` on CPU targets; default it to this machine's core count."""
    config = dict(target.export())
    if cpu_schedules(target) and "num-cores" not in config:
        config["num-cores"] = os.cpu_count() or 1
    return tvm.target.Target(config)
