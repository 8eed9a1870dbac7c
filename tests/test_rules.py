"""Every rewrite rule, checked numerically on random shapes and values (hypothesis).

``CASES`` maps each rule to a strategy of programs that match its left-hand side under its side
conditions. ``assert_rule_sound`` runs that rule alone, asserts it fired, and checks in float32 that
every e-node of every e-class computes its class's value within the rule's documented tolerance
(``tsir.rewrites.tolerance``; the error analysis is in ``rewrites/_common.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from egglog import PyObject, ruleset, union
from hypothesis import strategies as st

from tsir import rewrites
from tsir.egraph import TermEGraph
from tsir.ir import lang
from tsir.ir.ops.elementwise import POSITIVE_DOMAIN
from tsir.ir.term import Graph, Term
from tsir.rewrites import FAMILIES, rule_names
from tsir.rewrites.layout import BINARY, UNARY
from tsir.testing import assert_rule_sound, egraph_disagreement, run_rule
from tsir.testing.strategies import GraphBuilder, cases, shapes

EXAMPLES = 8
T = Term


def perm(draw, rank: int) -> tuple:
    return tuple(draw(st.permutations(list(range(rank)))))


def broadcast_of(draw, shape: tuple) -> tuple:
    """A shape that broadcasts against ``shape``: some dims set to 1, maybe fewer leading dims."""
    ones = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    return tuple(1 if o else d for d, o in zip(shape, ones, strict=True))[draw(st.integers(0, len(shape) - 1)):]


def mnk(draw, batch: bool = True) -> tuple:
    lead = draw(st.lists(st.integers(1, 3), max_size=1).map(tuple)) if batch else ()
    return lead, draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 5))


def conv_case(draw, b: GraphBuilder, x: Term | None = None, groups: int | None = None, k: int | None = None,
              stride: int | None = None, pad: int | None = None, dilation: int | None = None, cout: int | None = None):
    """A conv2d with random attributes (or the given ones); returns (x, weight, attrs)."""
    groups = groups or draw(st.sampled_from([1, 2]))
    if x is None:
        x = b.input((draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)), draw(st.integers(5, 7)),
                     draw(st.integers(5, 7))))
    k = k or draw(st.sampled_from([1, 3]))
    cout = cout or groups * draw(st.integers(1, 3))
    w = b.weight((cout, x.ty[0][1] // groups, k, k), fan_in=x.ty[0][1] // groups * k * k)
    pad = draw(st.integers(0, 1)) if pad is None else pad
    fits = [d for d in (1, 2) if (k - 1) * d < min(x.ty[0][2:]) + 2 * pad]  # the dilated kernel fits the input
    attrs = ((stride or draw(st.integers(1, 2)),) * 2, (pad,) * 4, (dilation or draw(st.sampled_from(fits)),) * 2,
             groups)
    return x, w, attrs


def conv(b, x, w, attrs):
    return T("conv2d", (x, w), attrs)


def conv1d_case(draw, b: GraphBuilder, x: Term | None = None, groups: int | None = None):
    """A conv1d (NCW) with random attributes; returns the conv1d term."""
    groups = groups or draw(st.sampled_from([1, 2]))
    if x is None:
        x = b.input((draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)), draw(st.integers(5, 9))))
    k = draw(st.sampled_from([1, 2, 3]))
    cout = groups * draw(st.integers(1, 3))
    w = b.weight((cout, x.ty[0][1] // groups, k), fan_in=x.ty[0][1] // groups * k)
    pads = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = draw(st.sampled_from([d for d in (1, 2) if (k - 1) * d < x.ty[0][2] + sum(pads)]))
    return T("conv1d", (x, w), ((draw(st.integers(1, 2)),), pads, (dilation,), groups))


def conv1d_per_channel(d, b, op: str):
    """A random conv1d combined by ``op`` with a per-output-channel weight ((1, C, 1) or (C, 1))."""
    y = conv1d_case(d, b)
    c = y.ty[0][1]
    return T(op, (y, b.weight((1, c, 1) if d(st.booleans()) else (c, 1))))


def conv_per_channel(d, b, op: str):
    """A random conv2d combined by ``op`` with a per-output-channel weight ((1, C, 1, 1) or (C, 1, 1))."""
    x, w, attrs = conv_case(d, b)
    y = conv(b, x, w, attrs)
    c = y.ty[0][1]
    return T(op, (y, b.weight((1, c, 1, 1) if d(st.booleans()) else (c, 1, 1))))


def image(draw, b: GraphBuilder) -> Term:
    return b.input((draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(3, 6)), draw(st.integers(3, 6))))


def _algebra() -> dict:
    def tt(d, b):
        s = d(shapes())
        return T("transpose", (T("transpose", (b.input(s),), (perm(d, len(s)),)),), (perm(d, len(s)),))

    def reshapes(d, shape):
        n = int(np.prod(shape))
        return d(st.sampled_from([(n,), (1, n), (n, 1), tuple(reversed(shape)), (*shape, 1)]))

    def rr(d, b):
        s = d(shapes())
        return T("reshape", (T("reshape", (b.input(s),), (reshapes(d, s),)),), (reshapes(d, s),))

    def ident(op, value):
        return lambda d, b: T(op, (b.input(d(shapes())), b.scalar(value)))

    def factor_right(d, b):
        lead, m, k, n = mnk(d)
        x = b.input((*lead, m, k))
        return T("add", (T("matmul", (x, b.weight((k, n)))), T("matmul", (x, b.weight((k, n))))))

    def distribute_right(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (b.input((*lead, m, k)), T("add", (b.weight((k, n)), b.input((k, n))))))

    def factor_left(d, b):
        lead, m, k, n = mnk(d)
        w = b.weight((k, n))
        return T("add", (T("matmul", (b.input((*lead, m, k)), w)), T("matmul", (b.input((*lead, m, k)), w))))

    def distribute_left(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (T("add", (b.input((*lead, m, k)), b.input((*lead, m, k)))), b.weight((k, n))))

    def conv_factor_weights(d, b):
        x, w, attrs = conv_case(d, b)
        return T("add", (conv(b, x, w, attrs), conv(b, x, b.weight(w.ty[0]), attrs)))

    def conv_distribute(d, b):
        x, w, attrs = conv_case(d, b)
        return conv(b, x, T("add", (w, b.weight(w.ty[0]))), attrs)

    def conv_factor_inputs(d, b):
        x, w, attrs = conv_case(d, b)
        return T("add", (conv(b, x, w, attrs), conv(b, b.input(x.ty[0]), w, attrs)))

    def chain(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (T("matmul", (b.input((*lead, m, k)), b.weight((k, n)))), b.weight((n, 3))))

    def chain_right(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (b.input((*lead, m, k)), T("matmul", (b.weight((k, n)), b.input((n, 3))))))

    def transposes(d, b):
        lead, m, k, n = mnk(d)
        r = len(lead) + 2
        p = (*range(r - 2), r - 1, r - 2)
        return T("matmul", (T("transpose", (b.input((*lead, k, m)),), (p,)), T("transpose", (b.input((*lead, n, k)),),
                                                                                   (p,))))

    def transpose_of_matmul(d, b):
        lead, m, k, n = mnk(d)
        r = len(lead) + 2
        return T("transpose", (T("matmul", (b.input((*lead, m, k)), b.input((*lead, k, n)))),),
                 ((*range(r - 2), r - 1, r - 2),))

    def scalar_out(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (T("multiply", (b.input((*lead, m, k)), b.weight(()))), b.weight((k, n))))

    def matmul_broadcast(d, b):
        """x @ broadcast_to(w, s), w a matrix or with unit batch axes, s adding batch axes x already has."""
        lead, m, k, n = mnk(d)
        lead = lead or (d(st.integers(1, 3)),)
        w = b.weight(d(st.sampled_from([(k, n), (1, k, n)])))
        return T("matmul", (b.input((*lead, m, k)), T("broadcast_to", (w,), ((*lead, k, n),))))

    def broadcast(op, side):
        def make(d, b):
            s = d(shapes(min_rank=2))
            small = tuple(1 if i == 0 else v for i, v in enumerate(s))
            base = T("sigmoid", (b.input(small),)) if op == "power" and side == "left" else b.input(small)
            a = T("broadcast_to", (base,), (s,))
            other = b.weight(s, positive=True) if (op, side) in (("divide", "left"), ("power", "right")) else b.input(s)
            return T(op, (a, other) if side == "left" else (other, a))
        return make

    def unit_axes_moved(d, b):
        """A shape with a few axes of length 1, transposed so that only those move."""
        s = [max(n, 2) for n in d(shapes(min_rank=2))]
        for i in d(st.lists(st.integers(0, len(s)), min_size=1, max_size=2)):
            s.insert(i, 1)

        def moving_units(order: tuple) -> tuple:  # the long axes keep their order, the units go where order says
            units, others = [i for i, n in enumerate(s) if n == 1], [i for i, n in enumerate(s) if n != 1]
            return tuple(others.pop(0) if s[a] != 1 else units.pop(0) for a in order)

        order = d(st.permutations(range(len(s))).filter(lambda o: moving_units(o) != tuple(range(len(s)))))
        return T("transpose", (b.input(tuple(s)),), (moving_units(order),))

    out = {
        "transpose_transpose": tt,
        "transpose_identity": lambda d, b: T("transpose", (b.input(s := d(shapes())),), (tuple(range(len(s))),)),
        "transpose_of_unit_axes": unit_axes_moved,
        "reshape_reshape": rr,
        "reshape_identity": lambda d, b: T("reshape", (b.input(s := d(shapes())),), (s,)),
        "broadcast_identity": lambda d, b: T("broadcast_to", (b.input(s := d(shapes())),), (s,)),
        "add_commute": lambda d, b: T("add", (b.input(s := d(shapes())), b.input(broadcast_of(d, s)))),
        "multiply_commute": lambda d, b: T("multiply", (b.input(s := d(shapes())), b.input(broadcast_of(d, s)))),
        "multiply_one": ident("multiply", 1.0), "divide_one": ident("divide", 1.0),
        "divide_by_sqrt": lambda d, b: T("divide", (b.input(s := d(shapes())),
                                                    T("sqrt", (T("sigmoid", (b.input(s),)),)))),
        "add_zero": ident("add", 0.0), "subtract_zero": ident("subtract", 0.0),
        "power_two": ident("power", 2.0),
        "power_three": ident("power", 3.0),
        "power_half": lambda d, b: T("power", (T("sigmoid", (b.input(d(shapes())),)), b.scalar(0.5))),
        "abs_squared": lambda d, b: T("multiply", (T("abs", (x := b.input(d(shapes())),)), T("abs", (x,)))),
        "not_equal": lambda d, b: T("logical_not", (T("equal", (  # a == max(a, b): true about half the time
            x := b.input(s := d(shapes())), T("maximum", (x, b.input(s))))),)),
        "matmul_factor_right": factor_right, "matmul_distribute_right": distribute_right,
        "matmul_factor_left": factor_left, "matmul_distribute_left": distribute_left,
        "conv_factor_weights": conv_factor_weights, "conv_distribute_weights": conv_distribute,
        "conv_factor_inputs": conv_factor_inputs, "matmul_associate_right": chain,
        "conv1d_factor_weights": lambda d, b: T("add", (y := conv1d_case(d, b), T("conv1d", (
            y.args[0], b.weight(y.args[1].ty[0])), y.attrs))),
        "conv1d_distribute_weights": lambda d, b: T("conv1d", (
            (y := conv1d_case(d, b)).args[0], T("add", (y.args[1], b.weight(y.args[1].ty[0])))), y.attrs),
        "conv1d_factor_inputs": lambda d, b: T("add", (y := conv1d_case(d, b), T("conv1d", (
            b.input(y.args[0].ty[0]), y.args[1]), y.attrs))),
        "matmul_associate_left": chain_right, "matmul_transposes": transposes,
        "transpose_of_matmul": transpose_of_matmul, "matmul_scalar_out": scalar_out,
        "matmul_broadcast_right": matmul_broadcast,
    }
    for op in BINARY:
        for side in ("left", "right"):
            out[f"{op}_broadcast_{side}"] = broadcast(op, side)
    return out


def _fusion() -> dict:
    def bias(d, b):
        lead, m, k, n = mnk(d)
        bias = b.weight((n,) if d(st.booleans()) else (1, n))
        return T("add", (T("matmul", (b.input((*lead, m, k)), b.weight((k, n)))), bias))

    def pool(d, x):
        k = d(st.integers(1, 3))
        return ((k, k), (d(st.integers(1, 2)),) * 2, (d(st.integers(0, k - 1)),) * 4, (1, 1), "NCHW")

    def nhwc_pool(d, x):  # the same rule in either layout: an image read as NHWC has channels last
        attrs = pool(d, x)
        return (*attrs[:4], "NHWC") if d(st.booleans()) and min(x.ty[0][1:3]) >= attrs[0][0] else attrs

    def low(d):
        return d(st.sampled_from([(0.0, 6.0), (0.5, 2.0), (0.0, 1.0)]))

    return {
        "matmul_bias_to_linear": bias,
        "relu_relu": lambda d, b: T("relu", (T("relu", (b.input(d(shapes())),)),)),
        "relu_before_max_pool": lambda d, b: T("max_pool2d", (T("relu", (x := image(d, b),)),), nhwc_pool(d, x)),
        "relu_after_max_pool": lambda d, b: T("relu", (T("max_pool2d", (x := image(d, b),), nhwc_pool(d, x)),)),
        "clip_absorbs_relu": lambda d, b: T("clip", (T("relu", (b.input(d(shapes())),)),), low(d)),
        "relu_of_clip": lambda d, b: T("relu", (T("clip", (b.input(d(shapes())),), low(d)),)),
        "clip_is_relu": lambda d, b: T("clip", (b.input(d(shapes())),), (0.0, float("inf"))),
    }


def _folding() -> dict:
    def bn(d, b):
        x, w, attrs = conv_case(d, b)
        y = conv(b, x, w, attrs)
        c = y.ty[0][1]
        stats = [b.weight((c,)), b.weight((c,)), b.weight((c,)), b.weight((c,), positive=True)]
        return T("batch_norm", (y, *stats), (1, d(st.sampled_from([1e-5, 1e-3]))))

    def conv_scale(d, b):
        return conv_per_channel(d, b, "multiply")

    def matmul_scale(d, b):
        lead, m, k, n = mnk(d)
        return T("multiply", (T("matmul", (b.input((*lead, m, k)), b.weight((k, n)))),
                              b.weight((n,) if d(st.booleans()) else (1, n))))

    def linear(d, b, lead, m, k, n):
        return T("linear", (b.input((*lead, m, k)), b.weight((k, n)), b.weight((n,))))

    def linear_scale(d, b):
        lead, m, k, n = mnk(d)
        return T("multiply", (linear(d, b, lead, m, k, n), b.weight((n,) if d(st.booleans()) else (1, n))))

    def linear_bias(d, b):
        lead, m, k, n = mnk(d)
        return T("add", (linear(d, b, lead, m, k, n), b.weight((n,) if d(st.booleans()) else (1, n))))

    def consecutive_linear(d, b):
        lead, m, k, n = mnk(d)
        return T("linear", (linear(d, b, lead, m, k, n), b.weight((n, 3)), b.weight((3,))))

    def consecutive_matmul(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (T("matmul", (b.input((*lead, m, k)), b.weight((k, n)))), b.weight((n, 2))))

    def chain(outer, inner):
        def make(d, b):
            s = d(shapes())
            return T(outer, (T(inner, (b.input(s), b.weight(broadcast_of(d, s)))), b.weight(broadcast_of(d, s))))
        return make

    def scale_after_reshape(d, b):  # tokens (m, k) back to (1, m1, m2, k), then a scale of the last axis
        m1, m2, k = d(st.integers(1, 3)), d(st.integers(1, 3)), d(st.integers(1, 4))
        scale = d(st.sampled_from([(k,), (1, 1, k), (1, 1, 1, k), (1,)]))
        tokens = T("reshape", (b.input((m1 * m2, k)),), ((1, m1, m2, k),))
        return T("multiply", (tokens, b.weight(scale)))

    return {
        "batch_norm_affine": bn, "conv_scale_fold": conv_scale, "matmul_scale_fold": matmul_scale,
        "conv1d_scale_fold": lambda d, b: conv1d_per_channel(d, b, "multiply"),
        "linear_scale_fold": linear_scale, "linear_bias_fold": linear_bias,
        "fold_consecutive_linear": consecutive_linear, "fold_consecutive_matmul": consecutive_matmul,
        "distribute_constant_scale": chain("multiply", "add"), "combine_constant_bias": chain("add", "add"),
        "combine_constant_scale": chain("multiply", "multiply"),
        "scale_before_reshape": scale_after_reshape,
    }


def _conv() -> dict:
    def conv1x1(d, b):
        x, w, attrs = conv_case(d, b, groups=1, k=1, stride=1, pad=0)
        return conv(b, x, w, attrs)

    def matmul(d, b):
        _, m, k, n = mnk(d, batch=False)
        return T("matmul", (b.input((m, k)), b.weight((k, n))))

    def grouped(d, b):
        x, w, attrs = conv_case(d, b, groups=d(st.sampled_from([2, 4])))
        return conv(b, x, w, attrs)

    def two_convs(d, b):
        x, w, attrs = conv_case(d, b)
        return T("concat", (conv(b, x, w, attrs), conv(b, b.input(x.ty[0]), b.weight(w.ty[0]), attrs)), (1,))

    def padded(d, b):
        x = image(d, b)
        widths = (0, 0, 0, 0, *(d(st.integers(0, 2)) for _ in range(4)))
        x, w, attrs = conv_case(d, b, x=T("pad", (x,), (widths,)), groups=1)
        return conv(b, x, w, attrs)

    def pad_pad(d, b):
        s = d(shapes())
        widths = lambda: tuple(d(st.integers(0, 2)) for _ in range(2 * len(s)))  # noqa: E731
        return T("pad", (T("pad", (b.input(s),), (widths(),)),), (widths(),))

    def dilated(d, b):
        x, w, attrs = conv_case(d, b, k=1, dilation=2)
        return conv(b, x, w, attrs)

    def padded_1d(d, b):
        x = b.input((d(st.integers(1, 2)), d(st.integers(1, 3)), d(st.integers(3, 8))))
        widths = (0, 0, 0, 0, d(st.integers(0, 2)), d(st.integers(0, 2)))
        return conv1d_case(d, b, x=T("pad", (x,), (widths,)), groups=1)

    return {
        "conv1x1_to_matmul": conv1x1, "matmul_to_conv1x1": matmul, "split_grouped_conv": grouped,
        "merge_convs_to_grouped": two_convs, "pad_into_conv": padded, "pad_pad": pad_pad,
        "pad_zero": lambda d, b: T("pad", (b.input(s := d(shapes())),), ((0,) * (2 * len(s)),)),
        "conv1x1_dilation": dilated, "pad_into_conv1d": padded_1d,
    }


def _layout() -> dict:
    def positive(b, s):
        return T("sigmoid", (b.input(s),))  # sqrt's domain

    out = {}
    for name in UNARY:
        def src(d, b, name=name):
            s = d(shapes())
            return s, positive(b, s) if name in POSITIVE_DOMAIN else b.input(s)

        out[f"{name}_through_transpose"] = lambda d, b, n=name, src=src: T(
            n, (T("transpose", ((r := src(d, b))[1],), (perm(d, len(r[0])),)),))
        out[f"transpose_through_{name}"] = lambda d, b, n=name, src=src: T(
            "transpose", (T(n, ((r := src(d, b))[1],)),), (perm(d, len(r[0])),))
        out[f"{name}_through_reshape"] = lambda d, b, n=name, src=src: T(
            n, (T("reshape", ((r := src(d, b))[1],), ((int(np.prod(r[0])),),)),))
    for name in BINARY:
        def pair(d, b, name=name):
            s = d(shapes())
            if name == "power":  # a positive base
                return s, positive(b, s), b.input(s)
            return s, b.input(s), (positive(b, s) if name == "divide" else b.input(s))

        out[f"{name}_of_transposes"] = lambda d, b, n=name, pair=pair: T(n, tuple(
            T("transpose", (t,), (p,)) for (s, *ts) in [pair(d, b)] for p in [perm(d, len(s))] for t in ts))
        out[f"transpose_of_{name}"] = lambda d, b, n=name, pair=pair: T(
            "transpose", (T(n, tuple((r := pair(d, b))[1:])),), (perm(d, len(r[0])),))
        out[f"{name}_of_reshapes"] = lambda d, b, n=name, pair=pair: T(n, tuple(
            T("reshape", (t,), ((int(np.prod(s)), 1),)) for (s, *ts) in [pair(d, b)] for t in ts))

        def const(d, b, name=name):
            s = d(shapes())
            p = perm(d, len(s))
            xt = T("transpose", (positive(b, s) if name == "power" else b.input(s),), (p,))
            c = tuple(1 if d(st.booleans()) else v for v in xt.ty[0])
            return T(name, (xt, b.weight(c, positive=name == "divide")))

        out[f"{name}_constant_through_transpose"] = const

    def pool_of_transpose(d, b):  # a random max pool over NCHW = NHWC input transposed
        x = b.input((d(st.integers(1, 2)), d(st.integers(3, 7)), d(st.integers(3, 7)), d(st.integers(1, 4))))
        k = d(st.integers(1, 3))
        attrs = ((k, k), (d(st.integers(1, 2)),) * 2, tuple(d(st.integers(0, k - 1)) for _ in range(4)), (1, 1),
                 "NCHW")
        return T("max_pool2d", (T("transpose", (x,), ((0, 3, 1, 2),)),), attrs)

    out["max_pool2d_through_transpose"] = pool_of_transpose
    bounds = st.sampled_from([(0.0, 6.0), (-1.0, 1.0), (0.25, 0.5)])
    out["clip_through_transpose"] = lambda d, b: T(
        "clip", (T("transpose", (b.input(s := d(shapes())),), (perm(d, len(s)),)),), d(bounds))
    out["transpose_through_clip"] = lambda d, b: T(
        "transpose", (T("clip", (b.input(s := d(shapes())),), d(bounds)),), (perm(d, len(s)),))

    def bn(d, b):
        x = b.input(s := d(shapes(min_rank=2)))
        p = perm(d, len(s))
        xt = T("transpose", (x,), (p,))
        c = xt.ty[0][1]
        stats = [b.weight((c,)), b.weight((c,)), b.weight((c,)), b.weight((c,), positive=True)]
        return T("batch_norm", (xt, *stats), (1, 1e-5))

    def concat(d, b):
        s = d(shapes())
        p = perm(d, len(s))
        return T("concat", (T("transpose", (b.input(s),), (p,)), T("transpose", (b.input(s),), (p,))),
                 (d(st.integers(0, len(s) - 1)),))

    def sliced(d, b):
        s = d(shapes())
        xt = T("transpose", (b.input(s),), (perm(d, len(s)),))
        axis = d(st.integers(0, len(s) - 1))
        begin = d(st.integers(0, xt.ty[0][axis] - 1))
        return T("slice", (xt,), (axis, begin, d(st.integers(begin + 1, xt.ty[0][axis]))))

    def mean(d, b):
        s = d(shapes())
        axes = tuple(sorted(d(st.sets(st.integers(0, len(s) - 1), min_size=1))))
        return T("mean", (T("transpose", (b.input(s),), (perm(d, len(s)),)),), (axes, True))

    def reshape_then_transpose(d, b):
        """Runs of axes, each merged into one axis or split from one, then moved as blocks by the transpose."""
        runs = d(st.lists(st.lists(st.integers(1, 3), min_size=1, max_size=3), min_size=1, max_size=3))
        splits = [d(st.booleans()) for _ in runs]
        source = [n for run, split in zip(runs, splits, strict=True) for n in ([int(np.prod(run))] if split else run)]
        target = [list(run) if split else [int(np.prod(run))] for run, split in zip(runs, splits, strict=True)]
        order = perm(d, len(runs))
        axes = np.cumsum([0, *map(len, target)])
        p = tuple(a for r in order for a in range(axes[r], axes[r + 1]))
        flat = tuple(n for run in target for n in run)
        return T("transpose", (T("reshape", (b.input(tuple(source)),), (flat,)),), (p,))

    def concat_then_transpose(d, b):
        s = d(shapes())
        axis = d(st.integers(0, len(s) - 1))
        other = tuple(n + 1 if i == axis else n for i, n in enumerate(s))  # the two differ along the axis
        return T("transpose", (T("concat", (b.input(s), b.input(other)), (axis,)),), (perm(d, len(s)),))

    def slice_then_transpose(d, b):
        s = d(shapes())
        axis = d(st.integers(0, len(s) - 1))
        begin = d(st.integers(0, s[axis] - 1))
        cut = T("slice", (b.input(s),), (axis, begin, d(st.integers(begin + 1, s[axis]))))
        return T("transpose", (cut,), (perm(d, len(s)),))

    out.update({"transpose_of_concat": concat_then_transpose, "transpose_through_slice": slice_then_transpose})
    out.update({"batch_norm_through_transpose": bn, "concat_of_transposes": concat,
                "slice_through_transpose": sliced, "mean_through_transpose": mean,
                "transpose_through_reshape": reshape_then_transpose})
    return out


def _multi() -> dict:
    def parallel_matmul(d, b):
        lead, m, k, n = mnk(d)
        x = b.input((*lead, m, k))
        return T("matmul", (x, b.weight((k, n)))), T("matmul", (x, b.weight((k, d(st.integers(1, 5))))))

    def parallel_linear(d, b):
        lead, m, k, n = mnk(d)
        x, n2 = b.input((*lead, m, k)), d(st.integers(1, 5))
        return (T("linear", (x, b.weight((k, n)), b.weight((n,)))),
                T("linear", (x, b.weight((k, n2)), b.weight((n2,)))))

    def qkv(d, b):
        lead, m, k, n = mnk(d)
        x = b.input((*lead, m, k))
        return tuple(T("matmul", (x, b.weight((k, n)))) for _ in range(3))

    def parallel_conv(d, b):
        x, w, attrs = conv_case(d, b, groups=1)
        return conv(b, x, w, attrs), conv(b, x, b.weight((d(st.integers(1, 3)), *w.ty[0][1:])), attrs)

    def parallel_conv1d(d, b):
        y = conv1d_case(d, b, groups=1)
        x, w = y.args
        return y, T("conv1d", (x, b.weight((d(st.integers(1, 3)), *w.ty[0][1:]))), y.attrs)

    def shared_weight(d, b):
        lead, m, k, n = mnk(d)
        w = b.weight((k, n))
        return T("matmul", (b.input((*lead, m, k)), w)), T("matmul", (b.input((*lead, d(st.integers(1, 4)), k)), w))

    def cat(d, b):
        s = d(shapes())
        axis = d(st.integers(0, len(s) - 1))
        other = tuple(v if i != axis else d(st.integers(1, 3)) for i, v in enumerate(s))
        return axis, T("concat", (b.input(s), b.input(other)), (axis,))

    def head(d, b):
        axis, c = cat(d, b)
        return T("slice", (c,), (axis, 0, c.args[0].ty[0][axis]))

    def tail(d, b):
        axis, c = cat(d, b)
        n0, total = c.args[0].ty[0][axis], c.ty[0][axis]
        begin = d(st.integers(n0, total - 1))
        return T("slice", (c,), (axis, begin, d(st.integers(begin + 1, total))))

    def halves(d, b):
        s = d(shapes())
        axis = d(st.integers(0, len(s) - 1))
        s = tuple(max(v, 2) if i == axis else v for i, v in enumerate(s))
        x = b.input(s)
        cut = d(st.integers(1, s[axis] - 1))
        pieces = [T("slice", (x,), (axis, lo, hi)) for lo, hi in ((0, cut), (cut, s[axis]))]
        return T("concat", (*pieces, x) if d(st.booleans()) else tuple(pieces), (axis,))

    def slice_slice(d, b):
        s = d(shapes())
        axis = d(st.integers(0, len(s) - 1))
        begin = d(st.integers(0, s[axis] - 1))
        inner = T("slice", (b.input(s),), (axis, begin, d(st.integers(begin + 1, s[axis]))))
        b2 = d(st.integers(0, inner.ty[0][axis] - 1))
        return T("slice", (inner,), (axis, b2, d(st.integers(b2 + 1, inner.ty[0][axis]))))

    return {
        "merge_parallel_matmul": parallel_matmul, "merge_parallel_linear": parallel_linear, "merge_qkv": qkv,
        "merge_parallel_conv": parallel_conv, "merge_parallel_conv1d": parallel_conv1d,
        "merge_shared_weight_matmul": shared_weight,
        "slice_whole": lambda d, b: T("slice", (b.input(s := d(shapes())),), (len(s) - 1, 0, s[-1])),
        "concat_single": lambda d, b: T("concat", (b.input(s := d(shapes())),), (len(s) - 1,)),
        "slice_of_concat_head": head, "slice_of_concat_tail": tail, "concat_of_adjacent_slices": halves,
        "slice_of_slice": slice_slice,
    }


def _library() -> dict:
    """oneDNN implementation choices (fp32): the op table's numpy semantics of the ``dnnl_*`` ops."""
    def linear(d, b):
        lead, m, k, n = mnk(d)
        return T("linear", (b.input((*lead, m, k)), b.weight((k, n)), b.weight((n,))))

    def conv_bias(d, b):
        return conv_per_channel(d, b, "add")

    def matmul(d, b):
        lead, m, k, n = mnk(d)
        return T("matmul", (b.input((*lead, m, k)), b.weight((k, n))))

    def library_conv(d, b, act=False):
        """A dnnl_conv2d in a random layout (an NHWC one reads the transposed image)."""
        c = conv_bias(d, b)
        (x, w), bias = c.args[0].args, c.args[1]
        layout = d(st.sampled_from(["NCHW", "NHWC"]))
        x = T("transpose", (x,), ((0, 2, 3, 1),)) if layout == "NHWC" else x
        return T("dnnl_conv2d", (x, w, bias), (*c.args[0].attrs, act, layout))

    def nhwc_conv(d, b):
        c = conv_bias(d, b)
        x = T("transpose", (c.args[0].args[0],), ((0, 2, 3, 1),))
        return T("dnnl_conv2d", (x, c.args[0].args[1], c.args[1]), (*c.args[0].attrs, False, "NHWC"))

    def residual(d, b, first=False):
        """An NHWC conv plus a tensor of its type (``first``: the tensor on the left)."""
        conv = nhwc_conv(d, b)
        other = b.input(conv.ty[0])
        return T("add", (other, conv) if first else (conv, other))

    def _residual_parts(d, b):
        conv = nhwc_conv(d, b)
        return (*conv.args, b.input(conv.ty[0])), conv.attrs

    def layer_norm(d, b):
        shape = d(shapes(min_rank=1, max_rank=5))
        return T("layer_norm", (b.input(shape), b.weight(shape[-1:]), b.weight(shape[-1:])),
                 (len(shape) - 1, d(st.sampled_from([1e-5, 1e-12]))))

    def nchw_conv(d, b):
        c = conv_bias(d, b)
        return T("dnnl_conv2d", (*c.args[0].args, c.args[1]),
                 (*c.args[0].attrs, d(st.sampled_from([False, True, (0.0, 6.0)])), "NCHW"))

    return {
        "matmul_to_dnnl": matmul, "linear_to_dnnl": linear,
        "dnnl_linear_relu": lambda d, b: T("relu", (T("dnnl_linear", linear(d, b).args, (False,)),)),
        "conv2d_bias_to_dnnl": conv_bias,
        "conv1d_bias_to_dnnl": lambda d, b: conv1d_per_channel(d, b, "add"),
        "conv2d_to_dnnl": lambda d, b: conv(b, *conv_case(d, b)),
        "conv1d_to_dnnl": lambda d, b: conv1d_case(d, b),
        "dnnl_conv2d_relu": lambda d, b: T("relu", (library_conv(d, b),)),
        "dnnl_conv2d_clip": lambda d, b: T("clip", (library_conv(d, b),),
                                           d(st.sampled_from([(0.0, 6.0), (-0.5, 0.5)]))),
        "dnnl_conv2d_to_nhwc": nchw_conv,
        "dnnl_conv2d_residual": residual,
        "dnnl_conv2d_residual_first": lambda d, b: residual(d, b, first=True),
        "dnnl_conv2d_residual_relu": lambda d, b: T("relu", (T("dnnl_conv2d_add", *_residual_parts(d, b)),)),
        "layer_norm_to_dnnl": layer_norm,
    }


