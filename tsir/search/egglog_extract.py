"""egglog's extraction baseline: the program of least tree cost (egglog's default cost model) as a genome.

egglog's default cost is one per e-node and per primitive leaf, summed over the *tree* (a shared child
counts once per use). egglog keeps that sum in a saturating u64: a net whose values are used twice per
block (SiLU's ``x * sigmoid(x)``, squeeze-excite's rescale) doubles its tree size per block, the sum
saturates, every candidate of a class then costs u64::MAX, and egglog's extractor finds no best e-node
that passes its cycle check and panics (``Option::unwrap() on a None value ... while extracting``).
So tsir computes the same minimum with Python's exact integers, on the e-graph view, without recursion:
``extract.least_cost``.
"""

from __future__ import annotations

from tsir.egraph import TermEGraph
from tsir.search.extract import Genome, Space, least_cost


def tree_costs(space: Space) -> tuple[list[int | None], Genome]:
    """Per e-class, the least tree cost of a program (None if it has none) and the genome choosing it."""
    return least_cost(space.view, lambda node, kids: 1 + len(node.attrs) + sum(kids))


def egglog_extraction(egraph: TermEGraph, space: Space) -> Genome:
    """The genome of the least-tree-cost program."""
    best, genome = tree_costs(space)
    if best[space.view.root] is None:
        raise AssertionError("the root e-class has no finite program in the e-graph view")
    return genome
