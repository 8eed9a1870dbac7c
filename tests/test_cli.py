"""The ``tsir`` command line: every command, the summary table, files written, and exit codes 0 / 2 / 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tsir import cli, zoo
from tsir.rewrites import FAMILIES, rule_names

TSIR = Path(sys.executable).parent / "tsir"  # the console script installed by `pip install -e .`
ROWS = ("original latency", "optimized latency", "speed-up", "rules fired", "e-graph size", "search time",
        "verification", "verification inputs", "verification error")


def run_tsir(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(TSIR), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def optimized(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One real `tsir optimize --peers` (as `make run`) of the zoo MLP through the installed console script."""
    cwd = tmp_path_factory.mktemp("cli")
    return cwd / "out", run_tsir("optimize", "mlp", "--out", "out", "--budget", "10s", "--peers", cwd=cwd)


def test_optimize_prints_table_and_writes_everything(optimized):
    out, proc = optimized
    assert proc.returncode == 0, proc.stderr
    for row in (*ROWS, "PyTorch eager (reference)", "speed-up over the best peer", "ONNX Runtime (best of 1 and 2",
                "OpenVINO (best of 1 and 2"):
        assert row in proc.stdout, f"missing {row!r} in:\n{proc.stdout}"
    assert "search curve" in proc.stdout  # the analytic search ran generations
    for stage in ("import", "saturate", "search", "build", "verify"):
        assert f"✓ {stage}" in proc.stderr  # the rich progress lines
    written = ["model.so", "pareto.png", "report.json", "report.md", "search_curve.png", "tvm.log"]
    assert sorted(p.name for p in out.iterdir()) == written
    assert json.loads((out / "report.json").read_text())["input"]["name"] == "mlp"
    assert "verified on host cpu" in proc.stdout and "random draws, seeds 1, 2, 3" in proc.stdout


def test_approx_summary_shows_the_heldout_metric_not_the_fp32_check(optimized):
    report = json.loads((optimized[0] / "report.json").read_text())
    report["mode"] = "approx"
    report["verification"].update(status="within-budget", heldout={
        "metric": "top1", "max_drop": 0.005, "examples": 360, "original": 0.9722, "optimized": 0.9694, "drop": 0.0028})
    console = Console(width=200, record=True)
    console.print(cli.summary(report))
    text = console.export_text()
    row = next(line for line in text.splitlines() if "held-out top1 (360 examples)" in line)
    assert "0.9722 -> 0.9694, drop 0.0028 (budget 0.005)" in row
    assert "within-budget" in text and "verification error" not in text