CASES = {**_algebra(), **_fusion(), **_folding(), **_conv(), **_layout(), **_multi(), **_library()}


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_is_sound(rule):
    merge = rule in rule_names("multi") and rule.startswith("merge")
    assert_rule_sound(rule, cases(CASES[rule]), max_examples=EXAMPLES, iterations=1 if merge else 4)


def test_every_rule_has_a_property_test():
    declared = {r for family in FAMILIES for r in rule_names(family)}
    assert declared == set(CASES)


def test_scale_before_reshape_leaves_a_scale_that_adds_axes():
    """A scale of higher rank than the reshape's result broadcasts it to more axes: moving it before the
    reshape would change the type, so the rule must not fire (a saturated model once merged rank 1 and 4)."""
    b = GraphBuilder(0)
    tokens = T("reshape", (b.input((4, 3)),), ((1, 2, 2, 3),))
    graph = Graph(T("tuple", (T("multiply", (tokens, b.weight((1, 1, 1, 1, 3)))),)), b.inputs, b.constants)
    assert "scale_before_reshape" not in run_rule(graph, ruleset(rewrites.rule("scale_before_reshape")))[1]


def test_constant_through_transpose_needs_the_constant_at_the_transposed_rank():
    """x^p + c with c of higher rank than x broadcasts x: c^(p^-1) would not type (a rank-1 identity
    transpose next to a rank-4 constant once stopped a saturated model)."""
    b = GraphBuilder(0)
    xt = T("transpose", (b.input((3,)),), ((0,),))
    graph = Graph(T("tuple", (T("add", (xt, b.weight((1, 1, 1, 3)))),)), b.inputs, b.constants)
    assert "add_constant_through_transpose" not in run_rule(
        graph, ruleset(rewrites.rule("add_constant_through_transpose")))[1]


