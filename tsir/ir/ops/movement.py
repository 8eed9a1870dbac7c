"""Data movement: transpose, reshape, concat, slice (and split), zero padding, broadcast, gathers."""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from tsir.ir.ops.relax_args import are_terms, ints, prim_literal
from tsir.ir.registry import Category, OpSpec, TType, broadcast_shapes, numel, register
from tsir.ir.term import Term

MOVEMENT = Category.MOVEMENT



# ---- transpose -----------------------------------------------------------------------------------
def _infer_transpose(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (perm,) = ins[0], attrs
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"transpose: {perm} is not a permutation of rank {len(shape)}")
    return tuple(shape[i] for i in perm), dtype


def _convert_permute_dims(call, args: list, ty) -> Term:
    rank = len(args[0].ty[0])
    axes = call.attrs.axes
    perm = tuple(range(rank))[::-1] if axes is None else tuple(int(a) % rank for a in axes)
    return Term("transpose", (args[0],), (perm,))


register(OpSpec(
    "transpose", 1, ("perm",), MOVEMENT, _infer_transpose, lambda xs, a: np.transpose(xs[0], a[0]),
    convert={"relax.permute_dims": _convert_permute_dims},
    emit=lambda a, at, ty: relax.op.permute_dims(a[0], list(at[0])),
    make=lambda d, b, x, pool: Term("transpose", (x,), (tuple(d.permutation(range(len(x.ty[0])))),))))


