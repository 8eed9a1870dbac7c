"""Folding: batch norm as an affine map, scales and biases folded into conv/matmul/linear weights,
consecutive linear layers merged, constant chains combined.

Together these fold conv2d/conv1d + batch_norm and linear + batch_norm into one conv/linear with new
weights; all new weights are constant subgraphs, folded to constants when the program is lowered.
"""

from __future__ import annotations

from egglog import rule, ruleset, union

from tsir.ir.lang import (
    add,
    batch_norm,
    computed,
    conv1d,
    conv2d,
    divide,
    eq_,
    holds,
    is_const,
    linear,
    matmul,
    multiply,
    reshape,
    scalar,
    sqrt,
    subtract,
    ty,
)
from tsir.rewrites._common import (
    CONTRACTION,
    ELEMENTWISE,
    EXACT,
    a,
    axis,
    b,
    b1,
    b2,
    c,
    dilation,
    groups,
    padding,
    rank,
    s1,
    shape,
    strides,
    t1,
    t2,
    tb,
    tw,
    tx,
    v,
    w,
    w1,
    w2,
    x,
    y,
    z,
)

g, beta, mean, var_ = a, b, c, z  # batch-norm parameters reuse pattern variables


def _channel_view(tx: tuple, axis: int) -> tuple:
    """Shape that broadcasts a per-channel vector along ``axis`` of a tensor of type ``tx``."""
    view = [1] * rank(tx)
    view[axis] = shape(tx)[axis]
    return tuple(view)


def _is_channel_scale(ts: tuple, tw: tuple) -> bool:
    """``ts`` scales only the output channels of a convolution whose weight has type ``tw`` (OIHW or OIW)."""
    ones = (1,) * (rank(tw) - 2)
    return shape(ts) in ((1, shape(tw)[0], *ones), (shape(tw)[0], *ones))


def _weight_view(tw: tuple) -> tuple:
    return (shape(tw)[0], *(1,) * (rank(tw) - 1))


def _is_column_vector(ts: tuple, tw: tuple, tout: tuple) -> bool:
    """``ts`` scales the last axis of a matmul's output (weight ``tw``) and does not grow its rank."""
    n = shape(tw)[-1]
    return rank(tw) == 2 and rank(ts) <= rank(tout) and shape(ts)[-1:] == (n,) and all(d == 1 for d in shape(ts)[:-1])


def _row(tw: tuple) -> tuple:
    return (1, shape(tw)[-1])


def _keeps_last_axis(ts: tuple, tx: tuple, s: tuple) -> bool:
    """``ts`` scales only the last axis of shape ``s`` (and adds no axes), which a reshape from ``tx`` to ``s``
    leaves in place."""
    s = tuple(s)
    return (len(s) > 0 and shape(tx)[-1:] == s[-1:] and rank(ts) <= len(s) and shape(ts)[-1:] in (s[-1:], (1,))
            and all(d == 1 for d in shape(ts)[:-1]))


def _last_axis(ts: tuple) -> tuple:
    return shape(ts)[-1:]


def _matrices(t1: tuple, t2: tuple) -> bool:
    return rank(t1) == rank(t2) == 2


