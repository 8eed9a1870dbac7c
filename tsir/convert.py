"""Relax -> tsir: the dataflow graph of ``main`` becomes a term graph.

``CONVERTERS`` is one table keyed by Relax op name, derived from the op registry (each op declares
its converters). A converter gets the call, its arguments (tensor arguments already as terms, a tuple
of tensors as a list, anything else as the Relax expression) and the call's tsir type, and returns a
term, or None when the call's attributes are outside what the tsir op models. A call with no
converter, or whose converter returns None, becomes an ``opaque`` term that keeps its original Relax
call, so the model still compiles. ``register_converter`` maps more Relax ops onto existing tsir ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tsir.errors import StaticShapeError, TsirError
from tsir.ir import idioms
from tsir.ir.ops import OPS
from tsir.ir.term import Graph, Term

Constant = tvm.ir.expr.GenericConst
Arg = Term | list | relax.Expr
Converter = Callable[[relax.Call, list[Arg], object], Term | None]
# Relax op name -> converter, from the registry's declarations (``OpSpec.convert``)
CONVERTERS: dict[str, Converter] = {relax_op: fn for spec in OPS.values() for relax_op, fn in spec.convert.items()}


def register_converter(relax_op: str) -> Callable[[Converter], Converter]:
    """Decorator: convert calls of ``relax_op`` (e.g. ``"relax.nn.relu"``) with the decorated function
    ``(call, args, ty) -> Term | None`` (``ty``: the call's tsir type). A new tsir op declares its converters
    in its ``OpSpec`` instead (docs/adding-an-op.md)."""

    def wrap(fn: Converter) -> Converter:
        CONVERTERS[relax_op] = fn
        return fn

    return wrap


@dataclass
class OpaqueCall:
    """A Relax call tsir does not model; its tensor arguments (in order) are the term's children."""

    call: relax.Call

    def rebuild(self, tensors: list[relax.Expr]) -> relax.Call:
        """The same call on new tensor arguments."""
        remaining = iter(tensors)

        def swap(arg: relax.Expr) -> relax.Expr:
            if isinstance(arg, (relax.Var, Constant)):
                return next(remaining)
            if isinstance(arg, relax.Tuple):
                return relax.Tuple([swap(f) for f in arg.fields])
            return arg

        return relax.Call(self.call.op, [swap(a) for a in self.call.args], self.call.attrs, self.call.ty_args)


def static_type(ty: relax.Type, what: str):
    """The tsir type of a Relax struct info: ``(shape, dtype)``, or a tuple of those."""
    if isinstance(ty, relax.TupleType):
        return tuple(static_type(f, what) for f in ty.fields)
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise TsirError(f"{what}: tsir handles tensors and tuples of tensors, got {ty}")
    dims = []
    for i, d in enumerate(ty.shape.values):
        if not isinstance(d, tvm.tirx.IntImm):
            raise StaticShapeError(f"{what} has a symbolic size {d} at dim {i}; tsir needs static shapes")
        dims.append(int(d))
    return tuple(dims), str(ty.dtype)


class _Converter:
    def __init__(self) -> None:
        self.terms: dict[relax.Var, Term] = {}
        self.constants: list[np.ndarray] = []
        self.constant_index: dict[Constant, int] = {}
        self.opaque_calls: dict[int, OpaqueCall] = {}
        self.idioms = idioms.Reader(self.constants)

    def arg(self, expr: relax.Expr) -> Arg:
        if isinstance(expr, relax.Var):
            return self.terms[expr]
        if isinstance(expr, Constant):
            ty = static_type(expr.ty, "constant")
            if ty == ((), "float32") and not np.isnan(value := float(expr.value.numpy())):
                return Term("scalar", (), (value,))  # a literal the rules read (x * 1, 1 / sqrt, x ** 2)
            if expr not in self.constant_index:
                self.constant_index[expr] = len(self.constants)
                self.constants.append(expr.value.numpy())
            return Term("weight", (), (self.constant_index[expr],), ty)
        if isinstance(expr, relax.Tuple):
            return [self.arg(f) for f in expr.fields]
        return expr

    def opaque(self, call: relax.Call, ty) -> Term:
        key = len(self.opaque_calls)
        self.opaque_calls[key] = OpaqueCall(call)
        children = []

        def collect(arg: relax.Expr) -> None:
            if isinstance(arg, (relax.Var, Constant)):
                children.append(self.arg(arg))
            elif isinstance(arg, relax.Tuple):
                for f in arg.fields:
                    collect(f)

        for a in call.args:
            collect(a)
        return Term("opaque", tuple(children), (key,), ty)

    def value(self, expr: relax.Expr, ty, name: str) -> Term:
        if isinstance(expr, relax.Call):
            args = [self.arg(a) for a in expr.args]
            convert = CONVERTERS.get(expr.op.name) if isinstance(expr.op, tvm.ir.Op) else None
            term = convert(expr, args, ty) if convert else None
            if term is None:
                return self.opaque(expr, ty)
            if term.ty != ty:
                raise AssertionError(f"tsir types {name} = {expr.op.name}(...) as {term.ty}, Relax as {ty}")
            return self.idioms.read(term)
        if isinstance(expr, relax.TupleGetItem):
            source = self.arg(expr.tuple_value)
            if source.op == "tuple":  # a modeled tuple (split's pieces, batch norm with its statistics)
                return source.args[expr.index]
            return Term("get_item", (source,), (int(expr.index),), ty)
        if isinstance(expr, relax.Tuple):
            return Term("tuple", tuple(self.arg(f) for f in expr.fields))
        if isinstance(expr, (relax.Var, Constant)):
            return self.arg(expr)
        raise TsirError(f"{name}: tsir cannot take a {type(expr).__name__} binding inside a dataflow block")


def relax_to_tsir(mod: tvm.IRModule) -> Graph:
    """Convert ``mod["main"]`` to a tsir graph."""
    func = mod["main"]
    conv = _Converter()
    inputs = []
    for param in func.params:
        term = Term("input", (), (param.name,), static_type(param.ty, f"input {param.name!r}"))
        conv.terms[param] = term
        inputs.append(term)
    for block in func.body.blocks:
        for binding in block.bindings:
            if not isinstance(binding, relax.VarBinding):
                raise TsirError(f"{binding.var.name}: tsir handles plain bindings, not {type(binding).__name__}")
            name = binding.var.name
            conv.terms[binding.var] = conv.value(binding.value, static_type(binding.var.ty, name), name)
    root = conv.arg(func.body.body)
    if isinstance(root, list):
        root = Term("tuple", tuple(root))
    return Graph(root, inputs, conv.constants, conv.opaque_calls)
