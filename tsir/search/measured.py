"""Tiered cost feedback for the genetic search.

1. analytic: the roofline model of ``tsir.backends.roofline`` (calibrated on measured kernels when a calibration of
   the target exists, see ``calibration.py``) ranks every genome instantly;
2. per-kernel measured: a program is lowered, fused like the final build, and each distinct kernel
   (TVM PrimFunc or vendor-library call) is timed in a child process and cached on disk
   (``KernelCache``, with the kernel's features); the program's latency is the sum over its kernel
   calls. The kernels of each program are cached too (``ProgramCache``), so a warm run does not lower
   programs again. Unmeasured genomes are scored by the analytic model scaled by the median
   measured/analytic ratio seen so far, so measured and predicted values compare;
3. end-to-end: the best few programs and the baselines are built whole and timed by a ``Measurer``
   in two interleaved rounds (the second in reverse order); the winner is the measured best.

Every step that takes time stops at the evaluator's deadline: kernels not timed by then stay
unmeasured (and uncached), so the search keeps to its wall-clock budget on a cold cache too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
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
from tvm import relax

from tsir.backends import runtime, schedules
from tsir.backends.child import Worker
from tsir.backends.kernel_cache import KernelCache, KernelKey, KernelTiming, ProgramCache
from tsir.backends.kernels import Kernel, LibraryCall, all_kernels, fuse
from tsir.backends.measure import LocalMeasurer, Measurement, Measurer
from tsir.backends.targets import TargetSpec, cpu_schedules
from tsir.backends.tuning import HEAVY_CLASSES, TuningDatabase, TuningReport
from tsir.ir.term import Graph, Term, postorder
from tsir.lower import lower
from tsir.search.extract import Genome, Space, to_term

KERNEL_TIMING = {"number": 1, "repeat": 3, "min_repeat_ms": 2}
LOAD_S = 0.3  # loading a built program in the timing child (dlopen, VM set-up), about


@dataclass
class Call:
    """One distinct kernel of a program: how often the program calls it and what it computes."""

    name: str
    structural_hash: str
    calls: int
    features: dict
    library: bool
    kernel: Kernel | LibraryCall | None = None  # None when it came from the program cache

    def record(self) -> dict:
        return {"name": self.name, "hash": self.structural_hash, "calls": self.calls, "features": self.features,
                "library": self.library}


@dataclass(eq=False)
class Program:
    """One distinct candidate program and what is known of its cost."""

    term: Term
    analytic_ms: float
    size_bytes: int
    genome: Genome
    module: tvm.IRModule | None = None
    calls: list[Call] | None = None
    kernel_ms: float | None = None  # tier 2: sum of measured kernel calls (None: not measured or failed)
    e2e_ms: float | None = None  # tier 3: the mean of two timing rounds' medians
    e2e_spread: float | None = None  # how far apart the two rounds were: |a - b| / (a + b)
    error: str | None = None
    library: Path | None = None  # tier 3's build of the program, kept in the cache (reused by the final build)


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
    deadline: float | None = None  # time.monotonic() after which no more kernels are timed
    programs: dict[Term, Program] = field(default_factory=dict)
    kernel_failures: list[str] = field(default_factory=list)
    tuning_report: TuningReport = field(default_factory=TuningReport)
    skipped_for_budget: int = 0  # kernels left untimed at the deadline
    _digests: dict[int, str] = field(default_factory=dict)
    worker: Worker | None = None  # the child process that times kernels, kept for the whole search
    build_s: float = 0.0  # the longest whole-program build so far

    def __post_init__(self) -> None:
        self.target = str(self.spec.target.export())
        self.program_cache = ProgramCache(self.cache.dir.parent)
        # programs of different models with equal terms differ in their opaque calls: key by the model too
        self.model_digest = f"{tvm_ffi.structural_hash(self.original_mod['main']):x}"

    def program(self, genome: Genome) -> Program:
        term = to_term(self.space, genome)
        if term not in self.programs:
            self.programs[term] = Program(term, self.space.cost(genome) * 1e3, self.space.size_bytes(genome),
                                          list(genome))
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

    def digest(self, p: Program) -> str:
        """A digest of the program (stable across processes): its terms, the model and the target."""
        for t in postorder(p.term):
            if id(t) not in self._digests:
                text = repr((t.op, t.attrs, t.ty, [self._digests[id(a)] for a in t.args]))
                self._digests[id(t)] = hashlib.sha256(text.encode()).hexdigest()[:24]
        return hashlib.sha256(f"{self._digests[id(p.term)]}|{self.model_digest}|{self.target}".encode()).hexdigest()

    def _prepare(self, p: Program) -> None:
        """Lower and fuse ``p`` (once) and list its kernels with their features; cached per program on disk."""
        if p.module is not None:
            return
        p.module = lower(self.graph, p.term, self.original_mod)
        found = all_kernels(fuse(p.module, self.spec.target))
        p.calls = [Call(k.name, k.structural_hash, k.calls, k.features(), isinstance(k, LibraryCall), k) for k in found]
        self.program_cache.put(self.digest(p), [c.record() for c in p.calls])

    def _calls(self, p: Program) -> list[Call]:
        if p.calls is None:
            cached = self.program_cache.get(self.digest(p))
            if cached is not None:
                p.calls = [Call(c["name"], c["hash"], c["calls"], c["features"], c["library"]) for c in cached]
            else:
                self._prepare(p)
        return p.calls or []

    def key(self, call: Call, serial: bool) -> KernelKey:
        """The cache key of ``call`` in a program that calls oneDNN (``serial``: its TVM kernels stay on one
        thread) or not; an untuned kernel is timed with the default schedule the final build gives it."""
        if call.library:
            source = f"library:{call.name}"
        elif serial:  # built without its record, as ``runtime.build`` builds a module that calls oneDNN
            source = "untuned:serial"
        else:
            source = self.tuning.source(call.structural_hash) if self.tuning is not None else "untuned"
            source = "untuned:parallel" if source == "untuned" else source
        return KernelKey(call.structural_hash, self.target, source)

    def keys(self, p: Program) -> list[tuple[Call, KernelKey]]:
        """``p``'s kernels with their cache keys."""
        calls = self._calls(p)
        serial = any(c.library for c in calls)
        return [(c, self.key(c, serial)) for c in calls]

    def tune(self, programs: list[Program], trials: int, time_s: float, max_tasks: int | None = None) -> None:
        """Tune the TVM kernels of ``programs`` (GEMM/conv first, heaviest first) within ``time_s``; programs
        that call oneDNN are left out (their TVM kernels are built serial, without records)."""
        if self.tuning is None or trials <= 0 or time_s <= 0:
            return
        todo: list[Kernel] = []
        flops: dict[str, float] = {}
        programs = [p for p in programs if not any(c.library for c in self._calls(p))]
        calls = {c.structural_hash: c for p in programs for c in self._calls(p)}
        ranked = sorted(calls.values(), key=lambda c: (c.features["op_class"] not in HEAVY_CLASSES,
                                                       -c.features["flops"], c.name))
        if all(c.structural_hash in self.tuning.index for c in ranked[:max_tasks]):
            return  # everything this search would tune was tuned before (a warm cache)
        for p in programs:
            self._prepare(p)
            todo += [c.kernel for c in p.calls or [] if isinstance(c.kernel, Kernel)]
            flops.update({c.structural_hash: c.features["flops"] for c in p.calls or []})
        if self.worker is None:
            self.worker = Worker(self.kernel_timeout_s)
        report = self.tuning.tune(todo, trials, time_s, flops=flops, worker=self.worker, max_tasks=max_tasks)
        self.tuning_report.tasks_tuned += report.tasks_tuned
        self.tuning_report.trials += report.trials
        self.tuning_report.time_s += report.time_s
        self.tuning_report.skipped_for_budget += report.skipped_for_budget
        self.tuning_report.failures += report.failures

    def measure_kernels(self, programs: list[Program]) -> None:
        """Tier 2 for ``programs``: time every kernel not in the cache (until the deadline), then sum calls."""
        keyed: list[tuple[Program, list[tuple[Call, KernelKey]]]] = []
        missing: dict[KernelKey, tuple[Program, Call]] = {}  # the first program that has the kernel
        for p in programs:
            try:
                pairs = self.keys(p)
            except Exception as err:  # a program TVM cannot lower or fuse is scored failed
                p.error = f"lowering failed: {type(err).__name__}: {err}".splitlines()[0]
                continue
            keyed.append((p, pairs))
            for c, key in pairs:
                if key not in missing and self.cache.get(key) is None:
                    missing[key] = (p, c)
        if missing:
            todo = []
            for key, (p, c) in missing.items():
                if c.kernel is None:  # from the program cache: lower the program to get the kernel itself
                    self._prepare(p)
                    c = next(k for k in p.calls or [] if k.structural_hash == c.structural_hash)
                todo.append((key, c))
            items = [{"module": tvm.ir.save_json(self._timed(c.kernel, key))} for key, c in todo]
            context = {"target": self.spec.target.export(), "device": self.spec.device, **KERNEL_TIMING}
            if self.worker is None:
                self.worker = Worker(self.kernel_timeout_s)
            rows = self.worker.run("kernel", items, context, self.deadline)
            for (key, c), row in zip(todo, rows, strict=True):
                if row.get("skipped"):
                    self.skipped_for_budget += 1
                    continue
                self.cache.put(key, KernelTiming(row.get("median_ms"), row.get("error")), c.features)
                if row.get("error"):
                    self.kernel_failures.append(f"{c.name}: {row['error']}")
        for p, pairs in keyed:
            timings = [(c, self.cache.get(key)) for c, key in pairs]
            if any(t is None for _, t in timings):
                continue  # not all kernels timed before the deadline: the program stays unmeasured
            failed = [c.name for c, t in timings if t.median_ms is None]
            if failed:
                p.error = f"kernel(s) failed: {', '.join(failed)}"
            else:
                p.kernel_ms = sum(c.calls * t.median_ms for c, t in timings)

    def kernel_keys(self) -> set[KernelKey]:
        """Keys of every kernel of the programs measured by this evaluator."""
        return {key for p in self.programs.values() if p.calls for _, key in self.keys(p)}

    def _timed(self, kernel: Kernel | LibraryCall, key: KernelKey) -> tvm.IRModule:
        if isinstance(kernel, LibraryCall):
            return kernel.module()
        return as_built(kernel, self.tuning, self.spec.target, parallel=key.source != "untuned:serial")

    def build(self, p: Program) -> runtime.relax.VMExecutable:
        self._prepare(p)
        return self.tuning.build(p.module) if self.tuning is not None else runtime.build(p.module, self.spec)

    def e2e_key(self, p: Program) -> KernelKey | None:
        """The key of ``p`` built whole: the program and how each of its kernels is built; None (and ``p``
        scored failed) when TVM cannot lower or fuse it."""
        try:
            sources = ",".join(sorted(f"{c.structural_hash}={key.source}" for c, key in self.keys(p)))
        except Exception as err:
            p.error = f"lowering failed: {type(err).__name__}: {err}".splitlines()[0]
            return None
        return KernelKey(self.digest(p), self.target, sources)

    def prebuild(self, programs: list[Program]) -> None:
        """Build ``programs`` not timed yet whole ahead of the end-to-end tier (kept in the cache), noting in
        ``build_s`` the longest build, so that the search can leave the end-to-end tier the time it needs."""
        e2e = KernelCache(self.cache.dir.parent, kind="e2e")
        for p in programs:
            key = self.e2e_key(p)
            if key is None:
                continue
            kept = e2e.path(key).with_suffix(".so")
            if not kept.exists() and e2e.get(key) is None:  # neither built nor timed yet
                self._build_into(p, kept)

    def _build_into(self, p: Program, path: Path) -> bool:
        """Build ``p`` whole into ``path`` (atomically); a build error scores it failed."""
        began = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="tsir-build-") as tmp:
                staged = Path(tmp) / "program.so"
                self.build(p).export_library(str(staged))
                p.library = _keep(staged, path)
            return True
        except Exception as err:
            p.error = f"build failed: {type(err).__name__}: {err}".splitlines()[0]
            return False
        finally:
            self.build_s = max(self.build_s, time.monotonic() - began)

    def measure_end_to_end(self, programs: list[Program], measurer: Measurer, inputs: list[np.ndarray],
                           deadline: float | None = None, required: int = 0) -> None:
        """Tier 3: build each program whole (cached by program + kernel sources) and time it.

        The first ``required`` programs are always built (or taken from ``prebuild``); the others only
        while the longest build so far still fits before ``deadline``. All built programs are timed in
        one child in two rounds, the second in reverse order, and each gets the mean of its two medians.
        """
        e2e = KernelCache(self.cache.dir.parent, kind="e2e")
        todo: list[tuple[Program, KernelKey]] = []
        for p in programs:
            key = self.e2e_key(p)
            if key is None:
                continue
            cached = e2e.get(key)
            if cached is not None:
                p.e2e_ms, p.error = cached.median_ms, cached.error
                library = e2e.path(key).with_suffix(".so")
                p.library = library if library.exists() else None
            elif p.error is None or not p.error.startswith("build failed"):
                todo.append((p, key))
        if not todo:
            return
        with tempfile.TemporaryDirectory(prefix="tsir-e2e-") as tmp:
            libraries, built = [], []
            for i, (p, key) in enumerate(todo):
                kept, path = e2e.path(key).with_suffix(".so"), Path(tmp) / f"candidate{i}.so"
                if kept.exists():  # built by ``prebuild`` or by an earlier run cut short
                    p.library = kept
                elif i >= required and deadline is not None and time.monotonic() + 2 * self.build_s > deadline:
                    break
                elif not self._build_into(p, kept):
                    continue
                shutil.copyfile(kept, path)
                libraries.append(path)
                built.append((p, key))
            if not built:
                return
            # two rounds, the second in reverse order; the required programs' first round ignores the deadline
            n, k = len(libraries), min(required, len(libraries))
            if isinstance(measurer, WorkerMeasurer):
                rows = (measurer.measure(libraries[:k], inputs, deadline=False)
                        + measurer.measure(libraries[k:] + libraries[::-1], inputs))
            else:
                rows = measurer.measure(libraries + libraries[::-1], inputs)
            for (p, key), a, b in zip(built, rows[:n], rows[n:][::-1], strict=True):
                times = [m.median_ms for m in (a, b) if m.median_ms is not None]
                p.e2e_ms = statistics.mean(times) if times else None
                p.e2e_spread = abs(times[0] - times[1]) / sum(times) if len(times) == 2 else None
                p.error = None if times else (a.error or b.error)
                if times or p.error != "budget":  # a program the deadline left untimed is not cached
                    e2e.put(key, KernelTiming(p.e2e_ms, p.error))


