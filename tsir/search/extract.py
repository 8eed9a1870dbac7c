"""Choices over an e-graph: a genome picks one e-node per e-class; decoding yields an acyclic program.

Multi-pattern rules make cycles (Tensat's problem), so any genome is repaired while it is decoded:
when the walk from the root meets a cycle, one class on the cycle falls back to its minimum-depth
e-node, whose children are strictly shallower, so repair always ends with an acyclic program.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tsir.backends.roofline import Roofline, type_bytes
from tsir.egraph import EGraphView, ENode
from tsir.ir.ops import OPS, RUNTIME_ONLY
from tsir.ir.term import Term

Genome = list[int]


@dataclass
class Space:
    """What extraction needs from an e-graph: the view plus derived per-class facts."""

    view: EGraphView
    min_depth_node: list[int]
    node_cost: list[list[float]]  # seconds at run time; 0 for views, leaves and constant-foldable nodes
    constant: list[bool]  # the class has a constant-only program (folded before run time)
    # the last repaired genome and its walk: scoring a genome repairs it, then costs, sizes and decodes it,
    # and each of those walks the same genome again
    recent_walk: tuple[tuple[int, ...], list[int]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, view: EGraphView, roofline: Roofline) -> Space:
        const = _constant_classes(view)
        costs = [
            [0.0 if _node_is_constant(n, const) else
             roofline.kernel_s(n.op, [view.types[k] for k in n.children], view.types[c], n.attrs) for n in nodes]
            for c, nodes in enumerate(view.classes)
        ]
        return cls(view, min_depth_nodes(view), costs, const)

    def cost(self, genome: Genome) -> float:
        """Predicted run time of the program ``genome`` chooses (each shared node counted once)."""
        return sum(self.node_cost[c][genome[c]] for c in walk(self, genome))

    def size_bytes(self, genome: Genome) -> int:
        """Bytes of the constants the chosen program keeps at run time (its model size)."""
        kept: set[int] = set()
        for c in walk(self, genome):
            if not _node_is_constant(self.node(genome, c), self.constant):
                kept.update(k for k in self.node(genome, c).children if self.constant[k])
        return int(sum(type_bytes(self.view.types[k]) for k in kept))

    def node(self, genome: Genome, c: int) -> ENode:
        return self.view.classes[c][genome[c]]

    def original(self) -> Genome:
        """The genome of the input program (classes it does not reach pick their minimum-depth node)."""
        genome = list(self.min_depth_node)
        for c, i in self.view.original.items():
            genome[c] = i
        return genome


def min_depth_nodes(view: EGraphView) -> list[int]:
    """Per e-class, the e-node with the shallowest program; choosing these never makes a cycle."""
    depth = [math.inf] * len(view.classes)
    best = [0] * len(view.classes)
    changed = True
    while changed:
        changed = False
        for c, nodes in enumerate(view.classes):
            for i, node in enumerate(nodes):
                d = 1 + max((depth[k] for k in node.children), default=0)
                if d < depth[c]:
                    depth[c], best[c], changed = d, i, True
    return best


def _constant_classes(view: EGraphView) -> list[bool]:
    const = [False] * len(view.classes)
    changed = True
    while changed:
        changed = False
        for c, nodes in enumerate(view.classes):
            if not const[c] and any(_node_is_constant(n, const) for n in nodes):
                const[c], changed = True, True
    return const


def _node_is_constant(node: ENode, const: list[bool]) -> bool:
    if node.op in RUNTIME_ONLY:
        return False
    return all(const[k] for k in node.children)


def walk(space: Space, genome: Genome) -> list[int]:
    """Repair ``genome`` in place and return the classes it reaches from the root, children first."""
    if space.recent_walk is not None and space.recent_walk[0] == tuple(genome):
        return list(space.recent_walk[1])
    while True:
        order, cycle = _walk_once(space, genome)
        if cycle is None:
            space.recent_walk = (tuple(genome), order)
            return list(order)
        fallback = next(c for c in cycle if genome[c] != space.min_depth_node[c])
        genome[fallback] = space.min_depth_node[fallback]


def _walk_once(space: Space, genome: Genome) -> tuple[list[int], list[int] | None]:
    state = [0] * len(genome)  # 0 unseen, 1 on the path from the root, 2 done
    order: list[int] = []
    path: list[int] = []
    stack: list[tuple[int, int]] = [(space.view.root, 0)]
    while stack:
        c, next_child = stack.pop()
        if next_child == 0:
            state[c] = 1
            path.append(c)
        children = space.node(genome, c).children
        if next_child < len(children):
            stack.append((c, next_child + 1))
            k = children[next_child]
            if state[k] == 1:
                return order, path[path.index(k):]
            if state[k] == 0:
                stack.append((k, 0))
            continue
        state[c] = 2
        path.pop()
        order.append(c)
    return order, None


def to_term(space: Space, genome: Genome, substitute: Callable[[int, Term], Term] | None = None) -> Term:
    """Decode a genome into the tsir program it chooses (repairing the genome first).

    ``substitute(eclass, term)``, when given, may replace each class's term (approximate mode does).
    """
    values: dict[int, Term | list[Term]] = {}
    view = space.view
    for c in walk(space, genome):
        node = space.node(genome, c)
        if node.op == "nil":
            values[c] = []
        elif node.op == "cons":
            rest, head = node.children
            values[c] = [values[head], *values[rest]]
        else:
            args = values[node.children[0]] if OPS[node.op].arity is None else [values[k] for k in node.children]
            ty = None if OPS[node.op].infer is not None else view.types[c]
            values[c] = Term(node.op, tuple(args), node.attrs, ty)
            if substitute is not None:
                values[c] = substitute(c, values[c])
    return values[view.root]
