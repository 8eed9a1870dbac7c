"""ILP extraction: the least additive DAG cost, checked against brute force, greedy and egglog's extraction."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsir import zoo
from tsir.backends.roofline import X86_HOST
from tsir.convert import relax_to_tsir
from tsir.egraph import EGraphView, ENode, TermEGraph
from tsir.frontend import export, to_relax
from tsir.search.egglog_extract import egglog_extraction
from tsir.search.extract import Space, min_depth_nodes, to_term, walk
from tsir.search.greedy import greedy
from tsir.search.ilp import ilp_extraction

US = 1e-6


def space_of(classes: list[list[ENode]], costs_us: list[list[float]], root: int) -> Space:
    view = EGraphView(classes, [None] * len(classes), root, {})
    return Space(view, min_depth_nodes(view), [[k * US for k in row] for row in costs_us], [False] * len(classes))


@st.composite
def spaces(draw) -> Space:
    """2-7 classes of 1-4 nodes, the root last; class c has a node using only classes below c (class 0: a leaf), so
    every class has an acyclic program; the other nodes use any classes, their own included, so cycles occur.
    Costs are multiples of 0.5 us, so ties occur and distinct costs differ by far more than HiGHS's tolerances."""
    n = draw(st.integers(2, 7))
    classes, costs = [], []
    for c in range(n):
        below = draw(st.lists(st.integers(0, c - 1), min_size=1, max_size=2)) if c else []
        anywhere = draw(st.lists(st.lists(st.integers(0, n - 1), max_size=3), max_size=2))
        twin = [tuple(below)] * draw(st.integers(0, 1))  # a second node like the first: same children, same cost
        nodes = draw(st.permutations([tuple(below), *twin, *map(tuple, anywhere)]))
        classes.append([ENode(f"op{c}_{i}", kids, ()) for i, kids in enumerate(nodes)])
        first = 0.5 * draw(st.integers(0, 12))
        costs.append([first if kids == tuple(below) else 0.5 * draw(st.integers(0, 12)) for kids in nodes])
    return space_of(classes, costs, root=n - 1)


def reachable(space: Space) -> list[int]:
    seen, todo = {space.view.root}, [space.view.root]
    while todo:
        for node in space.view.classes[todo.pop()]:
            todo += [k for k in node.children if k not in seen]
            seen.update(node.children)
    return sorted(seen)


def brute_force(space: Space) -> float:
    """The least DAG cost over every genome (each repaired by ``walk``, as decoding does)."""
    classes = reachable(space)
    best = float("inf")
    for picks in itertools.product(*(range(len(space.view.classes[c])) for c in classes)):
        genome = list(space.min_depth_node)
        for c, i in zip(classes, picks, strict=True):
            genome[c] = i
        best = min(best, space.node_sum(genome))
    return best


def decodes_unrepaired(space: Space, genome: list[int]) -> bool:
    copy = list(genome)
    walk(space, copy)
    return copy == genome


@settings(max_examples=150, deadline=None)
@given(spaces())
def test_ilp_finds_the_least_dag_cost_of_any_genome(space):
    result = ilp_extraction(space)
    assert result.status == "optimal"
    assert result.cost_s == pytest.approx(brute_force(space), rel=1e-9, abs=1e-15)
    assert decodes_unrepaired(space, result.genome)
    assert result.cost_s == pytest.approx(space.node_sum(list(result.genome)), rel=1e-12)
    assert result.cost_s <= space.node_sum(greedy(space)) * (1 + 1e-9)
    assert result.variables == sum(len(space.view.classes[c]) for c in reachable(space))


def shared_subprogram() -> Space:
    """root = f(a, b) | r;  a = g(s) | a0;  b = h(s) | b0;  s costs 10 us. By tree cost a0 and b0 (7 us each) beat
    g(s) and h(s) (1 + 10), and then r (13) beats f (0 + 7 + 7), so greedy's program costs 13 us; computed once,
    s makes f(g(s), h(s)) cost 0 + 1 + 1 + 10 = 12 us."""
    classes = [
        [ENode("s", (), ())],
        [ENode("g", (0,), ()), ENode("a0", (), ())],
        [ENode("h", (0,), ()), ENode("b0", (), ())],
        [ENode("f", (1, 2), ()), ENode("r", (), ())],
    ]
    return space_of(classes, [[10], [1, 7], [1, 7], [0, 13]], root=3)


def test_sharing_a_costly_class_beats_the_least_tree_cost():
    space = shared_subprogram()
    assert greedy(space)[3] == 1 and space.node_sum(greedy(space)) == pytest.approx(13 * US)
    result = ilp_extraction(space)
    assert result.status == "optimal" and result.genome == [0, 0, 0, 0]
    assert result.cost_s == pytest.approx(12 * US)


def test_a_cycle_is_ruled_out_even_where_its_component_is_left_elsewhere():
    """a -> b -> c -> a costs nothing, and d, in the same component (a may use d, d may use a), leaves it through x:
    only the order variables rule the free cycle out. a's programs without it cost 5 us."""
    x, a, b, c, d, root = range(6)
    classes = [
        [ENode("x", (), ())],
        [ENode("a_b", (b,), ()), ENode("a_x", (x,), ()), ENode("a_d", (d,), ())],
        [ENode("b_c", (c,), ())],
        [ENode("c_a", (a,), ())],
        [ENode("d_x", (x,), ()), ENode("d_a", (a,), ())],
        [ENode("r", (a, d), ())],
    ]
    space = space_of(classes, [[0], [0, 5, 5], [0], [0], [0, 0], [0]], root)
    result = ilp_extraction(space)
    assert result.status == "optimal" and decodes_unrepaired(space, result.genome)
    assert result.cost_s == pytest.approx(5 * US) == brute_force(space)


def test_too_many_variables_or_no_time_give_no_genome():
    space = shared_subprogram()
    assert ilp_extraction(space, max_variables=7).status == "optimal"
    too_large = ilp_extraction(space, max_variables=6)
    assert (too_large.status, too_large.genome, too_large.cost_s, too_large.variables) == ("too_large", None, None, 7)
    no_time = ilp_extraction(space, time_limit_s=0.0)  # HiGHS stops before its first step
    assert (no_time.status, no_time.genome, no_time.cost_s) == ("time_limit", None, None)


def test_on_a_saturated_model_ilp_is_never_worse_than_greedy_or_egglog():
    entry = zoo.load("mlp")
    egraph = TermEGraph(relax_to_tsir(to_relax(export(entry.module, entry.example_inputs))))
    egraph.saturate()
    space = Space.of(egraph.view(), X86_HOST)
    result = ilp_extraction(space, time_limit_s=60)
    assert result.status == "optimal" and decodes_unrepaired(space, result.genome)
    assert result.cost_s <= space.node_sum(greedy(space)) * (1 + 1e-9)
    assert result.cost_s <= space.node_sum(egglog_extraction(space)) * (1 + 1e-9)
    assert result.cost_s < space.node_sum(space.original())
    assert to_term(space, list(result.genome)).ty == to_term(space, space.original()).ty
