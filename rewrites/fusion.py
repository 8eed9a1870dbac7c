"""Fusion-enabling forms and activation identities.

``matmul_bias_to_linear`` puts a matmul and its bias in one ``linear`` op that TVM fuses into one
kernel; the activation identities remove or reorder activations so they sit next to the op they fuse into.
"""

from __future__ import annotations

from egglog import PyObject, rule, ruleset, union

from tsir.ir.lang import add, clip, eq_, holds, linear, matmul, max_pool2d, relu, ty
from tsir.ir.ops import OPS
from tsir.rewrites._common import EXACT, b, dilation, layout, padding, strides, tb, tw, tx, v, w, x, y
from tsir.rewrites._common import p as pool
from tsir.rewrites._common import q as high


def _is_bias(tx: tuple, tw: tuple, tb: tuple) -> bool:
    try:
        OPS["linear"].infer((tx, tw, tb), ())
    except ValueError:
        return False
    return True


def _non_negative(low: float) -> bool:
    return low >= 0


RULES = [
    rule(eq_(y, add(matmul(x, w), b)), eq_(ty(x), tx), eq_(ty(w), tw), eq_(ty(b), tb),
         holds(_is_bias, tx, tw, tb), name="matmul_bias_to_linear").then(
        union(y).with_(linear(x, w, b))),  # x@w + b -> linear(x, w, b) when b runs along the last axis
    rule(eq_(y, relu(relu(x))), name="relu_relu").then(union(y).with_(relu(x))),  # relu(relu(x)) -> relu(x)
    # maxpool(relu(x)) <-> relu(maxpool(x)) in any layout: relu is monotone, and every window holds a real element
    rule(eq_(y, max_pool2d(relu(x), pool, strides, padding, dilation, layout)), name="relu_before_max_pool").then(
        union(y).with_(relu(max_pool2d(x, pool, strides, padding, dilation, layout)))),
    rule(eq_(y, relu(max_pool2d(x, pool, strides, padding, dilation, layout))), name="relu_after_max_pool").then(
        union(y).with_(max_pool2d(relu(x), pool, strides, padding, dilation, layout))),
    # clip(relu(x), lo, hi) -> clip(x, lo, hi)   and   relu(clip(x, lo, hi)) -> clip(x, lo, hi)   for lo >= 0
    rule(eq_(y, clip(relu(x), v, high)), holds(_non_negative, v), name="clip_absorbs_relu").then(
        union(y).with_(clip(x, v, high))),
    rule(eq_(y, relu(clip(x, v, high))), holds(_non_negative, v), name="relu_of_clip").then(
        union(y).with_(clip(x, v, high))),
    # clip(x, 0, inf) -> relu(x)
    rule(eq_(y, clip(x, PyObject(0.0), PyObject(float("inf")))), name="clip_is_relu").then(
        union(y).with_(relu(x))),
]
rules = ruleset(*RULES, name="fusion")

TOLERANCE = {
    "matmul_bias_to_linear": EXACT,  # linear is defined as (and lowered to) the same matmul then add
    "relu_relu": EXACT, "relu_before_max_pool": EXACT, "relu_after_max_pool": EXACT,
    "clip_absorbs_relu": EXACT, "relu_of_clip": EXACT, "clip_is_relu": EXACT,
}
