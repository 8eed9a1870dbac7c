"""TASO-style multi-pattern rules and concat/split cancellation.

The merges (``MERGES``) match two or three ops at once and only widen the e-graph, so the e-graph
driver runs them a bounded number of passes; the cancellation rules (``cancel``) run to saturation.
"""

from __future__ import annotations

from egglog import PyObject, ne, rule, ruleset, union

from tsir._compat.egglog import declared_rules
from tsir.ir.lang import computed, concat, conv1d, conv2d, eq_, holds, is_const, linear, matmul, slice, tlist, ty
from tsir.rewrites._common import (
    CONTRACTION,
    EXACT,
    axis,
    b1,
    b2,
    begin,
    dilation,
    end,
    groups,
    mid,
    padding,
    rank,
    rest,
    shape,
    strides,
    t1,
    t2,
    t3,
    tx,
    ty_,
    w1,
    w2,
    w3,
    x,
    y,
    y1,
    y2,
    y3,
)
from tsir.rewrites._common import a as x1
from tsir.rewrites._common import b as x2
from tsir.rewrites._common import p as b2_
from tsir.rewrites._common import q as e2_
from tsir.rewrites._common import w as wt
from tsir.rewrites._common import z as piece


def _matrices(*ts: tuple) -> bool:
    """Weight matrices with one row count (so they concatenate along columns)."""
    return all(rank(t) == 2 and shape(t)[0] == shape(ts[0])[0] for t in ts)


def _vectors(t1: tuple, t2: tuple) -> bool:
    return rank(t1) == rank(t2) == 1


def _last_axis(t: tuple) -> int:
    return rank(t) - 1


def _row_axis(t: tuple) -> int:
    return rank(t) - 2


def _width(t: tuple, axis: int = -1) -> int:
    return shape(t)[axis]


def _sum(*widths: int) -> int:
    return sum(widths)


def _merge_convs(t1: tuple, t2: tuple, groups: int) -> bool:
    return groups == 1 and shape(t1)[1:] == shape(t2)[1:]


def _stackable(t1: tuple, t2: tuple, tw: tuple) -> bool:
    """Inputs that differ only in their row count, against one weight matrix."""
    return rank(t1) == rank(t2) >= 2 and rank(tw) == 2 and shape(t1)[:-2] == shape(t2)[:-2] \
        and shape(t1)[-1] == shape(t2)[-1]


def _whole(tx: tuple, axis: int, begin: int, end: int) -> bool:
    return begin == 0 and end == shape(tx)[axis]


def _past(t: tuple, axis: int, begin: int) -> bool:
    return begin >= shape(t)[axis]


def _shift(value: int, t: tuple, axis: int) -> int:
    return value - shape(t)[axis]


def _plus(i: int, j: int) -> int:
    return i + j


def _pieces(y, merged, widths_t, last, width_axis: int = -1) -> list:
    """union(y_i, slice(merged, last, offset_i, offset_i + width_i)); width_i is axis ``width_axis`` of t_i."""
    actions, offset = [], PyObject(0)
    for yi, ti in zip(y, widths_t, strict=True):
        stop = computed(_sum, offset, computed(_width, ti, PyObject(width_axis)))
        actions.append(union(yi).with_(slice(merged, last, offset, stop)))
        offset = stop
    return actions


