"""``tsir optimize``'s headline: the optimized library against ONNX Runtime and OpenVINO at their best.

The three run as the bench runs them (``bench.worker``): each in its own process under the one thread and
wait policy (``bench.policy``), verified against PyTorch, timed interleaved; tsir loads the ``model.so``
that ``tsir optimize`` wrote. Only for models the bench knows by name (zoo and suite), at batch 1.
"""

from __future__ import annotations

from pathlib import Path

from . import policy
from .report import PEERS, best_peer, usable
from .timing import interleaved, summary
from .worker import Worker

SYSTEM = "tsir_library"
NAMES = {"tsir_library": "tsir", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def compare(model: str, library: Path, log: Path | None = None, rounds: int = 7, timeout_s: float = 300) -> dict:
    """Rows (system -> median_ms, threads, verified, error) for tsir's ``library`` and the peers on ``model``,
    the best peer and the speed-up over it (None when tsir or every peer failed or did not verify). The
    workers' own output (exporter and runtime warnings) goes to ``log``."""
    workers = {s: Worker(s, log) for s in (SYSTEM, *PEERS)}
    rows: dict[str, dict] = {}
    try:
        for system, worker in workers.items():
            try:
                extra = {"library": str(library)} if system == SYSTEM else {}
                rows[system] = worker.prepare(model, 1, 0.0, timeout_s=timeout_s, **extra)
            except (RuntimeError, TimeoutError) as err:
                rows[system] = {"error": f"while preparing: {err}"}
        ready = {s: w.sample for s, w in workers.items() if not rows[s].get("error")}
        samples, errors = interleaved(ready, warmup=3, rounds=rounds, block_ms=20, cap_s=3, pause_ms=50)
        for system, values in samples.items():
            rows[system].update(summary(values))
        for system, error in errors.items():
            rows[system]["error"] = error
    finally:
        for worker in workers.values():
            worker.close()
    peer, ours = best_peer(rows), usable(rows[SYSTEM])
    speedup = usable(rows[peer]) / ours if peer and ours else None
    return {"threads": policy.threads(), "rows": rows, "best_peer": peer, "speedup": speedup}


def lines(result: dict) -> list[tuple[str, str]]:
    """(label, value) rows for the CLI's table."""
    out = []
    for system, row in result["rows"].items():
        label = NAMES[system] + ("" if system == SYSTEM else " (best of 1 and 2 threads)")
        if row.get("error"):
            out.append((label, f"failed: {row['error']}"))
        elif row.get("verified") is not True:
            out.append((label, f"{row['median_ms']:.3f} ms, not verified (left out)"))
        else:
            threads = f", {row['threads']} thread(s)" if "threads" in row else ""
            out.append((label, f"{row['median_ms']:.3f} ms{threads}"))
    peer = result["best_peer"]
    value = "-" if result["speedup"] is None else f"{result['speedup']:.2f}x over {NAMES[peer]}"
    out.append(("speed-up over the best peer", value))
    return out
