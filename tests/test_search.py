"""Extraction: cycle repair, greedy baseline, and a deterministic genetic search."""

from __future__ import annotations

import numpy as np

from tsir import zoo
from tsir.convert import relax_to_tsir
from tsir.cost import X86_HOST
from tsir.egraph import TermEGraph
from tsir.frontend import export, to_relax
from tsir.ir.term import Graph, Term, postorder
from tsir.search.extract import Space, to_term, walk
from tsir.search.genetic import GeneticConfig, genetic_search
from tsir.search.greedy import greedy


def cyclic_space() -> tuple[Space, Term]:
    """relu(transpose(transpose(x, p), p⁻¹)): saturation puts x's class inside a cycle through transposes."""
    x = Term("input", (), ("x",), ((2, 3, 4), "float32"))
    inner = Term("transpose", (x,), ((2, 0, 1),))
    root = Term("tuple", (Term("relu", (Term("transpose", (inner,), ((1, 2, 0),)),)),))
    egraph = TermEGraph(Graph(root, [x], []), ("algebra",))
    egraph.saturate()
    return Space.of(egraph.view(), X86_HOST), root


def test_saturation_makes_a_cycle_and_decoding_repairs_it():
    space, _ = cyclic_space()
    x_class = next(c for c, nodes in enumerate(space.view.classes) if any(n.op == "input" for n in nodes))
    cyclic_nodes = [i for i, n in enumerate(space.view.classes[x_class]) if n.op == "transpose"]
    assert cyclic_nodes, "x's e-class should also hold transpose(transpose(x)) after saturation"
    genome = [max(range(len(nodes)), key=lambda i: nodes[i].op == "transpose") for nodes in space.view.classes]
    genome[x_class] = cyclic_nodes[0]
    order = walk(space, genome)
    assert len(order) == len(set(order))
    term = to_term(space, genome)
    assert any(t.op == "input" for t in postorder(term))
    assert term.ty == (((2, 3, 4), "float32"),)


def test_greedy_and_search_remove_the_transposes():
    space, _ = cyclic_space()
    for genome in (greedy(space), genetic_search(space, GeneticConfig(generations=5)).genome):
        ops = [t.op for t in postorder(to_term(space, genome))]
        assert ops == ["input", "relu", "tuple"]


def test_search_is_deterministic_for_a_seed_and_never_worse_than_its_seeds():
    entry = zoo.load("bert_layer")
    graph = relax_to_tsir(to_relax(export(entry.module, entry.example_inputs)))
    egraph = TermEGraph(graph)
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    runs = [genetic_search(space, GeneticConfig(seed=3, generations=8, time_s=600)) for _ in range(2)]
    assert runs[0].genome == runs[1].genome and runs[0].history == runs[1].history
    assert runs[0].cost <= min(runs[0].seeds.values())
    assert np.all(np.diff(runs[0].history) <= 0), "elitism keeps the best cost from rising"


def test_search_respects_its_time_budget():
    space, _ = cyclic_space()
    result = genetic_search(space, GeneticConfig(generations=10_000, time_s=0.5))
    assert result.time_s < 1.5 and len(result.history) < 10_000
