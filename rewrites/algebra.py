"""Exact algebra: transpose and reshape chains, identities, commutativity."""

from egglog import PyObject, rule, ruleset, union, var

from tsir.ir.lang import Tensor, add, computed, eq_, holds, multiply, reshape, transpose, ty

x, a, b = var("x", Tensor), var("a", Tensor), var("b", Tensor)
p, q, s1, s2, t = (var(n, PyObject) for n in ("p", "q", "s1", "s2", "t"))


def _compose(p: tuple, q: tuple) -> tuple:
    return tuple(p[i] for i in q)


def _is_identity(p: tuple) -> bool:
    return tuple(p) == tuple(range(len(p)))


def _same_shape(t: tuple, shape: tuple) -> bool:
    return tuple(t[0]) == tuple(shape)


rules = ruleset(
    rule(eq_(a, transpose(transpose(x, p), q)), name="transpose_transpose").then(
        union(a).with_(transpose(x, computed(_compose, p, q)))),  # (x^p)^q -> x^(p[q])
    rule(eq_(a, transpose(x, p)), holds(_is_identity, p), name="transpose_identity").then(
        union(a).with_(x)),  # x^id -> x
    rule(eq_(a, reshape(reshape(x, s1), s2)), name="reshape_reshape").then(
        union(a).with_(reshape(x, s2))),  # reshape(reshape(x, s1), s2) -> reshape(x, s2)
    rule(eq_(a, reshape(x, s1)), eq_(ty(x), t), holds(_same_shape, t, s1), name="reshape_identity").then(
        union(a).with_(x)),  # reshape(x, shape(x)) -> x
    rule(eq_(x, add(a, b)), name="add_commute").then(union(x).with_(add(b, a))),  # a+b -> b+a
    rule(eq_(x, multiply(a, b)), name="multiply_commute").then(union(x).with_(multiply(b, a))),  # a*b -> b*a
    name="algebra",
)
