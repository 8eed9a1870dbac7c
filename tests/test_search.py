"""Extraction: cycle repair, greedy baseline, and a deterministic genetic search."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import HealthCheck, given, settings

from tsir import zoo
from tsir.backends.roofline import X86_HOST
from tsir.convert import relax_to_tsir
from tsir.egraph import TermEGraph
from tsir.frontend import export, to_relax
from tsir.ir.term import Graph, Term, postorder
from tsir.search.driver import _spread, kernel_difference
from tsir.search.egglog_extract import egglog_extraction
from tsir.search.extract import Space, to_term, walk
from tsir.search.genetic import GeneticConfig, _region, genetic_search
from tsir.search.greedy import fused_greedy, greedy
from tsir.search.ilp import ilp_extraction
from tsir.search.nsga import dominates
from tsir.testing.strategies import GraphBuilder, graphs


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


def test_random_genomes_always_decode_to_acyclic_programs():
    space, _ = cyclic_space()
    rng = np.random.default_rng(0)
    for _ in range(50):
        genome = [int(rng.integers(len(nodes))) for nodes in space.view.classes]
        order = walk(space, genome)
        assert len(order) == len(set(order)) and order[-1] == space.view.root
        assert to_term(space, genome).ty == (((2, 3, 4), "float32"),)


def test_egglog_extraction_maps_onto_a_genome_of_the_smallest_program():
    x = Term("input", (), ("x",), ((2, 3, 4), "float32"))
    inner = Term("transpose", (x,), ((2, 0, 1),))
    root = Term("tuple", (Term("relu", (Term("transpose", (inner,), ((1, 2, 0),)),)),))
    egraph = TermEGraph(Graph(root, [x], []), ("algebra",))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    assert [t.op for t in postorder(to_term(space, egglog_extraction(space)))] == ["input", "relu", "tuple"]


def test_multi_objective_search_is_deterministic_and_reports_a_pareto_front():
    entry = zoo.load("mlp")
    egraph = TermEGraph(relax_to_tsir(to_relax(export(entry.module, entry.example_inputs))))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    seeds = {"egglog": egglog_extraction(space)}
    config = GeneticConfig(seed=5, generations=6, time_s=600, patience=100)
    runs = [genetic_search(space, config, seeds=seeds) for _ in range(2)]
    assert runs[0].genome == runs[1].genome and runs[0].front == runs[1].front
    assert runs[0].cost <= min(runs[0].seeds.values())
    points = [o for _, o in runs[0].front]
    assert all(not dominates(a, b) for a in points for b in points), "front members never dominate each other"
    assert all(o[2] == 0.0 for o in points), "exact mode: every program has zero error"


def test_search_stops_on_its_clock_and_says_so():
    """The budget is checked once per generation, on the clock the search is given: with a clock that advances
    0.25 s per reading, a 1 s budget allows exactly the generations started before 1 s had passed."""
    entry = zoo.load("mlp")
    egraph = TermEGraph(relax_to_tsir(to_relax(export(entry.module, entry.example_inputs))))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    ticks = iter(range(10**6))
    config = GeneticConfig(generations=10**6, time_s=1.0, patience=10**6)
    result = genetic_search(space, config, clock=lambda: next(ticks) * 0.25)
    assert result.stopped_by == "time" and len(result.history) == 3  # read at 0 (start), 0.25, 0.5, 0.75; 1.0 stops
    real = genetic_search(space, config)  # the wall clock: stops after its budget, within a generation or so
    assert real.stopped_by == "time" and 1.0 <= real.time_s < 10.0 and len(real.history) > 1
    patient = genetic_search(space, GeneticConfig(generations=10**6, time_s=600, patience=2))
    assert patient.stopped_by == "patience" and patient.time_s < 600


def test_greedy_pays_once_for_a_child_used_twice():
    """|y|² is y * y after saturation; y * y uses y twice but computes it once, so greedy takes it over the two
    kernels abs and power."""
    x = Term("input", (), ("x",), ((64, 64), "float32"))
    y = Term("matmul", (x, x))
    root = Term("tuple", (Term("power", (Term("abs", (y,)), Term("scalar", (), (2.0,)))),))
    egraph = TermEGraph(Graph(root, [x], []), ("algebra",))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    ops = [t.op for t in postorder(to_term(space, greedy(space)))]
    assert ops == ["input", "matmul", "multiply", "tuple"]


def _dense_gelu_space() -> Space:
    """gelu(x @ w + b) on a small batch, saturated: oneDNN's linear plus a gelu kernel, or TVM's linear with
    the bias and gelu fused into its epilogue (one kernel)."""
    b = GraphBuilder(0)
    x, w, bias = b.input((8, 128)), b.weight((128, 128)), b.weight((128,))
    egraph = TermEGraph(b.case(Term("gelu", (Term("add", (Term("matmul", (x, w)), bias)),))).graph)
    egraph.saturate()
    return Space.of(egraph.view(), X86_HOST)


def test_under_the_whole_program_cost_the_search_finds_a_fusion_the_additive_extractions_miss():
    space = _dense_gelu_space()
    baselines = {"egglog": egglog_extraction(space), "greedy": greedy(space), "ilp": ilp_extraction(space).genome}
    assert all("dnnl_linear" in _ops(space, g) for g in baselines.values())  # priced kernel by kernel
    result = genetic_search(space, GeneticConfig(seed=0), seeds=baselines)
    assert "dnnl_linear" not in _ops(space, result.genome) and "gelu" in _ops(space, result.genome)
    best_baseline = min(space.cost(g) for g in baselines.values())
    assert space.cost(result.genome) < 0.8 * best_baseline  # one dispatch instead of two, here ~5.5 vs ~7.1 µs
    assert space.node_sum(result.genome) >= min(space.node_sum(g) for g in baselines.values())


def test_fused_greedy_prices_the_epilogue_fused_and_finds_it_without_a_search():
    space = _dense_gelu_space()
    genome = fused_greedy(space)
    assert "dnnl_linear" not in _ops(space, genome) and "gelu" in _ops(space, genome)
    assert len(space.kernel_groups(genome)) == 1  # TVM's linear with bias and gelu as its epilogue
    assert space.cost(genome) < 0.8 * space.cost(greedy(space))
    assert space.node_sum(genome) > space.node_sum(greedy(space))  # priced kernel by kernel it loses
    difference = kernel_difference(space, genome, greedy(space), "greedy")
    (gained, n), = difference["gained"].items()
    assert n == 1 and gained.endswith("+gelu") and "dnnl" not in gained
    assert any(k.startswith("dnnl_linear") for k in difference["lost"]) and difference["baseline"] == "greedy"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_ops=6))
def test_the_hill_climb_ends_in_a_local_optimum_no_slower_than_the_ga_winner(case):
    egraph = TermEGraph(case.graph)
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    config = GeneticConfig(population=4, generations=2, time_s=60.0, polish_share=0.5)
    polished = genetic_search(space, config)
    assert polished.cost <= polished.before_polish
    assert (polished.polished > 0) == (polished.cost < polished.before_polish)
    for c in walk(space, list(polished.genome)):  # no single-class move is faster
        for i in range(len(space.view.classes[c])):
            move = list(polished.genome)
            move[c] = i
            assert space.cost(move) >= polished.cost
    assert polished.cost <= genetic_search(space, GeneticConfig(population=4, generations=2, time_s=60.0)).cost


def test_spread_finalists_span_the_explored_programs_from_cheapest_to_dearest():
    entry = zoo.load("lenet")
    egraph = TermEGraph(relax_to_tsir(to_relax(export(entry.module, entry.example_inputs))))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    explored = genetic_search(space, GeneticConfig(seed=0, generations=5)).explored
    costs = sorted({space.cost(list(g)) for g in explored})
    assert len(explored) <= 256 and len(costs) > 4  # so the pool is every explored program
    spread = [space.cost(g) for g in _spread(space, explored, 4, seed=0)]
    assert spread == sorted(set(spread)) and len(spread) == 4
    assert spread[0] == costs[0] and spread[-1] == costs[-1]


def test_region_crossover_takes_one_fused_kernel_of_the_other_parent():
    entry = zoo.load("resnet18")
    egraph = TermEGraph(relax_to_tsir(to_relax(export(entry.module, entry.example_inputs))))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    a, b = greedy(space), space.original()
    groups = [set(g) for g in space.kernel_groups(list(b))]
    assert any(len(g) > 1 for g in groups)  # conv + bias + relu in TVM's code
    rng = random.Random(0)
    for _ in range(20):
        child = _region(a, b, space, rng)
        changed = {c for c in range(len(a)) if child[c] != a[c]}
        assert changed and any(changed <= g for g in groups)
        assert all(child[c] == b[c] for c in next(g for g in groups if changed <= g))


def _ops(space: Space, genome: list[int]) -> list[str]:
    return [t.op for t in postorder(to_term(space, genome))]
