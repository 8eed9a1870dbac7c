"""egglog's extraction baseline: the program of least tree cost (egglog's default cost model) as a genome.

egglog's default cost is one per e-node and per primitive leaf, summed over the *tree* (a shared child
counts once per use). egglog keeps that sum in a saturating u64: a net whose values are used twice per
block (SiLU's ``x * sigmoid(x)``, squeeze-excite's rescale) doubles its tree size per block, the sum
saturates, every candidate of a class then costs u64::MAX, and egglog's extractor finds no best e-node
that passes its cycle check and panics (``Option::unwrap() on a None value ... while extracting``).
So tsir computes the same minimum with Python's exact integers, on the e-graph view, without recursion:
Knuth's generalisation of Dijkstra (a node's cost exceeds each child's, so a class is final when popped
and the chosen e-nodes form an acyclic program).
"""

from __future__ import annotations

import heapq

from tsir.egraph import TermEGraph
from tsir.search.extract import Genome, Space


def tree_costs(space: Space) -> tuple[list[int | None], Genome]:
    """Per e-class, the least tree cost of a program (None if it has none) and the genome choosing it."""
    classes = space.view.classes
    users: list[list[tuple[int, int]]] = [[] for _ in classes]
    waiting: dict[tuple[int, int], int] = {}
    heap: list[tuple[int, int, int]] = []
    for c, nodes in enumerate(classes):
        for i, node in enumerate(nodes):
            children = set(node.children)
            waiting[c, i] = len(children)
            for k in children:
                users[k].append((c, i))
            if not children:
                heapq.heappush(heap, (1 + len(node.attrs), c, i))
    best: list[int | None] = [None] * len(classes)
    genome = space.original()
    while heap:
        cost, c, i = heapq.heappop(heap)
        if best[c] is not None:
            continue
        best[c], genome[c] = cost, i
        for user in users[c]:
            waiting[user] -= 1
            if waiting[user] == 0:
                p, j = user
                node = classes[p][j]
                heapq.heappush(heap, (1 + len(node.attrs) + sum(best[k] for k in node.children), p, j))
    return best, genome


def egglog_extraction(egraph: TermEGraph, space: Space) -> Genome:
    """The genome of the least-tree-cost program."""
    best, genome = tree_costs(space)
    if best[space.view.root] is None:
        raise AssertionError("the root e-class has no finite program in the e-graph view")
    return genome
