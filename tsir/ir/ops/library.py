"""Vendor-library kernels (oneDNN, backends/native/dnnl): the same values as the TVM ops they replace.

Each lowers to ``R.call_dps_packed("tsir.dnnl.*", ...)`` (destination-passing; ``tsir.backends.dnnl.load()``
must have run in the process that executes the module). ``dnnl_conv2d`` carries its activations'
layout as its last attribute: ``"NCHW"`` (oneDNN reorders into its blocked layout and back inside the
call) or ``"NHWC"`` (no reorders; weights stay OIHW). ``dnnl_conv2d_add`` (NHWC only) also adds a residual
tensor before the activation, as a oneDNN post-op: a ResNet block's last conv, its sum and its ReLU in one call.
"""

from __future__ import annotations

import struct

import numpy as np
import tvm
from tvm import relax

from tsir.ir.ops.contraction import conv_evaluate, conv_flops, conv_infer, infer_linear, infer_matmul, matmul_flops
from tsir.ir.ops.nn import (
    TVM_NORM_EFFICIENCY,
    evaluate_layer_norm,
    in_nchw,
    in_nchw_eval,
    infer_layer_norm,
    layer_norm_flops,
)
from tsir.ir.registry import Category, OpSpec, TType, numel, register

LIBRARY = Category.LIBRARY
# oneDNN's layer normalization: 17 µs for 192x384 (8 FLOP per element) on one Zen 4 core, 2.0x TVM's kernel
LIBRARY_NORM_EFFICIENCY = 2.0 * TVM_NORM_EFFICIENCY
_RULES_ONLY = "made only by the library rules (rewrites/library.py), never imported from Relax"
_NOT_DRAWN = "the fuzzer reaches it through the library rules from its TVM op"


def _dps(func: str, out_ty: tuple, *args: relax.Expr) -> relax.Expr:
    """``R.call_dps_packed(func, args)`` writing a fresh tensor of type ``out_ty``."""
    return relax.call_dps_packed(func, relax.Tuple(list(args)), relax.TensorType(list(out_ty[0]), out_ty[1]))


def _int(value: int) -> relax.Expr:
    return relax.prim_value(int(value), "int64")


def _const(weight: relax.Expr) -> relax.Expr:
    """``const_w`` of a library call: 1 when the weights are a Relax constant (oneDNN packs them once)."""
    return _int(isinstance(weight, tvm.ir.expr.Constant))


def _act(x: np.ndarray, act: bool | tuple[float, float]) -> np.ndarray:
    """A library op's fused activation: none (False), ReLU (True) or clip to ``(low, high)`` (e.g. ReLU6)."""
    if isinstance(act, tuple):
        return np.clip(x, act[0], act[1]).astype(x.dtype)
    return np.maximum(x, 0).astype(x.dtype) if act else x


# ---- matmul and linear ---------------------------------------------------------------------------
def _infer_dnnl_linear(ins: tuple[TType, ...], attrs: tuple) -> TType:
    if len(ins[1][0]) != 2:
        raise ValueError(f"dnnl_linear: weight {ins[1][0]} must be [K, N]")
    return infer_linear(ins, ())


register(OpSpec(
    "dnnl_matmul", 2, (), LIBRARY, infer_matmul, lambda xs, a: np.matmul(xs[0], xs[1]), matmul_flops,
    emit=lambda a, at, ty: _dps("tsir.dnnl.matmul", ty, a[0], a[1]), weight="KN", efficiency=0.85,
    library=lambda layout: "tsir.dnnl.matmul", missing={"convert": _RULES_ONLY, "make": _NOT_DRAWN}))
register(OpSpec(
    "dnnl_linear", 3, ("relu",), LIBRARY, _infer_dnnl_linear,
    lambda xs, a: _act(np.matmul(xs[0], xs[1]) + xs[2], a[0]), matmul_flops,
    emit=lambda a, at, ty: _dps("tsir.dnnl.linear", ty, *a, _int(at[0]), _const(a[1])), weight="KN",
    efficiency=0.85, library=lambda layout: "tsir.dnnl.linear", missing={"convert": _RULES_ONLY, "make": _NOT_DRAWN}))


# ---- conv2d (bias and activation fused) ----------------------------------------------------------
_infer_nchw_conv2d = conv_infer("dnnl_conv2d", 2)
_eval_nchw_conv2d = conv_evaluate(2)


def _infer_dnnl_conv2d(ins: tuple[TType, ...], attrs: tuple) -> TType:
    out = _infer_nchw_conv2d(ins[:2], attrs[:4])
    if numel(ins[2][0]) != out[0][1]:
        raise ValueError(f"dnnl_conv2d: bias {ins[2][0]} must have one value per output channel ({out[0][1]})")
    return out


