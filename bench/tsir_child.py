"""``python -m bench.tsir_child DIR``: tsir's optimizer for one bench row, in a process of its own.

``DIR/case.pt`` holds the torch module, its inputs, the budget and ``optimize``'s options (``bench.systems``
writes it); the child optimizes exactly, exports ``DIR/model.so`` and writes ``DIR/notes.json``: the
verification, the program and its own peak resident memory. The bench's worker then loads only the library,
as a deployment does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from .worker import peak_rss_mb


def main(directory: Path) -> None:
    from tsir import optimize

    case = torch.load(directory / "case.pt", weights_only=False)
    result = optimize(case["module"], case["inputs"], mode="exact", budget_s=case["budget_s"], measure=False,
                      **case["options"])
    result.export(directory / "model.so")
    notes = {"tsir_verification": result.report["verification"], "program": result.report["program"]["optimized"],
             "optimize_peak_rss_mb": peak_rss_mb()}
    (directory / "notes.json").write_text(json.dumps(notes))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
