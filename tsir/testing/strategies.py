"""Hypothesis strategies for tsir programs: random well-typed graphs over the supported ops.

``graphs()`` draws whole programs (used by the soundness fuzzer); ``cases(build)`` turns a function
that builds one program with a ``GraphBuilder`` into a strategy (used by rule property tests).
Every program comes with random input values: standard normal inputs, weights scaled by
1/sqrt(fan-in) so values stay O(1) through deep programs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

from tsir.ir.ops import OPS
from tsir.ir.term import Graph, Term
from tsir.testing import Case

FLOAT = "float32"


class GraphBuilder:
    """Makes inputs, weights and scalars with random values for one program."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.constants: list[np.ndarray] = []
        self.inputs: list[Term] = []
        self.values: dict[str, np.ndarray] = {}

    def input(self, shape: tuple[int, ...]) -> Term:
        name = f"x{len(self.inputs)}"
        term = Term("input", (), (name,), (tuple(shape), FLOAT))
        self.inputs.append(term)
        self.values[name] = self.rng.standard_normal(shape).astype(FLOAT)
        return term

    def weight(self, shape: tuple[int, ...], positive: bool = False, fan_in: int = 1) -> Term:
        value = self.rng.standard_normal(shape) / math.sqrt(fan_in)
        self.constants.append((np.abs(value) + 0.5 if positive else value).astype(FLOAT))
        return Term("weight", (), (len(self.constants) - 1,), (tuple(shape), FLOAT))

    def indices(self, shape: tuple[int, ...], bound: int, negative: bool = False) -> Term:
        """A constant int64 tensor of indices in 0..bound-1 (for gathers); from -bound when ``negative``."""
        self.constants.append(self.rng.integers(-bound if negative else 0, bound, size=shape).astype("int64"))
        return Term("weight", (), (len(self.constants) - 1,), (tuple(shape), "int64"))

    def scalar(self, value: float) -> Term:
        return Term("scalar", (), (float(value),))

    def case(self, *outputs: Term) -> Case:
        return Case(Graph(Term("tuple", outputs), list(self.inputs), list(self.constants)), dict(self.values))


seeds = st.integers(0, 2**16)


def shapes(min_rank: int = 1, max_rank: int = 4, max_side: int = 4) -> st.SearchStrategy[tuple[int, ...]]:
    return st.lists(st.integers(1, max_side), min_size=min_rank, max_size=max_rank).map(tuple)


def cases(build: Callable[[Callable, GraphBuilder], Term | tuple[Term, ...]]) -> st.SearchStrategy[Case]:
    """A strategy of programs made by ``build(draw, builder)``, which returns the output term(s)."""

    @st.composite
    def strategy(draw) -> Case:
        builder = GraphBuilder(draw(seeds))
        out = build(draw, builder)
        return builder.case(*(out if isinstance(out, tuple) else (out,)))

    return strategy()


# ---- random programs ------------------------------------------------------------------------------
class Choices:
    """The random choices an op's maker draws (``tsir.ir.registry.Choices``), on a hypothesis ``draw``."""

    def __init__(self, draw) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, items):
        return self.draw(st.sampled_from(list(items)))

    def flag(self) -> bool:
        return self.draw(st.booleans())

    def permutation(self, items) -> list:
        return self.draw(st.permutations(list(items)))

    def subset(self, items, min_size: int) -> list:
        return sorted(self.draw(st.sets(st.sampled_from(list(items)), min_size=min_size)))


def _parallel(d: Choices, b: GraphBuilder, x: Term, pool: list[Term]) -> Term | None:
    """Two ops of one kind on one input, combined: what the multi-pattern merges look for."""
    make = OPS[d.choice(["matmul", "linear", "conv2d"])].make
    left, right = make(d, b, x, pool), make(d, b, x, pool)
    if left is None or left.ty != right.ty:
        return left
    return Term("add", (left, right))


# op -> maker, from the registry's declarations (``OpSpec.make``), plus "parallel" (a pair of GEMM-class ops)
MAKERS: dict[str, Callable] = {**{name: spec.make for name, spec in OPS.items() if spec.make}, "parallel": _parallel}


@st.composite
def graphs(draw, max_ops: int = 6, ops: tuple[str, ...] = tuple(MAKERS)) -> Case:
    """A random well-typed program of 1..``max_ops`` ops drawn from ``ops`` (names of ``MAKERS``)."""
    b = GraphBuilder(draw(seeds))
    if draw(st.booleans()):
        n, c = draw(st.integers(1, 2)), draw(st.integers(1, 4))
        x = b.input((n, c, draw(st.integers(3, 6)), draw(st.integers(3, 6))))
    else:
        x = b.input((draw(st.integers(1, 4)), draw(st.integers(1, 6))))
    pool = [x]
    for _ in range(draw(st.integers(1, max_ops))):
        source = draw(st.sampled_from(pool))
        try:
            term = MAKERS[draw(st.sampled_from(ops))](Choices(draw), b, source, pool)
        except ValueError:  # the drawn attributes do not fit this input (e.g. a kernel larger than the image)
            term = None
        if term is not None and math.prod(term.ty[0]) <= 4096 and 1 <= len(term.ty[0]) <= 5:
            pool.append(term)
    outputs = (pool[-1],) if len(pool) == 1 or draw(st.booleans()) else (pool[-1], draw(st.sampled_from(pool[1:])))
    return b.case(*dict.fromkeys(outputs))
