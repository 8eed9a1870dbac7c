"""Relax -> tsir: the dataflow graph of ``main`` becomes a term graph.

``CONVERTERS`` is one table keyed by Relax op name. A converter gets the call and its arguments
(tensor arguments already as terms, a tuple of tensors as a list, anything else as the Relax
expression) and returns a term, or None when the call's attributes are outside what the tsir op
models. A call with no converter, or whose converter returns None, becomes an ``opaque`` term that
keeps its original Relax call, so the model still compiles. Users add ops with ``register_converter``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from tsir.errors import StaticShapeError, TsirError
from tsir.ir.term import Graph, Term

Constant = tvm.ir.expr.GenericConst
Arg = Term | list | relax.Expr
Converter = Callable[[relax.Call, list[Arg]], Term | None]
CONVERTERS: dict[str, Converter] = {}


def register_converter(relax_op: str) -> Callable[[Converter], Converter]:
    """Decorator: convert calls of ``relax_op`` (e.g. ``"relax.nn.relu"``) with the decorated function."""

    def wrap(fn: Converter) -> Converter:
        CONVERTERS[relax_op] = fn
        return fn

    return wrap


def _ints(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _tensors(*args: Arg) -> bool:
    return all(isinstance(a, Term) for a in args)


for _name in ("relu", "sigmoid", "tanh", "sqrt", "exp"):
    _op_name = f"relax.nn.{_name}" if _name == "relu" else f"relax.{_name}"
    CONVERTERS[_op_name] = lambda call, args, n=_name: Term(n, (args[0],)) if _tensors(args[0]) else None

for _name in ("add", "subtract", "multiply", "divide"):
    CONVERTERS[f"relax.{_name}"] = (
        lambda call, args, n=_name: Term(n, tuple(args)) if _tensors(*args) and args[0].ty[1] == args[1].ty[1]
        else None
    )


@register_converter("relax.matmul")
def _matmul(call: relax.Call, args: list[Arg]) -> Term | None:
    a, b = args
    if not _tensors(a, b) or len(a.ty[0]) < 2 or len(b.ty[0]) < 2 or a.ty[1] != b.ty[1]:
        return None
    if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "void", a.ty[1]):  # None: TVMScript
        return None
    return Term("matmul", (a, b))


@register_converter("relax.permute_dims")
def _permute_dims(call: relax.Call, args: list[Arg]) -> Term:
    rank = len(args[0].ty[0])
    axes = call.attrs.axes
    perm = tuple(range(rank))[::-1] if axes is None else tuple(int(a) % rank for a in axes)
    return Term("transpose", (args[0],), (perm,))


@register_converter("relax.reshape")
def _reshape(call: relax.Call, args: list[Arg]) -> Term:
    return Term("reshape", (args[0],), (static_type(call.ty, "reshape")[0],))


@register_converter("relax.concat")
def _concat(call: relax.Call, args: list[Arg]) -> Term | None:
    items = args[0]
    if not isinstance(items, list) or not _tensors(*items) or call.attrs.axis is None:
        return None
    return Term("concat", tuple(items), (int(call.attrs.axis) % len(items[0].ty[0]),))


@register_converter("relax.nn.conv2d")
def _conv2d(call: relax.Call, args: list[Arg]) -> Term | None:
    at = call.attrs
    layouts = (at.data_layout, at.kernel_layout, at.out_layout)
    if layouts != ("NCHW", "OIHW", "NCHW") or str(at.out_dtype) not in ("", "void", "None", args[0].ty[1]):
        return None
    attrs = (_ints(at.strides), _ints(at.padding), _ints(at.dilation), int(at.groups))
    return Term("conv2d", (args[0], args[1]), attrs)


def _prim(expr) -> float | int | None:
    """The literal of a Relax prim value (an IntImm / FloatImm argument), or None."""
    value = getattr(expr, "value", None)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@register_converter("relax.nn.max_pool2d")
def _max_pool2d(call: relax.Call, args: list[Arg]) -> Term | None:
    at = call.attrs
    if at.layout != "NCHW" or (at.out_layout or "NCHW") != "NCHW" or not _tensors(args[0]):
        return None
    pool, strides, dilation = _ints(at.pool_size), _ints(at.strides), _ints(at.dilation)
    padding = list(_ints(at.padding))
    if at.ceil_mode:  # the same windows in floor mode: more padding (-inf) after, up to the declared output size
        out = static_type(call.ty, "max_pool2d")[0][2:]
        for i in range(2):
            span = dilation[i] * (pool[i] - 1) + 1
            covered = args[0].ty[0][2 + i] + padding[i] + padding[i + 2]
            padding[i + 2] += max((out[i] - 1) * strides[i] + span - covered, 0)
        if max(padding) >= min(pool):
            return None  # a window would hold padding only
    return Term("max_pool2d", (args[0],), (pool, strides, tuple(padding), dilation))


@register_converter("relax.nn.pad")
def _pad(call: relax.Call, args: list[Arg]) -> Term | None:
    at = call.attrs
    if at.pad_mode != "constant" or float(at.pad_value) != 0.0 or not _tensors(args[0]):
        return None
    return Term("pad", (args[0],), (_ints(at.pad_width),))


@register_converter("relax.mean")
def _mean(call: relax.Call, args: list[Arg]) -> Term | None:
    rank = len(args[0].ty[0])
    axes = range(rank) if call.attrs.axis is None else (int(a) % rank for a in call.attrs.axis)
    return Term("mean", (args[0],), (tuple(sorted(axes)), bool(call.attrs.keepdims)))


@register_converter("relax.clip")
def _clip(call: relax.Call, args: list[Arg]) -> Term | None:
    low, high = _prim(args[1]), _prim(args[2])
    if low is None or high is None or args[0].ty[1] != "float32":
        return None
    return Term("clip", (args[0],), (float(low), float(high)))


@register_converter("relax.nn.softmax")
def _softmax(call: relax.Call, args: list[Arg]) -> Term:
    return Term("softmax", (args[0],), (int(call.attrs.axis) % len(args[0].ty[0]),))


@register_converter("relax.nn.gelu")
def _gelu(call: relax.Call, args: list[Arg]) -> Term:
    return Term("gelu", (args[0],))


@register_converter("relax.nn.layer_norm")
def _layer_norm(call: relax.Call, args: list[Arg]) -> Term | None:
    at = call.attrs
    rank = len(args[0].ty[0])
    if [int(a) % rank for a in at.axes] != [rank - 1] or not (at.center and at.scale) or not _tensors(*args):
        return None
    return Term("layer_norm", tuple(args), (rank - 1, float(at.epsilon)))


@register_converter("relax.broadcast_to")
def _broadcast_to(call: relax.Call, args: list[Arg]) -> Term:
    return Term("broadcast_to", (args[0],), (static_type(call.ty, "broadcast_to")[0],))


@register_converter("relax.expand_dims")
def _expand_dims(call: relax.Call, args: list[Arg]) -> Term:
    return Term("reshape", (args[0],), (static_type(call.ty, "expand_dims")[0],))


@register_converter("relax.split")
def _split(call: relax.Call, args: list[Arg]) -> Term | None:
    """A split is the tuple of its pieces, each a ``slice`` (so split/concat rules see through it)."""
    shape = args[0].ty[0]
    axis = int(call.attrs.axis) % len(shape)
    sections = call.attrs.indices_or_sections
    if isinstance(sections, (tvm.tirx.IntImm, int)):
        if shape[axis] % int(sections):
            return None
        step = shape[axis] // int(sections)
        cuts = list(range(step, shape[axis], step))
    else:
        cuts = [int(c) for c in sections]
    bounds = [0, *cuts, shape[axis]]
    if any(b >= e for b, e in zip(bounds, bounds[1:], strict=False)):
        return None
    pieces = zip(bounds, bounds[1:], strict=False)
    return Term("tuple", tuple(Term("slice", (args[0],), (axis, b, e)) for b, e in pieces))


@register_converter("relax.strided_slice")
def _strided_slice(call: relax.Call, args: list[Arg]) -> Term | None:
    """A stride-1 slice of one axis; anything else stays opaque."""
    fields = [[_prim(f) for f in a] if isinstance(a, list) else None for a in args[1:]]
    if len(fields) < 3 or any(f is None or len(f) != 1 or None in f for f in fields[:3]):
        return None
    if len(fields) > 3 and fields[3] not in (None, [1]):
        return None
    shape = args[0].ty[0]
    axis = fields[0][0] % len(shape)
    begin, end = (min(max(v + shape[axis] if v < 0 else v, 0), shape[axis]) for v in (fields[1][0], fields[2][0]))
    if begin >= end:
        return None
    return Term("slice", (args[0],), (axis, begin, end))


def _batch_norm(source: Term, index: int, call: relax.Call) -> Term | None:
    """Output 0 of an inference-mode batch norm with scale and center, as a tsir ``batch_norm``."""
    at = call.attrs
    if index != 0 or at.training or not (at.center and at.scale):
        return None
    return Term("batch_norm", source.args, (int(at.axis), float(at.epsilon)))


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

    def arg(self, expr: relax.Expr) -> Arg:
        if isinstance(expr, relax.Var):
            return self.terms[expr]
        if isinstance(expr, Constant):
            if expr not in self.constant_index:
                self.constant_index[expr] = len(self.constants)
                self.constants.append(expr.value.numpy())
            index = self.constant_index[expr]
            return Term("weight", (), (index,), static_type(expr.ty, "constant"))
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
            term = convert(expr, args) if convert else None
            if term is None:
                return self.opaque(expr, ty)
            if term.ty != ty:
                raise AssertionError(f"tsir types {name} = {expr.op.name}(...) as {term.ty}, Relax as {ty}")
            return term
        if isinstance(expr, relax.TupleGetItem):
            source = self.arg(expr.tuple_value)
            if source.op == "tuple":  # a modeled tuple (split's pieces, a pool with its unused indices)
                return source.args[expr.index]
            if source.op == "opaque":
                call = self.opaque_calls[source.attrs[0]].call
                if call.op.name == "relax.nn.batch_norm":
                    folded = _batch_norm(source, expr.index, call)
                    if folded is not None:
                        return folded
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
