"""The run report: its JSON schema, the facts ``optimize`` records, and ``report.md`` with PNG plots.

``report.json`` follows ``report.schema.json`` (shipped next to this module, documented in
docs/report-schema.md); ``write_markdown`` renders a report dict into ``report.md`` plus
``search_curve.png`` and ``pareto.png`` (the Pareto plot only when the search recorded a front).
Every file is written to a temporary name first and moved into place.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from tsir.errors import TsirError
from tsir.ir.ops import LIBRARY_OPS
from tsir.ir.term import Graph, Term, is_constant, postorder

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
CURVE_PNG, PARETO_PNG = "search_curve.png", "pareto.png"
NATIVE_LOG = "tvm.log"  # what TVM's C++ code writes to stderr (its warnings) while the stages run
# what a run may write to its out dir
FILES = ("model.so", "report.json", "report.md", CURVE_PNG, PARETO_PNG, NATIVE_LOG)


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate(report: dict) -> None:
    """Raise ``TsirError`` naming the first field of ``report`` that breaks the schema."""
    import jsonschema

    try:
        jsonschema.validate(report, schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise TsirError(f"report does not match schema version {SCHEMA_VERSION} at {where}: {err.message}; "
                        "re-run tsir optimize to produce a fresh report") from err


def load(directory: Path) -> dict:
    """Read and validate ``directory/report.json``."""
    path = directory / "report.json"
    if not path.is_file():
        raise TsirError(f"no report.json in {str(directory)!r}; give the --out directory of a tsir optimize run")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TsirError(f"{str(path)!r} is not valid JSON ({err}); re-run tsir optimize") from err
    validate(report)
    return report


def layers(graph: Graph, root: Term, tuned: bool = False) -> list[dict]:
    """The chosen program's run-time operations in execution order, with where each kernel comes from:
    a vendor library call, or TVM code (``tuned`` when built with a MetaSchedule database)."""
    tvm_code = "tuned" if tuned else "tvm-default"
    constant: dict[int, bool] = {}
    out = []
    for term in postorder(root):
        if term.op in ("input", "weight", "tuple", "get_item") or is_constant(term, constant):
            continue
        op = f"opaque:{graph.opaque_calls[term.attrs[0]].call.op.name}" if term.op == "opaque" else term.op
        typed = isinstance(term.ty, tuple) and len(term.ty) == 2 and isinstance(term.ty[1], str)
        out.append({"op": op, "shape": list(term.ty[0]) if typed else None, "dtype": term.ty[1] if typed else None,
                    "kernel_source": "library" if term.op in LIBRARY_OPS else tvm_code})
    return out


def write_markdown(report: dict, directory: Path) -> Path:
    """Render ``report`` as ``directory/report.md`` with its plots; returns the Markdown's path."""
    plots = {CURVE_PNG: _curve_plot if report["search"]["curve"] else None,
             PARETO_PNG: _pareto_plot if report["search"]["pareto"] else None}
    for name, plot in plots.items():
        if plot is not None:
            _atomic(directory / name, lambda path, plot=plot: plot(report, path))
        else:
            (directory / name).unlink(missing_ok=True)  # a plot left by an earlier run would not match
    path = directory / "report.md"
    _atomic(path, lambda tmp: tmp.write_text(markdown(report)))
    return path


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, plt.subplots(figsize=(6, 3.6), dpi=100)


