"""Greedy extraction: per e-class, the e-node of least tree cost (children costed independently).

This is the classic bottom-up extractor (egg's and Tensat's default). It counts a shared subprogram
once per use, so it can miss programs whose parts are shared: the genetic search starts from it.
"""

from __future__ import annotations

from tsir.search.extract import Genome, Space, least_cost


def greedy(space: Space) -> Genome:
    costs = {id(node): cost for nodes, row in zip(space.view.classes, space.node_cost, strict=True)
             for node, cost in zip(nodes, row, strict=True)}
    best, choice = least_cost(space.view, lambda node, kids: costs[id(node)] + sum(kids))
    return [i if b is not None else space.min_depth_node[c] for c, (b, i) in enumerate(zip(best, choice, strict=True))]
