"""report.json follows the shipped, versioned schema; report.md and the PNG plots render from it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from tsir import TsirError, optimize, zoo
from tsir import report as report_files

PNG = b"\x89PNG\r\n\x1a\n"
DOC = Path(__file__).parent.parent / "docs" / "report-schema.md"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    entry = zoo.load("lenet")
    out = tmp_path_factory.mktemp("report")
    optimize(entry.module, entry.example_inputs, budget_s=5, out_dir=out, model_name="lenet")
    return out


def test_schema_is_valid_and_documented():
    schema = report_files.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["version"]["const"] == report_files.SCHEMA_VERSION
    doc = DOC.read_text()
    for key in schema["properties"]:
        assert f"`{key}`" in doc, f"docs/report-schema.md does not document {key!r}"


def test_saved_report_validates_and_has_the_run(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    report_files.validate(report)
    assert report["input"] == {"kind": "torch", "name": "lenet",
                               "inputs": [{"shape": [1, 1, 28, 28], "dtype": "float32"}]}
    assert report["search"]["cost_tier"] == "analytic"
    assert [p["generation"] for p in report["search"]["curve"]] == list(range(len(report["search"]["curve"])))
    assert report["search"]["curve"][-1]["best_ms"] == pytest.approx(report["search"]["predicted_s"] * 1e3)
    convs = [layer for layer in report["layers"] if layer["op"] in ("conv2d", "dnnl_conv2d")]
    assert len(convs) == 2
    assert all(c["kernel_source"] == ("tvm-default" if c["op"] == "conv2d" else "library") for c in convs)
    assert report["size_bytes"]["original"] > 0 and report["latency_ms"]["optimized"] > 0
    verification = report["verification"]
    assert verification["status"] == "verified" and verification["verified_on"] == "host cpu"
    assert verification["inputs"] == {"kind": "random", "seeds": [1, 2, 3], "integer_ranges": {}}
    assert verification["worst"]["output"] == 0 and len(verification["worst"]["index"]) == 2  # (1, 10) logits


def test_markdown_has_every_section_and_embeds_the_curve(run_dir):
    text = (run_dir / "report.md").read_text()
    for heading in ("## Result", "## Rules fired", "## E-graph", "## Search", "## Pareto front", "## Program",
                    "## Per-layer choices", "## Stages"):
        assert heading in text
    assert "![search curve](search_curve.png)" in text
    assert (run_dir / "search_curve.png").read_bytes().startswith(PNG)
    assert "![Pareto front](pareto.png)" in text and (run_dir / "pareto.png").read_bytes().startswith(PNG)


def test_pareto_front_is_plotted_and_tabled(run_dir, tmp_path):
    report = json.loads((run_dir / "report.json").read_text())
    report["search"]["pareto"] = [{"latency_ms": 1.5, "size_bytes": 4_000_000, "error": 0.0},
                                  {"latency_ms": 0.9, "size_bytes": 1_000_000, "error": 0.02}]
    report_files.validate(report)
    report_files.write_markdown(report, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "![Pareto front](pareto.png)" in text and "| 0.9 | 1,000,000 | 0.02 |" in text
    assert (tmp_path / "pareto.png").read_bytes().startswith(PNG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pareto.png", "report.md", "search_curve.png"]


@pytest.mark.parametrize(("change", "where"), [
    (lambda r: r.update(version=2), "version"),
    (lambda r: r.pop("verification"), "(top level)"),
    (lambda r: r["search"].update(cost_tier="guessed"), "search/cost_tier"),
    (lambda r: r["verification"].update(status="passed"), "verification/status"),
    (lambda r: r["verification"].pop("inputs"), "verification"),
    (lambda r: r["verification"].update(inputs={"kind": "random", "seeds": []}), "verification/inputs"),
    (lambda r: r["latency_ms"].update(optimized=-1.0), "latency_ms/optimized"),
    (lambda r: r["search"]["curve"].append({"generation": 0}), "search/curve/"),
])
def test_broken_reports_are_rejected_naming_the_field(run_dir, change, where):
    report = copy.deepcopy(json.loads((run_dir / "report.json").read_text()))
    change(report)
    with pytest.raises(TsirError, match="does not match schema") as info:
        report_files.validate(report)
    assert f"at {where}" in str(info.value)


def test_rerendering_without_a_front_removes_a_stale_pareto_plot(run_dir, tmp_path):
    report = json.loads((run_dir / "report.json").read_text())
    report["search"]["pareto"] = []  # no front recorded: no empty plot
    (tmp_path / "pareto.png").write_bytes(PNG)
    report_files.write_markdown(report, tmp_path)
    assert not (tmp_path / "pareto.png").exists()
