"""Child-side jobs of ``backends/child.py``: build and time one kernel, time one library.

Loaded by file path in the child, so it imports only TVM and numpy (not the tsir package).
"""

from __future__ import annotations

import statistics

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import dlight


def time_kernel(item: dict, context: dict) -> dict:
    """Child side: build one kernel module (``tvm.ir.save_json`` text) and time it on random inputs.

    On a GPU target a kernel without a tuned schedule gets dlight's default GPU schedule, as in the
    final build (``tvm.compile``'s CUDA pipeline).
    """
    mod = tvm.ir.load_json(item["module"])
    target = tvm.target.Target(context["target"])
    if "gpu" in target.keys:
        with target:
            mod = dlight.ApplyDefaultSchedule(dlight.gpu.Matmul(), dlight.gpu.GEMV(), dlight.gpu.Reduction(),
                                              dlight.gpu.GeneralReduction(), dlight.gpu.Fallback())(mod)
    lib = tvm.compile(mod, target=target).jit()
    device = tvm.device(context.get("device", "cpu"), 0)
    rng = np.random.default_rng(0)
    args = []
    for param in mod["main"].params:
        buf = param.ty
        shape, dtype = [int(s) for s in buf.shape], str(buf.dtype)
        data = rng.standard_normal(shape).astype(dtype) if "float" in dtype else np.zeros(shape, dtype)
        args.append(tvm.runtime.tensor(data, device))
    timer = lib.time_evaluator("main", device, number=context.get("number", 3), repeat=context.get("repeat", 5),
                               min_repeat_ms=context.get("min_repeat_ms", 5))
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}


def time_library(path: str, context: dict) -> dict:
    """Child side: load ``path``, run ``main`` once, then time it (median of ``repeat`` batches)."""
    device = tvm.device(context.get("device", "cpu"), 0)
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), device)
    with np.load(context["inputs"]) as data:
        args = [tvm.runtime.tensor(data[f"arr_{i}"], device) for i in range(len(data.files))]
    vm["main"](*args)
    timer = vm.time_evaluator("main", device, number=1, repeat=context["repeat"],
                              min_repeat_ms=context["min_repeat_ms"])
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}
