"""Target names resolve to presets; bad names list the valid ones."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tsir import optimize, zoo
from tsir.backends import presets, targets
from tsir.errors import TargetError


@pytest.mark.parametrize("core", list(presets.ARM_CORES))
def test_arm_presets(core):
    spec = targets.resolve(f"arm:{core}")
    attrs = spec.target.attrs
    assert spec.kind == "arm" and spec.cc == "aarch64-linux-gnu-g++"
    assert attrs["mtriple"] == "aarch64-linux-gnu" and attrs["mcpu"] == core
    assert "+neon" in attrs["mattr"]
    # dotprod exactly on the Armv8.2 cores, and LLVM agrees the feature is on.
    assert ("+dotprod" in attrs["mattr"]) == (core in ("cortex-a76", "neoverse-n1"))
    assert bool(spec.target.attrs["feature.has_dotprod"]) == (core in ("cortex-a76", "neoverse-n1"))
    assert spec.roofline.peak_flops > 1e9 and spec.roofline.bandwidth > 1e9


def test_plain_names():
    assert targets.resolve("x86").target.attrs["mcpu"] == targets.host_cpu()
    assert targets.resolve("arm").name == "arm:cortex-a72"
    assert targets.resolve("ARM:Cortex-A76").name == "arm:cortex-a76"
    assert targets.resolve("cuda").kind == "cuda"


@pytest.mark.parametrize("bad", ["gpu", "arm:cortex-m4", "cuda:sm_3", "cuda:", "x86:avx", 42])
def test_bad_names_list_valid_ones(bad):
    with pytest.raises(TargetError, match="known targets: x86, arm, arm:cortex-a53.*cuda:sm_90"):
        targets.resolve(bad)


def test_optimize_rejects_bad_target_and_rpc_before_work():
    entry = zoo.load("mlp")
    with pytest.raises(TargetError, match="known targets"):
        optimize(entry.module, entry.example_inputs, target="tpu")
    with pytest.raises(Exception, match="host:port:key"):
        optimize(entry.module, entry.example_inputs, rpc="localhost:9190")


def test_kernels_bound_by_memory_alike_rank_by_their_compute_rate():
    """A tiny linear is memory- and dispatch-bound in TVM's code and in oneDNN's alike; without the library
    call's own overhead the faster compute still ranks first, so the choice does not fall to the e-graph's
    order. With it, TVM's kernel wins a tiny linear and oneDNN a large one."""
    roofline = targets.resolve("x86").roofline
    x, w, b, out = ((4, 16), "float32"), ((16, 16), "float32"), ((16,), "float32"), ((4, 16), "float32")
    no_call = replace(roofline, library_call_s=0.0)
    tvm_code, onednn = (no_call.kernel_s(op, [x, w, b], out) for op in ("linear", "dnnl_linear"))
    assert onednn < tvm_code < onednn * 1.01
    tvm_code, onednn = (roofline.kernel_s(op, [x, w, b], out) for op in ("linear", "dnnl_linear"))
    assert tvm_code < onednn == pytest.approx(no_call.kernel_s("dnnl_linear", [x, w, b], out) + roofline.library_call_s)
    x, w, b, out = ((256, 1024), "float32"), ((1024, 1024), "float32"), ((1024,), "float32"), ((256, 1024), "float32")
    assert roofline.kernel_s("dnnl_linear", [x, w, b], out) < roofline.kernel_s("linear", [x, w, b], out)
