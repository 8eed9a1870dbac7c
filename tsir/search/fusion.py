"""Whole-program cost: a program's ops grouped into the kernels TVM will run, each group priced once.

TVM's ``FuseOps`` (``relax.transform.FuseOps``) fuses along the edges of the dataflow graph by op
pattern; this follows its rules on the chosen program, along each edge whose producer has one use:

- an elementwise or injective group (unary, binary and logic ops; transpose, concat, slice, ...) fuses
  into an elementwise or injective consumer;
- a contraction (conv, matmul in TVM's code) takes its elementwise consumers: bias, activation, residual
  add (its epilogue);
- reductions and normalizations (softmax, layer norm, pooling) stay kernels of their own, and so do
  library calls (oneDNN, whose activation is already one of its attributes) and opaque calls.

On the zoo's programs this gives TVM's kernel count, less the standalone reshapes that the build turns
into views (``relax.transform.RewriteDataflowReshape``).

Views (reshape) cost nothing and stand for their input. A group costs one dispatch, its members'
compute summed, and the bytes that cross its boundary (``Roofline.time_s``): the values it reads from
outside and those it writes for other groups or as the program's result. So a ReLU after a conv costs
its compute only, where priced alone it would pay a dispatch and a round trip through memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from tsir.backends.roofline import Roofline, Work, type_bytes
from tsir.egraph import ENode
from tsir.ir.registry import OPS, Category


class Pattern(IntEnum):
    """How an op fuses (TVM's ``OpPatternKind``, ordered as there); a group's pattern is its members' highest."""

    ELEMWISE = 0
    INJECTIVE = 2
    REDUCTION = 3
    CONTRACTION = 4
    OPAQUE = 8


PATTERNS = {Category.UNARY: Pattern.ELEMWISE, Category.BINARY: Pattern.ELEMWISE, Category.LOGIC: Pattern.ELEMWISE,
            Category.MOVEMENT: Pattern.INJECTIVE, Category.REDUCE: Pattern.REDUCTION, Category.NORM: Pattern.REDUCTION,
            Category.POOL: Pattern.REDUCTION, Category.GEMM: Pattern.CONTRACTION}


def fuses(producer: Pattern, consumer: Pattern) -> bool:
    """Whether a group of pattern ``producer`` fuses into its only consumer's group of pattern ``consumer``."""
    if producer <= Pattern.INJECTIVE:
        return consumer <= Pattern.INJECTIVE
    return producer == Pattern.CONTRACTION and consumer == Pattern.ELEMWISE


@dataclass
class Fused:
    """A program's kernels as fused groups; ``alias`` maps a view's class to the class whose value it shows."""

    groups: list[list[int]]
    group_of: dict[int, list[int]]  # a kernel's class -> its group's member list (shared by the members)
    alias: dict[int, int]
    users: dict[int, list[int]]  # a value's class -> the classes of the ops that read it (kernels or not)
    inputs: dict[int, list[int]]  # an op's class -> the values it reads


def fuse(order: list[int], node: Callable[[int], ENode], work: Callable[[int], Work | None]) -> Fused:
    """Group a program's kernels (``order``: its e-classes, children first; ``node(c)``: the chosen e-node;
    ``work(c)``: its kernel's work, None when it runs none) as TVM fuses them."""
    alias: dict[int, int] = {}
    users: dict[int, list[int]] = {}
    inputs: dict[int, list[int]] = {}  # the values an op reads (a variadic op's list, element by element)
    elements: dict[int, list[int]] = {}  # a list's class (cons/nil) -> its elements' values
    for c in order:
        n = node(c)
        spec = OPS.get(n.op)
        if spec is None:  # a list cell of a variadic op
            elements[c] = [alias[n.children[1]], *elements[n.children[0]]] if n.children else []
            continue
        if not spec.kernel and spec.category == Category.MOVEMENT:  # a view (reshape)
            alias[c] = alias[n.children[0]]
            continue
        alias[c] = c
        inputs[c] = list(dict.fromkeys(v for k in n.children for v in elements.get(k, [alias.get(k, k)])))
        for k in inputs[c]:
            users.setdefault(k, []).append(c)
    group_of: dict[int, list[int]] = {}
    pattern: dict[int, Pattern] = {}  # keyed by id() of a member list
    for c in order:
        if work(c) is None:
            continue
        group_of[c] = [c]
        pattern[id(group_of[c])] = PATTERNS.get(OPS[node(c).op].category, Pattern.OPAQUE)
        for k in inputs[c]:
            if k not in group_of or len(users[k]) != 1 or group_of[k] is group_of[c]:
                continue
            theirs, mine = group_of[k], group_of[c]
            p, q = pattern[id(theirs)], pattern[id(mine)]
            if fuses(p, q):
                merged = theirs + mine
                pattern[id(merged)] = max(p, q)
                for member in merged:
                    group_of[member] = merged
    groups = list({id(g): g for g in group_of.values()}.values())
    return Fused(groups, group_of, alias, users, inputs)


def program_s(fused: Fused, work: Callable[[int], Work | None], root: int, types: list, roofline: Roofline) -> float:
    """Predicted run time of a program grouped by ``fuse``: its kernels, each priced by ``roofline`` as one."""
    result = fused.alias[root]
    total = 0.0
    for members in fused.groups:
        read = {k for c in members for k in fused.inputs[c]} - set(members)
        written = [c for c in members
                   if c == result or any(fused.group_of.get(u) is not members for u in fused.users.get(c, ()))]
        parts = [work(c) for c in members]
        moved = sum(type_bytes(types[c]) for c in (*read, *written))
        total += roofline.time_s(sum(w.compute_s for w in parts), moved, sum(w.fixed_s for w in parts))
    return total
