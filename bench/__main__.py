"""``python -m bench [MODEL ...]``: optimize zoo models and record latencies measured in the same run.

Writes ``bench/results/latest.json``: per model, TVM without rewrites, tsir exact, PyTorch eager (ms),
and the verification result. The full peer comparison (ONNX Runtime, torch.compile, batch 16) grows here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tsir import optimize, zoo

RESULTS = Path(__file__).parent / "results" / "latest.json"


def main(models: list[str]) -> int:
    rows = []
    for name in models or zoo.names():
        entry = zoo.load(name)
        report = optimize(entry.module, entry.example_inputs, budget_s=30).report
        lat = report["latency_ms"]
        rows.append({"model": name, "batch": 1, "tvm_baseline_ms": lat["original"], "tsir_exact_ms": lat["optimized"],
                     "torch_eager_ms": lat["torch_eager"], "verified": report["verification"]["passed"],
                     "max_abs_err": report["verification"]["max_abs_error"]})
        print(f"{name:16s} tvm {lat['original']:9.3f} ms  tsir {lat['optimized']:9.3f} ms  "
              f"torch {lat['torch_eager']:8.3f} ms  speed-up vs tvm {lat['original'] / lat['optimized']:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": rows}, indent=2))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
