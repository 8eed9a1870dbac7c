"""Shared test plumbing: the model suite's coverage table, collected across xdist workers, printed at the end."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

_COVERAGE_DIR = "TSIR_COVERAGE_DIR"
_COLUMNS = ("model", "source", "ops", "opaque", "rules_fired", "verified", "time_s", "cost_vs_torch", "onnx_vs_torch")
TWIN_COST_TOLERANCE = 0.01  # an ONNX twin whose chosen program is predicted this close to its torch program's


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controller: workers inherit the directory through the environment
        os.environ[_COVERAGE_DIR] = tempfile.mkdtemp(prefix="tsir-coverage-")


def _record(row: dict) -> None:
    with tempfile.NamedTemporaryFile("w", dir=os.environ[_COVERAGE_DIR], suffix=".json", delete=False) as f:
        json.dump(row, f)


@pytest.fixture
def record_coverage():
    """Adds one row (a model from one source) to the coverage table."""
    return _record


def pytest_terminal_summary(terminalreporter) -> None:
    directory = os.environ.get(_COVERAGE_DIR)
    rows = sorted((json.loads(p.read_text()) for p in Path(directory).glob("*.json")),
                  key=lambda r: (r["model"], r["source"])) if directory else []
    if not rows:
        return
    write = terminalreporter.write_line
    write("model suite coverage (optimized program, exact mode):")
    write("  ".join(_cell(c, c) for c in _COLUMNS))
    for r in rows:
        write("  ".join(_cell(c, r.get(c, "")) for c in _COLUMNS))
    models = {r["model"] for r in rows}
    verified = sum(r["verified"] for r in rows)
    twins = [r for r in rows if r["source"] == "onnx"]
    close = sum(abs(r["cost_vs_torch"] - 1) <= TWIN_COST_TOLERANCE for r in twins)
    write(f"suite summary: {len(models)} models, {len(rows)} programs (torch + onnx), {verified}/{len(rows)} "
          f"verified, {sum(r['opaque'] for r in rows)} opaque ops, {sum(r['rules_fired'] for r in rows)} rule "
          f"matches, {sum(r['time_s'] for r in rows):.0f} s; ONNX twin with the same kernels as its torch program: "
          f"{sum(r.get('onnx_vs_torch') == 'same' for r in twins)}/{len(twins)}, with a program predicted within "
          f"{TWIN_COST_TOLERANCE:.0%} of its torch program's: {close}/{len(twins)}")


def _cell(column: str, value) -> str:
    """A table cell: model names right-aligned in 18, the ONNX/torch difference as it is, the rest in 11."""
    if column == "onnx_vs_torch":
        return str(value)
    return f"{value!s:>18}" if column == "model" else f"{value!s:>11}"
