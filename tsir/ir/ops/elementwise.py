"""Elementwise ops: unary activations and math, clip, and the four broadcasting binary ops."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from tsir.ir.ops.relax_args import are_terms, prim_literal
from tsir.ir.registry import Category, OpSpec, broadcast_shapes, numel, register
from tsir.ir.term import Term


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


# name -> (numpy semantics, Relax op, FLOPs per element)
_UNARY: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str, float]] = {
    "relu": (lambda x: np.maximum(x, 0).astype(x.dtype), "relax.nn.relu", 1.0),
    "sigmoid": (lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype), "relax.sigmoid", 1.0),
    "tanh": (np.tanh, "relax.tanh", 1.0),
    "sqrt": (np.sqrt, "relax.sqrt", 1.0),
    "exp": (np.exp, "relax.exp", 1.0),
    "gelu": (lambda x: (0.5 * x * (1 + _erf(x / np.sqrt(2)))).astype(x.dtype), "relax.nn.gelu", 8.0),
}


def _emit(relax_name: str):
    """The emitter of an elementwise op: the Relax op registered as ``relax_name`` on the op's tensors
    (``relax.nn.relu`` -> ``relax.op.nn.relu``)."""
    builder = relax.op
    for part in relax_name.split(".")[1:]:
        builder = getattr(builder, part)
    return lambda a, at, ty: builder(*a)


def _make_unary(op: str):
    def make(d, b, x: Term, pool: list[Term]) -> Term:
        if op in ("exp", "sqrt"):  # keep values finite: exp of a bounded value, sqrt of a positive one
            return Term(op, (Term("tanh" if op == "exp" else "sigmoid", (x,)),))
        return Term(op, (x,))

    return make


for _name, (_fn, _relax, _per_element) in _UNARY.items():
    register(OpSpec(
        _name, 1, (), Category.UNARY, lambda ins, a: ins[0], lambda xs, a, f=_fn: f(xs[0]),
        lambda ins, out, a, k=_per_element: k * numel(out[0]),
        convert={_relax: lambda call, args, ty, n=_name: Term(n, (args[0],)) if are_terms(args[0]) else None},
        emit=_emit(_relax), make=_make_unary(_name)))



def _convert_clip(call, args: list, ty) -> Term | None:
    low, high = prim_literal(args[1]), prim_literal(args[2])
    if low is None or high is None or args[0].ty[1] != "float32":
        return None
    return Term("clip", (args[0],), (float(low), float(high)))


register(OpSpec(
    "clip", 1, ("low", "high"), Category.UNARY, lambda ins, a: ins[0],
    lambda xs, a: np.clip(xs[0], a[0], a[1]).astype(xs[0].dtype), lambda ins, out, a: float(numel(out[0])),
    convert={"relax.clip": _convert_clip},
    emit=lambda a, at, ty: relax.op.clip(a[0], *(tvm.tirx.FloatImm("float32", v) for v in at)),
    make=lambda d, b, x, pool: Term("clip", (x,), d.choice([(0.0, 6.0), (-1.0, 1.0), (0.0, float("inf"))]))))


def _make_binary(op: str):
    def make(d, b, x: Term, pool: list[Term]) -> Term:
        kind = d.choice(["same", "const", "scalar"])
        peers = [t for t in pool if t.ty == x.ty]
        if kind == "same" and op != "divide":
            return Term(op, (x, d.choice(peers)))
        if kind == "scalar":
            identity = 1.0 if op in ("multiply", "divide") else 0.0
            return Term(op, (x, b.scalar(d.choice([identity, 0.5, 2.0]))))
        shape = tuple(1 if d.flag() else n for n in x.ty[0])[d.integer(0, len(x.ty[0]) - 1):]
        return Term(op, (x, b.weight(shape, positive=op == "divide")))

    return make


_BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide}
for _name, _fn in _BINARY.items():
    register(OpSpec(
        _name, 2, (), Category.BINARY, lambda ins, a: (broadcast_shapes(ins[0][0], ins[1][0]), ins[0][1]),
        lambda xs, a, f=_fn: f(xs[0], xs[1]).astype(xs[0].dtype), lambda ins, out, a: float(numel(out[0])),
        convert={f"relax.{_name}": lambda call, args, ty, n=_name: (
            Term(n, tuple(args)) if are_terms(*args) and args[0].ty[1] == args[1].ty[1] else None)},
        emit=_emit(f"relax.{_name}"), make=_make_binary(_name)))
