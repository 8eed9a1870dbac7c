"""The ``tsir`` command line (typer + rich): optimize, report, rules, bench, zoo.

Exit codes: 0 success, 2 bad input (the message names the fix), 1 internal error (a tsir bug).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tsir import report as report_files
from tsir import zoo
from tsir.errors import TsirError

app = typer.Typer(help="TensorSynth: optimize a model for a target, verified; read its report.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)


class Mode(StrEnum):
    exact = "exact"
    approx = "approx"


class Metric(StrEnum):
    top1 = "top1"
    cosine = "cosine"
    relative_error = "relative_error"


class Cost(StrEnum):
    analytic = "analytic"
    measured = "measured"


def parse_budget(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h`` or ``1.5m`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise TsirError(f"--budget {text!r} is not a duration; write e.g. 90s, 10m or 1h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def parse_rpc(text: str) -> str:
    """Check ``host:port:key``."""
    parts = text.split(":")
    if len(parts) != 3 or not all(parts) or not parts[1].isdigit():
        raise TsirError(f"--rpc {text!r} is not host:port:key; write e.g. 192.168.1.7:9190:rasp4 (tracker address "
                        "and device key)")
    return text


def load_model(spec: str) -> tuple[object, tuple | None, str]:
    """MODEL as the CLI takes it -> (model, example inputs or None, display name)."""
    if ".py:" in spec:
        return _from_factory(spec)
    if spec.endswith(".onnx"):
        if not Path(spec).is_file():
            raise TsirError(f"ONNX file {spec!r} does not exist; check the path")
        return spec, None, Path(spec).name
    if spec in zoo.names():
        entry = zoo.load(spec)
        return entry.module, entry.example_inputs, spec
    raise TsirError(f"unknown model {spec!r}; give a zoo name ({', '.join(zoo.names())}), a .onnx file, "
                    "or path/to/file.py:factory where factory() returns (model, example_inputs)")


def _from_factory(spec: str) -> tuple[object, tuple, str]:
    path_text, _, name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise TsirError(f"{path_text!r} does not exist; MODEL is path/to/file.py:factory")
    module_spec = importlib.util.spec_from_file_location(f"tsir_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's file: any error is bad input
        raise TsirError(f"importing {path_text!r} failed: {type(error).__name__}: {error}; fix that file") from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise TsirError(f"{path_text!r} has no function {name!r}; define {name}() returning (model, example_inputs)")
    made = factory()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise TsirError(f"{name}() must return (model, example_inputs), got {type(made).__name__}")
    model, inputs = made
    return model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,), f"{path.stem}:{name}"


def summary(report: dict) -> Table:
    """The result table printed after ``tsir optimize`` and ``tsir report``."""
    fired = {r: n for rules in report["rules_fired"].values() for r, n in rules.items()}
    eg, search, ver = report["egraph"], report["search"], report["verification"]
    table = Table(title=f"tsir: {report['input']['name']} on {report['target']['name']} ({report['mode']} mode)")
    table.add_column("")
    table.add_column("value", overflow="fold")
    lat = report.get("latency_ms")
    if lat:
        table.add_row("original latency (TVM, no rewrites)", f"{lat['original']:.3f} ms")
        table.add_row("optimized latency", f"{lat['optimized']:.3f} ms")
        table.add_row("speed-up over TVM (no rewrites)", f"{lat['original'] / lat['optimized']:.2f}x")
        names = {"torch_eager": "PyTorch eager", "onnxruntime": "ONNX Runtime"}
        for key, ms in lat.items():
            if key not in ("original", "optimized"):
                table.add_row(f"{names.get(key, key)} (reference)", f"{ms:.3f} ms")
    size = report["size_bytes"]
    table.add_row("size (constants)", f"{size['original']:,} -> {size['optimized']:,} bytes")
    table.add_row("rules fired", ", ".join(f"{r}×{n}" for r, n in sorted(fired.items())) or "none")
    table.add_row("e-graph size", f"{eg['eclasses']} e-classes, {eg['enodes']} e-nodes, "
                  f"{eg['iterations']} iterations ({eg['stop_reason']})")
    table.add_row("search time", f"{search['time_s']:.2f} s ({search['evaluations']} programs, "
                  f"{search['cost_tier']} cost)")
    tuning = search.get("tuning")
    if tuning and tuning["trials_per_task"]:
        left = f"; {tuning['skipped_for_budget']} left untuned for the budget (raise --budget)" if tuning[
            "skipped_for_budget"] else ""
        table.add_row("tuning", f"{tuning['tasks_tuned']} kernels tuned, {tuning['trials']} trials{left}")
    if search["curve"]:
        best = [point["best_ms"] for point in search["curve"]]
        table.add_row("search curve", f"best {best[0]:.3f} -> {best[-1]:.3f} ms over {len(best)} generations")
    for name, value in report_files.verification_rows(ver):
        table.add_row(name, value)
    return table


@app.command()
def optimize(
    model: Annotated[str, typer.Argument(help="zoo name, path/to/model.onnx, or path/to/file.py:factory")],
    target: Annotated[str, typer.Option(help="x86 (this CPU), arm[:core], cuda[:sm_XX]; docs/deploying.md")] = "x86",
    mode: Annotated[Mode, typer.Option(help="exact rewrites only, or approx: low-rank/int8 layers within "
                                       "--max-drop on --heldout (digits and minilm bring their data)")] = Mode.exact,
    max_drop: Annotated[float | None, typer.Option(help="approx: largest accepted held-out metric drop (default "
                                                   "0.005; 0.01 cosine for minilm)")] = None,
    data: Annotated[Path | None, typer.Option(help="approx: calibration inputs, an .npz with one array per model "
                                              "input (examples along axis 0) and optional 'labels'")] = None,
    heldout: Annotated[Path | None, typer.Option(help="approx: held-out inputs the metric is scored on, as "
                                                 "--data")] = None,
    metric: Annotated[Metric | None, typer.Option(help="approx: top1 (against labels, or agreement with the original), "
                                           "cosine or relative_error, each against the original model")] = None,
    budget: Annotated[str, typer.Option(help="time budget: 90s, 10m, 1h")] = "60s",
    out_dir: Annotated[Path, typer.Option("--out", help="directory for model.so, report.json, report.md")] = Path(
        "build"),
    rpc: Annotated[str | None, typer.Option(help="measure on a device: tracker host:port:key")] = None,
    seed: Annotated[int, typer.Option(help="search seed")] = 0,
    verify_data: Annotated[Path | None, typer.Option(help="verify on these inputs: a .npz with one array per model "
                                                     "input (named like it), example-shaped or stacked")] = None,
    verify_draws: Annotated[int, typer.Option(help="random input draws to verify on (without --verify-data)")] = 3,
    cost: Annotated[Cost, typer.Option(help="how the search prices programs: the analytic roofline, or kernels and "
                                       "the finalists timed on this machine (measured)")] = Cost.analytic,
    tuning_trials: Annotated[int, typer.Option(min=0, help="MetaSchedule tuning trials per TVM kernel (0: none)")] = 0,
    cache: Annotated[Path | None, typer.Option(help="kernel timings and tuning records, reused by later runs "
                                               "(default: $TSIR_CACHE_DIR or ~/.cache/tsir)")] = None,
    peers: Annotated[bool, typer.Option(help="x86, exact mode, zoo and suite models: time the result against ONNX "
                                        "Runtime and OpenVINO at their best, on equal threads (about 20 s)")] = False,
) -> None:
    """Optimize MODEL for --target, verify it, write the library and the report to --out."""
    import tsir
    from tsir.bench import cases, policy

    policy.apply()  # TVM's pool and OpenMP on the same threads, as every system of the headline

    if peers and not (target == "x86" and mode == Mode.exact and cases.known(model)):
        raise TsirError("--peers times zoo and suite models on --target x86 in exact mode, where the bench's peers "
                        "run them; leave it out for this model")
    budget_s = parse_budget(budget)
    options: dict = {"cost": cost.value, "tuning_trials": tuning_trials}
    if cache is not None:
        options["cache_dir"] = cache
    if rpc is not None:
        options["rpc"] = parse_rpc(rpc)
    if mode == Mode.approx:
        loaded, inputs, name, options["accuracy"] = _approx_model(model, data, heldout, metric, max_drop)
    else:
        if data is not None or heldout is not None or metric is not None:
            raise TsirError("--data, --heldout and --metric are for --mode approx; add it, or leave them out")
        loaded, inputs, name = load_model(model)
    with Progress(SpinnerColumn(finished_text="[green]✓"), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=err, transient=False) as progress:
        tasks: dict[str, int] = {}

        def on_stage(stage: str, seconds: float | None) -> None:
            if seconds is None:
                tasks[stage] = progress.add_task(stage, total=1)
            else:
                progress.update(tasks[stage], completed=1, description=f"{stage} ({seconds:.2f} s)")

        result = tsir.optimize(loaded, inputs, target=target, mode=mode.value, budget_s=budget_s, seed=seed,
                               out_dir=out_dir, model_name=name, on_stage=on_stage, verify_data=verify_data,
                               verify_draws=verify_draws, **options)
    out.print(summary(result.report))
    written = [f for f in report_files.FILES if (out_dir / f).exists()]
    out.print(f"wrote {', '.join(written)} to {out_dir}/")
    if peers:
        out.print(headline(model, out_dir / "model.so"))


def headline(model: str, library: Path) -> Table:
    """tsir's library against ONNX Runtime and OpenVINO at their best on ``model`` (batch 1, same threads)."""
    from tsir.bench import headline as peers

    with err.status("timing tsir, ONNX Runtime and OpenVINO, each in its own process"):
        result = peers.compare(model, library, log=library.parent / report_files.NATIVE_LOG)
    table = Table(title=f"tsir against ONNX Runtime and OpenVINO: {model}, batch 1, {result['threads']} threads "
                  "for each, own processes, interleaved, verified")
    table.add_column("")
    table.add_column("median latency", overflow="fold")
    for label, value in peers.lines(result):
        table.add_row(label, value)
    return table


