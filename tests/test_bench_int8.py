"""The int8 peers of ``make bench-approx``: quantized with the calibration data, scored on the held-out data
against the original model's outputs, and compared with tsir only where both are verified."""

from __future__ import annotations

import numpy as np
import pytest

from bench import cases, int8_peers
from bench.approx import _reference, _versus
from tsir.approx.budget import Budget, top1
from tsir.approx.real import REAL

pytestmark = pytest.mark.xdist_group("approx")  # shares the trained digits model

PEERS = ["onnxruntime_int8", "openvino_int8"]


@pytest.fixture(scope="module")
def digits():
    model, inputs, budget = REAL["digits"]()
    batch = len(inputs[0])
    return cases.load("digits", batch), budget, _reference(model, budget.data.heldout, batch)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("peer", PEERS)
def test_int8_peer_keeps_digits_accuracy_on_heldout_labels(peer, digits, tmp_path):
    case, budget, reference = digits
    prepared = getattr(int8_peers, peer)(case, 30, str(int8_peers.write_data(tmp_path / "d.npz", budget, reference)))
    held = prepared.notes["approx"]
    assert held["metric"] == "top1" and held["original"] == top1(reference, reference, budget.data.heldout_labels)
    assert held["within_budget"] and held["original"] - held["optimized"] <= budget.max_drop
    fp32_bytes = sum(p.numel() * 4 for p in case.module.parameters())
    assert 0 < prepared.notes["artifact_bytes"] < fp32_bytes  # int8 weights
    assert prepared.notes["threads"] in (1, 2)
    outputs = prepared.outputs()[0]  # the quantized model's own outputs on the example batch
    assert outputs.shape == reference[:len(outputs)].shape and not np.array_equal(outputs, reference[:len(outputs)])


@pytest.mark.filterwarnings("ignore")
def test_int8_peer_scored_against_the_wrong_reference_is_outside_its_budget(digits, tmp_path):
    """Scored against the negated original outputs (cosine), every recipe fails its budget: the score comes from
    the quantized model's outputs, and the pick falls back to the most accurate recipe, marked outside."""
    case, budget, reference = digits
    cosine = Budget(budget.data, metric="cosine", max_drop=0.01)
    prepared = int8_peers.onnxruntime_int8(case, 30, str(int8_peers.write_data(tmp_path / "d.npz", cosine,
                                                                              -reference)))
    held = prepared.notes["approx"]
    assert held["original"] == pytest.approx(1.0) and held["optimized"] < -0.9 and not held["within_budget"]
    recipes = prepared.notes["recipes"]
    assert prepared.notes["recipe"] == max(recipes, key=lambda n: recipes[n]["approx"]["optimized"])


def _row(ms, verified, metric, artifact, rss):
    return {"median_ms": ms, "verified": verified, "approx": {"optimized": metric}, "artifact_bytes": artifact,
            "peak_rss_mb": rss}


def test_tsir_is_compared_only_with_verified_peers():
    systems = {"tsir_approx": _row(1.0, True, 0.98, 100, 500), "onnxruntime_int8": _row(3.0, True, 0.97, 200, 600),
               "openvino_int8": _row(0.5, False, 0.90, 50, 400)}
    assert _versus(systems) == {"onnxruntime_int8": {"speed_ratio": 3.0, "metric_difference": pytest.approx(0.01),
                                                     "artifact_ratio": 2.0, "memory_ratio": 1.2}}
    systems["tsir_approx"]["verified"] = False
    assert _versus(systems) == {}