def _curve_plot(report: dict, path: Path) -> None:
    plt, (fig, ax) = _figure()
    curve = report["search"]["curve"]
    ax.plot([p["generation"] for p in curve], [p["best_ms"] for p in curve], marker=".", drawstyle="steps-post",
            label="best in population")
    for (name, seconds), style in zip(report["search"]["seeds_predicted_s"].items(), ("--", ":"), strict=False):
        ax.axhline(seconds * 1e3, linestyle=style, color="gray", label=f"{name} program")
    ax.legend(loc="best", fontsize="small")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"best latency, ms ({report['search']['cost_tier']})")
    ax.set_title(f"search: {report['input']['name']} on {report['target']['name']}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _pareto_plot(report: dict, path: Path) -> None:
    plt, (fig, ax) = _figure()
    front = sorted(report["search"]["pareto"], key=lambda p: p["latency_ms"])
    points = ax.scatter([p["latency_ms"] for p in front], [p["size_bytes"] / 1e6 for p in front],
                        c=[p["error"] for p in front], cmap="viridis")
    ax.plot([p["latency_ms"] for p in front], [p["size_bytes"] / 1e6 for p in front], alpha=0.4)
    fig.colorbar(points, ax=ax, label="error")
    ax.set_xlabel("latency, ms")
    ax.set_ylabel("size, MB")
    ax.set_title("Pareto front")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def markdown(report: dict) -> str:
    """The Markdown text of ``report`` (plots referenced by file name)."""
    src, eg, search, ver = report["input"], report["egraph"], report["search"], report["verification"]
    inputs = ", ".join(f"{tuple(i['shape'])} {i['dtype']}" for i in src["inputs"])
    out = [f"# tsir report: {src['name']}", "",
           f"- input: {src['kind']} model `{src['name']}`, inputs {inputs}",
           f"- target: `{report['target']['name']}` (`{report['target']['tvm']}`), mode `{report['mode']}`",
           f"- report schema version {report['version']}", "", "## Result", ""]
    rows = []
    lat = report.get("latency_ms")
    if lat:
        rows += [["latency, original (TVM, no rewrites)", f"{lat['original']:.3f} ms"],
                 ["latency, optimized", f"{lat['optimized']:.3f} ms"],
                 ["speed-up", f"{lat['original'] / lat['optimized']:.2f}x"]]
        rows += [[f"latency, {k} (reference)", f"{v:.3f} ms"] for k, v in lat.items()
                 if k not in ("original", "optimized")]
    else:
        rows.append(["latency", "not measured (measure=False)"])
    size = report["size_bytes"]
    rows += [["size (constants), original", f"{size['original']:,} bytes"],
             ["size (constants), optimized", f"{size['optimized']:,} bytes"],
             *verification_rows(ver)]
    out += _table(["", "value"], rows)
    fired = [[fam, rule, n] for fam, rules in report["rules_fired"].items() for rule, n in sorted(rules.items())]
    out += ["", "## Rules fired", ""]
    out += _table(["family", "rule", "matches"], fired) if fired else ["No rule fired."]
    quiet = [fam for fam, rules in report["rules_fired"].items() if not rules]
    if quiet and fired:
        out += ["", f"Families that did not fire: {', '.join(quiet)}."]
    out += ["", "## E-graph", "",
            f"{eg['iterations']} iterations, {eg['eclasses']} e-classes, {eg['enodes']} e-nodes, "
            f"stopped by {eg['stop_reason']} after {eg['time_s']:.2f} s.", ""]
    out += _table(["iteration", "e-nodes"], [[i, n] for i, n in enumerate(eg["enodes_per_iteration"])])
    out += ["", "## Search", "",
            f"{search['evaluations']} programs evaluated in {search['time_s']:.2f} s; cost tier "
            f"`{search['cost_tier']}`; best predicted {search['predicted_s'] * 1e3:.4g} ms "
            f"(seeds: {', '.join(f'{k} {v * 1e3:.4g} ms' for k, v in search['seeds_predicted_s'].items())}).", ""]
    out += [f"![search curve]({CURVE_PNG})"] if search["curve"] else ["No generation ran."]
    out += ["", "## Pareto front", ""]
    if search["pareto"]:
        out += _table(["latency, ms", "size, bytes", "error"],
                      [[f"{p['latency_ms']:.4g}", f"{p['size_bytes']:,}", f"{p['error']:.3g}"]
                       for p in search["pareto"]])
        out += ["", f"![Pareto front]({PARETO_PNG})"]
    else:
        out += ["None recorded: exact mode optimizes latency alone, so there is a single best program."]
    prog = report["program"]
    out += ["", "## Program", ""]
    out += _table(["op", "original", "optimized"],
                  [[op, prog["original"].get(op, 0), prog["optimized"].get(op, 0)]
                   for op in sorted(prog["original"].keys() | prog["optimized"].keys())])
    out += ["", "## Per-layer choices", ""]
    out += _table(["#", "op", "shape", "dtype", "kernel source"],
                  [[i, f"`{layer['op']}`", layer["shape"], layer["dtype"], layer["kernel_source"]]
                   for i, layer in enumerate(report["layers"])])
    if "approx" in report:
        out += approx_markdown(report["approx"])
    out += ["", "## Stages", ""]
    out += _table(["stage", "seconds"], [[k, f"{v:.2f}"] for k, v in report["stages_s"].items()])
    return "\n".join(out) + "\n"


def verification_rows(ver: dict) -> list[list[str]]:
    """The status, the inputs it was checked on, and the check: the held-out metric (approx) or the
    comparison with the original (exact). Rows of ``report.md`` and of the CLI's summary."""
    used = ver["inputs"]
    inputs = (f"random draws, seeds {', '.join(map(str, used['seeds']))}" if used["kind"] == "random"
              else f"{used['examples']} examples of {used['source']}")
    rows = [["verification", f"{ver['status']} on {ver['verified_on']}, against {ver['reference']}"]]
    if ver["status"] == "within-budget":
        held = ver["heldout"]
        return rows + [[f"held-out {held['metric']} ({held['examples']} examples)",
                        f"{held['original']:.4f} -> {held['optimized']:.4f}, drop {held['drop']:.4f} "
                        f"(budget {held['max_drop']:g})"],
                       ["distance to the original (information)", f"max abs error {ver['max_abs_error']:.3g} on "
                        f"{inputs}"]]
    worst = ver["worst"]
    where = (f"; worst element: output {worst['output']} at {worst['index']}, {worst['actual']:.6g} vs "
             f"{worst['reference']:.6g}" if worst else "")
    return rows + [["verification inputs", inputs],
                   ["verification error", f"max abs error {ver['max_abs_error']:.3g}, {ver['relative_error']:.3g} "
                    f"of output scale (bound {ver['tolerance']:g}; per element atol {ver['atol']:g} x scale + rtol "
                    f"{ver['rtol']:g}){where}"]]


def approx_markdown(approx: dict) -> list[str]:
    """Approximate mode: the per-layer approximation choices and the held-out check."""
    held = approx["heldout"]
    out = ["", "## Approximations (per layer)", "",
           f"Metric `{approx['metric']}`, max drop {approx['max_drop']:g}. Held-out ({held['examples']} examples, "
           f"never used to choose): original {held['original']:.4f}, optimized {held['optimized']:.4f}, drop "
           f"{held['drop']:.4f} ({'within' if held['within_budget'] else 'OVER'} budget); top-1 agreement "
           f"{held['top1_agreement']:.4f}, cosine {held['cosine']:.4f}, relative error {held['relative_error']:.3g}.",
           ""]
    if approx["fell_back_to_exact"]:
        out += ["No approximate candidate met the budget: the exact program was kept.", ""]
    out += _table(["layer", "e-class", "choice", "kept in / out", "error estimate", "alternatives"],
                  [[layer["layer"], layer["eclass"], layer["choice"],
                    f"{layer['kept_in']:.3g} / {layer['kept_out']:.3g}", f"{layer['error_estimate']:.3g}",
                    ", ".join(c["name"] for c in site["choices"])]
                   for layer, site in zip(approx["layers"], approx["sites"], strict=True)])
    if approx["pruning"]:
        out += ["", "Structured pruning (one gene per channel group; residual groups prune together):", ""]
        out += _table(["channel group", "channels kept", "error estimate"],
                      [[g["group"], f"{g['kept']:.3g}", f"{g['error_estimate']:.3g}"] for g in approx["pruning"]])
    return out