def _approx_model(model: str, data: Path | None, heldout: Path | None, metric: Metric | None,
                  max_drop: float | None) -> tuple[object, tuple, str, object]:
    """MODEL with its accuracy budget: a bundled one's own data, or the user's --data and --heldout files."""
    from tsir.approx.real import REAL
    from tsir.approx_data import budget_from_files

    if data is None and heldout is None and metric is None and model in REAL:
        loaded, inputs, budget = REAL[model](*(() if max_drop is None else (max_drop,)))
        return loaded, inputs, model, budget
    if data is None or heldout is None:
        raise TsirError("--mode approx needs calibration and held-out data: --data calib.npz --heldout heldout.npz "
                        f"(one array per model input, examples along axis 0), or MODEL {' or '.join(REAL)} "
                        "(bundled data)")
    loaded, inputs, name = load_model(model)
    if inputs is None:
        raise TsirError("--mode approx with --data takes a zoo name or path/to/file.py:factory; for an ONNX file "
                        "use the Python API (tsir.optimize(path, inputs, mode='approx', accuracy=tsir.Budget(...)))")
    metric_name = (metric or Metric.top1).value
    budget = budget_from_files(data, heldout, metric_name, 0.005 if max_drop is None else max_drop, inputs)
    return loaded, inputs, name, budget


