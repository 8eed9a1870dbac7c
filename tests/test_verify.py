"""Verification: the one comparison (non-finite values, per-element and scale bounds, the worst element), the
inputs it runs on (random draws inside the model's valid range, the user's data), and the statuses a result
carries; a wrong or meaningless check is an error, never a pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tsir
from tsir import lower, report
from tsir.draws import fresh_inputs, user_draws
from tsir.errors import TsirError, VerificationError
from tsir.frontend import export, to_relax
from tsir.verify import EXACT, TOLERANCES, compare, verify

F32 = np.float32


def _one(ref, act, dtype=F32):
    return compare([np.asarray(ref, dtype)], [np.asarray(act, dtype)])


@pytest.mark.parametrize("actual", [[1, np.nan, 3], [np.nan] * 3, [1, np.inf, 3], [1, 2, -np.inf]])
def test_non_finite_optimized_values_fail(actual):
    result = _one([1, 2, 3], actual)
    assert not result.passed and result.max_abs_error == np.inf
    bad = next(i for i, v in enumerate(actual) if not np.isfinite(v))
    assert result.worst.index == (bad,) and "where the original has" in result.problem


def test_non_finite_values_match_only_exactly():
    assert _one([1, np.nan, np.inf, -np.inf], [1, np.nan, np.inf, -np.inf]).passed
    assert not _one([1, np.nan], [1, 0.0]).passed  # the original's NaN must stay a NaN
    assert not _one([np.inf], [-np.inf]).passed and not _one([np.inf], [np.nan]).passed


def test_small_elements_are_checked_elementwise():
    """[100, 0.01, -0.02] vs [100, 0.015, -0.01]: 1e-4 of the output's scale, but the small elements are off by
    50-100 %: the scale-relative bound alone passed this."""
    result = _one([100, 0.01, -0.02], [100, 0.015, -0.01])
    assert result.relative_error <= TOLERANCES["float32"].scale  # what the old check looked at
    assert not result.passed and result.worst.output == 0 and result.worst.index == (2,)
    assert _one([100, 0.01, -0.02], [100.0005, 0.0100005, -0.0200005]).passed  # fp32 rounding-sized errors


def test_worst_element_names_output_and_index():
    ref = [np.zeros((2, 3), F32), np.arange(6, dtype=F32).reshape(2, 3)]
    act = [ref[0].copy(), ref[1].copy()]
    act[1][1, 2] += 0.01
    result = compare(ref, act)
    assert not result.passed and (result.worst.output, result.worst.index) == (1, (1, 2))
    assert result.worst.reference == 5.0 and "output 1 at [1, 2]" in result.problem
    act[1][1, 2] = 5.0 + 1e-6
    passed = compare(ref, act)
    assert passed.passed and 0 < passed.worst.ratio < 1 and passed.worst.index == (1, 2)


def test_tolerance_follows_the_dtype():
    assert compare([np.array([1, 2], np.int64)], [np.array([1, 3], np.int64)]).tolerance == EXACT
    assert not compare([np.array([1, 2], np.int64)], [np.array([1, 3], np.int64)]).passed
    half = np.array([1.0, 2.0], np.float16), np.array([1.0, 2.001], np.float16)
    assert compare([half[0]], [half[1]]).passed  # one fp16 ulp
    assert not compare([half[0].astype(F32)], [half[1].astype(F32)]).passed  # the same error in fp32


def test_shape_and_count_mismatches_raise():
    with pytest.raises(VerificationError, match="2 outputs, the original 1"):
        compare([np.ones(2)], [np.ones(2), np.ones(2)])
    with pytest.raises(VerificationError, match="shape"):
        compare([np.ones(2)], [np.ones(3)])


def test_a_nan_original_is_a_clear_error_not_a_pass():
    with pytest.raises(VerificationError, match="original model's output 0 is nan at \\[0, 1\\].*verify-data"):
        verify(lambda x: x * torch.tensor([1.0, float("nan")]), lambda arrays: [arrays[0]], [torch.ones(2, 2)])


class Log(torch.nn.Module):
    """log(x): NaN on the negative half of random normal inputs."""

    def forward(self, x):
        return torch.log(x) * 2.0


def test_optimize_refuses_a_model_whose_original_output_is_nan():
    model = torch.nn.Linear(4, 3).eval()
    with torch.no_grad():
        model.weight[1, 2] = float("nan")
    with pytest.raises(VerificationError, match="original model's output 0 is nan.*Give inputs the model is meant"):
        tsir.optimize(model, (torch.randn(2, 4),), budget_s=2, measure=False)


def test_a_broken_emitter_returning_nan_fails_verification(monkeypatch):
    """relu lowered to NaN * x: the pipeline raises instead of returning (or reporting) the program."""
    from tvm import relax

    nan_relu = lambda args, attrs, ty: relax.op.multiply(args[0], relax.const(np.nan, "float32"))  # noqa: E731
    monkeypatch.setitem(lower.EMITTERS, "relu", nan_relu)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(VerificationError, match="output 0 has NaN at \\[0, 0\\] where the original has"):
        tsir.optimize(model, (torch.randn(2, 4),), budget_s=2, measure=False, families=())


def test_optimize_reports_status_and_the_random_draws(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    result = tsir.optimize(model, (torch.randn(2, 8),), budget_s=3, seed=4, measure=False, verify_draws=2,
                           out_dir=tmp_path)
    ver = result.report["verification"]
    assert ver["status"] == "verified" and ver["verified_on"] == "host cpu"
    assert ver["inputs"] == {"kind": "random", "seeds": [5, 6], "integer_ranges": {}}
    assert ver["worst"]["ratio"] <= 1 and ver["max_abs_error"] <= ver["tolerance"] * 10
    report.validate(result.report)
    assert "verified on host cpu" in (tmp_path / "report.md").read_text()


class Tokens(torch.nn.Module):
    """An embedding lookup (token ids, vocabulary 50) plus a per-row integer count used arithmetically."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)

    def forward(self, ids, counts):
        return self.embed(ids).sum(-1) * counts.float()


