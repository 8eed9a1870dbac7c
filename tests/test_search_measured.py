"""Measured cost feedback: crash isolation, the kernel cache, the measurer contract, the tiered search."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from tsir import zoo
from tsir.backends import targets
from tsir.backends.child import run_isolated
from tsir.backends.kernel_cache import CorruptCacheWarning, KernelCache, KernelKey, KernelTiming
from tsir.backends.measure import LocalMeasurer, Measurement
from tsir.convert import relax_to_tsir
from tsir.egraph import TermEGraph
from tsir.frontend import export, to_relax
from tsir.search.driver import SearchOptions, run_search
from tsir.search.extract import Space


# fmt: off
@T.prim_func
def good(A: T.Buffer((4,), "float32")):
    T.func_attr({"global_symbol": "main", "tirx.noalias": True})
    for i in range(4):
        A[i] = A[i] + T.float32(1)


@T.prim_func
def crash(A: T.Buffer((4,), "float32")):  # writes 4 TiB past the buffer: SIGSEGV
    T.func_attr({"global_symbol": "main", "tirx.noalias": True})
    for _i in range(4):
        A[T.int64(1) << T.int64(40)] = T.float32(1)


@T.prim_func
def hang(A: T.Buffer((4,), "float32")):  # 2^60 dependent float updates: never ends
    T.func_attr({"global_symbol": "main", "tirx.noalias": True})
    for _i in range(T.int64(1) << T.int64(60)):
        A[0] = A[0] * T.float32(1.0000001) + T.float32(1)


@T.prim_func
def add_one(A: T.Buffer((4,), "float32"), B: T.Buffer((4,), "float32")):
    for i in range(4):
        B[i] = A[i] + T.float32(1)


@T.prim_func
def add_one_crash(A: T.Buffer((4,), "float32"), B: T.Buffer((4,), "float32")):
    for i in range(4):
        B[T.int64(1) << T.int64(40)] = A[i]
# fmt: on


def test_crashing_and_hanging_kernels_are_scored_failed_and_the_others_still_run():
    items = [{"module": tvm.ir.save_json(tvm.IRModule({"main": f}))} for f in (good, crash, hang, good)]
    rows = run_isolated("kernel", items, {"target": targets.resolve("x86").target.export()}, timeout_s=5)
    assert rows[0]["median_ms"] > 0 and rows[3]["median_ms"] > 0
    assert "signal 11" in rows[1]["error"]
    assert "timed out" in rows[2]["error"]


def _library(tmp_path, prim: tvm.tirx.PrimFunc, name: str):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        gv = bb.add_func(prim, "kernel")
        out = bb.emit(relax.call_tir(gv, [x], relax.TensorType((4,), "float32")))
        bb.emit_func_output(out)
    path = tmp_path / f"{name}.so"
    tvm.compile(bb.get(), target=targets.resolve("x86").target).export_library(str(path))
    return path


def test_local_measurer_isolates_a_segfaulting_library(tmp_path):
    libs = [_library(tmp_path, add_one, "good"), _library(tmp_path, add_one_crash, "crash"), tmp_path / "missing.so"]
    result = LocalMeasurer(repeat=2, min_repeat_ms=1).measure(libs, [np.zeros(4, "float32")])
    assert result[0].median_ms > 0 and result[0].error is None
    assert result[1].median_ms is None and "signal" in result[1].error
    assert result[2].median_ms is None and result[2].error


def test_corrupt_cache_file_is_reported_removed_and_rebuilt(tmp_path):
    cache = KernelCache(tmp_path)
    key = KernelKey("abc", "llvm", "untuned")
    cache.put(key, KernelTiming(1.5))
    assert cache.get(key) == KernelTiming(1.5)
    path = cache.path(key)
    for garbage in ("{not json", json.dumps({"key": ["other", "llvm", "untuned"], "median_ms": 1.0})):
        path.write_text(garbage)
        with pytest.warns(CorruptCacheWarning, match=str(path)):
            assert cache.get(key) is None
        assert not path.exists()
        cache.put(key, KernelTiming(2.0))
        assert cache.get(key) == KernelTiming(2.0)
    assert not list(path.parent.glob("*.tmp")), "writes are atomic: no temporary file is left behind"


class ScriptedMeasurer:
    """Times nothing: reports the k-th library built as failed and gives the others decreasing latencies.

    The search times its finalists in two rounds (the second in reverse order) in one call: the k-th
    library is recognized by its file name (``candidate<k>.so``), so both rounds agree."""

    def __init__(self, failing: int) -> None:
        self.failing = failing
        self.calls: list[int] = []

    def measure(self, libraries, inputs) -> list[Measurement]:
        assert all(p.stat().st_size > 0 for p in libraries)
        self.calls.append(len(libraries))
        index = [int(p.stem.removeprefix("candidate")) for p in libraries]
        return [Measurement(None, "child process killed by signal 11") if i == self.failing
                else Measurement(10.0 - i, None) for i in index]


def _mlp_space():
    entry = zoo.load("mlp")
    original = to_relax(export(entry.module, entry.example_inputs))
    graph = relax_to_tsir(original)
    egraph = TermEGraph(graph)
    egraph.saturate()
    spec = targets.resolve("x86")
    return egraph, Space.of(egraph.view(), spec.roofline), graph, original, spec, [entry.example_inputs[0].numpy()]


def test_measured_search_picks_the_measured_best_skips_failures_and_reuses_the_cache(tmp_path):
    from tsir.search.genetic import GeneticConfig

    egraph, space, graph, original, spec, inputs = _mlp_space()
    options = SearchOptions(cost="measured", cache_dir=tmp_path)
    config = GeneticConfig(generations=3, time_s=20)
    measurer = ScriptedMeasurer(failing=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCacheWarning)
        outcome = run_search(egraph, space, graph, original, spec, config, options, inputs, measurer)
    report = outcome.report
    timed = [e for e in report["end_to_end"] if e["latency_ms"] is not None]
    assert report["cost_tier"] == "measured"
    assert report["end_to_end"][0]["latency_ms"] is None and "signal 11" in report["end_to_end"][0]["error"]
    assert report["winner_ms"] == min(e["latency_ms"] for e in timed)
    assert all(report["winner_ms"] <= v for v in report["baselines_ms"].values() if v is not None)
    assert report["pareto"] and report["curve"] and report["kernel_cache"]["misses"] > 0
    again = run_search(egraph, space, graph, original, spec, config, options, inputs, ScriptedMeasurer(failing=-1))
    assert again.report["kernel_cache"]["misses"] == 0, "the second run finds every kernel in the cache"


def test_a_rerun_replays_a_search_only_under_the_same_budget(tmp_path):
    """Same cache and budget: the rerun replays the first search's generations (same result); a larger budget
    searches on instead of stopping where the quick run's clock stopped it."""
    from tsir.search.genetic import GeneticConfig

    egraph, space, graph, original, spec, inputs = _mlp_space()
    config = GeneticConfig(generations=2, time_s=20)

    def search(budget_s: float) -> dict:
        options = SearchOptions(cost="measured", cache_dir=tmp_path, budget_s=budget_s)
        return run_search(egraph, space, graph, original, spec, config, options, inputs, ScriptedMeasurer(-1)).report

    assert [search(b)["replayed"] for b in (10, 10, 600)] == [False, True, False]