_cols = PyObject(1)
MERGES = [
    # x@w1, x@w2 -> (x@[w1|w2])[..., :n1], (x@[w1|w2])[..., n1:]   (w1, w2 constant K×N matrices)
    rule(eq_(y1, matmul(x, w1)), eq_(y2, matmul(x, w2)), is_const(w1), is_const(w2), ne(w1).to(w2),
         eq_(ty(w1), t1), eq_(ty(w2), t2), eq_(ty(y1), tx), holds(_matrices, t1, t2),
         name="merge_parallel_matmul").then(
        *_pieces((y1, y2), matmul(x, concat(tlist(w1, w2), _cols)), (t1, t2), computed(_last_axis, tx))),
    # linear(x, w1, b1), linear(x, w2, b2) -> one linear with concatenated weights and biases, split
    rule(eq_(y1, linear(x, w1, b1)), eq_(y2, linear(x, w2, b2)), is_const(w1), is_const(w2), ne(w1).to(w2),
         eq_(ty(w1), t1), eq_(ty(w2), t2), eq_(ty(b1), tx), eq_(ty(b2), t3), holds(_matrices, t1, t2),
         holds(_vectors, tx, t3), eq_(ty(y1), ty_), name="merge_parallel_linear").then(
        *_pieces((y1, y2), linear(x, concat(tlist(w1, w2), _cols), concat(tlist(b1, b2), PyObject(0))), (t1, t2),
                 computed(_last_axis, ty_))),
    # Q, K, V: x@w1, x@w2, x@w3 -> x@[w1|w2|w3], split in three
    rule(eq_(y1, matmul(x, w1)), eq_(y2, matmul(x, w2)), eq_(y3, matmul(x, w3)), is_const(w1), is_const(w2),
         is_const(w3), ne(w1).to(w2), ne(w2).to(w3), ne(w1).to(w3), eq_(ty(w1), t1), eq_(ty(w2), t2),
         eq_(ty(w3), t3), eq_(ty(y1), tx), holds(_matrices, t1, t2, t3), name="merge_qkv").then(
        *_pieces((y1, y2, y3), matmul(x, concat(tlist(w1, w2, w3), _cols)), (t1, t2, t3), computed(_last_axis, tx))),
    *(  # conv(x, w1), conv(x, w2) -> conv(x, [w1; w2]) split along channels   (same attributes, one group)
        rule(eq_(y1, conv(x, w1, strides, padding, dilation, groups)),
             eq_(y2, conv(x, w2, strides, padding, dilation, groups)), ne(w1).to(w2), eq_(ty(w1), t1),
             eq_(ty(w2), t2), holds(_merge_convs, t1, t2, groups), name=name).then(
            *_pieces((y1, y2), conv(x, concat(tlist(w1, w2), PyObject(0)), strides, padding, dilation, groups),
                     (t1, t2), PyObject(1), 0))
        for conv, name in ((conv2d, "merge_parallel_conv"), (conv1d, "merge_parallel_conv1d"))),
    # x1@w, x2@w -> ([x1; x2]@w) split along rows   (one shared weight matrix)
    rule(eq_(y1, matmul(x1, wt)), eq_(y2, matmul(x2, wt)), ne(x1).to(x2), eq_(ty(x1), t1), eq_(ty(x2), t2),
         eq_(ty(wt), t3), holds(_stackable, t1, t2, t3), name="merge_shared_weight_matmul").then(
        *_pieces((y1, y2), matmul(concat(tlist(x1, x2), computed(_row_axis, t1)), wt), (t1, t2),
                 computed(_row_axis, t1), -2)),
]

_cancel = [
    # slice(x, axis, 0, len) -> x;   concat([x]) -> x
    rule(eq_(y, slice(x, axis, begin, end)), eq_(ty(x), tx), holds(_whole, tx, axis, begin, end),
         name="slice_whole").then(union(y).with_(x)),
    rule(eq_(y, concat(tlist(x), axis)), name="concat_single").then(union(y).with_(x)),
    # concat([p, ...])[:len(p)] -> p
    rule(eq_(y, slice(concat(rest.cons(piece), axis), axis, begin, end)), eq_(ty(piece), t1),
         holds(_whole, t1, axis, begin, end), name="slice_of_concat_head").then(union(y).with_(piece)),
    # concat([p, *rest])[b:e] -> concat(rest)[b - len(p):e - len(p)]   for b >= len(p)
    rule(eq_(y, slice(concat(rest.cons(piece), axis), axis, begin, end)), eq_(ty(piece), t1),
         holds(_past, t1, axis, begin), name="slice_of_concat_tail").then(
        union(y).with_(slice(concat(rest, axis), axis, computed(_shift, begin, t1, axis),
                             computed(_shift, end, t1, axis)))),
    # concat([x[b:m], x[m:e], *rest]) -> concat([x[b:e], *rest])   (split then concat)
    rule(eq_(y, concat(rest.cons(slice(x, axis, mid, end)).cons(slice(x, axis, begin, mid)), axis)),
         name="concat_of_adjacent_slices").then(
        union(y).with_(concat(rest.cons(slice(x, axis, begin, end)), axis))),
    # x[b1:e1][b2:e2] -> x[b1 + b2:b1 + e2]
    rule(eq_(y, slice(slice(x, axis, begin, end), axis, b2_, e2_)), name="slice_of_slice").then(
        union(y).with_(slice(x, axis, computed(_plus, begin, b2_), computed(_plus, begin, e2_)))),
]
cancel = ruleset(*_cancel, name="multi_cancel")
RULES = [*MERGES, *_cancel]
rules = ruleset(*RULES, name="multi")
TOLERANCE = {
    # the merged op computes each output element with the same sum as before (another kernel's order)
    **{r.name: CONTRACTION for r in declared_rules(ruleset(*MERGES, name="multi_merge"))},
    **{r.name: EXACT for r in declared_rules(cancel)},  # data movement
}