def test_report_rerenders_a_saved_run(optimized):
    out, _ = optimized
    (out / "report.md").unlink()
    result = CliRunner().invoke(cli.app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "speed-up" in result.output
    assert (out / "report.md").read_text().startswith("# tsir report: mlp")


def test_python_dash_m_tsir_optimizes_a_factory_file(tmp_path):
    """``python -m tsir MODEL`` (the old form, no command) with MODEL = file.py:factory."""
    (tmp_path / "mymodel.py").write_text(
        "import torch\n"
        "def build():\n"
        "    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())\n"
        "    return model, (torch.randn(2, 8),)\n")
    np.savez(tmp_path / "inputs.npz", np.random.default_rng(0).standard_normal((5, 2, 8)).astype(np.float32))
    proc = subprocess.run([sys.executable, "-m", "tsir", "mymodel.py:build", "--out", "o", "--budget", "5s",
                           "--verify-data", "inputs.npz"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert all(row in proc.stdout for row in ROWS)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["input"]["name"] == "mymodel:build" and report["verification"]["status"] == "verified"
    assert report["verification"]["inputs"] == {"kind": "data", "source": "inputs.npz", "examples": 5}
    optimized = report["program"]["optimized"]  # the matmul + bias became one linear layer (TVM or oneDNN)
    assert optimized.get("linear", 0) + optimized.get("dnnl_linear", 0) == 1 and "matmul" not in optimized


FACTORY = """
import torch
def build():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    return model, (torch.randn(16, 64),)
"""


def test_approx_mode_on_a_factory_file_with_npz_data(tmp_path):
    """``--mode approx --data --heldout --metric`` on the user's own model: the held-out metric is scored on
    their file and the pick stays within --max-drop of the original."""
    (tmp_path / "classifier.py").write_text(FACTORY)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", rng.standard_normal((64, 64)).astype(np.float32))
    np.savez(tmp_path / "heldout.npz", rng.standard_normal((48, 64)).astype(np.float32))
    proc = subprocess.run([sys.executable, "-m", "tsir", "optimize", "classifier.py:build", "--mode", "approx",
                           "--data", "calib.npz", "--heldout", "heldout.npz", "--metric", "cosine", "--max-drop",
                           "0.01", "--budget", "10s", "--out", "o"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["mode"] == "approx" and report["verification"]["status"] == "within-budget"
    heldout = report["verification"]["heldout"]
    assert heldout["metric"] == "cosine" and heldout["max_drop"] == 0.01 and heldout["examples"] == 48
    assert heldout["drop"] <= 0.01 and heldout["optimized"] >= heldout["original"] - 0.01


def test_bad_approx_data_exits_2_and_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "classifier.py").write_text(FACTORY)
    np.savez(tmp_path / "ok.npz", np.zeros((32, 64), np.float32))
    np.savez(tmp_path / "misshaped.npz", np.zeros((32, 63), np.float32))
    np.savez(tmp_path / "few.npz", np.zeros((8, 64), np.float32))
    np.savez(tmp_path / "labelled.npz", np.zeros((32, 64), np.float32), labels=np.zeros(32, np.int64))
    np.save(tmp_path / "single.npy", np.zeros((32, 64), np.float32))
    model = ["optimize", "classifier.py:build", "--mode", "approx"]
    for args in (["--data", "ok.npz"], ["--data", "ok.npz", "--heldout", "misshaped.npz"],
                 ["--data", "few.npz", "--heldout", "ok.npz"], ["--data", "labelled.npz", "--heldout", "ok.npz"],
                 ["--data", "single.npy", "--heldout", "ok.npz"], ["--data", "nowhere.npz", "--heldout", "ok.npz"]):
        assert cli.main(model + args) == 2
    assert cli.main(["optimize", "mlp", "--metric", "cosine"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--mode approx needs calibration and held-out data: --data calib.npz --heldout heldout.npz" in err
    assert "--heldout 'misshaped.npz': array 'arr_0' has shape (32, 63); the model's input takes examples of shape " \
           "(64,)" in err
    assert "--data 'few.npz' has 8 examples; approximate mode runs the model on whole batches of 16" in err
    assert "only one of 'labelled.npz' and 'ok.npz' has 'labels'" in err
    assert "--data file 'single.npy' is not a .npz archive (a single array, not an archive of named arrays)" in err
    assert "--data file 'nowhere.npz' does not exist" in err
    assert "--data, --heldout and --metric are for --mode approx" in err
    assert not (tmp_path / "build").exists()  # nothing half-written


def test_rules_lists_every_family_and_the_total():
    result = CliRunner().invoke(cli.app, ["rules"])
    assert result.exit_code == 0
    total = sum(len(rule_names(f)) for f in FAMILIES)
    assert f"{total} rules in {len(FAMILIES)} families" in result.output
    for family in FAMILIES:
        assert family in result.output


def test_zoo_lists_the_bundled_models():
    result = CliRunner().invoke(cli.app, ["zoo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in zoo.names():
        assert name in result.output and zoo.description(name)[:20] in result.output


def test_bench_forwards_to_the_harness(monkeypatch):
    calls = []

    def fake_run(cmd):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 3)

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert cli.main(["bench", "mlp", "lenet"]) == 3  # the harness's exit code comes back
    assert calls == [[sys.executable, "-m", "tsir.bench", "mlp", "lenet"]]  # the installed harness


@pytest.mark.parametrize(("args", "message"), [
    (["optimize", "no_such_model"], "give a zoo name"),
    (["optimize", "missing.onnx"], "does not exist"),
    (["optimize", "nofile.py:build"], "does not exist"),
    (["optimize", "mlp", "--mode", "approx"], "--mode approx needs calibration and held-out data"),
    (["optimize", "mlp", "--budget", "ten minutes"], "write e.g. 90s, 10m or 1h"),
    (["optimize", "mlp", "--target", "tpu"], "known targets: x86"),
    (["optimize", "mlp", "--rpc", "host-only"], "host:port:key"),
    (["optimize", "mlp", "--peers", "--mode", "approx"], "--peers times zoo and suite models on --target x86 in exact"),
    (["report", "nowhere"], "no report.json"),
])
def test_bad_input_exits_2_and_names_the_fix(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "build").exists()  # nothing half-written


def test_bad_verify_data_exits_2_and_names_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "misnamed.npz", x=np.ones((1, 64), np.float32))
    np.savez(tmp_path / "misshaped.npz", input=np.ones((3, 3), np.float32))
    for data in ("missing.npz", "misnamed.npz", "misshaped.npz"):
        assert cli.main(["optimize", "mlp", "--verify-data", data]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "verify data file 'missing.npz' does not exist" in err
    assert "verify data (misnamed.npz) has no array for input(s) 'input' and arrays 'x' that are no model" in err
    assert "array 'input' is (3, 3) float32; the model takes (1, 64) float32" in err
    assert not any((tmp_path / "build").glob("*"))  # nothing written


def test_bad_factory_and_bad_report_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f.py").write_text("def build():\n    return 42\n")
    assert cli.main(["optimize", "f.py:build"]) == 2
    assert cli.main(["optimize", "f.py:other"]) == 2
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text(json.dumps({"version": 1}))
    assert cli.main(["report", "r"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "must return (model, example_inputs)" in err and "has no function 'other'" in err
    assert "does not match schema version 1" in err


def test_usage_errors_exit_2():
    assert cli.main(["optimize"]) == 2  # MODEL missing
    assert cli.main(["optimize", "mlp", "--mode", "fast"]) == 2


def test_internal_error_exits_1(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr("tsir.optimize", broken)
    assert cli.main(["optimize", "mlp"]) == 1
    assert "internal error" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1.5m", 90), ("1h", 3600)])
def test_budget_durations(text, seconds):
    assert cli.parse_budget(text) == seconds


def test_optimize_an_onnx_file(tmp_path, monkeypatch, capsys):
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    torch.onnx.export(model, (torch.randn(1, 8),), str(tmp_path / "small.onnx"), dynamo=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["optimize", "small.onnx", "--out", "o", "--budget", "5s"]) == 0
    assert "ONNX Runtime (reference)" in capsys.readouterr().out
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["input"]["kind"] == "onnx" and report["verification"]["reference"] == "onnxruntime"


def test_optimize_with_measured_cost_and_tuning(tmp_path, monkeypatch, capsys):
    """``--cost measured --tuning-trials N --cache DIR``: kernels timed here with tuning asked for, the kernel
    cache written where it was asked to be, and the search curve shown, even on a short budget."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["optimize", "mlp", "--out", "o", "--budget", "10s", "--cost", "measured", "--tuning-trials",
                     "2", "--cache", "cache"]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["search"]["cost_tier"] == "measured" and report["search"]["tuning"]["trials_per_task"] == 2
    assert report["verification"]["status"] == "verified"
    assert report["search"]["generations"] >= 1 and len(report["search"]["curve"]) == report["search"]["generations"]
    out = capsys.readouterr().out
    assert "measured cost" in out and "search curve" in out
    tuning = report["search"]["tuning"]  # the table says how many kernels were tuned, and why others were not
    text = re.sub(r"[\s│]+", " ", out)  # the table's cell text, its wrapped lines joined
    assert f"{tuning['tasks_tuned']} kernels tuned, {tuning['trials']} trials" in text
    assert ("left untuned for the budget" in text) == (tuning["skipped_for_budget"] > 0)
    assert report["search"]["kernel_cache"]["dir"] == "cache/kernels" and any((tmp_path / "cache").rglob("*"))
    assert cli.main(["optimize", "mlp", "--out", "o2", "--cost", "fast"]) == 2
    assert cli.main(["optimize", "mlp", "--out", "o2", "--tuning-trials", "-1"]) == 2
