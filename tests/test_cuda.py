"""CUDA: zoo models build with dlight's default GPU schedules and their kernels compile with nvcc for
several architectures; run tests need a GPU and skip with the reason otherwise."""

from __future__ import annotations

import shutil

import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from tsir import optimize, zoo
from tsir.backends import kernels, runtime, targets
from tsir.backends.tuning import TuningDatabase
from tsir.draws import fresh_inputs
from tsir.errors import TsirError
from tsir.frontend import export, to_relax
from tsir.verify import compare, reference_outputs

CUDA_MODELS = [("mlp", "cuda:t4"), ("lenet", "cuda:sm_80"), ("bert_layer", "cuda:h100")]
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) is not on PATH")
needs_gpu = pytest.mark.skipif(not targets.gpu_present(), reason="no CUDA GPU on this machine (compile-only CI)")


@needs_nvcc
@pytest.mark.parametrize(("name", "target"), CUDA_MODELS)
def test_cuda_build_compiles_with_nvcc(name, target, tmp_path):
    entry = zoo.load(name)
    spec = targets.resolve(target)
    executable = runtime.build(to_relax(export(entry.module, entry.example_inputs)), spec)
    source = runtime.cuda_source(executable)
    # dlight gave every kernel a GPU schedule: thread-bound loops, no unscheduled CPU-style kernel.
    assert source.count("__global__") >= 2 and "threadIdx.x" in source and "blockIdx.x" in source
    fatbin = runtime.nvcc_compile(executable, spec)
    assert len(fatbin) > 1000
    assert runtime.export(executable, tmp_path / f"{name}.so", spec).stat().st_size > 0


def test_cuda_target_names():
    assert targets.resolve("cuda:sm_90").target.attrs["arch"] == "sm_90"
    assert targets.resolve("cuda:t4").roofline.name == "t4"
    assert targets.resolve("cuda:sm_86").roofline.name == "a100"  # newest preset not newer than sm_86


@needs_gpu
@pytest.mark.parametrize("name", ["mlp", "lenet", "bert_layer"])
def test_cuda_runs_and_matches_torch(name):
    entry = zoo.load(name)
    executable = runtime.build(to_relax(export(entry.module, entry.example_inputs)), targets.resolve("cuda"))
    inputs = fresh_inputs(entry.example_inputs, seed=3)
    outputs = runtime.Runner(executable, tvm.cuda(0))([t.numpy() for t in inputs])
    check = compare(reference_outputs(entry.module, inputs), outputs)
    assert check.passed, check.problem


@needs_gpu
def test_optimize_for_cuda_on_gpu():
    entry = zoo.load("lenet")
    result = optimize(entry.module, entry.example_inputs, target="cuda", budget_s=10)
    assert result.report["target"]["verified_on"] == "local cuda gpu"
    assert result.report["verification"]["status"] == "verified"  # ran on the target itself
    assert result.report["latency_ms"]["optimized"] > 0


@needs_nvcc
def test_optimize_for_cuda_without_gpu_says_where_it_verified():
    if targets.gpu_present():
        pytest.skip("a GPU is present: test_optimize_for_cuda_on_gpu covers this machine")
    entry = zoo.load("mlp")
    result = optimize(entry.module, entry.example_inputs, target="cuda:sm_90", budget_s=5)
    assert result.report["target"]["verified_on"].startswith("host cpu build")
    verification = result.report["verification"]
    assert verification["status"] == "verified-on-host" and verification["verified_on"].startswith("host cpu build")
    assert result.report["target"]["measured_on"].startswith("not measured")
    assert "nvcc" in result.report["stages_s"]


@needs_nvcc
def test_metaschedule_cuda_candidates_build_and_a_record_is_applied(tmp_path):
    """The MetaSchedule path a GPU machine runs, as far as no GPU allows: the CUDA search space of a
    zoo kernel yields candidates that MetaSchedule's builder compiles, and a database record for the
    kernel replaces dlight's default schedule in the final build."""
    spec = targets.resolve("cuda:sm_80")
    entry = zoo.load("mlp")
    mod = to_relax(export(entry.module, entry.example_inputs))
    kernel = next(k for k in kernels.kernels(kernels.fuse(mod, spec.target)) if "matmul" in k.name)
    context = ms.TuneContext(mod=kernel.module(), target=spec.target, space_generator="post-order-apply",
                             search_strategy="replay-trace", num_threads=1, rand_state=0)
    context.pre_tuning(max_trials=1, num_trials_per_iter=1)
    candidates = context.generate_measure_candidates()
    assert candidates
    built = ms.builder.LocalBuilder(max_workers=1, timeout_sec=300).build(
        [ms.builder.BuilderInput(c.sch.mod, spec.target) for c in candidates])
    assert [b.error_msg for b in built] == [None] * len(candidates)

    database = TuningDatabase(spec.target, tmp_path)
    assert database.record_digest(kernel) is None
    workload = database.db.commit_workload(kernel.module())
    # a record as a GPU runner would leave it (the run time is a stand-in: nothing is timed here)
    database.db.commit_tuning_record(ms.database.TuningRecord(candidates[0].sch.trace, workload, [1e-5],
                                                              spec.target))
    assert database.record_digest(kernel) is not None
    tuned = database.build(mod)
    assert runtime.cuda_source(tuned) != runtime.cuda_source(runtime.build(mod, spec))
    assert len(runtime.nvcc_compile(tuned, spec)) > 1000


def test_measured_cost_needs_the_device_here():
    if targets.gpu_present():
        pytest.skip("a GPU is present: measured cost runs on it")
    entry = zoo.load("mlp")
    with pytest.raises(TsirError, match="no cuda device is on this machine"):
        optimize(entry.module, entry.example_inputs, target="cuda", cost="measured", budget_s=5)


@needs_gpu
def test_optimize_for_cuda_tunes_and_measures_on_the_gpu(tmp_path):
    entry = zoo.load("lenet")
    # tuning gets 30 % of the budget; on an H200 machine a CUDA tuning child's first chunk took 46 s (TVM's
    # tensor intrinsics and the first nvcc builds), the next 5.5 s: 120 s left lenet's 3 kernels untuned
    result = optimize(entry.module, entry.example_inputs, target="cuda", cost="measured", tuning_trials=8,
                      budget_s=240, cache_dir=tmp_path)
    search = result.report["search"]
    assert search["cost_tier"] == "measured" and search["tuning"]["tasks_tuned"] > 0
    assert search["programs_measured"] > 0 and result.report["verification"]["status"] == "verified"
