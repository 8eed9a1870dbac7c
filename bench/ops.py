"""``python -m bench.ops``: GFLOP/s of every GEMM-class op of the zoo, oneDNN versus TVM-generated code.

Each distinct (op, shapes, attributes) among the zoo's matmul / conv2d nodes is built as a one-call
Relax module per road: the TVM op compiled by ``tsir.backends.runtime.build`` (the same kernels
``tvm_baseline`` and ``tsir_exact`` get), the oneDNN call (``tsir.dnnl.*`` through ``call_dps_packed``,
with the weights a constant of the module as in an optimized model, so oneDNN packs them once) and, for
convs, the oneDNN call on NHWC activations (what an optimized model uses between two such convs: no
reorders). All are timed with the VM's time evaluator on 2 threads; GFLOP/s come from the best sample
(what the kernel can do; the medians are in the JSON). The peak is a large oneDNN sgemm.
Writes ``bench/results/ops.json`` and ``bench/results/ops.md`` (``--out`` moves them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tvm import relax

from tsir import zoo
from tsir.backends import dnnl, runtime, targets
from tsir.convert import relax_to_tsir
from tsir.frontend import export, to_relax
from tsir.ir.ops import OPS, TO_NCHW, TO_NHWC
from tsir.ir.term import postorder
from tsir.lower import EMITTERS

from .io import RESULTS_DIR, atomic_write

GEMM_CLASS = {"matmul": "dnnl_matmul", "conv2d": "dnnl_conv2d"}
# road -> the library op computing each GEMM-class op on it ("tvm": TVM's own code)
ROADS = {"tvm": {}, "onednn": GEMM_CLASS, "onednn_nhwc": {"conv2d": "dnnl_conv2d"}}  # NHWC: the layout attribute
PEAK_SHAPE = (1024, 1024, 1024)


@dataclass(frozen=True)
class OpCase:
    """One GEMM-class op instance: its op, input types and attributes, and the zoo models that contain it."""

    op: str
    in_types: tuple
    attrs: tuple
    models: tuple[str, ...]

    @property
    def flops(self) -> float:
        out = OPS[self.op].infer(self.in_types, self.attrs)
        return OPS[self.op].flops(self.in_types, out, self.attrs)

    def label(self) -> str:
        shapes = " x ".join("[" + ",".join(map(str, s)) + "]" for s, _ in self.in_types)
        if self.op == "conv2d":
            strides, padding, dilation, groups = self.attrs
            return f"conv2d {shapes} s{strides[0]} p{padding[0]} d{dilation[0]} g{groups}"
        return f"{self.op} {shapes}"


def zoo_cases(models: list[str], batches: list[int]) -> list[OpCase]:
    """Distinct GEMM-class ops of ``models`` at ``batches``, in first-seen order."""
    found: dict[tuple, list[str]] = {}
    for name in models:
        for batch in batches:
            entry = zoo.load(name, batch)
            graph = relax_to_tsir(to_relax(export(entry.module, entry.example_inputs)))
            for term in postorder(graph.root):
                if term.op in GEMM_CLASS:
                    key = (term.op, tuple(a.ty for a in term.args), term.attrs)
                    tag = f"{name}/b{batch}"
                    if tag not in found.setdefault(key, []):
                        found[key].append(tag)
    return [OpCase(op, types, attrs, tuple(tags)) for (op, types, attrs), tags in found.items()]


def _module(case: OpCase, road: str, weight: np.ndarray | None = None):
    """A Relax module whose ``main`` takes the op's inputs and runs it on ``road`` (see ``ROADS``); with
    ``weight``, the second operand is that constant and ``main`` takes only the first."""
    in_types = _in_types(case, road)
    params = [relax.Var(f"x{i}", relax.TensorType(list(s), d)) for i, (s, d) in enumerate(in_types)]
    operands = list(params) if weight is None else [params[0], relax.const(weight)]
    bb = relax.BlockBuilder()
    with bb.function("main", params if weight is None else params[:1]):
        with bb.dataflow():
            if road == "tvm":
                value = EMITTERS[case.op](operands, case.attrs, OPS[case.op].infer(case.in_types, case.attrs))
            else:
                lib_op = ROADS[road][case.op]
                args, attrs = operands, case.attrs
                if lib_op.startswith("dnnl_conv2d"):  # a zero bias, no ReLU: the same value as conv2d
                    channels = case.in_types[1][0][0]
                    args.append(relax.const(np.zeros(channels, "float32")))
                    attrs = (*attrs, False, "NHWC" if road == "onednn_nhwc" else "NCHW")
                (shape, dtype) = OPS[case.op].infer(case.in_types, case.attrs)
                if road == "onednn_nhwc":
                    shape = tuple(shape[i] for i in TO_NHWC)
                value = EMITTERS[lib_op](args, attrs, (shape, dtype))
            out = bb.emit_output(bb.emit(value))
        bb.emit_func_output(out)
    return bb.get()


def _in_types(case: OpCase, road: str) -> tuple:
    """The op's input types on ``road``: NHWC activations on the NHWC road."""
    if road != "onednn_nhwc":
        return case.in_types
    (shape, dtype), *rest = case.in_types
    return ((tuple(shape[i] for i in TO_NHWC), dtype), *rest)


