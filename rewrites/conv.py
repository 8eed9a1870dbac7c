"""Convolution forms: 1×1 convolution ⇄ matmul, grouped convolution ⇄ concatenated convolutions,
zero padding merged into the convolution (2-D and 1-D), and dilation of a 1×1 kernel dropped."""

from __future__ import annotations

from egglog import PyObject, rule, ruleset, union

from tsir.ir.lang import (
    computed,
    concat,
    conv1d,
    conv2d,
    eq_,
    holds,
    is_const,
    matmul,
    pad,
    reshape,
    slice,
    tlist,
    transpose,
    ty,
)
from tsir.rewrites._common import (
    CONTRACTION,
    EXACT,
    a,
    b,
    dilation,
    groups,
    p,
    padding,
    q,
    rank,
    shape,
    strides,
    t1,
    ta,
    tw,
    tx,
    w,
    w1,
    w2,
    x,
    y,
)

_ONE, _ZERO_PAD = PyObject((1, 1)), PyObject((0, 0, 0, 0))
_NHWC, _NCHW = PyObject((0, 2, 3, 1)), PyObject((0, 3, 1, 2))


def _is_1x1(tw: tuple, groups: int) -> bool:
    return shape(tw)[2:] == (1, 1) and groups == 1


def _rows(tx: tuple) -> tuple:
    n, c, h, wd = shape(tx)
    return (n * h * wd, c)


def _matrix(tw: tuple) -> tuple:
    return shape(tw)[:2]


def _nhwc_out(tx: tuple, tw: tuple) -> tuple:
    n, _, h, wd = shape(tx)
    return (n, h, wd, shape(tw)[0])


def _is_matrix_pair(tx: tuple, tw: tuple) -> bool:
    return rank(tx) == 2 and rank(tw) == 2


def _as_image(tx: tuple) -> tuple:
    return (*shape(tx), 1, 1)


def _as_kernel(tw: tuple) -> tuple:
    k, n = shape(tw)
    return (n, k, 1, 1)


def _out_matrix(tx: tuple, tw: tuple) -> tuple:
    return (shape(tx)[0], shape(tw)[1])


def _splittable(groups: int) -> bool:
    """Even group counts split in two; at most 8 groups (a cost guard: depthwise convs would explode)."""
    return groups % 2 == 0 and groups <= 8


def _half(t: tuple, axis: int) -> int:
    return shape(t)[axis] // 2


def _full(t: tuple, axis: int) -> int:
    return shape(t)[axis]


def _halve(groups: int) -> int:
    return groups // 2


def _double(groups: int) -> int:
    return 2 * groups


def _spatial_only(widths: tuple) -> bool:
    return len(widths) == 8 and not any(widths[:4])


def _merge_pads(widths: tuple, padding: tuple) -> tuple:
    """conv padding (top, left, bottom, right) plus pad widths (.., .., .., .., top, bottom, left, right)."""
    return (padding[0] + widths[4], padding[1] + widths[6], padding[2] + widths[5], padding[3] + widths[7])


def _spatial_only_1d(widths: tuple) -> bool:
    return len(widths) == 6 and not any(widths[:4])


def _merge_pads_1d(widths: tuple, padding: tuple) -> tuple:
    """conv1d padding (left, right) plus pad widths (.., .., .., .., left, right)."""
    return (padding[0] + widths[4], padding[1] + widths[5])


def _add_widths(p: tuple, q: tuple) -> tuple:
    return tuple(i + j for i, j in zip(p, q, strict=True))


def _zero(widths: tuple) -> bool:
    return not any(widths)


def _drop_dilation(tw: tuple, dilation: tuple) -> bool:
    return shape(tw)[2:] == (1, 1) and tuple(dilation) != (1, 1)


_lo = slice(x, PyObject(1), PyObject(0), computed(_half, tx, PyObject(1)))
_hi = slice(x, PyObject(1), computed(_half, tx, PyObject(1)), computed(_full, tx, PyObject(1)))
_w_lo = slice(w, PyObject(0), PyObject(0), computed(_half, tw, PyObject(0)))
_w_hi = slice(w, PyObject(0), computed(_half, tw, PyObject(0)), computed(_full, tw, PyObject(0)))

