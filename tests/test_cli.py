"""``python -m tsir`` (what ``make run`` calls): the summary table, files written, bad-input exit code."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsir", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_optimize_prints_table_and_writes_build(tmp_path):
    proc = run("mlp", "--out", "build", "--budget", "10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for row in ("original latency", "optimized latency", "speed-up", "rules fired", "e-graph size",
                "search time", "PyTorch eager", "verified: max abs error"):
        assert row in proc.stdout, f"missing {row!r} in:\n{proc.stdout}"
    report = json.loads((tmp_path / "build" / "report.json").read_text())
    assert report["verification"]["passed"]
    assert (tmp_path / "build" / "model.so").stat().st_size > 0


def test_bad_input_exits_2_with_the_fix(tmp_path):
    proc = run("no_such_model", cwd=tmp_path)
    assert proc.returncode == 2
    assert "resnet18" in proc.stderr
    assert not (tmp_path / "build").exists()
