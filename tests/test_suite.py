"""The model suite: every architecture in ``tsir.suite`` and its ONNX twin optimize (exact mode) and verify.

Each test adds its rows to the coverage table that ``conftest.py`` prints at the end of the run.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

import tsir
from tsir import suite
from tsir.frontend import export
from tsir.ir.ops import OPS

BUDGET_S = 1.0


def _kernels(result: tsir.Result) -> Counter:
    """The optimized program's ops that run as kernels (views, tuples and leaves left out)."""
    return Counter({op: n for op, n in result.report["program"]["optimized"].items() if OPS[op].kernel})


def _twin_difference(from_torch: tsir.Result, from_onnx: tsir.Result) -> str:
    """How the ONNX twin's kernels differ from the torch program's ("" when they are the same ops)."""
    torch_ops, onnx_ops = _kernels(from_torch), _kernels(from_onnx)
    more, fewer = onnx_ops - torch_ops, torch_ops - onnx_ops
    return " ".join([*(f"+{n}{op}" for op, n in sorted(more.items())),
                     *(f"-{n}{op}" for op, n in sorted(fewer.items()))])


def _row(name: str, source: str, result: tsir.Result, seconds: float, twin: str = "", cost_vs_torch: str = "") -> dict:
    ops = result.report["program"]["optimized"]
    fired = sum(n for rules in result.report["rules_fired"].values() for n in rules.values())
    return {"model": name, "source": source, "ops": sum(ops.values()), "opaque": ops.get("opaque", 0),
            "rules_fired": fired, "verified": result.report["verification"]["passed"], "time_s": round(seconds, 1),
            "cost_vs_torch": cost_vs_torch, "onnx_vs_torch": twin or ("same" if source == "onnx" else "")}


@pytest.mark.parametrize("name", suite.names())
def test_model_and_its_onnx_twin_optimize_and_verify(name, tmp_path, record_coverage):
    model, inputs = suite.load(name)
    start = time.perf_counter()
    program = export(model, inputs)  # once, for both roads
    from_torch = tsir.optimize(program, inputs, budget_s=BUDGET_S, measure=False, model_name=name)
    torch_s = time.perf_counter() - start
    start = time.perf_counter()
    path = suite.export_onnx(program, inputs, tmp_path / f"{name}.onnx")
    from_onnx = tsir.optimize(path, [t.numpy() for t in inputs], budget_s=BUDGET_S, measure=False, model_name=name)
    record_coverage(_row(name, "torch", from_torch, torch_s))
    predicted = [r.report["search"]["predicted_s"] for r in (from_onnx, from_torch)]
    record_coverage(_row(name, "onnx", from_onnx, time.perf_counter() - start, _twin_difference(from_torch, from_onnx),
                         round(predicted[0] / predicted[1], 4)))
    assert from_torch.report["verification"]["status"] == from_onnx.report["verification"]["status"] == "verified"
    for result in (from_torch, from_onnx):  # every op tsir leaves opaque on the suite has a listed reason
        assert set(result.report["program"]["opaque"]) <= set(suite.OPAQUE_REASONS), result.report["program"]
    assert not from_torch.report["program"]["opaque"]
