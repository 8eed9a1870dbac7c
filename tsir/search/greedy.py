"""Greedy extraction: per e-class, the e-node of least tree cost (children costed independently).

This is the classic bottom-up extractor (egg's and Tensat's default), except that a node that uses one
child twice (``x * x``) pays for it once. It still counts a subprogram shared by different nodes once per
use, so it can miss programs whose parts are shared: the genetic search starts from it.

``fused_greedy`` is the same extractor under a tree cost that knows TVM's fusion (``fusion.fuses``): a kernel
that fuses into a child's kernel pays its compute only (no dispatch, no trip through memory of its own). Which
kernel tops a class's program then matters to its users, so each class is costed in three states: any program,
one topped by an open elementwise/injective chain, one topped by a TVM contraction that can take an epilogue.
"""

from __future__ import annotations

from dataclasses import dataclass

from tsir.ir.registry import OPS, Category
from tsir.search.extract import Genome, Space, least_cost
from tsir.search.fusion import PATTERNS, Pattern, fuses

ANY, CHAIN, CONTRACTION = range(3)  # the states a class is costed in (a program topped by any kernel, ...)
OPEN = {CHAIN: Pattern.INJECTIVE, CONTRACTION: Pattern.CONTRACTION}  # the pattern of an open state's group


def greedy(space: Space) -> Genome:
    costs = space.cost_by_node()

    def cost_of(node, kids: list) -> float:
        return costs[id(node)] + sum(dict(zip(node.children, kids, strict=True)).values())  # each child once

    best, choice = least_cost(space.view, cost_of)
    return [i if b is not None else space.min_depth_node[c] for c, (b, i) in enumerate(zip(best, choice, strict=True))]


@dataclass(frozen=True)
class _Variant:
    """One way to cost e-node ``index`` of a class: its children in the given states, at ``cost`` of its own."""

    index: int
    children: tuple[int, ...]  # states' ids: class * 3 + state
    cost: float


@dataclass(frozen=True)
class _States:
    classes: list[list[_Variant]]  # per state id, the variants that leave the class in that state


def fused_greedy(space: Space) -> Genome:
    """The least tree cost program when kernels fuse as TVM fuses them (see the module's docstring)."""
    if space.node_work is None:
        return greedy(space)
    states = _States([[] for _ in range(3 * len(space.view.classes))])
    for c, nodes in enumerate(space.view.classes):
        for i in range(len(nodes)):
            for state, variant in _variants(space, c, i):
                states.classes[3 * c + ANY].append(variant)
                if state != ANY:
                    states.classes[3 * c + state].append(variant)

    def cost_of(variant: _Variant, kids: list) -> float:
        return variant.cost + sum(dict(zip(variant.children, kids, strict=True)).values())

    best, choice = least_cost(states, cost_of)
    genome = list(space.min_depth_node)
    seen: set[int] = set()
    stack = [3 * space.view.root + ANY]
    while stack:  # top down from the root: a class takes the node of the first state it is reached in
        s = stack.pop()
        c = s // 3
        if c in seen or best[s] is None:
            continue
        seen.add(c)
        variant = states.classes[s][choice[s]]
        genome[c] = variant.index
        stack.extend(variant.children)
    return genome


def _variants(space: Space, c: int, i: int) -> list[tuple[int, _Variant]]:
    """The states e-node ``i`` of class ``c`` can leave its class in, each with its variant."""
    node = space.view.classes[c][i]
    work = space.node_work[c][i]
    spec = OPS.get(node.op)
    alone = _Variant(i, tuple(3 * k + ANY for k in node.children), space.node_cost[c][i])
    if spec is None or (work is None and not (spec.category == Category.MOVEMENT and node.children)):
        return [(ANY, alone)]  # a leaf, a list cell, a constant: the value is in memory
    if work is None:  # a view: the state of the value it shows
        first, *rest = node.children
        return [(state, _Variant(i, (3 * first + state, *(3 * k + ANY for k in rest)), 0.0))
                for state in (ANY, CHAIN, CONTRACTION)]
    pattern = PATTERNS.get(spec.category, Pattern.OPAQUE)
    own = _state(pattern)
    out = [(own, alone)]
    if spec.arity is None:
        return out  # a variadic op's inputs come through a list: priced alone
    for k in dict.fromkeys(node.children):  # fused with the kernel that computes child k (each use of it)
        for state, group in OPEN.items():
            if fuses(group, pattern):
                kids = tuple(3 * kk + (state if kk == k else ANY) for kk in node.children)
                out.append((_state(max(group, pattern)), _Variant(i, kids, work.compute_s)))
    return out


def _state(pattern: Pattern) -> int:
    """The state a group of ``pattern`` leaves its class in."""
    if pattern <= Pattern.INJECTIVE:
        return CHAIN
    return CONTRACTION if pattern == Pattern.CONTRACTION else ANY
