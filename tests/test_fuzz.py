"""The soundness fuzzer in CI (500 random programs), and acyclic extraction from cyclic e-graphs."""

from __future__ import annotations

import random

import numpy as np
import pytest

from tsir.backends import targets
from tsir.egraph import TermEGraph
from tsir.ir.term import Term, fold, postorder
from tsir.rewrites import FAMILIES
from tsir.search.extract import Space, to_term, walk
from tsir.testing import fuzz
from tsir.testing.strategies import GraphBuilder


def test_fuzz_500_graphs_no_mismatch():
    stats = fuzz.run(500, batch=50, seed=0, per_graph=2)  # and min-depth, greedy and fused greedy: 5 per graph
    print(stats.line())
    assert stats.graphs == 500 and stats.mismatches == 0
    assert stats.extractions >= 200, "the fuzzer should compare many rewritten programs, not only originals"


def test_parallel_jobs_share_the_graphs_and_merge_their_counts():
    stats = fuzz.run_parallel(30, jobs=2, batch=5, seed=1)
    assert stats.graphs == 30 and stats.mismatches == 0 and stats.extractions > 0


def test_fuzz_reports_a_mismatch(monkeypatch):
    """A wrong lowering (relu emitted as the identity) is caught: the fuzzer is not vacuous."""
    from tsir import lower

    monkeypatch.setitem(lower.EMITTERS, "relu", lambda a, at, ty: a[0])
    b = GraphBuilder(0)
    case = b.case(Term("relu", (b.input((3, 4)),)))
    stats = fuzz.Stats()
    try:
        fuzz.check_batch([case], stats)
    except AssertionError as err:
        assert "differs" in str(err) and "relu" in str(err)
    assert stats.mismatches == 1


def test_fuzz_catches_an_emitter_that_returns_nan(monkeypatch):
    """relu emitted as NaN * x: "max(worst, nan)" once swallowed NaN; the fuzzer's run now stops on it."""
    from tvm import relax

    from tsir import lower

    nan_relu = lambda args, attrs, ty: relax.op.multiply(args[0], relax.const(np.nan, "float32"))  # noqa: E731
    monkeypatch.setitem(lower.EMITTERS, "relu", nan_relu)
    b = GraphBuilder(0)
    case = b.case(Term("add", (Term("relu", (b.input((3, 4)),)), b.weight((4,)))))
    stats = fuzz.Stats()
    with pytest.raises(AssertionError, match="has NaN at \\[0, 0\\] where the original has"):
        fuzz.check_batch([case], stats)
    assert stats.mismatches == 1 and "relu" in stats.failures[0]


def _has_cycle(view) -> bool:
    edges = [{k for n in nodes for k in n.children} for nodes in view.classes]
    state = [0] * len(edges)

    def visit(c: int) -> bool:
        state[c] = 1
        for k in edges[c]:
            if state[k] == 1 or (state[k] == 0 and visit(k)):
                return True
        state[c] = 2
        return False

    return any(state[c] == 0 and visit(c) for c in range(len(edges)))


def test_extraction_never_picks_a_cyclic_program():
    """Multi-pattern merges and split/concat cancellation make cycles; every random genome decodes to
    an acyclic program that computes the original values."""
    b = GraphBuilder(1)
    x = b.input((3, 4))
    q, k, v = (Term("matmul", (x, b.weight((4, 4)))) for _ in range(3))
    both = Term("concat", (q, k), (1,))
    root = Term("add", (Term("slice", (both, ), (1, 0, 4)), Term("add", (v, Term("slice", (both,), (1, 4, 8))))))
    case = b.case(root)
    egraph = TermEGraph(case.graph, tuple(FAMILIES))
    report = egraph.saturate()
    assert {"merge_qkv", "merge_parallel_matmul", "slice_of_concat_head"} <= set(report.fired())
    space = Space.of(egraph.view(), targets.resolve("x86").roofline)
    assert _has_cycle(space.view), "this e-graph should contain cycles"
    rng = random.Random(0)
    inputs = {id(t): case.inputs[t.attrs[0]].astype(np.float64) for t in case.graph.inputs}
    expected = fold(case.graph.root, [c.astype(np.float64) for c in case.graph.constants], dict(inputs))
    for _ in range(200):
        genome = [rng.randrange(len(nodes)) for nodes in space.view.classes]
        order = walk(space, genome)
        position = {c: i for i, c in enumerate(order)}
        for c in order:  # children come before parents: a topological order, so no cycle
            assert all(position[k] < position[c] for k in space.node(genome, c).children)
        term = to_term(space, genome)
        assert len(list(postorder(term))) < 200
        got = fold(term, [c.astype(np.float64) for c in case.graph.constants], dict(inputs))
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-9, atol=1e-9)
