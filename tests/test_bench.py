"""The benchmark harness: interleaved sampling, failures kept as results, the JSON/table/chart it writes."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from bench import cases
from bench.__main__ import main, parse, run_model
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


def _row(model, batch, system, ms, verified=True):
    return {"model": model, "batch": batch, "system": system, "median_ms": ms, "p10_ms": ms, "p90_ms": ms,
            "first_call_ms": ms, "peak_rss_mb": 100.0, "verified": verified if ms else None, "max_abs_err": 0.0,
            "error": None if ms else "boom"}


def test_ratio_table_uses_the_best_verified_peer_per_row():
    results = [_row("a", 1, "tsir_exact", 1.0), _row("a", 1, "onnxruntime", 2.0), _row("a", 1, "openvino", 4.0),
               _row("b", 1, "tsir_exact", 2.0), _row("b", 1, "onnxruntime", 8.0), _row("b", 1, "openvino", 1.0),
               _row("c", 1, "tsir_exact", 1.0), _row("c", 1, "onnxruntime", 0.5, verified=False),
               _row("c", 1, "openvino", 3.0)]
    table = ratios(results)
    assert table[("a", 1)]["best_peer"] == 2.0 and table[("a", 1)]["openvino"] == 4.0
    assert table[("b", 1)]["best_peer"] == 0.5  # openvino is the faster peer here
    assert table[("c", 1)]["best_peer"] == 3.0  # the faster onnxruntime did not verify: never a best peer
    assert table[("c", 1)]["onnxruntime"] is None
    assert math.isclose(geomeans(table)[(1, "best_peer")], (2.0 * 0.5 * 3.0) ** (1 / 3))
    text = markdown({"machine": {"threads": 2, "peak_gflops": 40.0}, "results": results})
    assert "| b | 1 | 2.000 | 2.000 | openvino | 1.000 | 0.50 | 4.00 | 0.50 | 100 | 100 |" in text
    assert "| c | 1 | 1.000 | 1.000 | openvino | 3.000 | 3.00 | unverified | 3.00 | 100 | 100 |" in text
    assert "- c b1 onnxruntime: max abs err 0" in text


def test_failed_and_unverified_references_enter_no_ratio():
    results = [_row("a", 1, "tsir_exact", 1.0), _row("a", 1, "onnxruntime", 2.0), _row("a", 1, "openvino", None),
               _row("b", 1, "tsir_exact", 1.0, verified=False), _row("b", 1, "onnxruntime", 8.0),
               _row("c", 1, "tsir_exact", None), _row("c", 1, "onnxruntime", 8.0)]
    table = ratios(results)
    assert table[("a", 1)] == {"best_peer": 2.0, "onnxruntime": 2.0, "openvino": None}
    assert table[("b", 1)]["best_peer"] is None and table[("c", 1)]["best_peer"] is None
    assert geomeans(table)[(1, "best_peer")] == 2.0  # model a alone
    text = markdown({"machine": {"threads": 2}, "results": results})
    assert "| b | 1 | 1.000 unverified |" in text and "| c | 1 | fail |" in text
    assert "| a | 1 | 1.000 | 1.000 | onnxruntime | 2.000 | 2.00 | 2.00 | fail | 100 | 100 |" in text
    assert "- a b1 openvino: boom" in text


def test_a_failing_system_is_recorded_with_its_error():
    args = parse(["--models", "mlp", "--batches", "1", "--rounds", "3"])
    workers = {"no_such_system": Worker("no_such_system")}
    try:
        (row,) = run_model("mlp", 1, workers, args)
    finally:
        workers["no_such_system"].close()
    assert row["system"] == "no_such_system" and row["median_ms"] is None
    assert row["error"].startswith("KeyError") and row["traceback_tail"]


def test_suite_models_get_batch_8_inputs_in_their_valid_range():
    bert, image = cases.load("bert", 8), cases.load("resnet-basic", 8)
    (tokens,), (pixels,) = bert.inputs, image.inputs
    assert tokens.shape == (8, 16) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < bert.config.vocab_size and len(set(tokens[:, 0].tolist())) > 1
    assert pixels.shape == (8, 3, 32, 32) and pixels.is_floating_point()
    assert cases.load("mlp", 8).inputs[0].shape[0] == 8 and cases.load("mlp", 1).config is None


@pytest.mark.filterwarnings("ignore")
def test_quick_bench_writes_machine_peak_memory_and_first_call(tmp_path):
    out = tmp_path / "run"
    assert main(["--quick", "--models", "mlp", "--systems", "onnxruntime", "openvino", "tsir_exact",
                 "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    machine = doc["machine"]
    assert machine["threads"] == 2 and machine["peak_gflops"] > 0 and machine["llvm_mcpu"]
    assert machine["policy"]["TVM_NUM_THREADS"] == machine["policy"]["OMP_NUM_THREADS"] == "2"
    assert doc["config"]["batches"] == [1] and set(doc["systems"]) == {"onnxruntime", "openvino", "tsir_exact"}
    rows = {r["system"]: r for r in doc["results"]}
    for row in rows.values():
        assert row["verified"] is True and row["max_abs_err"] < 1e-4 and row["error"] is None
        assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
        assert row["first_call_ms"] > 0 and row["peak_rss_mb"] > 0 and row["prepare_peak_rss_mb"] > 0
        assert 0 < row["base_rss_mb"] <= row["prepare_peak_rss_mb"]
    for peer in ("onnxruntime", "openvino"):
        assert rows[peer]["threads"] in (1, 2) and set(rows[peer]["threads_ms"]) == {"1", "2"}
    assert rows["onnxruntime"]["transformer_optimizer"].startswith("not applicable")
    program = rows["tsir_exact"]["program"]
    assert program.get("linear", 0) + program.get("dnnl_linear", 0) == 3  # the row names tsir's program
    # optimized in a child; the worker holds only the deployed library, less than the optimizer did
    assert 0 < rows["tsir_exact"]["peak_rss_mb"] < rows["tsir_exact"]["optimize_peak_rss_mb"]
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
