"""The tsir op table: for every modeled op, its attributes, type rule, numpy semantics and FLOP count.

A type is ``(shape, dtype)``. Attribute values are plain Python literals (ints, floats, strings, tuples)
so they survive the round trip through the e-graph unchanged. The numpy semantics are the reference
that rewrite tests and constant folding use; they follow Relax's definition of each op.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Shape = tuple[int, ...]
TType = tuple[Shape, str]


@dataclass(frozen=True)
class OpSpec:
    """One tsir op: ``arity`` tensor children (None: one variadic list), then named attributes."""

    name: str
    arity: int | None
    attrs: tuple[str, ...]
    infer: Callable[[tuple[TType, ...], tuple], TType] | None
    evaluate: Callable[[list[np.ndarray], tuple], np.ndarray] | None
    flops: Callable[[tuple[TType, ...], TType, tuple], float] = lambda ins, out, attrs: 0.0
    kernel: bool = True  # False: costs nothing at run time (views, leaves, tuples)


OPS: dict[str, OpSpec] = {}
# Ops whose value exists only at run time (or, for tuple, is no tensor to fold): never constant-folded.
RUNTIME_ONLY = frozenset({"input", "opaque", "get_item", "tuple"})


def _op(spec: OpSpec) -> OpSpec:
    OPS[spec.name] = spec
    return spec


def numel(shape: Shape) -> int:
    return math.prod(shape)


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy/Relax broadcasting; raises ValueError when the shapes do not broadcast."""
    return tuple(np.broadcast_shapes(*shapes))


# ---- leaves: their type is given when they are created ----------------------------------------
_op(OpSpec("input", 0, ("name",), None, None, kernel=False))  # a function parameter
_op(OpSpec("weight", 0, ("index",), None, None, kernel=False))  # an entry of the constant table
_op(OpSpec("scalar", 0, ("value",), lambda ins, a: ((), "float32"),
           lambda xs, a: np.array(a[0], dtype="float32"), kernel=False))
_op(OpSpec("opaque", None, ("key",), None, None))  # a Relax call tsir does not model; type given
_op(OpSpec("get_item", 1, ("index",), None, None, kernel=False))  # element of a tuple-valued opaque node
_op(OpSpec("tuple", None, (), lambda ins, a: ins, lambda xs, a: tuple(xs), kernel=False))

# ---- elementwise ---------------------------------------------------------------------------------
_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda x: np.maximum(x, 0).astype(x.dtype),
    "sigmoid": lambda x: (1 / (1 + np.exp(-x))).astype(x.dtype),
    "tanh": np.tanh,
    "sqrt": np.sqrt,
    "exp": np.exp,
}
for _name, _fn in _UNARY.items():
    _op(OpSpec(_name, 1, (), lambda ins, a: ins[0], lambda xs, a, f=_fn: f(xs[0]),
               lambda ins, out, a: float(numel(out[0]))))

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.divide,
}
for _name, _fn in _BINARY.items():
    _op(OpSpec(_name, 2, (), lambda ins, a: (broadcast_shapes(ins[0][0], ins[1][0]), ins[0][1]),
               lambda xs, a, f=_fn: f(xs[0], xs[1]).astype(xs[0].dtype),
               lambda ins, out, a: float(numel(out[0]))))


