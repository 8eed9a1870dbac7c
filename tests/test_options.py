"""``tsir.Options``: one checked object for how to optimize; ``optimize`` runs its stages in order."""

from __future__ import annotations

import pytest

import tsir
from tsir import Options, optimize, zoo


def test_keywords_replace_the_options_fields():
    assert Options.of(None, {"target": "arm", "budget_s": 5}) == Options(target="arm", budget_s=5)
    base = Options(budget_s=7, seed=3)
    assert Options.of(base, {"seed": 4}) == Options(budget_s=7, seed=4)
    assert Options.of(base, {}) == base


def test_an_unknown_keyword_names_itself():
    with pytest.raises(TypeError, match=r"\['budget'\]; see tsir.Options"):
        Options.of(None, {"budget": 5})


@pytest.mark.parametrize(("fields", "message"), [
    ({"mode": "approx"}, "needs accuracy=tsir.Budget"),
    ({"mode": "fast"}, "unknown mode 'fast'"),
    ({"budget_s": 0}, "positive number of seconds"),
])
def test_bad_options_fail_when_made(fields, message):
    with pytest.raises(tsir.TsirError, match=message):
        Options(**fields)


def test_optimize_runs_the_stages_in_order_with_an_options_object():
    entry = zoo.load("mlp")
    seen = []
    result = optimize(entry.module, entry.example_inputs,
                      Options(budget_s=3, measure=False, on_stage=lambda name, s: seen.append((name, s is None))))
    stages = ["import", "tsir", "saturate", "search", "lower", "build", "verify"]
    assert seen == [(name, started) for name in stages for started in (True, False)]
    assert list(result.report["stages_s"]) == stages and result.report["verification"]["passed"]
    assert "measured_on" not in result.report["target"] and "latency_ms" not in result.report
