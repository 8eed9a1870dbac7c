"""Exact algebra: identities, transpose/reshape chains, commutativity, distributivity, associativity."""

from __future__ import annotations

import numpy as np
from egglog import rule, ruleset, union

from tsir.ir.lang import (
    CONSTRUCTORS,
    add,
    broadcast_to,
    computed,
    conv1d,
    conv2d,
    divide,
    eq_,
    holds,
    matmul,
    multiply,
    reshape,
    rsqrt,
    scalar,
    sqrt,
    subtract,
    transpose,
    ty,
)
from tsir.ir.ops import Category, ops_in
from tsir.rewrites._common import (
    CONTRACTION,
    ELEMENTWISE,
    EXACT,
    a,
    b,
    c,
    dilation,
    groups,
    p,
    padding,
    q,
    rank,
    s1,
    s2,
    shape,
    strides,
    t1,
    t2,
    t3,
    ta,
    tx,
    v,
    w,
    w1,
    w2,
    x,
    y,
)


def _compose(p: tuple, q: tuple) -> tuple:
    return tuple(p[i] for i in q)


def _is_identity(p: tuple) -> bool:
    return tuple(p) == tuple(range(len(p)))


def _moves_unit_axes_only(tx: tuple, p: tuple) -> bool:
    """``p`` keeps the axes of ``tx`` longer than 1 in order (and moves some of length 1): a reshape."""
    kept = [a for a in p if shape(tx)[a] != 1]
    return not _is_identity(p) and kept == sorted(kept)


def _same_shape(t: tuple, new_shape: tuple) -> bool:
    return shape(t) == tuple(new_shape)


def _is_value(value: float):
    def check(v: object, t: tuple) -> bool:
        return v == value and t[1] == "float32"

    check.__name__ = f"is_{value}"
    return check


def _matrix(t: tuple) -> bool:
    return rank(t) == 2


def _matrices(t1: tuple, t2: tuple) -> bool:
    return rank(t1) == rank(t2) == 2


def _swaps_last_two(p: tuple, t1: tuple, t2: tuple) -> bool:
    """``p`` swaps the last two axes, and both operands have its rank (no batch broadcasting by rank)."""
    n = len(p)
    return n >= 2 and tuple(p) == (*range(n - 2), n - 1, n - 2) and rank(t1) == rank(t2) == n


def _broadcast_absorbed(ta: tuple, target: tuple, tb: tuple) -> bool:
    """Broadcasting ``a`` to ``target`` first changes nothing once it meets ``b``."""
    try:
        return np.broadcast_shapes(shape(ta), shape(tb)) == np.broadcast_shapes(tuple(target), shape(tb))
    except ValueError:
        return False


def _matmul_broadcast_absorbed(tx: tuple, tb: tuple, target: tuple) -> bool:
    """``matmul(x, broadcast_to(b, target))`` equals ``matmul(x, b)``: the broadcast leaves b's matrix axes and
    only adds or widens batch axes that ``x``'s batch axes already give the product."""
    sx, sb, target = shape(tx), shape(tb), tuple(target)
    if len(sx) < 2 or len(sb) < 2 or sb[-2:] != target[-2:]:
        return False
    try:
        return np.broadcast_shapes(sx[:-2], sb[:-2]) == np.broadcast_shapes(sx[:-2], target[:-2])
    except ValueError:
        return False


# the broadcasting binary ops, from the registry's categories
_ELEMENTWISE = {name: CONSTRUCTORS[name] for name in sorted(ops_in(Category.BINARY))}

def _conv_algebra(conv, prefix: str) -> list:
    """Linearity of a convolution ``conv`` (conv2d or conv1d) in its weights and in its input."""
    return [
        # conv(x, w1) + conv(x, w2) <-> conv(x, w1+w2)   (same attributes, weights of one type)
        rule(eq_(y, add(conv(x, w1, strides, padding, dilation, groups), conv(x, w2, strides, padding, dilation,
                                                                              groups))),
             eq_(ty(w1), t1), eq_(ty(w2), t1), name=f"{prefix}_factor_weights").then(
            union(y).with_(conv(x, add(w1, w2), strides, padding, dilation, groups))),
        rule(eq_(y, conv(x, add(w1, w2), strides, padding, dilation, groups)), eq_(ty(w1), t1), eq_(ty(w2), t1),
             name=f"{prefix}_distribute_weights").then(
            union(y).with_(add(conv(x, w1, strides, padding, dilation, groups),
                               conv(x, w2, strides, padding, dilation, groups)))),
        # conv(a, w) + conv(b, w) -> conv(a+b, w)   (a, b of one type)
        rule(eq_(y, add(conv(a, w, strides, padding, dilation, groups), conv(b, w, strides, padding, dilation,
                                                                             groups))),
             eq_(ty(a), ta), eq_(ty(b), ta), name=f"{prefix}_factor_inputs").then(
            union(y).with_(conv(add(a, b), w, strides, padding, dilation, groups))),
    ]


