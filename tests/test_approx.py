"""Approximate mode: error estimates against measured errors, int8 lowering, the budget on held-out data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import tsir
from tsir import report as report_files
from tsir.approx import digits, minilm
from tsir.approx.budget import Budget, Data, cosine, top1
from tsir.approx.sites import Int8Matmul, activation_error, lowrank, quantize_weight
from tsir.backends import runtime, targets
from tsir.errors import TsirError

pytestmark = pytest.mark.xdist_group("approx")  # shares the trained digits model and the built candidates


def _decaying(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    u, _ = np.linalg.qr(rng.standard_normal((k, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    s = np.exp(-np.arange(min(k, n)) / 12.0)
    return (u[:, : len(s)] * s @ v[: len(s)]).astype(np.float32)


@pytest.mark.parametrize("rank", [4, 16, 48])
def test_lowrank_estimate_matches_measured_output_error(rank: int) -> None:
    rng = np.random.default_rng(rank)
    w = _decaying(rng, 96, 64)
    a, b, estimate = lowrank(w, rank)
    x = rng.standard_normal((4096, 96)).astype(np.float32)  # uncorrelated, equal-variance features
    measured = np.linalg.norm(x @ w - x @ a @ b) / np.linalg.norm(x @ w)
    assert estimate > 0
    assert abs(measured - estimate) <= 0.1 * estimate


def test_lowrank_estimate_on_trained_digits_weight() -> None:
    model, _ = digits.load()
    w = model.classifier[1].weight.detach().numpy().T  # (512, 256), as tsir's matmul sees it
    x = np.random.default_rng(0).standard_normal((2048, 512)).astype(np.float32)
    for rank in (16, 64):
        a, b, estimate = lowrank(w, rank)
        measured = np.linalg.norm(x @ w - x @ a @ b) / np.linalg.norm(x @ w)
        assert abs(measured - estimate) <= 0.1 * estimate


def _int8_module(k: int, n: int, kernel: Int8Matmul, wq: np.ndarray) -> tvm.IRModule:
    x = relax.Var("x", relax.TensorType([64, k], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(kernel.rebuild([x, relax.const(wq)])))
        bb.emit_func_output(out)
    return bb.get()


def test_int8_kernel_matches_estimate_and_uses_integer_arithmetic() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((128, 32)).astype(np.float32)
    calib = np.maximum(rng.standard_normal((256, 128)), 0).astype(np.float32)  # post-ReLU activations
    q, w_scale = quantize_weight(w)
    x_scale = float(np.abs(calib).max()) / 127
    kernel = Int8Matmul(x_scale, w_scale)
    mod = _int8_module(128, 32, kernel, q)
    legalized = relax.transform.LegalizeOps()(mod).script()
    assert 'R.matmul(' in mod.script() and 'out_dtype="int32"' in mod.script()
    assert '"int8"' in legalized and '"int32"' in legalized  # the TIR kernel multiplies int8 into int32
    x = np.maximum(rng.standard_normal((64, 128)), 0).astype(np.float32)
    out = runtime.Runner(runtime.build(mod, targets.resolve("x86")))([x])[0]
    qx = np.clip(np.round(x / x_scale), -127, 127).astype(np.int32)
    np.testing.assert_allclose(out, (qx @ q.astype(np.int32)) * (x_scale * w_scale), rtol=1e-5, atol=1e-4)
    measured = np.linalg.norm(out - x @ w) / np.linalg.norm(x @ w)
    w_err = np.linalg.norm(w - q * w_scale) / np.linalg.norm(w)
    estimate = np.hypot(w_err, activation_error(calib, x_scale))
    assert 0.5 * estimate <= measured <= 2.0 * estimate


def test_metrics() -> None:
    ref = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert top1(ref[::-1], ref, None) == 0.0 and top1(ref, ref, np.array([1, 1])) == 0.5
    assert cosine(ref, ref) == pytest.approx(1.0) and cosine(-ref, ref) == pytest.approx(-1.0)


def test_budget_rejects_bad_input() -> None:
    data = Data([np.zeros((4, 1, 8, 8), np.float32)], [np.zeros((4, 1, 8, 8), np.float32)])
    with pytest.raises(TsirError, match="unknown accuracy metric"):
        Budget(data, metric="f1")
    with pytest.raises(TsirError, match="non-empty"):
        Budget(Data([], data.heldout))
    with pytest.raises(TsirError, match="needs accuracy=tsir.Budget"):
        tsir.optimize(torch.nn.Linear(4, 4), (torch.zeros(1, 4),), mode="approx")


def test_digits_model_is_trained_and_cached(tmp_path) -> None:
    model, data = digits.load()
    assert len(data.heldout_x) == 360 and len(data.train_x) == 1437
    assert digits.accuracy(model, data.heldout_x, data.heldout_y) >= 0.95


def test_digits_approx_respects_budget_on_heldout(tmp_path) -> None:
    model, data = digits.load()
    batch = 64
    budget = Budget(Data([data.calibration(256)], [data.heldout_x], data.train_y[:256], data.heldout_y),
                    metric="top1", max_drop=0.005)
    result = tsir.optimize(model, (torch.from_numpy(data.heldout_x[:batch]),), mode="approx", accuracy=budget,
                           budget_s=8, measure=False, families=("algebra", "fusion", "folding"), out_dir=tmp_path)
    report = result.report["approx"]
    assert [layer["choice"] for layer in report["layers"]] != ["exact"] * len(report["layers"])
    assert len(report["pruning"]) == 4  # conv1, conv2 (through the flatten), fc1 and fc2 channels: one gene each
    assert any(min(c["kept"]) < 1.0 for c in report["candidates"])  # the search proposed pruned programs
    assert all(0 < layer["kept_in"] <= 1 and 0 < layer["kept_out"] <= 1 for layer in report["layers"])
    assert all(c["measured_ms"] is None for c in report["candidates"])  # measure=False: analytic ranking
    assert result.report["size_bytes"]["optimized"] < result.report["size_bytes"]["original"]
    # recompute the held-out accuracy ourselves, against the original torch model
    preds = np.concatenate([
        result.run([np.concatenate([c, np.repeat(c[-1:], batch - len(c), 0)])])[0][: len(c)].argmax(-1)
        for c in (data.heldout_x[i:i + batch] for i in range(0, len(data.heldout_x), batch))])
    optimized = float((preds == data.heldout_y).mean())
    original = digits.accuracy(model, data.heldout_x, data.heldout_y)
    assert original - optimized <= 0.005
    assert report["heldout"]["optimized"] == pytest.approx(optimized)
    verification = result.report["verification"]
    assert verification["status"] == "within-budget"  # the held-out budget, not the fp32 check, passed it
    held = report["heldout"]
    assert verification["heldout"] == {"metric": "top1", "max_drop": 0.005, "examples": 360,
                                       "original": held["original"], "optimized": pytest.approx(optimized),
                                       "drop": held["drop"]}
    rows = dict(report_files.verification_rows(verification))  # the CLI summary's and report.md's rows
    assert rows["held-out top1 (360 examples)"] == (f"{held['original']:.4f} -> {optimized:.4f}, drop "
                                                     f"{held['drop']:.4f} (budget 0.005)")
    text = (tmp_path / "report.md").read_text()
    assert "## Approximations (per layer)" in text and (tmp_path / "pareto.png").stat().st_size > 0
    assert all(f"| {layer['layer']} | {layer['eclass']} | {layer['choice']} | {layer['kept_in']:.3g} / " in text
               for layer in report["layers"])


def test_minilm_loads_offline_and_embeds_sentences() -> None:
    calibration, heldout = minilm.sentences()
    assert len(calibration) == minilm.CALIBRATION and len(heldout) >= 32 and not set(calibration) & set(heldout)
    model = minilm.load()
    ids, mask = minilm.tokenize(["The cat sleeps in the sun.", "A cat is napping in the sunshine.",
                                 "Interest rates rose again this quarter."])
    with torch.no_grad():
        e = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    assert e.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    assert e[0] @ e[1] > 0.6 > e[0] @ e[2]
