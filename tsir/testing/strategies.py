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
def _rank4(t: Term) -> bool:
    return len(t.ty[0]) == 4


def _unary(op: str) -> Callable:
    def make(draw, b: GraphBuilder, x: Term, pool: list[Term]) -> Term:
        if op in ("exp", "sqrt"):  # keep values finite: exp of a bounded value, sqrt of a positive one
            return Term(op, (Term("tanh" if op == "exp" else "sigmoid", (x,)),))
        return Term(op, (x,))

    return make


def _binary(op: str) -> Callable:
    def make(draw, b: GraphBuilder, x: Term, pool: list[Term]) -> Term:
        kind = draw(st.sampled_from(["same", "const", "scalar"]))
        peers = [t for t in pool if t.ty == x.ty]
        if kind == "same" and op != "divide":
            return Term(op, (x, draw(st.sampled_from(peers))))
        if kind == "scalar":
            identity = 1.0 if op in ("multiply", "divide") else 0.0
            return Term(op, (x, b.scalar(draw(st.sampled_from([identity, 0.5, 2.0])))))
        shape = tuple(1 if draw(st.booleans()) else d for d in x.ty[0])[draw(st.integers(0, len(x.ty[0]) - 1)):]
        return Term(op, (x, b.weight(shape, positive=op == "divide")))

    return make


def _transpose(draw, b, x, pool):
    return Term("transpose", (x,), (tuple(draw(st.permutations(range(len(x.ty[0]))))),))


def _reshape(draw, b, x, pool):
    shape = x.ty[0]
    n = math.prod(shape)
    return Term("reshape", (x,), (draw(st.sampled_from([(n,), (1, n), tuple(reversed(shape)), (*shape, 1)])),))


def _matmul(draw, b, x, pool):
    shape = x.ty[0]
    if len(shape) < 2:
        return None
    others = [t for t in pool if len(t.ty[0]) == 2 and t.ty[0][0] == shape[-1]]
    if others and draw(st.booleans()):
        return Term("matmul", (x, draw(st.sampled_from(others))))
    return Term("matmul", (x, b.weight((shape[-1], draw(st.integers(1, 5))), fan_in=shape[-1])))


def _linear(draw, b, x, pool):
    shape = x.ty[0]
    if len(shape) < 2:
        return None
    n = draw(st.integers(1, 5))
    return Term("linear", (x, b.weight((shape[-1], n), fan_in=shape[-1]), b.weight((n,))))


def _conv2d(draw, b, x, pool):
    if not _rank4(x):
        return None
    c = x.ty[0][1]
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0]))
    k = draw(st.sampled_from([1, 3]))
    cout = groups * draw(st.integers(1, 3))
    attrs = ((draw(st.integers(1, 2)),) * 2, (draw(st.integers(0, 1)),) * 4, (1, 1), groups)
    return Term("conv2d", (x, b.weight((cout, c // groups, k, k), fan_in=c // groups * k * k)), attrs)


def _batch_norm(draw, b, x, pool):
    if len(x.ty[0]) < 2:
        return None
    c = x.ty[0][1]
    stats = [b.weight((c,)), b.weight((c,)), b.weight((c,)), b.weight((c,), positive=True)]
    return Term("batch_norm", (x, *stats), (1, 1e-5))


def _max_pool2d(draw, b, x, pool):
    if not _rank4(x):
        return None
    k = draw(st.integers(1, 3))
    return Term("max_pool2d", (x,), ((k, k), (draw(st.integers(1, 2)),) * 2, (draw(st.integers(0, k - 1)),) * 4,
                                     (1, 1)))


def _pad(draw, b, x, pool):
    widths = [0] * (2 * len(x.ty[0]))
    for i in range(max(0, len(widths) - 4), len(widths)):
        widths[i] = draw(st.integers(0, 1))
    return Term("pad", (x,), (tuple(widths),))


def _mean(draw, b, x, pool):
    rank = len(x.ty[0])
    axes = tuple(sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank))))
    return Term("mean", (x,), (axes, draw(st.booleans())))


def _clip(draw, b, x, pool):
    return Term("clip", (x,), draw(st.sampled_from([(0.0, 6.0), (-1.0, 1.0), (0.0, float("inf"))])))


def _softmax(draw, b, x, pool):
    return Term("softmax", (x,), (len(x.ty[0]) - 1,))


def _layer_norm(draw, b, x, pool):
    n = x.ty[0][-1]
    return Term("layer_norm", (x, b.weight((n,)), b.weight((n,))), (len(x.ty[0]) - 1, 1e-5))


def _concat(draw, b, x, pool):
    axis = draw(st.integers(0, len(x.ty[0]) - 1))
    peers = [t for t in pool if t.ty[0][:axis] + t.ty[0][axis + 1:] == x.ty[0][:axis] + x.ty[0][axis + 1:]
             and len(t.ty[0]) == len(x.ty[0])]
    return Term("concat", (x, draw(st.sampled_from(peers))), (axis,))


def _slice(draw, b, x, pool):
    axis = draw(st.integers(0, len(x.ty[0]) - 1))
    size = x.ty[0][axis]
    begin = draw(st.integers(0, size - 1))
    return Term("slice", (x,), (axis, begin, draw(st.integers(begin + 1, size))))


def _broadcast_to(draw, b, x, pool):
    return Term("broadcast_to", (x,), ((draw(st.integers(1, 3)), *x.ty[0]),))


def _parallel(draw, b, x, pool):
    """Two ops of one kind on one input, combined: what the multi-pattern merges look for."""
    kind = draw(st.sampled_from([_matmul, _linear, _conv2d]))
    left, right = kind(draw, b, x, pool), kind(draw, b, x, pool)
    if left is None or left.ty != right.ty:
        return left
    return Term("add", (left, right))


MAKERS: dict[str, Callable] = {
    **{op: _unary(op) for op in ("relu", "sigmoid", "tanh", "exp", "sqrt", "gelu")},
    **{op: _binary(op) for op in ("add", "subtract", "multiply", "divide")},
    "transpose": _transpose, "reshape": _reshape, "matmul": _matmul, "linear": _linear, "conv2d": _conv2d,
    "batch_norm": _batch_norm, "max_pool2d": _max_pool2d, "pad": _pad, "mean": _mean, "clip": _clip,
    "softmax": _softmax, "layer_norm": _layer_norm, "concat": _concat, "slice": _slice,
    "broadcast_to": _broadcast_to, "parallel": _parallel,
}


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
            term = MAKERS[draw(st.sampled_from(ops))](draw, b, source, pool)
        except ValueError:  # the drawn attributes do not fit this input (e.g. a kernel larger than the image)
            term = None
        if term is not None and math.prod(term.ty[0]) <= 4096 and 1 <= len(term.ty[0]) <= 5:
            pool.append(term)
    outputs = (pool[-1],) if len(pool) == 1 or draw(st.booleans()) else (pool[-1], draw(st.sampled_from(pool[1:])))
    return b.case(*dict.fromkeys(outputs))
