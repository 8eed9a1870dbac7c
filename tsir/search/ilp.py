"""Exact extraction by integer linear programming: the genome of least additive DAG cost.

The DAG cost of a genome is ``Space.node_sum``: its chosen nodes' costs summed over the classes reached from the
root, a shared class counted once (greedy minimises tree cost, which counts it once per use). Over the classes
reachable from the root (through any e-node), SciPy's ``milp`` (HiGHS) solves:

- a binary ``x[n]`` per e-node, and a continuous ``order[c]`` in [0, S - 1] per class on a cycle (S: the size
  of its strongly connected component in the class graph; classes on no cycle need no order);
- the root class chooses exactly one node, every other class at most one;
- if c's chosen node uses child class k (``u[c, k]``: the sum of x over c's nodes that use k), k chooses a node:
  ``u[c, k] <= sum(x over k)``; if k is in c's component, also ``order[c] - order[k] >= 1 - S * (1 - u[c, k])``;
- a node that uses its own class, or that another node of its class beats (cost no higher, children a subset),
  is never chosen;
- cuts that the above implies at integer points, to tighten the LP: two classes that use each other cannot both
  do so (``u[c, k] + u[k, c] <= sum(x over c)``, and over k), and a chosen class of a component is reached from
  a node of the component that uses none of it;
- minimise the chosen nodes' costs, in microseconds, so that HiGHS's absolute tolerances are tiny against them.

Classes the solution leaves out take their minimum-depth node, so the genome decodes without repair. It gives
up when the reachable classes have more e-nodes than ``max_variables`` ("too_large", nothing is solved) or when
the clock runs out ("time_limit": the best genome found, or None, without proof that it is optimal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from tsir.search.extract import Genome, Space, walk

_SCALE = 1e6  # objective in microseconds


@dataclass(frozen=True)
class IlpResult:
    genome: Genome | None  # None when no feasible solution was found in time or the problem was too large
    status: str  # "optimal", "time_limit" (best found, not proven), "too_large", "no_solution" (infeasible or failed)
    cost_s: float | None  # Space.node_sum of genome, recomputed (not the solver's number)
    time_s: float
    variables: int  # binary variables: the e-nodes of the reachable classes


def ilp_extraction(space: Space, time_limit_s: float = 10.0, max_variables: int = 50_000) -> IlpResult:
    """The genome of least DAG cost, proven optimal unless the status says otherwise."""
    start = time.perf_counter()
    classes = _reachable(space)
    nodes = [(c, i) for c in classes for i in range(len(space.view.classes[c]))]
    if len(nodes) > max_variables:
        return IlpResult(None, "too_large", None, time.perf_counter() - start, len(nodes))
    res = _solve(space, classes, nodes, time_limit_s - (time.perf_counter() - start))
    genome = None if res.x is None or res.status not in (0, 1) else _genome(space, nodes, res.x)
    status = {0: "optimal", 1: "time_limit"}.get(res.status, "no_solution")
    cost = None if genome is None else space.node_sum(list(genome))
    return IlpResult(genome, status, cost, time.perf_counter() - start, len(nodes))


def _reachable(space: Space) -> list[int]:
    seen = {space.view.root}
    stack = [space.view.root]
    while stack:
        for node in space.view.classes[stack.pop()]:
            for k in node.children:
                if k not in seen:
                    seen.add(k)
                    stack.append(k)
    return sorted(seen)


def _solve(space: Space, classes: list[int], nodes: list[tuple[int, int]], time_limit_s: float):
    """Columns: x for ``nodes`` (in order), then order for the classes on a cycle."""
    scc = _components(space, classes)
    parts: dict[int, set[int]] = {}
    for c in classes:
        parts.setdefault(scc[c], set()).add(c)
    members: dict[int, list[int]] = {c: [] for c in classes}
    uses: dict[tuple[int, int], list[int]] = {}  # (class, child class) -> the class's nodes that use the child
    x_upper = np.ones(len(nodes))
    for v, (c, i) in enumerate(nodes):
        members[c].append(v)
        children = _children(space, (c, i))
        if c in children or _dominated(space, c, i):
            x_upper[v] = 0.0  # a node that needs its own class, or one that another node of its class beats
            continue
        for k in sorted(children):
            uses.setdefault((c, k), []).append(v)
    cyclic = [c for c in classes if len(parts[scc[c]]) > 1]
    order = {c: len(nodes) + j for j, c in enumerate(cyclic)}

    rows = _Rows()
    for c in classes:  # one node at the root, at most one elsewhere
        rows.add([(v, 1.0) for v in members[c]], 1.0 if c == space.view.root else 0.0, 1.0)
    for (c, k), users in uses.items():
        using = [(v, 1.0) for v in users]  # c's chosen node uses k (at most one node of c is chosen)
        rows.add(using + [(w, -1.0) for w in members[k]], -np.inf, 0.0)  # ... so k chooses a node
        if scc[k] == scc[c]:  # ... and, on a cycle, comes after k: order[c] >= order[k] + 1 - big * (1 - using)
            big = len(parts[scc[c]])
            rows.add([(order[c], 1.0), (order[k], -1.0)] + [(v, -big) for v, _ in using], 1.0 - big, np.inf)
            if c < k and (k, c) in uses:  # cut: of two classes that use each other, one at most does
                for z in (c, k):
                    rows.add(using + [(v, 1.0) for v in uses[k, c]] + [(w, -1.0) for w in members[z]], -np.inf, 0.0)
    for part in parts.values():  # cut: a chosen class on a cycle is reached from a node that leaves its component
        if len(part) > 1:
            leaving = [(v, -1.0) for b in part for v in members[b] if not _children(space, nodes[v]) & part]
            for a in part:
                rows.add([(v, 1.0) for v in members[a]] + leaving, -np.inf, 0.0)

    columns = len(nodes) + len(cyclic)
    cost = np.r_[[space.node_cost[c][i] * _SCALE for c, i in nodes], np.zeros(len(cyclic))]
    return milp(
        cost,
        integrality=np.r_[np.ones(len(nodes)), np.zeros(len(cyclic))],
        bounds=Bounds(np.zeros(columns), np.r_[x_upper, [len(parts[scc[c]]) - 1 for c in cyclic]]),
        constraints=LinearConstraint(rows.matrix(columns), rows.lower, rows.upper),
        options={"time_limit": max(time_limit_s, 0.0), "mip_rel_gap": 0.0},
    )


def _children(space: Space, node: tuple[int, int]) -> set[int]:
    return set(space.view.classes[node[0]][node[1]].children)


class _Rows:
    """Sparse constraint rows ``lower <= A @ x <= upper``, one at a time."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def add(self, entries: list[tuple[int, float]], lower: float, upper: float) -> None:
        for col, val in entries:
            self.rows.append(len(self.lower))
            self.cols.append(col)
            self.vals.append(val)
        self.lower.append(lower)
        self.upper.append(upper)

    def matrix(self, columns: int):
        return coo_array((self.vals, (self.rows, self.cols)), shape=(len(self.lower), columns)).tocsr()


