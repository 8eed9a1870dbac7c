"""Folding: batch norm as an affine map, scales folded into conv weights, constant biases combined.

Together these fold conv2d + batch_norm (with or without a conv bias) into one conv2d with new
weights plus one constant bias; the new constants are folded when the program is lowered.
"""

from egglog import PyObject, rule, ruleset, union, var

from tsir.ir.lang import (
    Tensor,
    add,
    batch_norm,
    computed,
    conv2d,
    divide,
    eq_,
    holds,
    is_const,
    multiply,
    reshape,
    scalar,
    sqrt,
    subtract,
    ty,
)

x, w, s, c1, c2, a, b, y = (var(n, Tensor) for n in ("x", "w", "s", "c1", "c2", "a", "b", "y"))
g, beta, mean, v = (var(n, Tensor) for n in ("g", "beta", "mean", "v"))
axis, eps, tx, ts, tw = (var(n, PyObject) for n in ("axis", "eps", "tx", "ts", "tw"))
strides, padding, dilation, groups = (var(n, PyObject) for n in ("strides", "padding", "dilation", "groups"))


def _channel_view(tx: tuple, axis: int) -> tuple:
    """Shape that broadcasts a per-channel vector along ``axis`` of a tensor of type ``tx``."""
    shape = [1] * len(tx[0])
    shape[axis] = tx[0][axis]
    return tuple(shape)


def _is_channel_scale(ts: tuple, tw: tuple) -> bool:
    """``ts`` scales only the output channels of a conv2d whose weight has type ``tw``."""
    return tuple(ts[0]) in ((1, tw[0][0], 1, 1), (tw[0][0], 1, 1))


def _weight_view(tw: tuple) -> tuple:
    return (tw[0][0], 1, 1, 1)


_scale = divide(g, sqrt(add(v, scalar(eps))))
rules = ruleset(
    # bn(x) -> x * view(g / sqrt(var + eps)) + view(beta - mean * g / sqrt(var + eps))
    rule(eq_(y, batch_norm(x, g, beta, mean, v, axis, eps)), eq_(ty(x), tx), name="batch_norm_affine").then(
        union(y).with_(add(
            multiply(x, reshape(_scale, computed(_channel_view, tx, axis))),
            reshape(subtract(beta, multiply(mean, _scale)), computed(_channel_view, tx, axis)),
        ))),
    # conv2d(x, w) * s -> conv2d(x, w * view(s))   when s scales output channels only
    rule(eq_(y, multiply(conv2d(x, w, strides, padding, dilation, groups), s)), is_const(s), is_const(w),
         eq_(ty(s), ts), eq_(ty(w), tw), holds(_is_channel_scale, ts, tw), name="conv_scale_fold").then(
        union(y).with_(conv2d(x, multiply(w, reshape(s, computed(_weight_view, tw))),
                              strides, padding, dilation, groups))),
    # (a + c1) * c2 -> a * c2 + c1 * c2   for constant c1, c2
    rule(eq_(y, multiply(add(a, c1), c2)), is_const(c1), is_const(c2), name="distribute_constant_scale").then(
        union(y).with_(add(multiply(a, c2), multiply(c1, c2)))),
    # (a + c1) + c2 -> a + (c1 + c2)   for constant c1, c2
    rule(eq_(y, add(add(a, c1), c2)), is_const(c1), is_const(c2), name="combine_constant_bias").then(
        union(y).with_(add(a, add(c1, c2)))),
    name="folding",
)
