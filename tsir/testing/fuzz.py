"""Soundness fuzzer: random program -> saturate with every rule family -> several random acyclic
extractions (not only the best) -> lower -> TVM build -> compare with the unrewritten program.

Programs are built in batches: every program of a batch, and every extraction of it, becomes one
function of a single IRModule, so one TVM build covers the whole batch. Hypothesis draws the batches;
a mismatch fails the run and hypothesis shrinks the batch to a minimal reproducer, which it prints.

    python -m tsir.testing.fuzz --graphs 10000 [--jobs N]   (N processes, each its share and its own seed)
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tvm import relax

from tsir.backends import dnnl, runtime, targets
from tsir.egraph import Limits, TermEGraph
from tsir.errors import VerificationError
from tsir.ir.term import Graph, Term, fold
from tsir.lower import lower
from tsir.rewrites import FAMILIES
from tsir.search.extract import Space, to_term
from tsir.search.greedy import fused_greedy, greedy
from tsir.testing import Case, in_precision, program_text
from tsir.testing.strategies import graphs
from tsir.verify import Tolerance, compare

# fp32 programs against the float64 reference, scale max(|reference|, 1): the whole output within the widest
# per-rule fp32 tolerance (CONTRACTION, 1e-3), each element within 1e-4 of the scale plus 1e-3 of itself
TOLERANCE = Tolerance(rtol=1e-3, atol=1e-4, scale=1e-3, floor=1.0)
LIMITS = Limits(iterations=6, nodes=4000, time_s=5.0)


@dataclass
class Stats:
    graphs: int = 0
    extractions: int = 0
    mismatches: int = 0
    worst_ratio: float = 0.0  # the worst element's error over its bound, over every comparison (1 fails)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"graphs tried: {self.graphs}, extractions compared: {self.extractions}, mismatches: "
                f"{self.mismatches}, worst element at {self.worst_ratio:.3g} of its bound")


def extractions(graph: Graph, count: int, seed: int) -> list[Term]:
    """Distinct programs from the saturated e-graph of ``graph``: random genomes (repaired to be acyclic),
    the minimum-depth choice and the greedy extractors' picks, besides the original program."""
    egraph = TermEGraph(graph, tuple(FAMILIES))
    egraph.saturate(LIMITS)
    space = Space.of(egraph.view(), targets.resolve("x86").roofline)
    rng = random.Random(seed)
    programs = {id(graph.root): graph.root}
    genomes = [list(space.min_depth_node), greedy(space), fused_greedy(space)] + [
        [rng.randrange(len(nodes)) for nodes in space.view.classes] for _ in range(count)]
    for genome in genomes:
        term = to_term(space, genome)
        programs.setdefault(id(term), term)
    return [t for t in programs.values() if t is not graph.root]


def _function(graph: Graph, root: Term, name: str) -> relax.Function:
    """``root`` as a Relax function named ``name`` (lowered through ``tsir.lower``)."""
    base = tvm.IRModule({"main": _placeholder(graph)})
    return lower(graph, root, base)["main"].with_attr("global_symbol", name)


def _placeholder(graph: Graph) -> relax.Function:
    bb = relax.BlockBuilder()
    params = [relax.Var(t.attrs[0], relax.TensorType(list(t.ty[0]), t.ty[1])) for t in graph.inputs]
    with bb.function("main", params):
        bb.emit_func_output(params[0])
    return bb.get()["main"]


def _reference(case: Case) -> list[np.ndarray]:
    """The original program evaluated in float64 with the ops' reference semantics."""
    values: dict[int, np.ndarray] = {}
    constants = [in_precision(c, np.float64) for c in case.graph.constants]
    for term in case.graph.inputs:
        values[id(term)] = case.inputs[term.attrs[0]].astype(np.float64)
    return list(fold(case.graph.root, constants, values))


def _problem(reference: list[np.ndarray], outputs: list[np.ndarray], stats: Stats) -> str:
    """Why ``outputs`` do not match ``reference`` ("" when they do); records the worst element in ``stats``."""
    try:
        result = compare(reference, outputs, TOLERANCE)
    except VerificationError as err:  # a different number or shape of outputs
        return str(err)
    if result.worst is not None:
        stats.worst_ratio = max(stats.worst_ratio, result.worst.ratio)
    return "" if result.passed else f"{result.problem} ({result.describe()})"


