"""The tsir term graph: a hash-consed DAG of ops, each node with a known type.

Terms are interned, so structurally equal terms are the same object and sharing (a residual
connection, a reused weight) stays a DAG. The graph of one model also carries its constant table
(numpy arrays that ``weight`` leaves index) and the original Relax calls of its opaque nodes.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tsir.ir.registry import OPS, RUNTIME_ONLY


class Term:
    """One node: ``op`` applied to ``args`` (child terms) with literal ``attrs``; ``ty`` is its type."""

    __slots__ = ("op", "args", "attrs", "ty", "__weakref__")
    _interned: dict[tuple, Term] = {}

    op: str
    args: tuple[Term, ...]
    attrs: tuple
    ty: Any  # TType, or a tuple of TTypes for tuple-valued nodes

    def __new__(cls, op: str, args: tuple[Term, ...] = (), attrs: tuple = (), ty: Any = None) -> Term:
        """Intern a term; ops with a type rule infer ``ty``, the others (leaves, opaque) must be given it."""
        spec = OPS[op]
        if spec.infer is not None:
            ty = spec.infer(tuple(a.ty for a in args), attrs)
        elif ty is None:
            raise ValueError(f"a {op!r} term needs its type given")
        key = (op, tuple(id(a) for a in args), attrs, ty)
        term = cls._interned.get(key)
        if term is None:
            term = super().__new__(cls)
            term.op, term.args, term.attrs, term.ty = op, tuple(args), attrs, ty
            cls._interned[key] = term
        return term

    def __repr__(self) -> str:
        inner = ", ".join([*(a.op for a in self.args), *map(repr, self.attrs)])
        return f"{self.op}({inner})"


def postorder(root: Term, done: Container[int] = ()) -> Iterator[Term]:
    """Every node reachable from ``root`` once, children before parents; nodes whose id is in ``done`` are
    left out, and so are the nodes reachable only through them."""
    seen: set[int] = set()
    stack: list[tuple[Term, bool]] = [(root, False)]
    while stack:
        term, expanded = stack.pop()
        if id(term) in seen or id(term) in done:
            continue
        if expanded:
            seen.add(id(term))
            yield term
            continue
        stack.append((term, True))
        stack.extend((a, False) for a in reversed(term.args) if id(a) not in seen)


@dataclass
class Graph:
    """A model in tsir: the output term, its inputs in order, constants and opaque Relax calls."""

    root: Term
    inputs: list[Term]
    constants: list[np.ndarray]
    opaque_calls: dict[int, Any] = field(default_factory=dict)  # key -> OpaqueCall (tsir.frontend)

    def nodes(self) -> list[Term]:
        return list(postorder(self.root))


def is_constant(term: Term, memo: dict[int, bool]) -> bool:
    """True when ``term`` is a tensor that depends on no input and no opaque op, so it folds before run time."""
    if id(term) not in memo:
        for t in postorder(term, memo):  # children first, no recursion: graphs can be thousands of nodes deep
            memo[id(t)] = t.op not in RUNTIME_ONLY and all(memo[id(a)] for a in t.args)
    return memo[id(term)]


def fold(term: Term, constants: list[np.ndarray], memo: dict[int, np.ndarray]) -> np.ndarray:
    """Evaluate a constant term with the reference semantics of its ops."""
    if id(term) not in memo:
        for t in postorder(term, memo):
            if t.op == "weight":
                memo[id(t)] = constants[t.attrs[0]]
            else:
                memo[id(t)] = OPS[t.op].evaluate([memo[id(a)] for a in t.args], t.attrs)
    return memo[id(term)]


class ConstantValues:
    """The values of one graph's constant subterms, each folded once (None for a term that is not constant)."""

    def __init__(self, constants: list[np.ndarray]) -> None:
        self.constants = constants
        self._constant: dict[int, bool] = {}
        self._values: dict[int, np.ndarray] = {}

    def of(self, term: Term) -> np.ndarray | None:
        if not is_constant(term, self._constant):
            return None
        return np.asarray(fold(term, self.constants, self._values))
