"""Greedy extraction: per e-class, the e-node of least tree cost (children costed independently).

This is the classic bottom-up extractor (egg's and Tensat's default). It counts a shared subprogram
once per use, so it can miss programs whose parts are shared: the genetic search starts from it.
"""

from __future__ import annotations

import math

from tsir.search.extract import Genome, Space


def greedy(space: Space) -> Genome:
    best = [math.inf] * len(space.view.classes)
    genome = list(space.min_depth_node)
    changed = True
    while changed:
        changed = False
        for c, nodes in enumerate(space.view.classes):
            for i, node in enumerate(nodes):
                total = space.node_cost[c][i] + sum(best[k] for k in node.children)
                if total < best[c] - 1e-15:
                    best[c], genome[c], changed = total, i, True
    return genome
