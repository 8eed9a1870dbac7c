"""Layout: elementwise ops commute with transpose and reshape, so NCHW⇄NHWC transposes move through
elementwise chains (clip included, and batch norm, concat, slice, mean, max pooling) until they meet and
cancel."""

from __future__ import annotations

from egglog import PyObject, rule, ruleset, union, var

from tsir._compat.egglog import declared_rules
from tsir.ir.lang import (
    CONSTRUCTORS,
    batch_norm,
    clip,
    computed,
    concat,
    eq_,
    holds,
    is_const,
    max_pool2d,
    mean,
    reshape,
    slice,
    tlist,
    transpose,
    ty,
)
from tsir.ir.ops import OPS, TO_NCHW, Category, ops_in
from tsir.rewrites._common import (
    ELEMENTWISE,
    EXACT,
    a,
    axis,
    b,
    begin,
    c,
    dilation,
    end,
    p,
    padding,
    q,
    rank,
    s1,
    shape,
    strides,
    t1,
    ta,
    tc,
    v,
    w,
    w1,
    w2,
    x,
    y,
    z,
)

# the elementwise ops without attributes (clip has its own rules below), from the registry's categories
UNARY = {name: CONSTRUCTORS[name] for name in sorted(ops_in(Category.UNARY)) if not OPS[name].attrs}
BINARY = {name: CONSTRUCTORS[name] for name in sorted(ops_in(Category.BINARY))}


def _inverse(p: tuple) -> tuple:
    out = [0] * len(p)
    for i, j in enumerate(p):
        out[j] = i
    return tuple(out)


def _same_rank_operand(tc: tuple, ta: tuple, p: tuple) -> bool:
    """A constant operand of the transposed side's full rank that does not broadcast it (``ta``: the result)."""
    return rank(tc) == rank(ta) == len(p) and all(d in (1, e) for d, e in zip(shape(tc), shape(ta), strict=True))


def _permute_axis(p: tuple, axis: int) -> int:
    return p[axis]


def _inverse_axis(p: tuple, axis: int) -> int:
    """Where axis ``axis`` of ``x`` lands in ``x^p``."""
    return p.index(axis)


def _permute_axes(p: tuple, axes: tuple) -> tuple:
    return tuple(sorted(p[i] for i in axes))


def _keepdims(keep: bool) -> bool:
    return bool(keep)


def _axis_groups(source: tuple, target: tuple) -> list[tuple[list, list]] | None:
    """A reshape from ``source`` to ``target`` as runs of axes with equal sizes: (source axes, target axes)."""
    if 0 in source:
        return None
    groups, i, j = [], 0, 0
    while i < len(source) or j < len(target):
        if i < len(source) and j < len(target) and (source[i] == 1) != (target[j] == 1):
            # an axis of size 1 on one side only: a run of its own (inserted or dropped), whatever follows
            groups.append(([i], []) if source[i] == 1 else ([], [j]))
            i, j = (i + 1, j) if source[i] == 1 else (i, j + 1)
            continue
        src, dst, size_src, size_dst = [], [], 1, 1
        if i < len(source):
            src, size_src, i = [i], source[i], i + 1
        if j < len(target):
            dst, size_dst, j = [j], target[j], j + 1
        while size_src != size_dst:
            if size_src < size_dst:
                src, size_src, i = [*src, i], size_src * source[i], i + 1
            else:
                dst, size_dst, j = [*dst, j], size_dst * target[j], j + 1
        groups.append((src, dst))
    return groups


def _lifted_permutation(tx: tuple, s: tuple, p: tuple) -> tuple | None:
    """The permutation of ``x``'s axes that moves the same data as ``transpose(reshape(x, s), p)``: defined
    when ``p`` moves each run of axes the reshape merges or splits as one block, in order."""
    groups = _axis_groups(shape(tx), tuple(s))
    if groups is None:
        return None
    order, seen = [], set()
    for k, moved in enumerate(p):
        group = next(g for g in groups if moved in g[1])
        if moved != group[1][0]:
            if k == 0 or p[k - 1] != moved - 1:  # a block's axes must stay adjacent and in order
                return None
            continue
        order.append(group)
        seen.add(id(group))
    lifted = [a for src, _ in order for a in src] + [a for g in groups if id(g) not in seen for a in g[0]]
    return tuple(lifted)


def _liftable(tx: tuple, s: tuple, p: tuple) -> bool:
    return _lifted_permutation(tx, s, p) is not None


_rules = []
for _name, _op in UNARY.items():
    _rules += [
        rule(eq_(y, _op(transpose(x, p))), name=f"{_name}_through_transpose").then(
            union(y).with_(transpose(_op(x), p))),  # f(x^p) -> f(x)^p
        rule(eq_(y, transpose(_op(x), p)), name=f"transpose_through_{_name}").then(
            union(y).with_(_op(transpose(x, p)))),  # f(x)^p -> f(x^p)
        rule(eq_(y, _op(reshape(x, s1))), name=f"{_name}_through_reshape").then(
            union(y).with_(reshape(_op(x), s1))),  # f(reshape(x)) -> reshape(f(x))
    ]
