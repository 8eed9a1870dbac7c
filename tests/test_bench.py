"""The benchmark harness: interleaved sampling, failures kept as results, the JSON/table/chart it writes."""

from __future__ import annotations

import json
import math
import time

import pytest

from bench.__main__ import main
from bench.report import geomeans, markdown, ratios
from bench.timing import interleaved
from bench.worker import Worker


def test_interleaved_keeps_failures_and_caps_slow_systems():
    order = []

    def sampler(name, ms):
        def sample(n):
            order.append(name)
            return ms

        return sample

    def broken(n):
        raise RuntimeError("kernel crashed")

    samples, errors = interleaved({"fast": sampler("fast", 0.1), "slow": sampler("slow", 400.0), "bad": broken},
                                  warmup=1, rounds=8, block_ms=10, cap_s=0.5)
    assert len(samples["fast"]) == 8 and len(samples["slow"]) == 3  # capped, but never under 3 samples
    assert "bad" not in samples and "kernel crashed" in errors["bad"]
    timed = order[4:]  # after warm-up and calibration
    assert timed[:2] == ["fast", "slow"] and timed[2:4] == ["slow", "fast"]  # who goes first rotates


def test_interleaved_leaves_each_block_a_pause_before_it():
    starts = []

    def sample(n):
        starts.append(time.monotonic())
        return 0.01

    interleaved({"a": sample, "b": sample}, warmup=1, rounds=4, block_ms=1, cap_s=5, pause_ms=30)
    timed = starts[4:]  # after warm-up and calibration
    assert len(timed) == 8 and min(b - a for a, b in zip(timed, timed[1:], strict=False)) >= 0.03


def _row(model, batch, system, ms):
    return {"model": model, "batch": batch, "system": system, "median_ms": ms, "p10_ms": ms, "p90_ms": ms,
            "verified": True if ms else None, "max_abs_err": 0.0, "error": None if ms else "boom"}


def test_ratio_table_and_geomeans():
    results = [_row("a", 1, "tsir_exact", 1.0), _row("a", 1, "onnxruntime", 2.0),
               _row("b", 1, "tsir_exact", 2.0), _row("b", 1, "onnxruntime", 1.0),
               _row("c", 1, "tsir_exact", 1.0), _row("c", 1, "onnxruntime", None)]
    table = ratios(results)
    assert table[("a", 1)]["onnxruntime"] == 2.0 and table[("c", 1)]["onnxruntime"] is None
    assert math.isclose(geomeans(table)[(1, "onnxruntime")], 1.0)  # sqrt(2 * 0.5); the failure is left out
    text = markdown({"machine": {"threads": 2}, "results": results})
    assert "| c | 1 | 1.000 | 1.00 | fail |" in text and "c b1 onnxruntime: boom" in text


def test_unverified_rows_are_shown_but_left_out_of_ratios_and_geomeans():
    results = [_row("a", 1, "tsir_exact", 1.0), _row("a", 1, "onnxruntime", 2.0),
               _row("b", 1, "tsir_exact", 2.0), {**_row("b", 1, "onnxruntime", 0.5), "verified": False},
               {**_row("c", 1, "tsir_exact", 1.0), "verified": False}, _row("c", 1, "onnxruntime", 8.0)]
    table = ratios(results)
    assert table[("b", 1)]["onnxruntime"] is None  # the unverified system
    assert table[("c", 1)]["onnxruntime"] is None and table[("c", 1)]["tsir_exact"] is None  # unverified reference
    assert geomeans(table)[(1, "onnxruntime")] == 2.0  # model a alone
    text = markdown({"machine": {"threads": 2}, "results": results})
    assert "| b | 1 | 2.000 | 1.00 | unverified (0.25) |" in text
    assert "| c | 1 | 1.000 unverified | unverified (1.00) | unverified (8.00) |" in text
    assert "| **geomean** | 1 | | 1.00 | 2.00 |" in text
    assert "- b b1 onnxruntime: max abs err 0" in text and "- c b1 tsir_exact" in text


def test_a_failing_system_is_recorded_not_fatal():
    worker = Worker("no_such_system")
    try:
        info = worker.prepare("mlp", 1, 1.0, timeout_s=300)
    finally:
        worker.close()
    assert info["error"].startswith("KeyError")


@pytest.mark.filterwarnings("ignore")
def test_bench_writes_json_table_and_chart(tmp_path):
    out = tmp_path / "run"
    assert main(["--models", "mlp", "--batches", "1", "--systems", "torch_eager", "tsir_exact", "--rounds", "3",
                 "--budget-s", "3", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["machine"]["threads"] == 2
    rows = {r["system"]: r for r in doc["results"]}
    assert set(rows) == {"torch_eager", "tsir_exact"}
    for row in rows.values():
        assert row["verified"] is True and row["max_abs_err"] < 1e-4 and row["error"] is None
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert "dnnl_linear" in rows["tsir_exact"]["program"]
    assert "| mlp | 1 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ops_table_times_every_road_of_a_small_model(tmp_path):
    from bench import ops

    assert ops.main(["--models", "lenet", "--batches", "1", "--repeat", "2", "--out", str(tmp_path / "ops")]) == 0
    doc = json.loads((tmp_path / "ops.json").read_text())
    convs = [r for r in doc["ops"] if r["op"].startswith("conv2d")]
    matmuls = [r for r in doc["ops"] if r["op"].startswith("matmul")]
    assert len(convs) == 2 and matmuls and doc["peak_gflops"] > 0
    for row in convs:  # every road computes the op's value; NHWC is a road of convs only
        assert set(row["max_abs_err"]) == {"tvm", "onednn", "onednn_nhwc"}
        assert max(row["max_abs_err"].values()) < 1e-3 and row["onednn_nhwc_gflops"] > 0
    assert all(r["onednn_nhwc_gflops"] is None and r["onednn_gflops"] > 0 for r in matmuls)
    assert "oneDNN NHWC GFLOP/s" in (tmp_path / "ops.md").read_text()