def measure(case: OpCase, road: str, spec, rng: np.random.Generator, repeat: int) -> tuple[list[float], float]:
    """(sorted times in ms, max |error| against the numpy reference) of ``case`` on ``road``."""
    inputs = [rng.standard_normal(s).astype(d) for s, d in case.in_types]
    weight = inputs[1] if road != "tvm" and case.op == "conv2d" else None  # conv weights are constants
    run = runtime.Runner(runtime.build(_module(case, road, weight), spec))
    args = inputs if weight is None else inputs[:1]
    if road == "onednn_nhwc":
        args = [np.ascontiguousarray(args[0].transpose(TO_NHWC)), *args[1:]]
    want = OPS[case.op].evaluate([x.astype(np.float64) for x in inputs], case.attrs)
    got = run(args)[0]
    error = float(np.max(np.abs((got.transpose(TO_NCHW) if road == "onednn_nhwc" else got) - want)))
    return _times_ms(run, args, repeat), error


def _times_ms(run: runtime.Runner, inputs: list[np.ndarray], repeat: int, number: int = 0) -> list[float]:
    """Sorted per-call times of ``main``; ``number`` calls per sample (0: enough for ~10 ms)."""
    args = run.tensors(inputs)
    run.vm["main"](*args)
    timer = run.vm.time_evaluator("main", run.device, number=max(number, 1), repeat=repeat,
                                  min_repeat_ms=0 if number else 10)
    return sorted(t * 1e3 for t in timer(*args).results)


def peak_gflops(spec, repeat: int) -> float:
    """Best GFLOP/s of a large oneDNN sgemm: the measured peak the table is a percentage of."""
    dnnl.load()
    m, k, n = PEAK_SHAPE
    case = OpCase("matmul", (((m, k), "float32"), ((k, n), "float32")), (), ())
    run = runtime.Runner(runtime.build(_module(case, "onednn"), spec))
    inputs = [np.ones((m, k), "float32"), np.ones((k, n), "float32")]
    return case.flops / _times_ms(run, inputs, max(repeat, 30), number=1)[0] / 1e6  # best single call


def table(rows: list[dict], peak: float) -> str:
    """Markdown: one line per op with both roads' GFLOP/s, % of peak and the winner."""
    lines = [f"Measured peak (oneDNN sgemm {'x'.join(map(str, PEAK_SHAPE))}, 2 threads): **{peak:.0f} GFLOP/s**",
             "", "| op | models | MFLOP | TVM GFLOP/s | oneDNN GFLOP/s | oneDNN NHWC GFLOP/s | oneDNN impl | "
                 "% of peak (winner) | winner |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    seconds = sum(r["mflop"] / _best(r) for r in rows)  # ms at each best rate
    if rows:  # all ops' FLOPs over the time they take on their winning road: what the zoo's GEMM work gets
        weighted = sum(r["mflop"] for r in rows) / seconds
        lines.insert(1, f"FLOP-weighted over these ops (winning road): **{weighted:.0f} GFLOP/s, "
                        f"{100 * weighted / peak:.0f} % of peak**")
    for r in rows:
        nhwc = "-" if r["onednn_nhwc_gflops"] is None else f"{r['onednn_nhwc_gflops']:.1f}"
        lines.append(f"| {r['op']} | {', '.join(r['models'])} | {r['mflop']:.2f} | {r['tvm_gflops']:.1f} | "
                     f"{r['onednn_gflops']:.1f} | {nhwc} | {r['onednn_impl']} | {100 * _best(r) / peak:.0f} % | "
                     f"{r['winner']} |")
    return "\n".join(lines) + "\n"


def _best(row: dict) -> float:
    return max(row[f"{road}_gflops"] or 0.0 for road in ROADS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="zoo models (default: all)")
    parser.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS_DIR / "ops"), help="path stem of .json/.md")
    args = parser.parse_args(argv)
    dnnl.load()
    spec = targets.resolve("x86")
    rng = np.random.default_rng(0)
    peak = peak_gflops(spec, args.repeat)
    rows = []
    for case in zoo_cases(args.models or zoo.names(), args.batches):
        row = {"op": case.label(), "models": list(case.models), "mflop": case.flops / 1e6, "max_abs_err": {}}
        for road, ops in ROADS.items():
            row[f"{road}_median_ms"] = row[f"{road}_gflops"] = None
            if road != "tvm" and case.op not in ops:
                continue
            times, row["max_abs_err"][road] = measure(case, road, spec, rng, args.repeat)
            if road == "onednn":
                row["onednn_impl"] = dnnl.impl(GEMM_CLASS[case.op][5:])
            row[f"{road}_median_ms"], row[f"{road}_gflops"] = statistics.median(times), case.flops / times[0] / 1e6
        row["winner"] = max(ROADS, key=lambda road: row[f"{road}_gflops"] or 0.0)
        rows.append(row)
        print(f"{row['op']:60s} " + "  ".join(f"{road} {row[f'{road}_gflops'] or 0:7.1f}" for road in ROADS) +
              f" GFLOP/s ({row['onednn_impl']})", flush=True)
    atomic_write(Path(args.out + ".json"), json.dumps({"peak_gflops": peak, "ops": rows}, indent=2))
    atomic_write(Path(args.out + ".md"), table(rows, peak))
    print(table(rows, peak))
    return 0


if __name__ == "__main__":
    sys.exit(main())