for _name, _op in BINARY.items():
    _rules += [
        # op(a^p, b^p) <-> op(a, b)^p   (a, b of one type: no broadcasting to reorder)
        rule(eq_(y, _op(transpose(a, p), transpose(b, p))), eq_(ty(a), ta), eq_(ty(b), ta),
             name=f"{_name}_of_transposes").then(union(y).with_(transpose(_op(a, b), p))),
        rule(eq_(y, transpose(_op(a, b), p)), eq_(ty(a), ta), eq_(ty(b), ta),
             name=f"transpose_of_{_name}").then(union(y).with_(_op(transpose(a, p), transpose(b, p)))),
        # op(reshape(a, s), reshape(b, s)) -> reshape(op(a, b), s)   (a, b of one type)
        rule(eq_(y, _op(reshape(a, s1), reshape(b, s1))), eq_(ty(a), ta), eq_(ty(b), ta),
             name=f"{_name}_of_reshapes").then(union(y).with_(reshape(_op(a, b), s1))),
        # op(a^p, c) -> op(a, c^(p^-1))^p   for a constant c of full rank that only broadcasts itself
        rule(eq_(y, _op(transpose(a, p), c)), is_const(c), eq_(ty(c), tc), eq_(ty(y), t1),
             holds(_same_rank_operand, tc, t1, p), name=f"{_name}_constant_through_transpose").then(
            union(y).with_(transpose(_op(a, transpose(c, computed(_inverse, p))), p))),
    ]
low, high = var("low", PyObject), var("high", PyObject)
pool = var("pool", PyObject)
_rules += [
    # clip(x^p) <-> clip(x)^p
    rule(eq_(y, clip(transpose(x, p), low, high)), name="clip_through_transpose").then(
        union(y).with_(transpose(clip(x, low, high), p))),
    rule(eq_(y, transpose(clip(x, low, high), p)), name="transpose_through_clip").then(
        union(y).with_(clip(transpose(x, p), low, high))),
    # max_pool2d(x^NCHW, NCHW) -> max_pool2d(x, NHWC)^NCHW   (x is NHWC: the pool computes in it)
    rule(eq_(y, max_pool2d(transpose(x, PyObject(TO_NCHW)), pool, strides, padding, dilation, PyObject("NCHW"))),
         name="max_pool2d_through_transpose").then(
        union(y).with_(transpose(max_pool2d(x, pool, strides, padding, dilation, PyObject("NHWC")),
                                 PyObject(TO_NCHW)))),
    # bn(x^p, axis) -> bn(x, p[axis])^p
    rule(eq_(y, batch_norm(transpose(x, p), w, w1, w2, z, axis, v)), name="batch_norm_through_transpose").then(
        union(y).with_(transpose(batch_norm(x, w, w1, w2, z, computed(_permute_axis, p, axis), v), p))),
    # concat(a^p, b^p, axis) -> concat(a, b, p[axis])^p
    rule(eq_(y, concat(tlist(transpose(a, p), transpose(b, p)), axis)), name="concat_of_transposes").then(
        union(y).with_(transpose(concat(tlist(a, b), computed(_permute_axis, p, axis)), p))),
    # slice(x^p, axis) -> slice(x, p[axis])^p
    rule(eq_(y, slice(transpose(x, p), axis, begin, end)), name="slice_through_transpose").then(
        union(y).with_(transpose(slice(x, computed(_permute_axis, p, axis), begin, end), p))),
    # transpose(concat(a, b, axis), p) -> concat(a^p, b^p, p^-1[axis])   and   transpose(slice(x, axis), p) ->
    # slice(x^p, p^-1[axis]): a transpose moves up to the tensor it shares (rotary embeddings slice the heads)
    rule(eq_(y, transpose(concat(tlist(a, b), axis), p)), name="transpose_of_concat").then(
        union(y).with_(concat(tlist(transpose(a, p), transpose(b, p)), computed(_inverse_axis, p, axis)))),
    rule(eq_(y, transpose(slice(x, axis, begin, end), p)), name="transpose_through_slice").then(
        union(y).with_(slice(transpose(x, p), computed(_inverse_axis, p, axis), begin, end))),
    # transpose(reshape(x, s), p) -> reshape(transpose(x, p'), ...)   when the reshape only merges or splits
    # runs of axes that p moves as blocks (ONNX writes k^T of attention as reshape / transpose / reshape)
    rule(eq_(y, transpose(reshape(x, s1), p)), eq_(ty(x), ta), eq_(ty(y), t1), holds(_liftable, ta, s1, p),
         name="transpose_through_reshape").then(
        union(y).with_(reshape(transpose(x, computed(_lifted_permutation, ta, s1, p)), computed(shape, t1)))),
    # mean(x^p, axes, keepdims) -> mean(x, p[axes], keepdims)^p
    rule(eq_(y, mean(transpose(x, p), s1, q)), holds(_keepdims, q), name="mean_through_transpose").then(
        union(y).with_(transpose(mean(x, computed(_permute_axes, p, s1), q), p))),
]
RULES = _rules
rules = ruleset(*RULES, name="layout")
TOLERANCE = {r.name: EXACT for r in declared_rules(rules)}  # data movement only: bit-exact
TOLERANCE["mean_through_transpose"] = ELEMENTWISE  # the same sum, in another memory order
