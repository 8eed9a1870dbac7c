"""egglog's extraction baseline: the program of least tree cost, under tsir's cost model or egglog's default.

egglog's extractor sums a cost over the *tree* (a shared child counts once per use) and keeps, per e-class,
the e-node of least sum. Its default cost is one per e-node and per primitive leaf; egglog 13 also takes a
``cost_model``, and the search's baseline gives it tsir's: each e-node's kernel priced alone by the
target's roofline (``Space.node_cost``). tsir computes the same minimum on the e-graph view, without
recursion (``extract.least_cost``): egglog keeps the default sum in a saturating u64, and a net whose
values are used twice per block (SiLU's ``x * sigmoid(x)``) doubles its tree size per block until every
candidate costs u64::MAX and egglog's extractor panics (``Option::unwrap() on a None value``).
"""

from __future__ import annotations

from tsir.search.extract import Genome, Space, least_cost


def tree_costs(space: Space, tsir_cost: bool = True) -> tuple[list, Genome]:
    """Per e-class, the least tree cost of a program (None if it has none) and the genome choosing it; under
    tsir's cost model (seconds) or egglog's default (``tsir_cost=False``: one per e-node and attribute)."""
    if not tsir_cost:
        return least_cost(space.view, lambda node, kids: 1 + len(node.attrs) + sum(kids))
    costs = space.cost_by_node()
    return least_cost(space.view, lambda node, kids: costs[id(node)] + sum(kids))


def egglog_extraction(space: Space, tsir_cost: bool = True) -> Genome:
    """The genome of the least-tree-cost program."""
    best, genome = tree_costs(space, tsir_cost)
    if best[space.view.root] is None:
        raise AssertionError("the root e-class has no finite program in the e-graph view")
    return genome
