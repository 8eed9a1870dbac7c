"""Choices over an e-graph: a genome picks one e-node per e-class; decoding yields an acyclic program.

Multi-pattern rules make cycles (Tensat's problem), so any genome is repaired while it is decoded:
when the walk from the root meets a cycle, one class on the cycle falls back to its minimum-depth
e-node, whose children are strictly shallower, so repair always ends with an acyclic program.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from tsir.backends.roofline import Roofline, Work, type_bytes
from tsir.egraph import EGraphView, ENode, list_items
from tsir.ir.ops import OPS, RUNTIME_ONLY
from tsir.ir.term import Term
from tsir.search.fusion import Fused, fuse, program_s

Genome = list[int]


@dataclass
class Space:
    """What extraction needs from an e-graph: the view plus derived per-class facts."""

    view: EGraphView
    min_depth_node: list[int]
    node_cost: list[list[float]]  # seconds at run time; 0 for views, leaves and constant-foldable nodes
    constant: list[bool]  # the class has a constant-only program (folded before run time)
    # the kernel work of each e-node (None: no kernel) and the roofline pricing it: the program is then priced
    # whole, as fused kernels (``fusion.program_s``); without them, as the sum of ``node_cost``
    node_work: list[list[Work | None]] | None = None
    roofline: Roofline | None = None
    # the last repaired genome and its walk: scoring a genome repairs it, then costs, sizes and decodes it,
    # and each of those walks the same genome again
    recent_walk: tuple[tuple[int, ...], list[int]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, view: EGraphView, roofline: Roofline) -> Space:
        const = _constant_classes(view)
        work = [
            [None if _node_is_constant(n, const) or n.op not in OPS else
             roofline.work(n.op, [view.types[k] for k in _tensor_children(view, n)], view.types[c], n.attrs)
             for n in nodes]
            for c, nodes in enumerate(view.classes)
        ]
        costs = [[0.0 if w is None else roofline.time_s(w.compute_s, w.moved_bytes, w.fixed_s) for w in row]
                 for row in work]
        return cls(view, min_depth_nodes(view), costs, const, work, roofline)

    def cost(self, genome: Genome) -> float:
        """Predicted run time of the program ``genome`` chooses: its fused kernels, each shared one once."""
        if self.node_work is None or self.roofline is None:
            return self.node_sum(genome)
        return program_s(self._fused(genome), lambda c: self.node_work[c][genome[c]], self.view.root,
                         self.view.types, self.roofline)

    def kernel_groups(self, genome: Genome) -> list[list[int]]:
        """The e-classes of the program ``genome`` chooses, grouped into the kernels TVM fuses them into
        (one class per kernel when the space has no kernel work)."""
        if self.node_work is None:
            return [[c] for c in walk(self, genome)]
        return self._fused(genome).groups

    def _fused(self, genome: Genome) -> Fused:
        return fuse(walk(self, genome), lambda c: self.node(genome, c), lambda c: self.node_work[c][genome[c]])

    def cost_by_node(self) -> dict[int, float]:
        """``node_cost`` keyed by ``id()`` of the e-node, for extractors that walk nodes rather than indices."""
        return {id(node): cost for nodes, row in zip(self.view.classes, self.node_cost, strict=True)
                for node, cost in zip(nodes, row, strict=True)}

    def node_sum(self, genome: Genome) -> float:
        """The sum of the chosen e-nodes' costs, each priced alone (the additive cost extractors minimize)."""
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


def least_cost(view: EGraphView, cost_of: Callable[[ENode, list], object | None]) -> tuple[list, list[int]]:
    """Per e-class, the least cost of a program and the index of the e-node that has it.

    ``cost_of(node, child_costs)`` is a node's cost given its children's (None: the node is never chosen) and
    never falls below a child's, so Knuth's generalisation of Dijkstra applies: a class is final when popped
    and its chosen node's children were final before it, so the choice is acyclic. One pass, no recursion.
    A class with no program of finite cost gets cost None and node 0.
    """
    classes = view.classes
    users: list[list[tuple[int, int]]] = [[] for _ in classes]
    waiting: dict[tuple[int, int], int] = {}
    heap: list = []
    best: list = [None] * len(classes)
    choice = [0] * len(classes)

    def ready(c: int, i: int) -> None:
        node = classes[c][i]
        cost = cost_of(node, [best[k] for k in node.children])
        if cost is not None:
            heapq.heappush(heap, (cost, c, i))

    for c, nodes in enumerate(classes):
        for i, node in enumerate(nodes):
            children = set(node.children)
            waiting[c, i] = len(children)
            for k in children:
                users[k].append((c, i))
            if not children:
                ready(c, i)
    while heap:
        cost, c, i = heapq.heappop(heap)
        if best[c] is not None:
            continue
        best[c], choice[c] = cost, i
        for p, j in users[c]:
            waiting[p, j] -= 1
            if waiting[p, j] == 0:
                ready(p, j)
    return best, choice


def min_depth_nodes(view: EGraphView) -> list[int]:
    """Per e-class, the e-node with the shallowest program; choosing these never makes a cycle."""
    return least_cost(view, lambda node, kids: 1 + max(kids, default=0))[1]


def _tensor_children(view: EGraphView, node: ENode) -> list[int]:
    """The e-classes of the tensors ``node`` reads: a variadic op's list, element by element."""
    return list_items(view.classes, node.children[0]) if OPS[node.op].arity is None else list(node.children)


def _constant_classes(view: EGraphView) -> list[bool]:
    best, _ = least_cost(view, lambda node, kids: None if node.op in RUNTIME_ONLY else 0)
    return [b is not None for b in best]


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