def check_batch(batch: list[Case], stats: Stats, per_graph: int = 4, seed: int = 0) -> None:
    """Build every program of ``batch`` (original + extractions) in one module, run all, compare."""
    mod = tvm.IRModule()
    jobs: list[tuple[Case, str, Term]] = []
    for i, case in enumerate(batch):
        programs = [case.graph.root, *extractions(case.graph, per_graph, seed + i)]
        for j, root in enumerate(programs):
            name = f"g{i}_{j}"
            mod[name] = _function(case.graph, root, name)
            jobs.append((case, name, root))
    dnnl.load()  # extractions may pick oneDNN kernels (the library family)
    vm = relax.VirtualMachine(runtime.build(mod, targets.resolve("x86")), tvm.cpu())
    stats.graphs += len(batch)
    for case, name, root in jobs:
        args = [tvm.runtime.tensor(case.inputs[t.attrs[0]], tvm.cpu()) for t in case.graph.inputs]
        problem = _problem(_reference(case), runtime.flatten(vm[name](*args)), stats)
        stats.extractions += 0 if root is case.graph.root else 1
        if problem:
            stats.mismatches += 1
            what = "the original program (lowering)" if root is case.graph.root else "an extraction"
            stats.failures.append(f"{what} differs from the reference: {problem} on\n{case!r}\n"
                                  f"extracted program:\n{program_text(root)}")
            raise AssertionError(stats.failures[-1])


def run(graphs_total: int, batch: int = 50, seed: int = 0, per_graph: int = 4, max_ops: int = 6,
        progress: bool = False, stats: Stats | None = None) -> Stats:
    """Fuzz ``graphs_total`` random programs in batches; raises (with a shrunk reproducer) on a mismatch."""
    stats = Stats() if stats is None else stats

    @settings(max_examples=max(1, graphs_total // batch), deadline=None, database=None, derandomize=seed == 0,
              suppress_health_check=list(HealthCheck))
    @given(cases=st.lists(graphs(max_ops=max_ops), min_size=batch, max_size=batch), salt=st.integers(0, 2**16))
    def fuzz(cases: list[Case], salt: int) -> None:
        check_batch(cases, stats, per_graph, seed + salt)
        if progress:
            print(stats.line(), flush=True)

    fuzz()
    return stats


def _shard(graphs_total: int, batch: int, seed: int, job: int) -> Stats:
    """One job of a parallel run: its own share of the graphs and its own seed; a mismatch comes back as data."""
    stats = Stats()
    try:
        run(graphs_total, batch, seed, progress=False, stats=stats)
    except AssertionError:
        pass  # recorded in stats.failures
    print(f"job {job}: {stats.line()}", flush=True)
    return stats


def run_parallel(graphs_total: int, jobs: int, batch: int = 50, seed: int = 0) -> Stats:
    """``graphs_total`` programs over ``jobs`` processes (seeds seed..seed+jobs-1), their counts merged."""
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        shards = [pool.submit(_shard, graphs_total // jobs + (i < graphs_total % jobs), batch, seed + i, i)
                  for i in range(jobs)]
        parts = [f.result() for f in shards]
    return Stats(sum(p.graphs for p in parts), sum(p.extractions for p in parts), sum(p.mismatches for p in parts),
                 max(p.worst_ratio for p in parts), [f for p in parts for f in p.failures])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="processes, each fuzzing its share with its own seed")
    args = parser.parse_args()
    if args.jobs > 1:
        stats = run_parallel(args.graphs, args.jobs, args.batch, args.seed)
        print("\n\n".join(stats.failures))
        print(stats.line())
        raise SystemExit(1 if stats.mismatches else 0)
    stats = Stats()
    try:
        run(args.graphs, args.batch, args.seed, progress=True, stats=stats)
    finally:
        print(stats.line())


if __name__ == "__main__":
    main()