def _eval_dnnl_conv2d(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    out = _eval_nchw_conv2d(xs[:2], attrs[:4])
    return _act(out + xs[2].reshape(1, -1, 1, 1), attrs[4])


def float_bits(value: float) -> int:
    """A float64 as its bit pattern in an int64: how library calls take float attributes (the Relax VM keeps
    int arguments as constants but computes a float one with a host function, ``compute_symbolic_expr``,
    on every call)."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def conv_activation(act: bool | tuple[float, float]) -> tuple[int, int, int]:
    """A library conv's activation as call arguments ``(code, low, high)``: 0 none, 1 ReLU, 2 clip to [low, high],
    the bounds as ``float_bits``."""
    code, (low, high) = (2, act) if isinstance(act, tuple) else (int(bool(act)), (0.0, 0.0))
    return code, float_bits(low), float_bits(high)


def _conv_args(attrs: tuple) -> list[relax.Expr]:
    """A library conv's attributes as call arguments: strides, padding, dilation, groups, then its activation
    (``conv_activation``)."""
    strides, padding, dilation, groups, act = attrs[:5]
    return [_int(v) for v in (*strides, *padding, *dilation, groups, *conv_activation(act))]


def _conv2d_symbol(layout: str | None) -> str:
    return "tsir.dnnl.conv2d_nhwc" if layout == "NHWC" else "tsir.dnnl.conv2d"


register(OpSpec(
    "dnnl_conv2d", 3, ("strides", "padding", "dilation", "groups", "act", "layout"), LIBRARY,
    in_nchw("dnnl_conv2d", _infer_dnnl_conv2d), in_nchw_eval(_eval_dnnl_conv2d), conv_flops,
    emit=lambda a, at, ty: _dps(_conv2d_symbol(at[5]), ty, *a, *_conv_args(at), _const(a[1])),
    layouts=("NCHW", "NHWC"), weight="OIHW", efficiency=0.8, library=_conv2d_symbol,
    reorders=frozenset({"NCHW"}),  # oneDNN computes an NCHW conv in a blocked layout (nChw16c or NHWC)
    missing={"convert": _RULES_ONLY, "make": _NOT_DRAWN}))


# ---- conv2d with a residual added (NHWC): act(conv2d(x, w) + bias + r) ----------------------------
_infer_conv2d_in_layout = in_nchw("dnnl_conv2d_add", _infer_dnnl_conv2d)
_eval_conv2d_in_layout = in_nchw_eval(_eval_dnnl_conv2d)


def _infer_dnnl_conv2d_add(ins: tuple[TType, ...], attrs: tuple) -> TType:
    if attrs[-1] != "NHWC":
        raise ValueError(f"dnnl_conv2d_add: layout {attrs[-1]!r}; only NHWC (oneDNN's brgemm layout)")
    out = _infer_conv2d_in_layout(ins[:3], attrs)
    if tuple(ins[3][0]) != tuple(out[0]) or ins[3][1] != out[1]:
        raise ValueError(f"dnnl_conv2d_add: residual {ins[3]} must have the output's type {out}")
    return out


def _eval_dnnl_conv2d_add(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    conv = _eval_conv2d_in_layout(xs[:3], (*attrs[:4], False, attrs[5]))
    return _act(conv + xs[3], attrs[4])


register(OpSpec(
    "dnnl_conv2d_add", 4, ("strides", "padding", "dilation", "groups", "act", "layout"), LIBRARY,
    _infer_dnnl_conv2d_add, _eval_dnnl_conv2d_add, conv_flops,
    emit=lambda a, at, ty: _dps("tsir.dnnl.conv2d_nhwc_add", ty, *a, *_conv_args(at), _const(a[1])),
    layouts=("NHWC",), weight="OIHW", efficiency=0.8, library=lambda layout: "tsir.dnnl.conv2d_nhwc_add",
    missing={"convert": _RULES_ONLY, "make": _NOT_DRAWN}))


# ---- layer norm over the last axis ----------------------------------------------------------------
register(OpSpec(
    "dnnl_layer_norm", 3, ("axis", "epsilon"), LIBRARY, infer_layer_norm, evaluate_layer_norm, layer_norm_flops,
    emit=lambda a, at, ty: _dps("tsir.dnnl.layer_norm", ty, *a, _int(float_bits(at[1]))),
    efficiency=LIBRARY_NORM_EFFICIENCY, library=lambda layout: "tsir.dnnl.layer_norm",
    missing={"convert": _RULES_ONLY, "make": _NOT_DRAWN, "weight": "a normalization: no GEMM weight operand"}))