# ---- reshape -------------------------------------------------------------------------------------
def _infer_reshape(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (new_shape,) = ins[0], attrs
    if numel(shape) != numel(new_shape):
        raise ValueError(f"reshape: {shape} has {numel(shape)} elements, {new_shape} has {numel(new_shape)}")
    return tuple(new_shape), dtype


def _make_reshape(d, b, x: Term, pool: list[Term]) -> Term:
    shape = x.ty[0]
    n = math.prod(shape)
    return Term("reshape", (x,), (d.choice([(n,), (1, n), tuple(reversed(shape)), (*shape, 1)]),))


register(OpSpec(
    "reshape", 1, ("shape",), MOVEMENT, _infer_reshape, lambda xs, a: np.reshape(xs[0], a[0]), kernel=False,
    convert={"relax.reshape": lambda call, args, ty: Term("reshape", (args[0],), (ty[0],)),
             "relax.expand_dims": lambda call, args, ty: Term("reshape", (args[0],), (ty[0],)),
             "relax.squeeze": lambda call, args, ty: Term("reshape", (args[0],), (ty[0],))},
    emit=lambda a, at, ty: relax.op.reshape(a[0], list(at[0])), make=_make_reshape))


# ---- concat and slice ----------------------------------------------------------------------------
def _infer_concat(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (axis,) = attrs
    rank = len(ins[0][0])
    axis %= rank
    rest = {s[:axis] + s[axis + 1:] for s, _ in ins}
    if len(rest) != 1:
        raise ValueError(f"concat: shapes {[s for s, _ in ins]} differ outside axis {axis}")
    out = list(ins[0][0])
    out[axis] = sum(s[axis] for s, _ in ins)
    return tuple(out), ins[0][1]


def _convert_concat(call, args: list, ty) -> Term | None:
    items = args[0]
    if not isinstance(items, list) or not are_terms(*items) or call.attrs.axis is None:
        return None
    return Term("concat", tuple(items), (int(call.attrs.axis) % len(items[0].ty[0]),))


def _make_concat(d, b, x: Term, pool: list[Term]) -> Term:
    axis = d.integer(0, len(x.ty[0]) - 1)
    peers = [t for t in pool if t.ty[0][:axis] + t.ty[0][axis + 1:] == x.ty[0][:axis] + x.ty[0][axis + 1:]
             and len(t.ty[0]) == len(x.ty[0])]
    return Term("concat", (x, d.choice(peers)), (axis,))


register(OpSpec(
    "concat", None, ("axis",), MOVEMENT, _infer_concat, lambda xs, a: np.concatenate(xs, axis=a[0]),
    convert={"relax.concat": _convert_concat}, emit=lambda a, at, ty: relax.op.concat(a, axis=at[0]),
    make=_make_concat))


def _infer_slice(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (axis, begin, end) = ins[0], attrs
    if not 0 <= begin < end <= shape[axis]:
        raise ValueError(f"slice: [{begin}, {end}) is out of range for axis {axis} of {shape}")
    out = list(shape)
    out[axis] = end - begin
    return tuple(out), dtype


def _eval_slice(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    axis, begin, end = attrs
    index = [slice(None)] * xs[0].ndim
    index[axis] = slice(begin, end)
    return xs[0][tuple(index)]


def _convert_split(call, args: list, ty) -> Term | None:
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


def _convert_strided_slice(call, args: list, ty) -> Term | None:
    """A slice of one or more axes: one ``slice`` per axis (``strided_slice`` where the step is not 1)."""
    fields = [[prim_literal(f) for f in a] if isinstance(a, list) else None for a in args[1:]]
    if len(fields) < 3 or any(f is None or None in f for f in fields[:3]) or not are_terms(args[0]):
        return None
    axes, begins, ends = fields[:3]
    steps = fields[3] if len(fields) > 3 and fields[3] is not None else [1] * len(axes)
    if None in steps or min(steps) < 1:
        return None
    term, shape = args[0], args[0].ty[0]
    for axis, begin, end, step in zip(axes, begins, ends, steps, strict=True):
        axis %= len(shape)
        begin, end = (min(max(v + shape[axis] if v < 0 else v, 0), shape[axis]) for v in (begin, end))
        if begin >= end:
            return None
        if step != 1:
            term = Term("strided_slice", (term,), (axis, begin, end, step))
        elif (begin, end) != (0, shape[axis]):
            term = Term("slice", (term,), (axis, begin, end))
    return term


def _make_slice(d, b, x: Term, pool: list[Term]) -> Term:
    axis = d.integer(0, len(x.ty[0]) - 1)
    size = x.ty[0][axis]
    begin = d.integer(0, size - 1)
    return Term("slice", (x,), (axis, begin, d.integer(begin + 1, size)))


register(OpSpec(
    "slice", 1, ("axis", "begin", "end"), MOVEMENT, _infer_slice, _eval_slice,
    convert={"relax.strided_slice": _convert_strided_slice, "relax.split": _convert_split},
    emit=lambda a, at, ty: relax.op.strided_slice(a[0], axes=[at[0]], begin=[at[1]], end=[at[2]]),
    make=_make_slice))


def _infer_strided_slice(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (axis, begin, end, step) = ins[0], attrs
    if not 0 <= begin < end <= shape[axis] or step < 2:
        raise ValueError(f"strided_slice: [{begin}, {end}) step {step} does not fit axis {axis} of {shape}")
    out = list(shape)
    out[axis] = len(range(begin, end, step))
    return tuple(out), dtype


def _eval_strided_slice(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    axis, begin, end, step = attrs
    index = [slice(None)] * xs[0].ndim
    index[axis] = slice(begin, end, step)
    return np.ascontiguousarray(xs[0][tuple(index)])


def _make_strided_slice(d, b, x: Term, pool: list[Term]) -> Term | None:
    axis = d.integer(0, len(x.ty[0]) - 1)
    size = x.ty[0][axis]
    if size < 2:
        return None
    return Term("strided_slice", (x,), (axis, d.integer(0, 1), size, d.integer(2, 3)))


register(OpSpec(  # every step-th element of one axis (patch merging); the step is 2 or more
    "strided_slice", 1, ("axis", "begin", "end", "step"), MOVEMENT, _infer_strided_slice, _eval_strided_slice,
    emit=lambda a, at, ty: relax.op.strided_slice(a[0], axes=[at[0]], begin=[at[1]], end=[at[2]], strides=[at[3]]),
    make=_make_strided_slice, missing={"convert": "made by slice's strided_slice converter"}))


# ---- pad and broadcast ---------------------------------------------------------------------------
def _infer_pad(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (widths,) = ins[0], attrs
    if len(widths) != 2 * len(shape) or min(widths) < 0:
        raise ValueError(f"pad: widths {widths} must be (before, after) non-negative ints per axis of {shape}")
    return tuple(d + widths[2 * i] + widths[2 * i + 1] for i, d in enumerate(shape)), dtype


def _convert_pad(call, args: list, ty) -> Term | None:
    at = call.attrs
    if at.pad_mode != "constant" or float(at.pad_value) != 0.0 or not are_terms(args[0]):
        return None
    return Term("pad", (args[0],), (ints(at.pad_width),))


def _make_pad(d, b, x: Term, pool: list[Term]) -> Term:
    widths = [0] * (2 * len(x.ty[0]))
    for i in range(max(0, len(widths) - 4), len(widths)):
        widths[i] = d.integer(0, 1)
    return Term("pad", (x,), (tuple(widths),))


register(OpSpec(  # zero padding; widths = (before0, after0, before1, after1, ...)
    "pad", 1, ("widths",), MOVEMENT, _infer_pad,
    lambda xs, a: np.pad(xs[0], [(a[0][2 * i], a[0][2 * i + 1]) for i in range(xs[0].ndim)]),
    convert={"relax.nn.pad": _convert_pad}, emit=lambda a, at, ty: relax.op.nn.pad(a[0], list(at[0])),
    make=_make_pad))


def _infer_broadcast_to(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (target,) = ins[0], attrs
    if broadcast_shapes(shape, target) != tuple(target):
        raise ValueError(f"broadcast_to: {shape} does not broadcast to {target}")
    return tuple(target), dtype


def _filled(value: Term, ty) -> Term:
    """A tensor of type ``ty`` filled with the 0-d ``value``: a constant, folded before run time."""
    if value.ty[1] != ty[1]:
        value = Term("astype", (value,), (ty[1],))
    return Term("broadcast_to", (value,), (ty[0],))


# Relax's fills (full, full_like, zeros, ones and their _like forms) are a broadcast scalar; a _like fill
# reads only its argument's type, so the fill is constant whatever the argument
_FILLS = {
    "relax.full": lambda call, args, ty: _filled(args[1], ty) if are_terms(args[1]) else None,
    "relax.full_like": lambda call, args, ty: _filled(args[1], ty) if are_terms(args[1]) else None,
    **{f"relax.{kind}{like}": lambda call, args, ty, v=value: _filled(Term("scalar", (), (v,)), ty)
       for kind, value in (("zeros", 0.0), ("ones", 1.0)) for like in ("", "_like")},
}

register(OpSpec(
    "broadcast_to", 1, ("shape",), MOVEMENT, _infer_broadcast_to, lambda xs, a: np.broadcast_to(xs[0], a[0]).copy(),
    convert={"relax.broadcast_to": lambda call, args, ty: Term("broadcast_to", (args[0],), (ty[0],)), **_FILLS},
    emit=lambda a, at, ty: relax.op.broadcast_to(a[0], list(at[0])),
    make=lambda d, b, x, pool: Term("broadcast_to", (x,), ((d.integer(1, 3), *x.ty[0]),))))


# ---- gathers: take (embeddings), gather_elements, index_tensor -------------------------------------
def _infer_take(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (indices, index_dtype), (axis,) = ins[0], ins[1], attrs
    if not index_dtype.startswith(("int", "uint")) or not 0 <= axis < len(shape):
        raise ValueError(f"take: integer indices along an axis of {shape}, got {index_dtype} along {axis}")
    return (*shape[:axis], *indices, *shape[axis + 1:]), dtype


def _convert_take(call, args: list, ty) -> Term | None:
    if not are_terms(*args) or call.attrs.axis is None or str(call.attrs.mode) != "fast":
        return None
    return Term("take", tuple(args), (int(call.attrs.axis) % len(args[0].ty[0]),))


def _make_take(d, b, x: Term, pool: list[Term]) -> Term:
    axis = d.integer(0, len(x.ty[0]) - 1)
    return Term("take", (x, b.indices((d.integer(1, 3),), x.ty[0][axis], negative=True)), (axis,))


# take(x, i, axis): indices in -n..n-1, a negative one counting from the end (numpy's and ONNX Gather's
# meaning; torch's embedding takes 0..n-1 only), so ONNX's wrap of negative indices is the op itself
register(OpSpec(
    "take", 2, ("axis",), MOVEMENT, _infer_take, lambda xs, a: np.take(xs[0], xs[1], axis=a[0]),
    convert={"relax.take": _convert_take}, emit=lambda a, at, ty: relax.op.take(a[0], a[1], at[0], mode="wrap"),
    make=_make_take))


def _infer_gather_elements(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (indices, index_dtype), _axis = ins[0], ins[1], attrs
    if len(indices) != len(shape) or not index_dtype.startswith(("int", "uint")):
        raise ValueError(f"gather_elements: integer indices of the rank of {shape}, got {indices} {index_dtype}")
    return indices, dtype


def _make_gather_elements(d, b, x: Term, pool: list[Term]) -> Term:
    axis = d.integer(0, len(x.ty[0]) - 1)
    return Term("gather_elements", (x, b.indices(x.ty[0], x.ty[0][axis], negative=True)), (axis,))


def _emit_gather_elements(a: list, at: tuple, ty) -> relax.Expr:
    """Relax's gather_elements reads indices 0..n-1: a negative one is wrapped first."""
    (x, i), (axis,) = a, at
    n = relax.const(int(x.ty.shape[axis]), i.ty.dtype)
    wrapped = relax.op.where(relax.op.less(i, relax.const(0, i.ty.dtype)), relax.op.add(i, n), i)
    return relax.op.gather_elements(x, wrapped, axis)


# gather_elements(x, i, axis): like take, indices in -n..n-1 (ONNX GatherElements' meaning)
register(OpSpec(
    "gather_elements", 2, ("axis",), MOVEMENT, _infer_gather_elements,
    lambda xs, a: np.take_along_axis(xs[0], xs[1], axis=a[0]),
    convert={"relax.gather_elements": lambda call, args, ty: Term(
        "gather_elements", tuple(args), (int(call.attrs.axis) % len(args[0].ty[0]),)) if are_terms(*args) else None},
    emit=_emit_gather_elements, make=_make_gather_elements))


def _infer_index_tensor(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), indices = ins[0], ins[1:]
    if not indices or len(indices) > len(shape) or any(not t.startswith(("int", "uint")) for _, t in indices):
        raise ValueError(f"index_tensor: 1 to {len(shape)} integer index tensors, got {indices}")
    return (*broadcast_shapes(*(s for s, _ in indices)), *shape[len(indices):]), dtype


def _convert_index_tensor(call, args: list, ty) -> Term | None:
    if not are_terms(args[0]) or not isinstance(args[1], list) or not are_terms(*args[1]):
        return None
    return Term("index_tensor", (args[0], *args[1]))


register(OpSpec(  # x[i0, i1, ...]: numpy's advanced indexing by broadcasting integer tensors
    "index_tensor", None, (), MOVEMENT, _infer_index_tensor, lambda xs, a: xs[0][tuple(xs[1:])],
    convert={"relax.index_tensor": _convert_index_tensor},
    emit=lambda a, at, ty: relax.op.index_tensor(a[0], relax.Tuple(a[1:])),
    make=lambda d, b, x, pool: Term("index_tensor", (x, b.indices((d.integer(1, 3),), x.ty[0][0])))))