def test_a_wrong_rule_is_caught():
    """The checker is not vacuous: an e-graph with a false union disagrees by far more than any tolerance."""
    b = GraphBuilder(0)
    x = b.input((3, 4))
    graph = Graph(Term("tuple", (Term("relu", (x,)),)), b.inputs, b.constants)
    egraph = TermEGraph(graph, ())
    assert egraph_disagreement(egraph.view(), graph, b.values, np.float32) == 0.0
    egraph.egraph.register(union(lang.relu(lang.input(PyObject("x0")))).with_(lang.input(PyObject("x0"))))
    egraph.egraph.run(lang.analysis.saturate())
    assert egraph_disagreement(egraph.view(), graph, b.values, np.float32) > 1e-2


def test_assert_rule_sound_rejects_an_unsound_user_rule():
    """A user's rule that is wrong (relu(x) -> x) fails ``assert_rule_sound`` with the program printed."""
    from egglog import rule, var

    y, x = var("y", lang.Tensor), var("x", lang.Tensor)
    wrong = rule(lang.eq_(y, lang.relu(x)), name="relu_is_identity").then(union(y).with_(x))
    with pytest.raises(AssertionError, match="unsound"):
        assert_rule_sound(wrong, cases(lambda d, b: T("relu", (b.input(d(shapes())),))), tolerance=1e-3)