def as_built(kernel: Kernel, tuning: TuningDatabase | None, target: tvm.target.Target,
             parallel: bool = True) -> tvm.IRModule:
    """``kernel`` alone, scheduled as the final build schedules it (``runtime.build``): from its tuning
    record when it has one, else on CPUs with the default schedule; in a program that calls oneDNN
    (``parallel=False``) the serial default schedule, record or not. On GPUs the kernel job gives it
    dlight's default schedule."""
    mod = tuning.scheduled(kernel) if tuning is not None and parallel else kernel.module()
    return schedules.apply(mod, target, parallel) if cpu_schedules(target) else mod


def _keep(path: Path, kept: Path) -> Path:
    """Copy a built library into the cache atomically; its path there."""
    kept.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=kept.parent, suffix=".tmp", delete=False) as f:
        f.write(path.read_bytes())
    os.replace(f.name, kept)
    return kept


class CachedExecutable(relax.VMExecutable):
    """A Relax executable loaded from a library built earlier; exporting it copies that library."""

    def __init__(self, path: Path) -> None:
        super().__init__(tvm.runtime.load_module(str(path)))
        self.library = Path(path)

    def export_library(self, file_name, *args, **kwargs) -> None:
        shutil.copyfile(self.library, file_name)


@dataclass
class WorkerMeasurer:
    """``LocalMeasurer``'s measurement in the evaluator's long-lived child, stopping at a deadline."""

    evaluator: Evaluator
    deadline: float | None = None
    settings: LocalMeasurer = field(default_factory=LocalMeasurer)
    max_ms: float = 1000.0  # a slow program gets fewer batches (at least 3) so that one timing takes about this

    def measure(self, libraries, inputs, deadline: bool = True) -> list[Measurement]:
        ev = self.evaluator
        if ev.worker is None:
            ev.worker = Worker(ev.kernel_timeout_s)
        with tempfile.TemporaryDirectory(prefix="tsir-inputs-") as tmp:
            arrays = Path(tmp) / "inputs.npz"
            np.savez(arrays, *[np.ascontiguousarray(x) for x in inputs])
            context = {"inputs": str(arrays), "repeat": self.settings.repeat,
                       "min_repeat_ms": self.settings.min_repeat_ms, "max_ms": self.max_ms, "device": ev.spec.device}
            rows = ev.worker.run("library", [str(p) for p in libraries], context,
                                 self.deadline if deadline else None)
        return [Measurement(r.get("median_ms"), r.get("error") or r.get("skipped")) for r in rows]

    def timing_s(self, latency_ms: float) -> float:
        """About how long ``measure`` takes for one program of ``latency_ms`` (``jobs.time_library``: loading,
        one warm-up call, then ``repeat`` batches of at least ``min_repeat_ms``, fewer when slow)."""
        batch_ms = max(latency_ms, self.settings.min_repeat_ms)
        repeat = max(3, min(self.settings.repeat, int(self.max_ms / batch_ms)))
        return LOAD_S + (latency_ms + repeat * batch_ms) / 1e3


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