def _dominated(space: Space, c: int, i: int) -> bool:
    """Another node of class c costs no more and uses a subset of i's child classes (ties: the first wins)."""
    mine = (space.node_cost[c][i], _children(space, (c, i)), i)
    for j in range(len(space.view.classes[c])):
        other = (space.node_cost[c][j], _children(space, (c, j)), j)
        if j != i and c not in other[1] and other[1] <= mine[1] and other[0] <= mine[0] \
                and (other[0] < mine[0] or other[1] != mine[1] or j < i):
            return True
    return False


def _components(space: Space, classes: list[int]) -> dict[int, int]:
    """The strongly connected component of each class in the graph of class -> child class (any e-node)."""
    index = {c: j for j, c in enumerate(classes)}
    edges = np.array(sorted({(index[c], index[k]) for c in classes for n in space.view.classes[c] for k in n.children}),
                     dtype=np.int64).reshape(-1, 2)
    graph = coo_array((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(classes), len(classes)))
    _, label = connected_components(graph, directed=True, connection="strong")
    return {c: int(label[index[c]]) for c in classes}


def _genome(space: Space, nodes: list[tuple[int, int]], x: np.ndarray) -> Genome:
    genome = list(space.min_depth_node)
    for (c, i), value in zip(nodes, x[:len(nodes)], strict=True):
        if value > 0.5:
            genome[c] = i
    repaired = list(genome)
    walk(space, repaired)
    if repaired != genome:
        raise AssertionError("the ILP's choice has a cycle; the acyclicity constraints should rule that out")
    return genome
