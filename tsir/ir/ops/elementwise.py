"""Elementwise ops: unary activations and math, clip, the broadcasting binary ops, and the mask ops
(comparisons, boolean logic, ``where`` and casts) that attention masks and guards are built from."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from tsir.ir.ops.relax_args import are_terms, prim_literal
from tsir.ir.registry import Category, OpSpec, TType, broadcast_shapes, numel, register
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
    "gelu_tanh": (lambda x: (0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))).astype(x.dtype),
                  "relax.nn.gelu_tanh", 10.0),
    "negative": (np.negative, "relax.negative", 1.0),
    "abs": (np.abs, "relax.abs", 1.0),
    "rsqrt": (lambda x: (1 / np.sqrt(x)).astype(x.dtype), "relax.rsqrt", 2.0),
    "log": (np.log, "relax.log", 8.0),
    "cos": (np.cos, "relax.cos", 8.0),
    "sin": (np.sin, "relax.sin", 8.0),
}
POSITIVE_DOMAIN = frozenset({"sqrt", "rsqrt", "log"})  # drawn on sigmoid(x): finite values only


def _emit(relax_name: str):
    """The emitter of an elementwise op: the Relax op registered as ``relax_name`` on the op's tensors
    (``relax.nn.relu`` -> ``relax.op.nn.relu``)."""
    builder = relax.op
    for part in relax_name.split(".")[1:]:
        builder = getattr(builder, part)
    return lambda a, at, ty: builder(*a)


def _make_unary(op: str):
    def make(d, b, x: Term, pool: list[Term]) -> Term:
        if op == "exp" or op in POSITIVE_DOMAIN:  # keep values finite: exp of a bounded value, sqrt of a positive one
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
        if op == "power":  # a positive base to a small exponent, as in norms and tanh-GELU
            return Term(op, (Term("sigmoid", (x,)), b.scalar(d.choice([2.0, 3.0, 0.5]))))
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


def _same_dtype(call, args: list, ty, name: str) -> Term | None:
    """``name`` on two tensors of one dtype (None keeps the call opaque)."""
    return Term(name, tuple(args)) if are_terms(*args) and args[0].ty[1] == args[1].ty[1] else None


# name -> (numpy function, FLOPs per element: a pow is a log and an exp, like log's 8 twice)
_BINARY = {"add": (np.add, 1.0), "subtract": (np.subtract, 1.0), "multiply": (np.multiply, 1.0),
           "divide": (np.divide, 1.0), "power": (np.power, 16.0), "minimum": (np.minimum, 1.0),
           "maximum": (np.maximum, 1.0)}
for _name, (_fn, _per_element) in _BINARY.items():
    register(OpSpec(
        _name, 2, (), Category.BINARY, lambda ins, a: (broadcast_shapes(ins[0][0], ins[1][0]), ins[0][1]),
        lambda xs, a, f=_fn: f(xs[0], xs[1]).astype(xs[0].dtype), lambda ins, out, a, k=_per_element: k * numel(out[0]),
        convert={f"relax.{_name}": lambda call, args, ty, n=_name: _same_dtype(call, args, ty, n)},
        emit=_emit(f"relax.{_name}"), make=_make_binary(_name)))


# ---- mask ops: comparisons, boolean logic, where, casts ---------------------------------------------
LOGIC = Category.LOGIC
_COMPARE = {"less": np.less, "less_equal": np.less_equal, "greater": np.greater, "greater_equal": np.greater_equal,
            "equal": np.equal, "not_equal": np.not_equal}
_BOOLEAN = {"logical_and": np.logical_and, "logical_or": np.logical_or, "bitwise_and": np.bitwise_and,
            "bitwise_or": np.bitwise_or}


def _compared(d, b, x: Term, pool: list[Term], op: str) -> Term:
    """A float use of comparison ``op``: the elementwise pick of ``x`` or another value by it."""
    other = d.choice([t for t in pool if t.ty == x.ty] + [b.scalar(0.0)])
    return Term("where", (Term(op, (x, other)), x, other))


for _name, _fn in _COMPARE.items():
    register(OpSpec(
        _name, 2, (), LOGIC, lambda ins, a: (broadcast_shapes(ins[0][0], ins[1][0]), "bool"),
        lambda xs, a, f=_fn: f(xs[0], xs[1]), lambda ins, out, a: float(numel(out[0])),
        convert={f"relax.{_name}": lambda call, args, ty, n=_name: _same_dtype(call, args, ty, n)},
        emit=_emit(f"relax.{_name}"), make=lambda d, b, x, pool, n=_name: _compared(d, b, x, pool, n)))

for _name, _fn in _BOOLEAN.items():
    register(OpSpec(
        _name, 2, (), LOGIC, lambda ins, a: (broadcast_shapes(ins[0][0], ins[1][0]), ins[0][1]),
        lambda xs, a, f=_fn: f(xs[0], xs[1]), lambda ins, out, a: float(numel(out[0])),
        convert={f"relax.{_name}": lambda call, args, ty, n=_name: _same_dtype(call, args, ty, n)},
        emit=_emit(f"relax.{_name}"),
        make=lambda d, b, x, pool, n=_name: Term("where", (
            Term(n, (Term("less", (x, b.scalar(0.5))), Term("greater", (x, b.scalar(-0.5))))), x, b.scalar(0.0)))))


def _unary_logic(name: str, relax_name: str, evaluate, out_dtype: str | None, make):
    register(OpSpec(
        name, 1, (), LOGIC, lambda ins, a: (ins[0][0], out_dtype or ins[0][1]), lambda xs, a: evaluate(xs[0]),
        lambda ins, out, a: float(numel(out[0])),
        convert={relax_name: lambda call, args, ty: Term(name, (args[0],)) if are_terms(args[0]) else None},
        emit=_emit(relax_name), make=make))


_unary_logic("isnan", "relax.isnan", np.isnan, "bool",
             lambda d, b, x, pool: Term("where", (Term("isnan", (x,)), b.scalar(0.0), x)))
_unary_logic("logical_not", "relax.logical_not", np.logical_not, "bool",
             lambda d, b, x, pool: Term("where", (Term("logical_not", (Term("less", (x, b.scalar(0.0))),)), x,
                                                  b.scalar(0.0))))
_unary_logic("bitwise_not", "relax.bitwise_not", np.invert, None,
             lambda d, b, x, pool: Term("where", (Term("bitwise_not", (Term("less", (x, b.scalar(0.0))),)), x,
                                                  b.scalar(0.0))))


def _infer_where(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (c, c_dtype), (x, dtype), (y, y_dtype) = ins
    if c_dtype != "bool" or dtype != y_dtype:
        raise ValueError(f"where: a bool condition and two values of one dtype, got {c_dtype}, {dtype}, {y_dtype}")
    return broadcast_shapes(c, x, y), dtype


def _convert_where(call, args: list, ty) -> Term | None:
    if not are_terms(*args) or args[0].ty[1] != "bool" or args[1].ty[1] != args[2].ty[1]:
        return None
    return Term("where", tuple(args))


register(OpSpec(
    "where", 3, (), LOGIC, _infer_where, lambda xs, a: np.where(*xs).astype(xs[1].dtype),
    lambda ins, out, a: float(numel(out[0])), convert={"relax.where": _convert_where},
    emit=lambda a, at, ty: relax.op.where(*a), make=lambda d, b, x, pool: _compared(d, b, x, pool, "greater")))


def _convert_astype(call, args: list, ty) -> Term | None:
    return Term("astype", (args[0],), (str(call.attrs.dtype),)) if are_terms(args[0]) else None


register(OpSpec(
    "astype", 1, ("dtype",), LOGIC, lambda ins, a: (ins[0][0], a[0]), lambda xs, a: xs[0].astype(a[0]),
    lambda ins, out, a: float(numel(out[0])), convert={"relax.astype": _convert_astype},
    emit=lambda a, at, ty: relax.op.astype(a[0], at[0]),
    make=lambda d, b, x, pool: Term("astype", (Term("astype", (Term("multiply", (x, b.scalar(4.0))),), ("int32",)),),
                                    ("float32",))))