def test_token_ids_are_drawn_from_the_whole_vocabulary():
    ids, counts = torch.tensor([[3, 4, 5, 4]]), torch.tensor([[2, 3, 2, 3]])
    result = tsir.optimize(Tokens().eval(), (ids, counts), budget_s=3, measure=False)
    assert result.report["verification"]["inputs"]["integer_ranges"] == {"ids": [0, 50], "counts": [2, 4]}
    ranges = {0: (0, 50), 1: (2, 4)}
    drawn = torch.stack([fresh_inputs((ids, counts), seed, ranges)[0] for seed in range(20)])
    assert drawn.min() >= 0 and drawn.max() < 50 and len(drawn.unique()) > 30  # not only the example's 3..5


def _log_model_and_data(tmp_path):
    x = torch.rand(2, 3) + 0.5
    data = np.abs(np.random.default_rng(0).standard_normal((4, 2, 3))).astype(F32) + 0.1
    mod = to_relax(export(Log().eval(), (x,)))
    return x, data, mod


def test_user_data_is_what_verification_runs_on(tmp_path):
    """log(x) is NaN on random normal inputs: a clear error; on the user's positive data it verifies."""
    x, data, _ = _log_model_and_data(tmp_path)
    with pytest.raises(VerificationError, match="original model's output 0 is nan"):
        tsir.optimize(Log().eval(), (x,), budget_s=2, measure=False)
    np.savez(tmp_path / "data.npz", x=data)
    result = tsir.optimize(Log().eval(), (x,), budget_s=2, measure=False, verify_data=tmp_path / "data.npz")
    ver = result.report["verification"]
    assert ver["status"] == "verified"
    assert ver["inputs"] == {"kind": "data", "source": str(tmp_path / "data.npz"), "examples": 4}


def test_user_data_shapes_and_names(tmp_path):
    x, data, mod = _log_model_and_data(tmp_path)
    draws, used = user_draws([data[0]], mod, (x,))  # one example-shaped array: one draw
    assert len(draws) == 1 and used == {"kind": "data", "source": "arrays", "examples": 1}
    np.savez(tmp_path / "positional.npz", data)  # arr_0
    draws, _ = user_draws(tmp_path / "positional.npz", mod, (x,))
    assert len(draws) == 4 and np.array_equal(list(draws.values())[3][0].numpy(), data[3])


@pytest.mark.parametrize(("data", "message"), [
    ({"y": np.ones((2, 3), F32)}, "no array for input\\(s\\) 'x' and arrays 'y' that are no model input"),
    ({"x": np.ones((3, 2), F32)}, "array 'x' is \\(3, 2\\) float32; the model takes \\(2, 3\\) float32"),
    ({"x": np.ones((2, 3))}, "\\(2, 3\\) float64; the model takes \\(2, 3\\) float32"),
    ([np.ones((2, 3), F32)] * 2, "has 2 arrays; the model takes 1 inputs"),
    ("missing.npz", "does not exist"),
    ("plain.npy", "is not a .npz archive"),
])
def test_bad_user_data_is_a_clear_error(tmp_path, data, message):
    x, _, mod = _log_model_and_data(tmp_path)
    if isinstance(data, str):
        np.save(tmp_path / "plain.npy", np.ones((2, 3), F32))
        data = tmp_path / data
    with pytest.raises(TsirError, match=message):
        user_draws(data, mod, (x,))
