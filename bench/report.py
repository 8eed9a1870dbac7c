"""Render bench results: a Markdown table of ratios (each system's median ÷ tsir_exact's) with geomeans,
and a bar chart of the same ratios. A ratio above 1 means tsir_exact is faster. A row that failed
verification is shown (its ratio marked "unverified") but enters no ratio, geomean or bar."""

from __future__ import annotations

import io
import math

REFERENCE = "tsir_exact"


def _median(results: list[dict], model: str, batch: int, system: str, verified_only: bool = True) -> float | None:
    """The row's median latency; None where it failed (or, with ``verified_only``, did not verify)."""
    for r in results:
        if (r["model"], r["batch"], r["system"]) == (model, batch, system):
            return None if verified_only and r.get("verified") is False else r["median_ms"]
    return None


def _unverified(results: list[dict], model: str, batch: int, system: str) -> bool:
    return any((r["model"], r["batch"], r["system"]) == (model, batch, system) and r.get("verified") is False
               for r in results)


def ratios(results: list[dict], verified_only: bool = True) -> dict[tuple[str, int], dict[str, float | None]]:
    """(model, batch) -> system -> median ÷ tsir_exact median (None where either failed or did not verify;
    ``verified_only=False`` keeps unverified rows, for display only)."""
    systems = list(dict.fromkeys(r["system"] for r in results))
    out = {}
    for model, batch in dict.fromkeys((r["model"], r["batch"]) for r in results):
        ref = _median(results, model, batch, REFERENCE, verified_only)
        row = {}
        for s in systems:
            value = _median(results, model, batch, s, verified_only)
            row[s] = value / ref if value and ref else None
        out[(model, batch)] = row
    return out


def geomeans(table: dict) -> dict[tuple[int, str], float | None]:
    """(batch, system) -> geometric mean of the ratios over models where both ran."""
    out = {}
    for batch in sorted({b for _, b in table}):
        rows = [row for (m, b), row in table.items() if b == batch]
        for s in rows[0]:
            vals = [row[s] for row in rows if row.get(s)]
            out[(batch, s)] = math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None
    return out


def markdown(doc: dict) -> str:
    results = doc["results"]
    table, shown = ratios(results), ratios(results, verified_only=False)
    systems = list(next(iter(table.values())))
    fmt = lambda v: "fail" if v is None else f"{v:.2f}"  # noqa: E731

    def cell(model: str, batch: int, system: str) -> str:
        if _unverified(results, model, batch, system) or _unverified(results, model, batch, REFERENCE):
            value = shown[(model, batch)][system]
            return "unverified" if value is None else f"unverified ({value:.2f})"
        return fmt(table[(model, batch)][system])
    lines = [f"Ratios: each system's median latency ÷ {REFERENCE}'s (> 1: {REFERENCE} is faster). "
             f"{REFERENCE} median in ms. Threads: {doc['machine'].get('threads')}. Rows that failed verification "
             "are marked unverified and left out of the geomeans.", "",
             f"| model | batch | {REFERENCE} ms | " + " | ".join(systems) + " |",
             "| --- | ---: | ---: | " + " | ".join("---:" for _ in systems) + " |"]
    for model, batch in table:
        ref = _median(results, model, batch, REFERENCE, verified_only=False)
        mark = " unverified" if _unverified(results, model, batch, REFERENCE) else ""
        lines.append(f"| {model} | {batch} | {'fail' if ref is None else f'{ref:.3f}{mark}'} | "
                     + " | ".join(cell(model, batch, s) for s in systems) + " |")
    means = geomeans(table)
    for batch in sorted({b for b, _ in means}):
        lines.append(f"| **geomean** | {batch} | | " + " | ".join(fmt(means[(batch, s)]) for s in systems) + " |")
    failed = [r for r in results if r.get("error")]
    if failed:
        lines += ["", "Failures:", ""] + [f"- {r['model']} b{r['batch']} {r['system']}: {r['error']}" for r in failed]
    unverified = [r for r in results if r.get("verified") is False]
    if unverified:
        lines += ["", "Not verified (left out of ratios and geomeans):", ""] + [
            f"- {r['model']} b{r['batch']} {r['system']}: max abs err {_number(r.get('max_abs_err'))}"
            for r in unverified]
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def chart(doc: dict) -> bytes:
    """PNG: per batch size, grouped bars of each system's ratio to tsir_exact per model (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = ratios(doc["results"])
    batches = sorted({b for _, b in table})
    systems = [s for s in next(iter(table.values())) if s != REFERENCE]
    fig, axes = plt.subplots(len(batches), 1, figsize=(12, 4 * len(batches)), squeeze=False)
    for ax, batch in zip(axes[:, 0], batches, strict=True):
        models = [m for m, b in table if b == batch]
        width = 0.8 / max(len(systems), 1)
        for i, s in enumerate(systems):
            values = [table[(m, batch)][s] or 0.0 for m in models]
            ax.bar([j + i * width for j in range(len(models))], values, width, label=s)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=20)
        ax.set_ylabel(f"latency ÷ {REFERENCE}")
        ax.set_title(f"batch {batch} (above 1: {REFERENCE} faster; missing bar: failed or unverified)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
