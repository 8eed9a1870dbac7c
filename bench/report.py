"""Render bench results: a Markdown table of each row against its best peer (the faster of ONNX Runtime and
OpenVINO), every other system's ratio, memory and geomeans, and a bar chart of the same ratios.

A ratio is the other system's median latency ÷ ``tsir_exact``'s: above 1, tsir is faster. A row that failed
or did not verify enters no ratio, no best peer, no geomean and no bar; an unverified one is shown marked.
"""

from __future__ import annotations

import io
import math

REFERENCE = "tsir_exact"
PEERS = ("onnxruntime", "openvino")
BEST_PEER = "best_peer"


def _rows(results: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """(model, batch) -> system -> its result row, in run order."""
    out: dict[tuple[str, int], dict[str, dict]] = {}
    for r in results:
        out.setdefault((r["model"], r["batch"]), {})[r["system"]] = r
    return out


def usable(row: dict | None) -> float | None:
    """The row's median when it ran and verified, else None."""
    if row is None or row.get("error") or row.get("verified") is not True:
        return None
    return row.get("median_ms")


def best_peer(systems: dict[str, dict]) -> str | None:
    """The peer with the lowest verified median on one (model, batch), None when no peer verified."""
    timed = {p: usable(systems.get(p)) for p in PEERS}
    timed = {p: ms for p, ms in timed.items() if ms}
    return min(timed, key=timed.get) if timed else None


def ratios(results: list[dict]) -> dict[tuple[str, int], dict[str, float | None]]:
    """(model, batch) -> column -> other median ÷ tsir_exact median; columns are ``best_peer`` and every
    system but the reference (None where either side failed or did not verify)."""
    systems = [s for s in dict.fromkeys(r["system"] for r in results) if s != REFERENCE]
    out = {}
    for key, row in _rows(results).items():
        ref = usable(row.get(REFERENCE))
        peer = best_peer(row)
        values = {BEST_PEER: usable(row[peer]) if peer else None, **{s: usable(row.get(s)) for s in systems}}
        out[key] = {c: v / ref if v and ref else None for c, v in values.items()}
    return out


def geomeans(table: dict) -> dict[tuple[int, str], float | None]:
    """(batch, column) -> geometric mean of the column's ratios over the models where both sides verified."""
    out = {}
    for batch in sorted({b for _, b in table}):
        rows = [row for (m, b), row in table.items() if b == batch]
        for column in rows[0]:
            vals = [row[column] for row in rows if row.get(column)]
            out[(batch, column)] = math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None
    return out


def _cell(row: dict | None, ratio: float | None) -> str:
    if row is None:
        return "-"
    if row.get("error"):
        return "fail"
    if row.get("verified") is not True:
        return "unverified"
    return "-" if ratio is None else f"{ratio:.2f}"


def _number(value, digits: str = ".3g") -> str:
    return "-" if value is None else format(value, digits)


def _line(model: str, batch: int, rows: dict[str, dict], ratio: dict, systems: list[str]) -> str:
    """One (model, batch) line of the table."""
    ref, peer = rows.get(REFERENCE), best_peer(rows)
    peer_row = rows.get(peer) if peer else None
    if ref is None or ref.get("error"):
        ref_ms = "fail"
    else:
        ref_ms = _number(ref.get("median_ms"), ".3f") + ("" if ref.get("verified") is True else " unverified")
    cells = [model, str(batch), ref_ms, _number(ref and ref.get("first_call_ms"), ".3f"), peer or "-",
             _number(peer_row and peer_row["median_ms"], ".3f"), _number(ratio[BEST_PEER], ".2f"),
             *(_cell(rows.get(s), ratio[s]) for s in systems), _number(ref and ref.get("peak_rss_mb"), ".0f"),
             _number(peer_row and peer_row.get("peak_rss_mb"), ".0f")]
    return "| " + " | ".join(cells) + " |"


def markdown(doc: dict) -> str:
    results, machine = doc["results"], doc["machine"]
    table, grouped = ratios(results), _rows(results)
    systems = [s for s in next(iter(table.values())) if s != BEST_PEER]
    lines = [f"Machine: {machine.get('cpu')} ({machine.get('llvm_mcpu')}), {machine.get('threads')} threads for "
             f"every system, fp32 peak {machine.get('peak_gflops')} GFLOP/s measured in this run.", "",
             f"Ratios: the other's median latency ÷ {REFERENCE}'s (> 1: {REFERENCE} is faster). Best peer: the "
             f"faster of {' and '.join(PEERS)} on the row. Peak memory: each system's own process (MiB). Failed and "
             "unverified rows enter no ratio and no geomean.", "",
             f"| model | batch | {REFERENCE} ms | first call ms | best peer | peer ms | **peer ÷ tsir** | "
             + " | ".join(f"{s} ÷ tsir" for s in systems) + f" | {REFERENCE} MiB | peer MiB |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | " + "---: | " * len(systems) + "---: | ---: |"]
    lines += [_line(model, batch, grouped[(model, batch)], ratio, systems) for (model, batch), ratio in table.items()]
    means = geomeans(table)
    for batch in sorted({b for b, _ in means}):
        lines.append(f"| **geomean** | {batch} | | | | | **{_number(means[(batch, BEST_PEER)], '.2f')}** | "
                     + " | ".join(_number(means[(batch, s)], ".2f") for s in systems) + " | | |")
    failed = [r for r in results if r.get("error")]
    if failed:
        lines += ["", "Failures:", ""] + [f"- {r['model']} b{r['batch']} {r['system']}: {r['error']}" for r in failed]
    unverified = [r for r in results if not r.get("error") and r.get("verified") is not True]
    if unverified:
        lines += ["", "Not verified (left out of ratios and geomeans):", ""] + [
            f"- {r['model']} b{r['batch']} {r['system']}: max abs err {_number(r.get('max_abs_err'))}"
            f"{'; ' + r['verification_problem'] if r.get('verification_problem') else ''}" for r in unverified]
    return "\n".join(lines) + "\n"


def chart(doc: dict) -> bytes:
    """PNG: per batch size, grouped bars of each column's ratio to tsir_exact per model (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = ratios(doc["results"])
    batches = sorted({b for _, b in table})
    columns = list(next(iter(table.values())))
    fig, axes = plt.subplots(len(batches), 1, figsize=(max(12, len(table) // len(batches)), 4 * len(batches)),
                             squeeze=False)
    for ax, batch in zip(axes[:, 0], batches, strict=True):
        models = [m for m, b in table if b == batch]
        width = 0.8 / max(len(columns), 1)
        for i, column in enumerate(columns):
            values = [table[(m, batch)][column] or 0.0 for m in models]
            ax.bar([j + i * width for j in range(len(models))], values, width,
                   label=column.replace("_", " "), edgecolor="black" if column == BEST_PEER else None)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=30, ha="right")
        ax.set_ylabel(f"latency ÷ {REFERENCE}")
        ax.set_title(f"batch {batch} (above 1: {REFERENCE} faster; missing bar: failed or unverified)")
        ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