def test_bad_search_options_are_rejected_before_any_work():
    from tsir import TsirError, optimize

    entry = zoo.load("mlp")
    with pytest.raises(TsirError, match="unknown cost 'fast'; choose one of: analytic, measured"):
        optimize(entry.module, entry.example_inputs, cost="fast")
    with pytest.raises(TsirError, match="tuning_trials must be >= 0"):
        optimize(entry.module, entry.example_inputs, tuning_trials=-1)


def test_measured_search_keeps_its_budget_on_a_cold_cache(tmp_path):
    """Tuning, kernel timing, the genetic search and the end-to-end tier all stop by one clock: within 10 %."""
    from tsir.search.genetic import GeneticConfig

    egraph, space, graph, original, spec, inputs = _mlp_space()
    budget = 15.0
    config = GeneticConfig(generations=10**6, patience=10**6, time_s=budget)
    options = SearchOptions(cost="measured", cache_dir=tmp_path, measure_per_generation=4, tuning_trials=8,
                            tuning_share=0.2)
    report = run_search(egraph, space, graph, original, spec, config, options, inputs).report
    assert report["kernel_cache"]["misses"] > 0, "the cache started cold"
    assert report["search_s"] <= 1.1 * budget, report
    assert 0 < report["tuning_s"] <= 0.2 * budget + 1.0, "tuning time is counted and bounded by its share"
    assert report["winner_ms"] is not None and report["budget_s"] == budget


def test_tuning_stops_at_its_deadline_and_skips_what_does_not_fit(tmp_path):
    from tsir.backends.kernels import fuse, kernels
    from tsir.backends.tuning import TuningDatabase

    _, _, _, original, spec, _ = _mlp_space()
    found = kernels(fuse(original, spec.target))
    report = TuningDatabase(spec.target, tmp_path).tune(found, trials_per_task=4, time_s=0.0)
    distinct = {k.structural_hash for k in found}
    assert report.tasks_tuned == 0 and report.trials == 0 and report.skipped_for_budget == len(distinct)


