"""Greedy extraction: per e-class, the e-node of least tree cost (children costed independently).

This is the classic bottom-up extractor (egg's and Tensat's default), except that a node that uses one
child twice (``x * x``) pays for it once. It still counts a subprogram shared by different nodes once per
use, so it can miss programs whose parts are shared: the genetic search starts from it.
"""

from __future__ import annotations

from tsir.search.extract import Genome, Space, least_cost


def greedy(space: Space) -> Genome:
    costs = space.cost_by_node()

    def cost_of(node, kids: list) -> float:
        return costs[id(node)] + sum(dict(zip(node.children, kids, strict=True)).values())  # each child once

    best, choice = least_cost(space.view, cost_of)
    return [i if b is not None else space.min_depth_node[c] for c, (b, i) in enumerate(zip(best, choice, strict=True))]