RULES = [
    # conv1x1(x, w) -> NCHW(reshape(NHWC(x), (NHW, C)) @ reshape(w, (O, C))^T)   (stride 1, no padding, 1 group)
    rule(eq_(y, conv2d(x, w, _ONE, _ZERO_PAD, dilation, groups)), eq_(ty(x), tx), eq_(ty(w), tw),
         holds(_is_1x1, tw, groups), name="conv1x1_to_matmul").then(
        union(y).with_(transpose(reshape(matmul(reshape(transpose(x, _NHWC), computed(_rows, tx)),
                                                transpose(reshape(w, computed(_matrix, tw)), PyObject((1, 0)))),
                                         computed(_nhwc_out, tx, tw)), _NCHW))),
    # x@w -> reshape(conv1x1(reshape(x, (M, K, 1, 1)), reshape(w^T, (N, K, 1, 1))), (M, N))   (constant w)
    rule(eq_(y, matmul(x, w)), is_const(w), eq_(ty(x), tx), eq_(ty(w), tw), holds(_is_matrix_pair, tx, tw),
         name="matmul_to_conv1x1").then(
        union(y).with_(reshape(conv2d(reshape(x, computed(_as_image, tx)),
                                      reshape(transpose(w, PyObject((1, 0))), computed(_as_kernel, tw)),
                                      _ONE, _ZERO_PAD, _ONE, PyObject(1)), computed(_out_matrix, tx, tw)))),
    # conv(x, w, groups=2g) -> concat(conv(x[:, :C/2], w[:O/2], g), conv(x[:, C/2:], w[O/2:], g))
    rule(eq_(y, conv2d(x, w, strides, padding, dilation, groups)), eq_(ty(x), tx), eq_(ty(w), tw),
         holds(_splittable, groups), name="split_grouped_conv").then(
        union(y).with_(concat(tlist(conv2d(_lo, _w_lo, strides, padding, dilation, computed(_halve, groups)),
                                    conv2d(_hi, _w_hi, strides, padding, dilation, computed(_halve, groups))),
                              PyObject(1)))),
    # concat(conv(a, w1, g), conv(b, w2, g)) -> conv(concat(a, b), concat(w1, w2), 2g)   (a, b and w1, w2 alike)
    rule(eq_(y, concat(tlist(conv2d(a, w1, strides, padding, dilation, groups),
                             conv2d(b, w2, strides, padding, dilation, groups)), PyObject(1))),
         eq_(ty(a), ta), eq_(ty(b), ta), eq_(ty(w1), t1), eq_(ty(w2), t1), name="merge_convs_to_grouped").then(
        union(y).with_(conv2d(concat(tlist(a, b), PyObject(1)), concat(tlist(w1, w2), PyObject(0)),
                              strides, padding, dilation, computed(_double, groups)))),
    # conv(pad(x, spatial zeros), w, padding) -> conv(x, w, padding + zeros)
    rule(eq_(y, conv2d(pad(x, p), w, strides, padding, dilation, groups)), holds(_spatial_only, p),
         name="pad_into_conv").then(
        union(y).with_(conv2d(x, w, strides, computed(_merge_pads, p, padding), dilation, groups))),
    # conv1d(pad(x, spatial zeros), w, padding) -> conv1d(x, w, padding + zeros)
    rule(eq_(y, conv1d(pad(x, p), w, strides, padding, dilation, groups)), holds(_spatial_only_1d, p),
         name="pad_into_conv1d").then(
        union(y).with_(conv1d(x, w, strides, computed(_merge_pads_1d, p, padding), dilation, groups))),
    # pad(pad(x, p), q) -> pad(x, p + q);   pad(x, 0) -> x
    rule(eq_(y, pad(pad(x, p), q)), name="pad_pad").then(union(y).with_(pad(x, computed(_add_widths, p, q)))),
    rule(eq_(y, pad(x, p)), holds(_zero, p), name="pad_zero").then(union(y).with_(x)),
    # a 1×1 kernel reads one pixel per output: its dilation is irrelevant
    rule(eq_(y, conv2d(x, w, strides, padding, dilation, groups)), eq_(ty(w), tw),
         holds(_drop_dilation, tw, dilation), name="conv1x1_dilation").then(
        union(y).with_(conv2d(x, w, strides, padding, _ONE, groups))),
]
rules = ruleset(*RULES, name="conv")

TOLERANCE = {
    "conv1x1_to_matmul": CONTRACTION, "matmul_to_conv1x1": CONTRACTION,  # same sums, another kernel's order
    "split_grouped_conv": CONTRACTION, "merge_convs_to_grouped": CONTRACTION,
    "pad_into_conv": CONTRACTION, "pad_into_conv1d": CONTRACTION, "conv1x1_dilation": CONTRACTION,
    "pad_pad": EXACT, "pad_zero": EXACT,
}
