"""CUDA: zoo models build with dlight's default GPU schedules and their kernels compile with nvcc for
several architectures; run tests need a GPU and skip with the reason otherwise."""

from __future__ import annotations

import shutil

import pytest
import tvm

from tsir import optimize, zoo
from tsir.backends import runtime, targets
from tsir.frontend import export, to_relax
from tsir.verify import DEFAULT_TOLERANCE, compare, fresh_inputs, reference_outputs

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
    assert compare(reference_outputs(entry.module, inputs), outputs).relative_error <= DEFAULT_TOLERANCE


@needs_gpu
def test_optimize_for_cuda_on_gpu():
    entry = zoo.load("lenet")
    result = optimize(entry.module, entry.example_inputs, target="cuda", budget_s=10)
    assert result.report["target"]["verified_on"] == "local cuda gpu"
    assert result.report["latency_ms"]["optimized"] > 0


@needs_nvcc
def test_optimize_for_cuda_without_gpu_says_where_it_verified():
    if targets.gpu_present():
        pytest.skip("a GPU is present: test_optimize_for_cuda_on_gpu covers this machine")
    entry = zoo.load("mlp")
    result = optimize(entry.module, entry.example_inputs, target="cuda:sm_90", budget_s=5)
    assert result.report["target"]["verified_on"].startswith("host cpu build")
    assert result.report["target"]["measured_on"].startswith("not measured")
    assert "nvcc" in result.report["stages_s"]