_scale = divide(g, sqrt(add(var_, scalar(v))))
RULES = [
    # bn(x) -> x * view(g / sqrt(var + eps)) + view(beta - mean * g / sqrt(var + eps))
    rule(eq_(y, batch_norm(x, g, beta, mean, var_, axis, v)), eq_(ty(x), tx), name="batch_norm_affine").then(
        union(y).with_(add(
            multiply(x, reshape(_scale, computed(_channel_view, tx, axis))),
            reshape(subtract(beta, multiply(mean, _scale)), computed(_channel_view, tx, axis)),
        ))),
    *(  # conv(x, w) * s -> conv(x, w * view(s))   when s is constant and scales output channels only
        rule(eq_(y, multiply(conv(x, w, strides, padding, dilation, groups), c)), is_const(c), is_const(w),
             eq_(ty(c), t1), eq_(ty(w), tw), holds(_is_channel_scale, t1, tw), name=name).then(
            union(y).with_(conv(x, multiply(w, reshape(c, computed(_weight_view, tw))),
                                strides, padding, dilation, groups)))
        for conv, name in ((conv2d, "conv_scale_fold"), (conv1d, "conv1d_scale_fold"))),
    # (x@w) * s -> x@(w * s)   when w is a constant matrix and s a constant scale of the last axis
    rule(eq_(y, multiply(matmul(x, w), c)), is_const(c), is_const(w), eq_(ty(c), t1), eq_(ty(w), tw),
         eq_(ty(y), tx), holds(_is_column_vector, t1, tw, tx), name="matmul_scale_fold").then(
        union(y).with_(matmul(x, multiply(w, reshape(c, computed(_row, tw)))))),
    # linear(x, w, b) * s -> linear(x, w * s, b * s)   (same conditions; b keeps its shape)
    rule(eq_(y, multiply(linear(x, w, b), c)), is_const(c), is_const(w), is_const(b), eq_(ty(c), t1),
         eq_(ty(w), tw), eq_(ty(b), tb), eq_(ty(y), tx), holds(_is_column_vector, t1, tw, tx),
         name="linear_scale_fold").then(
        union(y).with_(linear(x, multiply(w, reshape(c, computed(_row, tw))),
                              multiply(b, reshape(c, computed(shape, tb)))))),
    # linear(x, w, b) + c -> linear(x, w, b + c)   when c is a constant bias of the last axis
    rule(eq_(y, add(linear(x, w, b), c)), is_const(c), is_const(b), eq_(ty(c), t1), eq_(ty(w), tw),
         eq_(ty(b), tb), eq_(ty(y), tx), holds(_is_column_vector, t1, tw, tx), name="linear_bias_fold").then(
        union(y).with_(linear(x, w, add(b, reshape(c, computed(shape, tb)))))),
    # linear(linear(x, w1, b1), w2, b2) -> linear(x, w1@w2, b1@w2 + b2)   (constant matrices, no activation)
    rule(eq_(y, linear(linear(x, w1, b1), w2, b2)), is_const(w1), is_const(w2), is_const(b1), is_const(b2),
         eq_(ty(w1), t1), eq_(ty(w2), t2), eq_(ty(b1), tb), eq_(ty(b2), tw), holds(_matrices, t1, t2),
         name="fold_consecutive_linear").then(
        union(y).with_(linear(x, matmul(w1, w2), add(reshape(matmul(reshape(b1, computed(_row, t1)), w2),
                                                             computed(shape, tw)), b2)))),
    # (x@w1)@w2 -> x@(w1@w2)   for constant matrices: a constant subgraph folded before run time
    rule(eq_(y, matmul(matmul(x, w1), w2)), is_const(w1), is_const(w2), eq_(ty(w1), t1), eq_(ty(w2), t2),
         holds(_matrices, t1, t2), name="fold_consecutive_matmul").then(
        union(y).with_(matmul(x, matmul(w1, w2)))),
    # reshape(a) * c -> reshape(a * c)   for a constant c of the last axis that the reshape keeps (a layer scale
    # after a linear that works on the flattened tokens), so the scale can fold into the linear
    rule(eq_(y, multiply(reshape(a, s1), c)), is_const(c), eq_(ty(c), t1), eq_(ty(a), tx),
         holds(_keeps_last_axis, t1, tx, s1), name="scale_before_reshape").then(
        union(y).with_(reshape(multiply(a, reshape(c, computed(_last_axis, t1))), s1))),
    # (a + c1) * c2 -> a * c2 + c1 * c2   for constant c1, c2
    rule(eq_(y, multiply(add(a, w1), w2)), is_const(w1), is_const(w2), name="distribute_constant_scale").then(
        union(y).with_(add(multiply(a, w2), multiply(w1, w2)))),
    # (a + c1) + c2 -> a + (c1 + c2)   and   (a * c1) * c2 -> a * (c1 * c2)   for constant c1, c2
    rule(eq_(y, add(add(a, w1), w2)), is_const(w1), is_const(w2), name="combine_constant_bias").then(
        union(y).with_(add(a, add(w1, w2)))),
    rule(eq_(y, multiply(multiply(a, w1), w2)), is_const(w1), is_const(w2), name="combine_constant_scale").then(
        union(y).with_(multiply(a, multiply(w1, w2)))),
]
rules = ruleset(*RULES, name="folding")

TOLERANCE = {
    # x*s + t against (x - mean)*s + beta: a few reordered elementwise roundings, scale |s| <= ~3
    "batch_norm_affine": 1e-5,
    "conv_scale_fold": CONTRACTION, "conv1d_scale_fold": CONTRACTION, "matmul_scale_fold": CONTRACTION,
    "linear_scale_fold": CONTRACTION,
    "linear_bias_fold": ELEMENTWISE, "fold_consecutive_linear": CONTRACTION, "fold_consecutive_matmul": CONTRACTION,
    "distribute_constant_scale": ELEMENTWISE, "combine_constant_bias": ELEMENTWISE, "scale_before_reshape": EXACT,
    "combine_constant_scale": ELEMENTWISE,
}
