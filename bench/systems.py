"""The systems a zoo model is run under. Each ``prepare`` returns a ``Prepared``: a zero-argument call that
runs one inference on the example inputs (what is timed) and a way to get numpy outputs (to verify).

``tvm_baseline`` and ``tsir_exact`` build with the same ``tsir.backends.runtime.build`` (same target,
same kernel sources and tuning state); ``tvm_baseline`` imports the model and builds it with no rewrites.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tvm

from tsir import optimize
from tsir.backends import runtime, targets
from tsir.frontend import export, to_relax
from tsir.zoo import ZooModel

THREADS = 2


@dataclass
class Prepared:
    call: Callable[[], object]
    outputs: Callable[[], list[np.ndarray]]
    notes: dict


def _numpy(value) -> list[np.ndarray]:
    if isinstance(value, torch.Tensor):
        return [value.detach().numpy()]
    if isinstance(value, np.ndarray):
        return [value]
    if hasattr(value, "numpy"):
        return [value.numpy()]
    return [a for item in value for a in _numpy(item)]


def _torch(module: torch.nn.Module, inputs: tuple) -> Prepared:
    def call():
        with torch.inference_mode():
            return module(*inputs)

    return Prepared(call, lambda: _numpy(call()), {})


def torch_eager(entry: ZooModel, budget_s: float) -> Prepared:
    return _torch(entry.module, entry.example_inputs)


def torch_compile(entry: ZooModel, budget_s: float) -> Prepared:
    torch.compiler.reset()
    prepared = _torch(torch.compile(entry.module, dynamic=False), entry.example_inputs)
    prepared.call()  # compiles here, not inside the timed calls
    return prepared


def onnxruntime(entry: ZooModel, budget_s: float) -> Prepared:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(entry.module, entry.example_inputs, str(path), dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), entry.example_inputs, strict=True)}
    return Prepared(lambda: session.run(None, feeds), lambda: _numpy(session.run(None, feeds)), {})


def _vm(executable, inputs: tuple, notes: dict) -> Prepared:
    runner = runtime.Runner(executable)
    args = [tvm.runtime.tensor(x.numpy(), runner.device) for x in inputs]
    main = runner.vm["main"]
    return Prepared(lambda: main(*args), lambda: runtime.flatten(main(*args)), notes)


def tvm_baseline(entry: ZooModel, budget_s: float) -> Prepared:
    mod = to_relax(export(entry.module, entry.example_inputs))
    return _vm(runtime.build(mod, targets.resolve("x86")), entry.example_inputs, {})


def tsir_exact(entry: ZooModel, budget_s: float) -> Prepared:
    result = optimize(entry.module, entry.example_inputs, mode="exact", budget_s=budget_s, measure=False)
    notes = {"tsir_verification": result.report["verification"], "program": result.report["program"]["optimized"]}
    return _vm(result.executable, entry.example_inputs, notes)


def tsir_approx(entry: ZooModel, budget_s: float) -> Prepared:
    """Approximate mode with the fidelity default (zoo models have random weights and no data): relative
    output error <= 1% on random held-out inputs; that budget, not the fp32 tolerance, is its check."""
    from tsir.approx.budget import random_budget

    result = optimize(entry.module, entry.example_inputs, mode="approx", accuracy=random_budget(entry.example_inputs),
                      budget_s=budget_s)  # measure: candidates are ranked by latency timed here
    approx = result.report["approx"]
    notes = {"approx": {**approx["heldout"], "layers": approx["layers"]}, "size_bytes": result.report["size_bytes"]}
    return _vm(result.executable, entry.example_inputs, notes)


SYSTEMS: dict[str, Callable[[ZooModel, float], Prepared]] = {
    "torch_eager": torch_eager,
    "torch_compile": torch_compile,
    "onnxruntime": onnxruntime,
    "tvm_baseline": tvm_baseline,
    "tsir_exact": tsir_exact,
    "tsir_approx": tsir_approx,
}