def test_tuning_records_a_schedule_that_the_build_applies(tmp_path):
    """A handful of MetaSchedule trials on one small matmul: the record lands in the per-target JSON
    database, a new ``TuningDatabase`` on the same folder finds it, the default CPU schedule was timed as
    one more candidate, and the build uses the best record (not TVM's loop nest) and still computes the
    matmul."""
    import tvm_ffi
    from tvm import s_tir

    from tsir.backends import schedules
    from tsir.backends.kernels import fuse, kernels
    from tsir.backends.runtime import Runner
    from tsir.backends.tuning import TuningDatabase

    spec = targets.resolve("x86")
    bb = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType((16, 64), "float32")), relax.Var("w", relax.TensorType((64, 64), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.matmul(x, w)))
        bb.emit_func_output(out)
    mod = bb.get()
    [kernel] = kernels(fuse(mod, spec.target))
    report = TuningDatabase(spec.target, tmp_path).tune([kernel], trials_per_task=2, time_s=300)
    assert report.tasks_tuned == 1 and report.trials == 2 and not report.failures, report
    database = TuningDatabase(spec.target, tmp_path)  # reopened from disk
    assert database.source(kernel.structural_hash).startswith("tuned:")
    assert database.record_digest(kernel) is not None
    assert (database.dir / "database_tuning_record.json").read_text().strip()
    tuned = database.scheduled(kernel)["main"]
    assert not tvm_ffi.structural_equal(tuned, kernel.module()["main"]), "the tuned schedule is not the default one"
    applied = [f for f in database.apply(mod).functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert any(tvm_ffi.structural_equal(f.body, tuned.body, map_free_vars=True) for f in applied)
    records = database.db.get_top_k(database.db.commit_workload(kernel.module()), 10)
    default = schedules.apply(kernel.module(), spec.target)["main"]
    replayed = []
    for record in records:
        sch = s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(kernel.module())))  # a copy: scheduling edits in place
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        replayed.append(sch.mod["main"].body)
    assert len(records) == 3, "two trials and the default schedule"
    assert any(tvm_ffi.structural_equal(r, default.body, map_free_vars=True) for r in replayed), "the default competes"
    a, b = np.random.default_rng(0).standard_normal((2, 16, 64)).astype("float32")[0], np.eye(64, dtype="float32")
    np.testing.assert_allclose(Runner(database.build(mod))([a, b])[0], a, rtol=1e-5)
    assert tvm_ffi.structural_hash(tuned) != tvm_ffi.structural_hash(kernel.module()["main"])


def test_a_tuned_build_applies_records_and_gives_the_other_kernels_the_default_schedule(tmp_path):
    """The matmul has a tuning record, the add has none: the build compiles the matmul from its record and
    the add with the default CPU schedule (as ``runtime.build`` does), the search's kernel timing schedules
    both exactly as built, and the outputs are right."""
    import tvm_ffi
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from tsir.backends import schedules
    from tsir.backends.kernels import fuse, kernels
    from tsir.backends.runtime import Runner
    from tsir.backends.tuning import TuningDatabase
    from tsir.search.measured import as_built

    spec = targets.resolve("x86")
    bb = relax.BlockBuilder()
    x, w = relax.Var("x", relax.TensorType((16, 64), "float32")), relax.Var("w", relax.TensorType((64, 64), "float32"))
    a, b = (relax.Var(n, relax.TensorType((64, 256), "float32")) for n in "ab")
    with bb.function("main", [x, w, a, b]):
        with bb.dataflow():
            out = bb.emit_output(relax.Tuple([bb.emit(relax.op.matmul(x, w)), bb.emit(relax.op.add(a, b))]))
        bb.emit_func_output(out)
    mod = bb.get()
    matmul, add = sorted(kernels(fuse(mod, spec.target)), key=lambda k: k.op_class != "matmul")
    assert (matmul.op_class, add.op_class) == ("matmul", "other")
    database = TuningDatabase(spec.target, tmp_path)
    sch = s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(matmul.module())))  # a copy: scheduling edits in place
    _, j, _ = sch.get_loops(sch.get_child_blocks(sch.get_sblock("root"))[0])
    sch.split(j, factors=sch.sample_perfect_tile(j, n=2, max_innermost_factor=16, decision=[4, 16]))
    workload = database.db.commit_workload(matmul.module())
    database.db.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, workload, [1e-6], database.target, ms.arg_info.ArgInfo.from_prim_func(matmul.module()["main"])))
    database = TuningDatabase(spec.target, tmp_path)  # reopened from disk

    @tvm.instrument.pass_instrument
    class Capture:  # the kernels as scheduled, just before the build lowers the Relax dataflow
        kernels: dict = {}

        def run_before_pass(self, module, info):
            if info.name == "RewriteDataflowReshape":
                Capture.kernels = {gv.name_hint: f for gv, f in module.functions.items()
                                   if isinstance(f, tvm.tirx.PrimFunc)}

    with tvm.transform.PassContext(instruments=[Capture()]):
        executable = database.build(mod)
    built = Capture.kernels
    tuned, default = database.scheduled(matmul)["main"], schedules.apply(add.module(), spec.target)["main"]
    assert not tvm_ffi.structural_equal(tuned.body, matmul.func.body, map_free_vars=True), "the record is a schedule"
    assert not tvm_ffi.structural_equal(default.body, add.func.body, map_free_vars=True), "the default schedules"
    assert tvm_ffi.structural_equal(built[matmul.name].body, tuned.body, map_free_vars=True), "record applied"
    assert tvm_ffi.structural_equal(built[add.name].body, default.body, map_free_vars=True), "default schedule"
    for kernel in (matmul, add):  # tier 2 times each kernel as it is built
        timed = as_built(kernel, database, spec.target)["main"]
        assert tvm_ffi.structural_equal(timed.body, built[kernel.name].body, map_free_vars=True), kernel.name
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype("float32") for s in ((16, 64), (64, 64), (64, 256), (64, 256))]
    got = Runner(executable)(args)
    np.testing.assert_allclose(got[0], args[0] @ args[1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], args[2] + args[3], rtol=1e-6)