_power, _abs = CONSTRUCTORS["power"], CONSTRUCTORS["abs"]
_rules = [
    rule(eq_(y, transpose(transpose(x, p), q)), name="transpose_transpose").then(
        union(y).with_(transpose(x, computed(_compose, p, q)))),  # (x^p)^q -> x^(p[q])
    rule(eq_(y, transpose(x, p)), holds(_is_identity, p), name="transpose_identity").then(
        union(y).with_(x)),  # x^id -> x
    # x^p -> reshape(x)   when p moves only axes of length 1: the data keep their order
    rule(eq_(y, transpose(x, p)), eq_(ty(x), tx), eq_(ty(y), t1), holds(_moves_unit_axes_only, tx, p),
         name="transpose_of_unit_axes").then(union(y).with_(reshape(x, computed(shape, t1)))),
    rule(eq_(y, reshape(reshape(x, s1), s2)), name="reshape_reshape").then(
        union(y).with_(reshape(x, s2))),  # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    rule(eq_(y, reshape(x, s1)), eq_(ty(x), tx), holds(_same_shape, tx, s1), name="reshape_identity").then(
        union(y).with_(x)),  # reshape(x, shape(x)) -> x
    rule(eq_(y, broadcast_to(x, s1)), eq_(ty(x), tx), holds(_same_shape, tx, s1), name="broadcast_identity").then(
        union(y).with_(x)),  # broadcast_to(x, shape(x)) -> x
    rule(eq_(y, add(a, b)), name="add_commute").then(union(y).with_(add(b, a))),  # a+b -> b+a
    rule(eq_(y, multiply(a, b)), name="multiply_commute").then(union(y).with_(multiply(b, a))),  # a*b -> b*a
    # x*1 -> x, x/1 -> x, x+0 -> x, x-0 -> x   (a float32 scalar never changes x's shape)
    rule(eq_(y, multiply(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(1.0), v, tx), name="multiply_one").then(
        union(y).with_(x)),
    # a / sqrt(b) -> a * rsqrt(b)   (the ONNX exporter writes torch's rsqrt as 1 / sqrt)
    rule(eq_(y, divide(a, sqrt(b))), name="divide_by_sqrt").then(union(y).with_(multiply(a, rsqrt(b)))),
    # x ** 2 -> x * x, x ** 3 -> x * x * x, |x| * |x| -> x * x, x ** 0.5 -> sqrt(x)   (torch's norm(p=2) writes
    # abs and pow; GPT-2's tanh GELU cubes: TVM computes pow with a scalar libm call per element, ~7 ns each)
    rule(eq_(y, _power(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(2.0), v, tx), name="power_two").then(
        union(y).with_(multiply(x, x))),
    rule(eq_(y, _power(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(3.0), v, tx), name="power_three").then(
        union(y).with_(multiply(multiply(x, x), x))),
    rule(eq_(y, multiply(_abs(x), _abs(x))), name="abs_squared").then(union(y).with_(multiply(x, x))),
    rule(eq_(y, _power(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(0.5), v, tx), name="power_half").then(
        union(y).with_(sqrt(x))),
    # not(a == b) -> a != b
    rule(eq_(y, CONSTRUCTORS["logical_not"](CONSTRUCTORS["equal"](a, b))), name="not_equal").then(
        union(y).with_(CONSTRUCTORS["not_equal"](a, b))),
    rule(eq_(y, divide(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(1.0), v, tx), name="divide_one").then(
        union(y).with_(x)),
    rule(eq_(y, add(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(0.0), v, tx), name="add_zero").then(
        union(y).with_(x)),
    rule(eq_(y, subtract(x, scalar(v))), eq_(ty(x), tx), holds(_is_value(0.0), v, tx), name="subtract_zero").then(
        union(y).with_(x)),
    # x@w1 + x@w2 <-> x@(w1+w2)   (w1, w2 of one type, so the sum does not broadcast)
    rule(eq_(y, add(matmul(x, w1), matmul(x, w2))), eq_(ty(w1), t1), eq_(ty(w2), t1),
         name="matmul_factor_right").then(union(y).with_(matmul(x, add(w1, w2)))),
    rule(eq_(y, matmul(x, add(w1, w2))), eq_(ty(w1), t1), eq_(ty(w2), t1),
         name="matmul_distribute_right").then(union(y).with_(add(matmul(x, w1), matmul(x, w2)))),
    # a@w + b@w <-> (a+b)@w   (a, b of one type)
    rule(eq_(y, add(matmul(a, w), matmul(b, w))), eq_(ty(a), ta), eq_(ty(b), ta),
         name="matmul_factor_left").then(union(y).with_(matmul(add(a, b), w))),
    rule(eq_(y, matmul(add(a, b), w)), eq_(ty(a), ta), eq_(ty(b), ta),
         name="matmul_distribute_left").then(union(y).with_(add(matmul(a, w), matmul(b, w)))),
    *(rule_ for conv, prefix in ((conv2d, "conv"), (conv1d, "conv1d")) for rule_ in _conv_algebra(conv, prefix)),
    # (a@b)@c <-> a@(b@c)   (b, c matrices, so a's batch axes stay a's); the search picks the cheaper order
    rule(eq_(y, matmul(matmul(a, b), c)), eq_(ty(b), t1), eq_(ty(c), t2), holds(_matrices, t1, t2),
         name="matmul_associate_right").then(union(y).with_(matmul(a, matmul(b, c)))),
    rule(eq_(y, matmul(a, matmul(b, c))), eq_(ty(b), t1), eq_(ty(c), t2), holds(_matrices, t1, t2),
         name="matmul_associate_left").then(union(y).with_(matmul(matmul(a, b), c))),
    # (a^T)(b^T) <-> (b a)^T   (T swaps the last two axes; a, b of full rank)
    rule(eq_(y, matmul(transpose(a, p), transpose(b, p))), eq_(ty(a), t1), eq_(ty(b), t2),
         holds(_swaps_last_two, p, t1, t2), name="matmul_transposes").then(
        union(y).with_(transpose(matmul(b, a), p))),
    rule(eq_(y, transpose(matmul(a, b), p)), eq_(ty(a), t1), eq_(ty(b), t2), holds(_swaps_last_two, p, t1, t2),
         name="transpose_of_matmul").then(union(y).with_(matmul(transpose(b, p), transpose(a, p)))),
    # x @ broadcast_to(w, s) -> x @ w   when x's batch axes already broadcast w (a weight folded to its broadcast
    #   copy would be stored once per batch row: BERT's exported attention held twelve 8x768x768 copies)
    rule(eq_(y, matmul(x, broadcast_to(w, s1))), eq_(ty(x), t1), eq_(ty(w), t2),
         holds(_matmul_broadcast_absorbed, t1, t2, s1), name="matmul_broadcast_right").then(
        union(y).with_(matmul(x, w))),
    # (x*s)@w -> (x@w)*s   for a scalar-shaped s
    rule(eq_(y, matmul(multiply(x, w1), w)), eq_(ty(w1), t3), holds(lambda t: shape(t) == (), t3),
         name="matmul_scalar_out").then(union(y).with_(multiply(matmul(x, w), w1))),
]
# op(broadcast_to(a, s), b) -> op(a, b)   when broadcasting against b already gives a the shape s
for _name, _op in _ELEMENTWISE.items():
    _rules.append(rule(eq_(y, _op(broadcast_to(a, s1), b)), eq_(ty(a), ta), eq_(ty(b), t2),
                       holds(_broadcast_absorbed, ta, s1, t2), name=f"{_name}_broadcast_left").then(
        union(y).with_(_op(a, b))))
    _rules.append(rule(eq_(y, _op(b, broadcast_to(a, s1))), eq_(ty(a), ta), eq_(ty(b), t2),
                       holds(_broadcast_absorbed, ta, s1, t2), name=f"{_name}_broadcast_right").then(
        union(y).with_(_op(b, a))))

RULES = _rules
rules = ruleset(*RULES, name="algebra")

TOLERANCE = {
    **dict.fromkeys(["transpose_transpose", "transpose_identity", "transpose_of_unit_axes", "reshape_reshape",
                     "reshape_identity", "broadcast_identity", "add_commute", "multiply_commute", "multiply_one",
                     "divide_one", "add_zero", "subtract_zero", "abs_squared", "not_equal",
                     "matmul_broadcast_right"], EXACT),
    "divide_by_sqrt": ELEMENTWISE,  # 1/sqrt and rsqrt round differently by an ulp or two
    "power_two": ELEMENTWISE,  # pow is within an ulp or two of the exact x * x
    "power_three": ELEMENTWISE,  # x * x * x rounds twice: within a few ulps of pow
    "power_half": ELEMENTWISE,
    **{f"{n}_broadcast_{side}": EXACT for n in _ELEMENTWISE for side in ("left", "right")},
    # reassociated sums of products (see rewrites._common)
    **dict.fromkeys(["matmul_factor_right", "matmul_distribute_right", "matmul_factor_left",
                     "matmul_distribute_left", "conv_factor_weights", "conv_distribute_weights",
                     "conv_factor_inputs", "conv1d_factor_weights", "conv1d_distribute_weights",
                     "conv1d_factor_inputs", "matmul_associate_right", "matmul_associate_left",
                     "matmul_scalar_out", "matmul_transposes", "transpose_of_matmul"], CONTRACTION),
}
