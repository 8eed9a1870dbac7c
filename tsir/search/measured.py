"""Tiered cost feedback for the genetic search.

1. analytic: the roofline model of ``tsir.cost`` ranks every genome instantly;
2. per-kernel measured: a program is lowered, fused like the final build, and each distinct kernel is
   timed in a child process and cached on disk (``KernelCache``); the program's latency is the sum
   over its kernel calls. Unmeasured genomes are scored by the analytic model scaled by the median
   measured/analytic ratio seen so far (the calibration), so measured and predicted values compare;
3. end-to-end: the best few programs and the baselines are built whole and timed by a ``Measurer``;
   the winner is the measured best.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

from tsir.backends import runtime
from tsir.backends.child import run_isolated
from tsir.backends.kernel_cache import KernelCache, KernelKey, KernelTiming
from tsir.backends.kernels import Kernel, fuse, kernels
from tsir.backends.measure import Measurer
from tsir.backends.targets import TargetSpec
from tsir.backends.tuning import TuningDatabase, TuningReport
from tsir.ir.term import Graph, Term
from tsir.lower import lower
from tsir.search.extract import Genome, Space, to_term

KERNEL_TIMING = {"number": 1, "repeat": 3, "min_repeat_ms": 2}


@dataclass(eq=False)
class Program:
    """One distinct candidate program and what is known of its cost."""

    term: Term
    analytic_ms: float
    size_bytes: int
    module: tvm.IRModule | None = None
    kernels: list[Kernel] | None = None
    kernel_ms: float | None = None  # tier 2: sum of measured kernel calls (None: not measured or failed)
    e2e_ms: float | None = None  # tier 3
    error: str | None = None


@dataclass
class Evaluator:
    """Lowers, fuses, tunes and times candidate programs of one model; every result is cached."""

    space: Space
    graph: Graph
    original_mod: tvm.IRModule
    spec: TargetSpec
    cache: KernelCache
    tuning: TuningDatabase | None
    kernel_timeout_s: float = 60.0
    programs: dict[Term, Program] = field(default_factory=dict)
    kernel_failures: list[str] = field(default_factory=list)
    tuning_report: TuningReport = field(default_factory=TuningReport)

    def program(self, genome: Genome) -> Program:
        term = to_term(self.space, genome)
        if term not in self.programs:
            self.programs[term] = Program(term, self.space.cost(genome) * 1e3, self.space.size_bytes(genome))
        return self.programs[term]

    def calibration(self) -> float:
        """Median measured/analytic ratio of the programs measured so far (1 before any)."""
        ratios = [p.kernel_ms / p.analytic_ms for p in self.programs.values() if p.kernel_ms and p.analytic_ms > 0]
        return statistics.median(ratios) if ratios else 1.0

    def latency_ms(self, genome: Genome) -> float:
        p = self.program(genome)
        if p.kernel_ms is not None:
            return p.kernel_ms
        return float("inf") if p.error else p.analytic_ms * self.calibration()

    def _prepare(self, p: Program) -> None:
        if p.kernels is None:
            p.module = lower(self.graph, p.term, self.original_mod)
            p.kernels = kernels(fuse(p.module, self.spec.target))

    def tune(self, programs: list[Program], trials: int, time_s: float) -> None:
        """Tune the kernels of ``programs`` (heaviest analytic programs first) within ``time_s``."""
        if self.tuning is None or trials <= 0:
            return
        for p in programs:
            self._prepare(p)
        todo = [k for p in programs for k in p.kernels or []]
        report = self.tuning.tune(todo, trials, time_s)
        self.tuning_report.tasks_tuned += report.tasks_tuned
        self.tuning_report.trials += report.trials
        self.tuning_report.time_s += report.time_s
        self.tuning_report.failures += report.failures

    def measure_kernels(self, programs: list[Program]) -> None:
        """Tier 2 for ``programs``: time every kernel not in the cache, then sum each program's calls."""
        target = str(self.spec.target.export())
        keyed: list[tuple[Program, list[tuple[Kernel, KernelKey]]]] = []
        missing: dict[KernelKey, Kernel] = {}
        for p in programs:
            try:
                self._prepare(p)
            except Exception as err:  # a program TVM cannot lower or fuse is scored failed
                p.error = f"lowering failed: {type(err).__name__}: {err}".splitlines()[0]
                continue
            pairs = [(k, KernelKey(k.structural_hash, target, self._source(k))) for k in p.kernels or []]
            keyed.append((p, pairs))
            for k, key in pairs:
                if key not in missing and self.cache.get(key) is None:
                    missing[key] = k
        if missing:
            items = [{"module": tvm.ir.save_json(self._scheduled(k))} for k in missing.values()]
            context = {"target": self.spec.target.export(), "device": self.spec.device, **KERNEL_TIMING}
            for (key, k), row in zip(missing.items(), run_isolated("kernel", items, context, self.kernel_timeout_s),
                                     strict=True):
                self.cache.put(key, KernelTiming(row.get("median_ms"), row.get("error")))
                if row.get("error"):
                    self.kernel_failures.append(f"{k.name}: {row['error']}")
        for p, pairs in keyed:
            timings = [(k, self.cache.get(key)) for k, key in pairs]
            failed = [k.name for k, t in timings if t is None or t.median_ms is None]
            if failed:
                p.error = f"kernel(s) failed: {', '.join(failed)}"
            else:
                p.kernel_ms = sum(k.calls * t.median_ms for k, t in timings)

    def _source(self, kernel: Kernel) -> str:
        digest = self.tuning.record_digest(kernel) if self.tuning is not None else None
        return f"tuned:{digest}" if digest else "untuned"

    def _scheduled(self, kernel: Kernel) -> tvm.IRModule:
        return self.tuning.scheduled(kernel) if self.tuning is not None else kernel.module()

    def build(self, p: Program) -> runtime.relax.VMExecutable:
        self._prepare(p)
        return self.tuning.build(p.module) if self.tuning is not None else runtime.build(p.module, self.spec)

    def measure_end_to_end(self, programs: list[Program], measurer: Measurer, inputs: list[np.ndarray]) -> None:
        """Tier 3: build each program whole (cached by program + kernel sources) and time it."""
        e2e = KernelCache(self.cache.dir.parent, kind="e2e")
        target = str(self.spec.target.export())
        todo: list[tuple[Program, KernelKey]] = []
        for p in programs:
            try:
                self._prepare(p)
            except Exception as err:
                p.error = f"lowering failed: {type(err).__name__}: {err}".splitlines()[0]
                continue
            sources = ",".join(sorted(f"{k.structural_hash}={self._source(k)}" for k in p.kernels or []))
            key = KernelKey(f"{tvm_ffi.structural_hash(p.module):x}", target, sources)
            cached = e2e.get(key)
            if cached is not None:
                p.e2e_ms, p.error = cached.median_ms, cached.error
            else:
                todo.append((p, key))
        if not todo:
            return
        with tempfile.TemporaryDirectory(prefix="tsir-e2e-") as tmp:
            libraries, built = [], []
            for i, (p, key) in enumerate(todo):
                try:
                    path = Path(tmp) / f"candidate{i}.so"
                    self.build(p).export_library(str(path))
                    libraries.append(path)
                    built.append((p, key))
                except Exception as err:  # a build error scores the program failed
                    p.error = f"build failed: {type(err).__name__}: {err}".splitlines()[0]
            for (p, key), m in zip(built, measurer.measure(libraries, inputs), strict=True):
                p.e2e_ms, p.error = m.median_ms, m.error
                e2e.put(key, KernelTiming(m.median_ms, m.error))


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Rank correlation of (analytic, measured) pairs; None with fewer than three distinct programs."""
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: no correlation to report (nan -> None)
        value = spearmanr([a for a, _ in pairs], [m for _, m in pairs]).statistic
    return None if np.isnan(value) else round(float(value), 4)


def progress_bar(enabled: bool, total_s: float) -> tuple[Callable[[float], None], Callable[[], None]]:
    """A rich progress bar over the search budget showing the best latency so far: (update, close)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("search"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   disable=not enabled, transient=True)
    task = bar.add_task("best -", total=total_s)
    start = time.perf_counter()
    bar.start()

    def update(best_ms: float) -> None:
        bar.update(task, completed=min(time.perf_counter() - start, total_s), description=f"best {best_ms:.3f} ms")

    def close() -> None:
        bar.stop()

    return update, close