def test_calibration_fits_efficiencies_and_overhead_and_round_trips(tmp_path):
    from tsir.backends.roofline import X86_HOST
    from tsir.search import calibration
    from tsir.search.calibration import Sample

    overhead = 5e-6
    data = [Sample("matmul", "untuned", 2e6 * i, 1e4, overhead + 2e6 * i / 1e9) for i in range(1, 6)]  # 1 GFLOP/s
    data += [Sample("dnnl_linear", "library", 2e6 * i, 1e4, overhead + 2e6 * i / 4e11) for i in range(1, 6)]
    data += [Sample("other", "untuned", 0.0, 4e5 * i, overhead + 4e5 * i / 2e10) for i in range(1, 6)]  # 20 GB/s
    cal = calibration.fit(data, X86_HOST, "llvm-test")
    assert cal.dispatch_s == pytest.approx(overhead, rel=0.5)
    assert cal.efficiency["untuned"]["matmul"] == pytest.approx(1e9 / X86_HOST.peak_flops, rel=0.3)
    assert cal.efficiency["library"]["dnnl_linear"] == pytest.approx(4e11 / X86_HOST.peak_flops, rel=0.3)
    assert cal.bandwidth_efficiency == pytest.approx(2e10 / X86_HOST.bandwidth, rel=0.3)
    calibration.save(tmp_path, cal)
    assert calibration.load(tmp_path, "llvm-test") == cal and calibration.load(tmp_path, "other-target") is None
    roofline = cal.roofline(X86_HOST, tuned=True)  # no tuned kernels measured: the untuned efficiency stands
    assert roofline.compute_efficiency("linear") == cal.efficiency["untuned"]["matmul"]
    assert roofline.compute_efficiency("dnnl_linear") == cal.efficiency["library"]["dnnl_linear"]
    assert calibration.fit(data[:2], X86_HOST, "llvm-test") is None, "too few kernels to fit"


@pytest.mark.parametrize("library_fast", [True, False])
def test_calibration_decides_library_or_tvm_kernels_in_analytic_mode(tmp_path, library_fast):
    from tsir.backends.roofline import X86_HOST
    from tsir.ir.ops import LIBRARY_OPS
    from tsir.ir.term import postorder
    from tsir.search import calibration
    from tsir.search.extract import to_term
    from tsir.search.genetic import GeneticConfig

    egraph, space, graph, original, spec, inputs = _mlp_space()
    fast, slow = 0.8, 1e-4
    tvm_gemm = ("matmul", "conv1d", "conv2d")  # TVM's GEMM-class kernel classes (a linear may become a 1x1 conv)
    cal = calibration.Calibration(str(spec.target.export()),
                                  {"untuned": dict.fromkeys(tvm_gemm, slow if library_fast else fast),
                                   "library": {"dnnl_linear": fast if library_fast else slow,
                                               "dnnl_matmul": fast if library_fast else slow}},
                                  1.0, X86_HOST.dispatch_s, 10)
    calibration.save(tmp_path, cal)
    options = SearchOptions(cost="analytic", cache_dir=tmp_path)
    outcome = run_search(egraph, space, graph, original, spec, GeneticConfig(generations=5), options, inputs)
    ops = {t.op for t in postorder(to_term(space, outcome.genome))}
    assert outcome.report["calibrated"]
    assert bool(ops & LIBRARY_OPS) == library_fast, ops
