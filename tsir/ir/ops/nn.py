"""Reductions, normalizations and pooling: mean/sum/max/min/variance, cumsum, softmax and safe_softmax,
batch/layer/group norm, max pooling (and global average pooling, read as a mean)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from tsir.ir.ops.relax_args import are_terms, ints
from tsir.ir.registry import Category, OpSpec, TType, numel, register
from tsir.ir.term import Term

TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


# ---- mean and softmax ----------------------------------------------------------------------------
def _infer_mean(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (axes, keepdims) = ins[0], attrs
    if any(not 0 <= a < len(shape) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mean: axes {axes} are not distinct axes of {shape}")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape)), dtype
    return tuple(d for i, d in enumerate(shape) if i not in axes), dtype


def _convert_reduce(name: str):
    def convert(call, args: list, ty) -> Term | None:
        if not are_terms(args[0]):
            return None
        rank = len(args[0].ty[0])
        axes = range(rank) if call.attrs.axis is None else (int(a) % rank for a in call.attrs.axis)
        return Term(name, (args[0],), (tuple(sorted(axes)), bool(call.attrs.keepdims)))

    return convert


def _make_reduce(name: str):
    def make(d, b, x: Term, pool: list[Term]) -> Term:
        return Term(name, (x,), (tuple(d.subset(range(len(x.ty[0])), min_size=1)), d.flag()))

    return make


def _convert_global_pool(call, args: list, ty) -> Term | None:
    """An average pool whose window is the whole image (global pooling) is a mean over its spatial axes."""
    at = call.attrs
    layout = str(at.layout)
    if not are_terms(args[0]) or layout not in ("NCHW", "NHWC") or str(at.out_layout or layout) != layout:
        return None
    spatial = (2, 3) if layout == "NCHW" else (1, 2)
    if tuple(ty[0][i] for i in spatial) != (1, 1):
        return None
    image = tuple(args[0].ty[0][i] for i in spatial)
    if call.op.name == "relax.nn.avg_pool2d" and (any(p < i for p, i in zip(ints(at.pool_size), image, strict=True))
                                                  or any(ints(at.padding))):
        return None  # not one window over the whole image (a larger window without padding is the same mean)
    return Term("mean", (args[0],), (spatial, True))


_GLOBAL_POOLS = {"relax.nn.avg_pool2d": _convert_global_pool, "relax.nn.adaptive_avg_pool2d": _convert_global_pool}

# name -> (numpy reduction, FLOPs per input element); "mean" also has rules of its own (layout)
_REDUCTIONS = {"mean": (np.mean, 1.0), "sum": (np.sum, 1.0), "max": (np.max, 1.0), "min": (np.min, 1.0),
               "variance": (np.var, 3.0)}
for _name, (_fn, _per_element) in _REDUCTIONS.items():
    register(OpSpec(
        _name, 1, ("axes", "keepdims"), Category.REDUCE, _infer_mean,
        lambda xs, a, f=_fn: np.asarray(f(xs[0], axis=tuple(a[0]), keepdims=a[1])).astype(xs[0].dtype),
        lambda ins, out, a, k=_per_element: k * numel(ins[0][0]),
        convert={f"relax.{_name}": _convert_reduce(_name), **(_GLOBAL_POOLS if _name == "mean" else {})},
        emit=lambda a, at, ty, n=_name: getattr(relax.op, n)(a[0], list(at[0]), keepdims=at[1]),
        make=_make_reduce(_name)))


def _infer_cumsum(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, _dtype), (axis, dtype, _exclusive) = ins[0], attrs
    if not 0 <= axis < len(shape):
        raise ValueError(f"cumsum: axis {axis} is out of range for {shape}")
    return shape, dtype


def _eval_cumsum(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    axis, dtype, exclusive = attrs
    out = np.cumsum(xs[0], axis=axis, dtype=dtype)
    return out - xs[0].astype(dtype) if exclusive else out


def _convert_cumsum(call, args: list, ty) -> Term | None:
    """A sum into another dtype reads as the cast, then the sum (one form for torch's and ONNX's exports)."""
    if not are_terms(args[0]) or call.attrs.axis is None:
        return None
    x = args[0] if args[0].ty[1] == ty[1] else Term("astype", (args[0],), (ty[1],))
    return Term("cumsum", (x,), (int(call.attrs.axis) % len(x.ty[0]), ty[1], bool(call.attrs.exclusive)))


register(OpSpec(  # running sums along an axis (position ids from a padding mask)
    "cumsum", 1, ("axis", "dtype", "exclusive"), Category.REDUCE, _infer_cumsum, _eval_cumsum,
    lambda ins, out, a: float(numel(out[0])), convert={"relax.cumsum": _convert_cumsum},
    emit=lambda a, at, ty: relax.op.cumsum(a[0], at[0], at[1], at[2]),
    make=lambda d, b, x, pool: Term("cumsum", (x,), (d.integer(0, len(x.ty[0]) - 1), "float32", d.flag()))))


def _same_axis(ins: tuple[TType, ...], attrs: tuple) -> TType:
    if not 0 <= attrs[0] < len(ins[0][0]):
        raise ValueError(f"axis {attrs[0]} is out of range for {ins[0][0]}")
    return ins[0]


def _eval_softmax(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    e = np.exp(xs[0] - np.max(xs[0], axis=attrs[0], keepdims=True))
    return (e / np.sum(e, axis=attrs[0], keepdims=True)).astype(xs[0].dtype)


register(OpSpec(
    "softmax", 1, ("axis",), Category.REDUCE, _same_axis, _eval_softmax, lambda ins, out, a: 4.0 * numel(out[0]),
    convert={"relax.nn.softmax": lambda call, args, ty: Term(
        "softmax", (args[0],), (int(call.attrs.axis) % len(args[0].ty[0]),))},
    emit=lambda a, at, ty: relax.op.nn.softmax(a[0], at[0]),
    make=lambda d, b, x, pool: Term("softmax", (x,), (len(x.ty[0]) - 1,))))


def _eval_safe_softmax(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    axis, guard = attrs
    with np.errstate(invalid="ignore"):
        s = _eval_softmax(xs, (axis,))
    zeroed = np.isnan(s) if guard == "nan" else np.all(xs[0] == -np.inf, axis=axis, keepdims=True)
    return np.where(zeroed, np.zeros((), s.dtype), s)


def _emit_safe_softmax(a: list, attrs: tuple, ty) -> relax.Expr:
    axis, guard = attrs
    s = relax.op.nn.softmax(a[0], axis)
    zero = relax.const(0.0, ty[1])
    if guard == "nan":
        return relax.op.where(relax.op.isnan(s), zero, s)
    masked = relax.op.astype(relax.op.equal(a[0], relax.const(-np.inf, ty[1])), "int8")
    return relax.op.where(relax.op.astype(relax.op.min(masked, [axis], keepdims=True), "bool"), zero, s)


register(OpSpec(  # softmax whose fully masked rows are 0, not NaN: what exporters write around attention
    "safe_softmax", 1, ("axis", "guard"), Category.REDUCE, _same_axis, _eval_safe_softmax,
    lambda ins, out, a: 5.0 * numel(out[0]), emit=_emit_safe_softmax,
    make=lambda d, b, x, pool: Term("safe_softmax", (x,), (len(x.ty[0]) - 1, d.choice(["masked", "nan"]))),
    missing={"convert": "tsir.ir.idioms reads it from the patterns torch and the ONNX exporter write"}))


# ---- batch norm and layer norm -------------------------------------------------------------------
def _bn_view(vec: np.ndarray, rank: int, axis: int) -> np.ndarray:
    shape = [1] * rank
    shape[axis] = -1
    return vec.reshape(shape)


def _eval_batch_norm(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, gamma, beta, mean, var = xs
    axis, eps = attrs
    scale = gamma / np.sqrt(var + np.float32(eps))
    return (x - _bn_view(mean, x.ndim, axis)) * _bn_view(scale, x.ndim, axis) + _bn_view(beta, x.ndim, axis)


def _convert_batch_norm(call, args: list, ty) -> Term | None:
    """An inference-mode batch norm with scale and center is ``(batch_norm, moving_mean, moving_var)``
    (Relax returns the moving statistics unchanged as outputs 1 and 2)."""
    at = call.attrs
    if at.training or not (at.center and at.scale) or not are_terms(*args):
        return None
    return Term("tuple", (Term("batch_norm", tuple(args), (int(at.axis), float(at.epsilon))), args[3], args[4]))


def _make_batch_norm(d, b, x: Term, pool: list[Term]) -> Term | None:
    if len(x.ty[0]) < 2:
        return None
    c = x.ty[0][1]
    stats = [b.weight((c,)), b.weight((c,)), b.weight((c,)), b.weight((c,), positive=True)]
    return Term("batch_norm", (x, *stats), (1, 1e-5))


register(OpSpec(
    "batch_norm", 5, ("axis", "epsilon"), Category.NORM, lambda ins, a: ins[0], _eval_batch_norm,
    lambda ins, out, a: 2.0 * numel(out[0]), convert={"relax.nn.batch_norm": _convert_batch_norm},
    emit=lambda a, at, ty: relax.TupleGetItem(relax.op.nn.batch_norm(*a, axis=at[0], epsilon=at[1], training=False), 0),
    make=_make_batch_norm))


# TVM's layer norm (a default schedule, reductions along the row): 32 µs for 192x384 (8 FLOP per element) on one
# Zen 4 core, about 6 % of the measured fp32 GEMM peak
TVM_NORM_EFFICIENCY = 0.06


def layer_norm_flops(ins: tuple[TType, ...], out: TType, attrs: tuple) -> float:
    return 8.0 * numel(out[0])


def infer_layer_norm(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, _dtype), (axis, _eps) = ins[0], attrs
    if axis != len(shape) - 1 or ins[1][0] != (shape[-1],) or ins[2][0] != (shape[-1],):
        raise ValueError(f"layer_norm: normalizes the last axis of {shape} with ({shape[-1]},) scale and shift")
    return ins[0]


def evaluate_layer_norm(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, gamma, beta = xs
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.asarray(attrs[1], x.dtype)) * gamma + beta).astype(x.dtype)


def _convert_layer_norm(call, args: list, ty) -> Term | None:
    at = call.attrs
    rank = len(args[0].ty[0])
    if [int(a) % rank for a in at.axes] != [rank - 1] or not (at.center and at.scale) or not are_terms(*args):
        return None
    return Term("layer_norm", tuple(args), (rank - 1, float(at.epsilon)))


def _make_layer_norm(d, b, x: Term, pool: list[Term]) -> Term:
    n = x.ty[0][-1]
    return Term("layer_norm", (x, b.weight((n,)), b.weight((n,))), (len(x.ty[0]) - 1, 1e-5))


register(OpSpec(
    "layer_norm", 3, ("axis", "epsilon"), Category.NORM, infer_layer_norm, evaluate_layer_norm, layer_norm_flops,
    convert={"relax.nn.layer_norm": _convert_layer_norm},
    efficiency=TVM_NORM_EFFICIENCY,
    emit=lambda a, at, ty: relax.op.nn.layer_norm(a[0], a[1], a[2], [at[0]], at[1]), make=_make_layer_norm))


def _infer_group_norm(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, _dtype), (groups, _eps) = ins[0], attrs
    if len(shape) < 3 or shape[1] % groups or ins[1][0] != (shape[1],) or ins[2][0] != (shape[1],):
        raise ValueError(f"group_norm: (N, C, ...) input with C divisible by {groups} and (C,) scale and shift, "
                         f"got {shape}")
    return ins[0]


def _eval_group_norm(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, gamma, beta = xs
    groups, eps = attrs
    grouped = x.reshape(x.shape[0], groups, -1)
    mean = grouped.mean(axis=-1, keepdims=True)
    var = ((grouped - mean) ** 2).mean(axis=-1, keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + np.asarray(eps, x.dtype))).reshape(x.shape)
    view = (1, -1) + (1,) * (x.ndim - 2)
    return (normed * gamma.reshape(view) + beta.reshape(view)).astype(x.dtype)


def _convert_group_norm(call, args: list, ty) -> Term | None:
    at = call.attrs
    rank = len(args[0].ty[0])
    if (int(at.channel_axis) % rank != 1 or sorted(int(a) % rank for a in at.axes) != list(range(2, rank))
            or not (at.center and at.scale) or not are_terms(*args)):
        return None
    return Term("group_norm", tuple(args), (int(at.num_groups), float(at.epsilon)))


def _make_group_norm(d, b, x: Term, pool: list[Term]) -> Term | None:
    if len(x.ty[0]) < 3:
        return None
    c = x.ty[0][1]
    return Term("group_norm", (x, b.weight((c,)), b.weight((c,))), (d.choice([1, c]), 1e-5))


register(OpSpec(  # normalizes groups of channels over their spatial axes (channels on axis 1)
    "group_norm", 3, ("groups", "epsilon"), Category.NORM, _infer_group_norm, _eval_group_norm,
    lambda ins, out, a: 8.0 * numel(out[0]), convert={"relax.nn.group_norm": _convert_group_norm},
    emit=lambda a, at, ty: relax.op.nn.group_norm(a[0], a[1], a[2], at[0], 1, list(range(2, len(ty[0]))), at[1]),
    make=_make_group_norm))


# ---- layouts of 4-D activations ------------------------------------------------------------------
def in_nchw(name: str, infer: Callable[[tuple[TType, ...], tuple], TType]):
    """``infer`` (an NCHW type rule) for an op with a ``layout`` attribute: NHWC inputs and outputs are
    transposed around it."""

    def rule(ins: tuple[TType, ...], attrs: tuple) -> TType:
        (x, dtype), rest = ins[0], ins[1:]
        layout = attrs[-1]
        if layout == "NCHW":
            return infer(ins, attrs)
        if layout != "NHWC" or len(x) != 4:
            raise ValueError(f"{name}: input {x} in layout {layout!r}; NCHW or NHWC 4-D inputs only")
        out, dtype = infer(((tuple(x[i] for i in TO_NCHW), dtype), *rest), attrs)
        return tuple(out[i] for i in TO_NHWC), dtype

    return rule


def in_nchw_eval(evaluate: Callable[[list[np.ndarray], tuple], np.ndarray]):
    """``evaluate`` (NCHW semantics) for an op with a ``layout`` attribute (its last)."""

    def run(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
        if attrs[-1] == "NCHW":
            return evaluate(xs, attrs)
        return np.ascontiguousarray(evaluate([xs[0].transpose(TO_NCHW), *xs[1:]], attrs).transpose(TO_NHWC))

    return run


# ---- max pooling ---------------------------------------------------------------------------------
def _infer_max_pool2d(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (x, dtype), (pool, strides, padding, dilation) = ins[0], attrs[:4]
    if len(x) != 4:
        raise ValueError(f"max_pool2d: input {x} is not NCHW")
    spatial = [(x[2 + i] + padding[i] + padding[i + 2] - dilation[i] * (pool[i] - 1) - 1) // strides[i] + 1
               for i in range(2)]
    if min(spatial) <= 0 or max(padding) >= min(pool):
        raise ValueError(f"max_pool2d: window {pool} (padding {padding}) does not fit input {x[2:]}")
    return (x[0], x[1], *spatial), dtype


def _eval_max_pool2d(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    pool, strides, padding, dilation = attrs[:4]
    x = np.pad(xs[0], ((0, 0), (0, 0), (padding[0], padding[2]), (padding[1], padding[3])),
               constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(
        x, ((pool[0] - 1) * dilation[0] + 1, (pool[1] - 1) * dilation[1] + 1), axis=(2, 3)
    )[:, :, :: strides[0], :: strides[1], :: dilation[0], :: dilation[1]]
    return windows.max(axis=(4, 5)).astype(xs[0].dtype)



def _convert_max_pool2d(call, args: list, ty) -> Term | None:
    at = call.attrs
    layout = str(at.layout)
    if layout not in ("NCHW", "NHWC") or str(at.out_layout or layout) != layout or not are_terms(args[0]):
        return None
    pool, strides, dilation = ints(at.pool_size), ints(at.strides), ints(at.dilation)
    padding = list(ints(at.padding))
    if at.ceil_mode:  # the same windows in floor mode: more padding (-inf) after, up to the declared output size
        nchw = ty[0] if layout == "NCHW" else tuple(ty[0][i] for i in TO_NCHW)
        x = args[0].ty[0] if layout == "NCHW" else tuple(args[0].ty[0][i] for i in TO_NCHW)
        for i in range(2):
            span = dilation[i] * (pool[i] - 1) + 1
            covered = x[2 + i] + padding[i] + padding[i + 2]
            padding[i + 2] += max((nchw[2 + i] - 1) * strides[i] + span - covered, 0)
        if max(padding) >= min(pool):
            return None  # a window would hold padding only
    return Term("max_pool2d", (args[0],), (pool, strides, tuple(padding), dilation, layout))


def _make_max_pool2d(d, b, x: Term, pool: list[Term]) -> Term | None:
    if len(x.ty[0]) != 4:
        return None
    k = d.integer(1, 3)
    return Term("max_pool2d", (x,), ((k, k), (d.integer(1, 2),) * 2, (d.integer(0, k - 1),) * 4, (1, 1), "NCHW"))


register(OpSpec(
    "max_pool2d", 1, ("pool", "strides", "padding", "dilation", "layout"), Category.POOL,
    in_nchw("max_pool2d", _infer_max_pool2d), in_nchw_eval(_eval_max_pool2d),
    lambda ins, out, a: float(numel(ins[0][0])), convert={"relax.nn.max_pool2d": _convert_max_pool2d},
    emit=lambda a, at, ty: relax.op.nn.max_pool2d(a[0], at[0], at[1], at[2], at[3], layout=at[4]),
    make=_make_max_pool2d, layouts=("NCHW", "NHWC")))