# ---- layout --------------------------------------------------------------------------------------
def _infer_transpose(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (perm,) = ins[0], attrs
    if sorted(perm) != list(range(len(shape))):
        raise ValueError(f"transpose: {perm} is not a permutation of rank {len(shape)}")
    return tuple(shape[i] for i in perm), dtype


def _infer_reshape(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (new_shape,) = ins[0], attrs
    if numel(shape) != numel(new_shape):
        raise ValueError(f"reshape: {shape} has {numel(shape)} elements, {new_shape} has {numel(new_shape)}")
    return tuple(new_shape), dtype


_op(OpSpec("transpose", 1, ("perm",), _infer_transpose, lambda xs, a: np.transpose(xs[0], a[0])))
_op(OpSpec("reshape", 1, ("shape",), _infer_reshape, lambda xs, a: np.reshape(xs[0], a[0]), kernel=False))


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


_op(OpSpec("concat", None, ("axis",), _infer_concat, lambda xs, a: np.concatenate(xs, axis=a[0])))
_op(OpSpec("slice", 1, ("axis", "begin", "end"), _infer_slice, _eval_slice))


# ---- contractions --------------------------------------------------------------------------------
def _infer_matmul(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (a, dtype), (b, _) = ins[0], ins[1]
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise ValueError(f"matmul: shapes {a} and {b} do not contract")
    return broadcast_shapes(a[:-2], b[:-2]) + (a[-2], b[-1]), dtype


def _matmul_flops(ins: tuple[TType, ...], out: TType, attrs: tuple) -> float:
    return 2.0 * numel(out[0]) * ins[0][0][-1]


def _infer_linear(ins: tuple[TType, ...], attrs: tuple) -> TType:
    out = _infer_matmul(ins[:2], ())
    bias = ins[2][0]
    if broadcast_shapes(out[0], bias) != out[0] or numel(bias) != out[0][-1]:
        raise ValueError(f"linear: bias {bias} must broadcast along the last axis of {out[0]}")
    return out


_op(OpSpec("matmul", 2, (), _infer_matmul, lambda xs, a: np.matmul(xs[0], xs[1]), _matmul_flops))
_op(OpSpec("linear", 3, (), _infer_linear, lambda xs, a: np.matmul(xs[0], xs[1]) + xs[2], _matmul_flops))


def _infer_conv2d(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (x, dtype), (w, _) = ins[0], ins[1]
    strides, padding, dilation, groups = attrs
    if len(x) != 4 or len(w) != 4 or x[1] != w[1] * groups or w[0] % groups:
        raise ValueError(f"conv2d: input {x} and weight {w} do not match with groups={groups}")
    spatial = []
    for i in range(2):
        span = dilation[i] * (w[2 + i] - 1) + 1
        spatial.append((x[2 + i] + padding[i] + padding[i + 2] - span) // strides[i] + 1)
    if min(spatial) <= 0:
        raise ValueError(f"conv2d: kernel {w[2:]} (dilation {dilation}) does not fit input {x[2:]}")
    return (x[0], w[0], *spatial), dtype


def _eval_conv2d(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, w = xs
    strides, padding, dilation, groups = attrs
    x = np.pad(x, ((0, 0), (0, 0), (padding[0], padding[2]), (padding[1], padding[3])))
    out_c, in_per_group, kh, kw = w.shape
    windows = np.lib.stride_tricks.sliding_window_view(
        x, ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), axis=(2, 3)
    )[:, :, :: strides[0], :: strides[1], :: dilation[0], :: dilation[1]]
    per_group = out_c // groups
    outs = []
    for g in range(groups):
        xg = windows[:, g * in_per_group:(g + 1) * in_per_group]
        wg = w[g * per_group:(g + 1) * per_group]
        outs.append(np.einsum("nchwij,ocij->nohw", xg, wg, optimize=True))
    return np.concatenate(outs, axis=1).astype(xs[0].dtype)


def _conv2d_flops(ins: tuple[TType, ...], out: TType, attrs: tuple) -> float:
    w = ins[1][0]
    return 2.0 * numel(out[0]) * w[1] * w[2] * w[3]


_op(OpSpec("conv2d", 2, ("strides", "padding", "dilation", "groups"), _infer_conv2d, _eval_conv2d,
           _conv2d_flops))


# ---- normalization -------------------------------------------------------------------------------
def _bn_view(vec: np.ndarray, rank: int, axis: int) -> np.ndarray:
    shape = [1] * rank
    shape[axis] = -1
    return vec.reshape(shape)


def _eval_batch_norm(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, gamma, beta, mean, var = xs
    axis, eps = attrs
    scale = gamma / np.sqrt(var + np.float32(eps))
    return (x - _bn_view(mean, x.ndim, axis)) * _bn_view(scale, x.ndim, axis) + _bn_view(beta, x.ndim, axis)


_op(OpSpec("batch_norm", 5, ("axis", "epsilon"), lambda ins, a: ins[0], _eval_batch_norm,
           lambda ins, out, a: 2.0 * numel(out[0])))


def evaluate(op: str, inputs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    """Run one op on numpy arrays with its reference semantics."""
    spec = OPS[op]
    if spec.evaluate is None:
        raise ValueError(f"op {op!r} has no reference semantics")
    return spec.evaluate(inputs, attrs)


# ---- ops added for the zoo and the rule families -------------------------------------------------
def _infer_max_pool2d(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (x, dtype), (pool, strides, padding, dilation) = ins[0], attrs
    if len(x) != 4:
        raise ValueError(f"max_pool2d: input {x} is not NCHW")
    spatial = [(x[2 + i] + padding[i] + padding[i + 2] - dilation[i] * (pool[i] - 1) - 1) // strides[i] + 1
               for i in range(2)]
    if min(spatial) <= 0 or max(padding) >= min(pool):
        raise ValueError(f"max_pool2d: window {pool} (padding {padding}) does not fit input {x[2:]}")
    return (x[0], x[1], *spatial), dtype


def _eval_max_pool2d(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    pool, strides, padding, dilation = attrs
    x = np.pad(xs[0], ((0, 0), (0, 0), (padding[0], padding[2]), (padding[1], padding[3])),
               constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(
        x, ((pool[0] - 1) * dilation[0] + 1, (pool[1] - 1) * dilation[1] + 1), axis=(2, 3)
    )[:, :, :: strides[0], :: strides[1], :: dilation[0], :: dilation[1]]
    return windows.max(axis=(4, 5)).astype(xs[0].dtype)


_op(OpSpec("max_pool2d", 1, ("pool", "strides", "padding", "dilation"), _infer_max_pool2d, _eval_max_pool2d,
           lambda ins, out, a: float(numel(ins[0][0]))))  # the cost model passes no attributes
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def _nhwc_infer(name: str, infer: Callable[[tuple[TType, ...], tuple], TType]):
    """The type rule of ``name``: ``infer`` (an NCHW op's rule) on an NHWC first input, its output NHWC."""
    def rule(ins: tuple[TType, ...], attrs: tuple) -> TType:
        (x, dtype), rest = ins[0], ins[1:]
        if len(x) != 4:
            raise ValueError(f"{name}: input {x} is not NHWC")
        out, dtype = infer(((tuple(x[i] for i in TO_NCHW), dtype), *rest), attrs)
        return tuple(out[i] for i in TO_NHWC), dtype

    return rule


def _nhwc_eval(evaluate: Callable[[list[np.ndarray], tuple], np.ndarray]):
    """``evaluate`` (an NCHW op's semantics) on an NHWC first input, its output NHWC."""
    return lambda xs, a: np.ascontiguousarray(evaluate([xs[0].transpose(TO_NCHW), *xs[1:]], a).transpose(TO_NHWC))


_op(OpSpec("max_pool2d_nhwc", 1, ("pool", "strides", "padding", "dilation"),
           _nhwc_infer("max_pool2d_nhwc", _infer_max_pool2d), _nhwc_eval(_eval_max_pool2d),
           lambda ins, out, a: float(numel(ins[0][0]))))


def _infer_pad(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (widths,) = ins[0], attrs
    if len(widths) != 2 * len(shape) or min(widths) < 0:
        raise ValueError(f"pad: widths {widths} must be (before, after) non-negative ints per axis of {shape}")
    return tuple(d + widths[2 * i] + widths[2 * i + 1] for i, d in enumerate(shape)), dtype


_op(OpSpec("pad", 1, ("widths",), _infer_pad,  # zero padding; widths = (before0, after0, before1, after1, ...)
           lambda xs, a: np.pad(xs[0], [(a[0][2 * i], a[0][2 * i + 1]) for i in range(xs[0].ndim)])))


def _infer_mean(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (axes, keepdims) = ins[0], attrs
    if any(not 0 <= a < len(shape) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"mean: axes {axes} are not distinct axes of {shape}")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape)), dtype
    return tuple(d for i, d in enumerate(shape) if i not in axes), dtype


_op(OpSpec("mean", 1, ("axes", "keepdims"), _infer_mean,
           lambda xs, a: np.mean(xs[0], axis=tuple(a[0]), keepdims=a[1]).astype(xs[0].dtype),
           lambda ins, out, a: float(numel(ins[0][0]))))
_op(OpSpec("clip", 1, ("low", "high"), lambda ins, a: ins[0],
           lambda xs, a: np.clip(xs[0], a[0], a[1]).astype(xs[0].dtype),
           lambda ins, out, a: float(numel(out[0]))))


def _same_axis(ins: tuple[TType, ...], attrs: tuple) -> TType:
    if not 0 <= attrs[0] < len(ins[0][0]):
        raise ValueError(f"axis {attrs[0]} is out of range for {ins[0][0]}")
    return ins[0]


def _eval_softmax(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    e = np.exp(xs[0] - np.max(xs[0], axis=attrs[0], keepdims=True))
    return (e / np.sum(e, axis=attrs[0], keepdims=True)).astype(xs[0].dtype)


_op(OpSpec("softmax", 1, ("axis",), _same_axis, _eval_softmax, lambda ins, out, a: 4.0 * numel(out[0])))


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


_op(OpSpec("gelu", 1, (), lambda ins, a: ins[0],
           lambda xs, a: (0.5 * xs[0] * (1 + _erf(xs[0] / np.sqrt(2)))).astype(xs[0].dtype),
           lambda ins, out, a: 8.0 * numel(out[0])))


def _infer_layer_norm(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, _dtype), (axis, _eps) = ins[0], attrs
    if axis != len(shape) - 1 or ins[1][0] != (shape[-1],) or ins[2][0] != (shape[-1],):
        raise ValueError(f"layer_norm: normalizes the last axis of {shape} with ({shape[-1]},) scale and shift")
    return ins[0]


def _eval_layer_norm(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    x, gamma, beta = xs
    mean = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.asarray(attrs[1], x.dtype)) * gamma + beta).astype(x.dtype)


_op(OpSpec("layer_norm", 3, ("axis", "epsilon"), _infer_layer_norm, _eval_layer_norm,
           lambda ins, out, a: 8.0 * numel(out[0])))


def _infer_broadcast_to(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (shape, dtype), (target,) = ins[0], attrs
    if broadcast_shapes(shape, target) != tuple(target):
        raise ValueError(f"broadcast_to: {shape} does not broadcast to {target}")
    return tuple(target), dtype


_op(OpSpec("broadcast_to", 1, ("shape",), _infer_broadcast_to,
           lambda xs, a: np.broadcast_to(xs[0], a[0]).copy()))
# ---- vendor-library kernels (oneDNN, backends/native/dnnl): same values as the TVM ops they replace ----
def _infer_dnnl_linear(ins: tuple[TType, ...], attrs: tuple) -> TType:
    if len(ins[1][0]) != 2:
        raise ValueError(f"dnnl_linear: weight {ins[1][0]} must be [K, N]")
    return _infer_linear(ins, ())


def _infer_dnnl_conv2d(ins: tuple[TType, ...], attrs: tuple) -> TType:
    out = _infer_conv2d(ins[:2], attrs[:4])
    if numel(ins[2][0]) != out[0][1]:
        raise ValueError(f"dnnl_conv2d: bias {ins[2][0]} must have one value per output channel ({out[0][1]})")
    return out


def _act(x: np.ndarray, act: bool | tuple[float, float]) -> np.ndarray:
    """A library op's fused activation: none (False), ReLU (True) or clip to ``(low, high)`` (e.g. ReLU6)."""
    if isinstance(act, tuple):
        return np.clip(x, act[0], act[1]).astype(x.dtype)
    return np.maximum(x, 0).astype(x.dtype) if act else x


def _eval_dnnl_conv2d(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    out = _eval_conv2d(xs[:2], attrs[:4])
    return _act(out + xs[2].reshape(1, -1, 1, 1), attrs[4])


_op(OpSpec("dnnl_matmul", 2, (), _infer_matmul, lambda xs, a: np.matmul(xs[0], xs[1]), _matmul_flops))
_op(OpSpec("dnnl_linear", 3, ("relu",), _infer_dnnl_linear,
           lambda xs, a: _act(np.matmul(xs[0], xs[1]) + xs[2], a[0]), _matmul_flops))
_op(OpSpec("dnnl_conv2d", 3, ("strides", "padding", "dilation", "groups", "act"), _infer_dnnl_conv2d,
           _eval_dnnl_conv2d, _conv2d_flops))
_op(OpSpec("dnnl_conv2d_nhwc", 3, ("strides", "padding", "dilation", "groups", "act"),
           _nhwc_infer("dnnl_conv2d_nhwc", _infer_dnnl_conv2d), _nhwc_eval(_eval_dnnl_conv2d), _conv2d_flops))
LIBRARY_OPS = frozenset({"dnnl_matmul", "dnnl_linear", "dnnl_conv2d", "dnnl_conv2d_nhwc"})