@app.command()
def report(directory: Annotated[Path, typer.Argument(help="the --out directory of a tsir optimize run")]) -> None:
    """Validate DIR/report.json and re-render DIR/report.md and its plots."""
    loaded = report_files.load(directory)
    path = report_files.write_markdown(loaded, directory)
    out.print(summary(loaded))
    out.print(f"wrote {path}")


@app.command()
def rules() -> None:
    """List the rule families and their rules."""
    from tsir.rewrites import FAMILIES, rule_names

    table = Table(title="tsir rewrite rules")
    for column in ("family", "rules", "names"):
        table.add_column(column, overflow="fold")
    total = 0
    for family in FAMILIES:
        names = rule_names(family)
        total += len(names)
        table.add_row(family, str(len(names)), ", ".join(names))
    out.print(table)
    out.print(f"{total} rules in {len(FAMILIES)} families")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Run the benchmark harness (python -m tsir.bench; results in ./bench/results); arguments go to it."""
    code = subprocess.run([sys.executable, "-m", "tsir.bench", *ctx.args]).returncode
    raise typer.Exit(code)


@app.command("zoo")
def zoo_command() -> None:
    """List the bundled models (usable as MODEL)."""
    table = Table(title="tsir model zoo")
    table.add_column("name")
    table.add_column("description", overflow="fold")
    for name in zoo.names():
        table.add_row(name, zoo.description(name))
    out.print(table)


COMMANDS = ("optimize", "report", "rules", "bench", "zoo")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tsir`` and ``python -m tsir``; ``python -m tsir MODEL ...`` means ``optimize MODEL``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "optimize")
    try:
        app(args, prog_name="tsir")  # typer prints usage errors itself and exits 2
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    except TsirError as error:
        err.print(f"error: {error}", style="bold red", markup=False)
        return 2
    except Exception as error:  # noqa: BLE001  anything else is a bug in tsir
        err.print(traceback.format_exc(), markup=False)
        err.print(f"internal error: {type(error).__name__}: {error}. This is a tsir bug: please report it with "
                  "the traceback above", style="bold red", markup=False)
        return 1
    return 0
