"""Child-side jobs of ``backends/child.py``: build and time one kernel, time one library.

Loaded by file path in the child, so it imports only TVM and numpy (not the tsir package).
"""

from __future__ import annotations

import statistics

import numpy as np
import tvm
from tvm import relax


def time_kernel(item: dict, context: dict) -> dict:
    """Child side: build one kernel module (``tvm.ir.save_json`` text) and time it on random inputs.

    The module's ``main`` is a PrimFunc (a TVM kernel) or a Relax function (one vendor-library call).
    """
    mod = tvm.ir.load_json(item["module"])
    target = tvm.target.Target(context["target"])
    device = tvm.cpu()
    rng = np.random.default_rng(0)
    if isinstance(mod["main"], relax.Function):
        vm = relax.VirtualMachine(tvm.compile(mod, target=target), device)
        shapes = [([int(s) for s in p.ty.shape], str(p.ty.dtype)) for p in mod["main"].params]
        fn, timed = vm["main"], vm
    else:
        lib = tvm.compile(mod, target=target).jit()
        shapes = [([int(s) for s in p.ty.shape], str(p.ty.dtype)) for p in mod["main"].params]
        fn, timed = lib["main"], lib
    args = [tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype) if "float" in dtype
                               else np.zeros(shape, dtype), device) for shape, dtype in shapes]
    fn(*args)
    timer = timed.time_evaluator("main", device, number=context.get("number", 3), repeat=context.get("repeat", 5),
                                 min_repeat_ms=context.get("min_repeat_ms", 5))
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}


def time_library(path: str, context: dict) -> dict:
    """Child side: load ``path``, run ``main`` once, then time it (median of ``repeat`` batches)."""
    device = tvm.cpu()
    vm = relax.VirtualMachine(tvm.runtime.load_module(path), device)
    with np.load(context["inputs"]) as data:
        args = [tvm.runtime.tensor(data[f"arr_{i}"], device) for i in range(len(data.files))]
    vm["main"](*args)
    timer = vm.time_evaluator("main", device, number=1, repeat=context["repeat"],
                              min_repeat_ms=context["min_repeat_ms"])
    return {"median_ms": statistics.median(timer(*args).results) * 1e3}
