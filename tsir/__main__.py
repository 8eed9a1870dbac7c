"""``python -m tsir MODEL``: optimize a zoo model for x86 and print the summary table."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from tsir import zoo
from tsir.api import optimize
from tsir.errors import TsirError


def summary(name: str, report: dict) -> Table:
    lat = report["latency_ms"]
    fired = {r: n for rules in report["rules_fired"].values() for r, n in rules.items()}
    eg, search, ver = report["egraph"], report["search"], report["verification"]
    table = Table(title=f"tsir: {name} on {report['target']['name']} ({report['mode']} mode)")
    table.add_column("")
    table.add_column("value", overflow="fold")
    table.add_row("original latency (TVM, no rewrites)", f"{lat['original']:.3f} ms")
    table.add_row("optimized latency", f"{lat['optimized']:.3f} ms")
    table.add_row("speed-up", f"{lat['original'] / lat['optimized']:.2f}x")
    table.add_row("PyTorch eager (reference)", f"{lat['torch_eager']:.3f} ms")
    table.add_row("rules fired", ", ".join(f"{r}×{n}" for r, n in sorted(fired.items())) or "none")
    table.add_row("e-graph size", f"{eg['eclasses']} e-classes, {eg['enodes']} e-nodes, "
                  f"{eg['iterations']} iterations ({eg['stop_reason']})")
    table.add_row("search time", f"{search['time_s']:.2f} s ({search['evaluations']} programs)")
    table.add_row("verified: max abs error", f"{ver['max_abs_error']:.3g} "
                  f"({ver['relative_error']:.2g} of output scale, tolerance {ver['tolerance']:g})")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tsir", description=__doc__)
    parser.add_argument("model", help=f"zoo model: {', '.join(zoo.names())}")
    parser.add_argument("--out", default="build", help="directory for the compiled library and report.json")
    parser.add_argument("--budget", type=float, default=60.0, help="search budget in seconds")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        entry = zoo.load(args.model)
        result = optimize(entry.module, entry.example_inputs, target="x86", budget_s=args.budget,
                          out_dir=args.out, log=lambda msg: console.print(msg, style="dim", markup=False))
    except (TsirError, ValueError) as err:
        console.print(f"error: {err}", style="bold red")
        return 2
    Console().print(summary(args.model, result.report))
    Console().print(f"wrote {args.out}/model.so and {args.out}/report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
