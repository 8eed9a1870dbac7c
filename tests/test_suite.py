"""The model suite: every architecture in ``tsir.suite`` and its ONNX twin optimize (exact mode) and verify.

Each test adds its rows to the coverage table that ``conftest.py`` prints at the end of the run.
"""

from __future__ import annotations

import time

import pytest

import tsir
from tsir import suite
from tsir.frontend import export

BUDGET_S = 1.0


def _row(name: str, source: str, result: tsir.Result, seconds: float) -> dict:
    ops = result.report["program"]["optimized"]
    fired = sum(n for rules in result.report["rules_fired"].values() for n in rules.values())
    return {"model": name, "source": source, "ops": sum(ops.values()), "opaque": ops.get("opaque", 0),
            "rules_fired": fired, "verified": result.report["verification"]["passed"], "time_s": round(seconds, 1)}


@pytest.mark.parametrize("name", suite.names())
def test_model_and_its_onnx_twin_optimize_and_verify(name, tmp_path, record_coverage):
    model, inputs = suite.load(name)
    start = time.perf_counter()
    program = export(model, inputs)  # once, for both roads
    from_torch = tsir.optimize(program, inputs, budget_s=BUDGET_S, measure=False, model_name=name)
    record_coverage(_row(name, "torch", from_torch, time.perf_counter() - start))
    start = time.perf_counter()
    path = suite.export_onnx(program, inputs, tmp_path / f"{name}.onnx")
    from_onnx = tsir.optimize(path, [t.numpy() for t in inputs], budget_s=BUDGET_S, measure=False, model_name=name)
    record_coverage(_row(name, "onnx", from_onnx, time.perf_counter() - start))
    assert from_torch.report["verification"]["passed"] and from_onnx.report["verification"]["passed"]
    opaque = [r.report["program"]["optimized"].get("opaque", 0) for r in (from_torch, from_onnx)]
    assert opaque[1] <= opaque[0]  # the ONNX road keeps every op its torch twin models
