"""TASO-style multi-pattern rules: parallel matmuls on one input become one wider matmul."""

from egglog import PyObject, ne, rule, ruleset, union, var

from tsir.ir.lang import Tensor, computed, concat, eq_, holds, is_const, matmul, slice, tlist, ty

x, w1, w2, y1, y2 = (var(n, Tensor) for n in ("x", "w1", "w2", "y1", "y2"))
t1, t2, ty1 = (var(n, PyObject) for n in ("t1", "t2", "ty1"))


def _mergeable(t1: tuple, t2: tuple) -> bool:
    (s1, d1), (s2, d2) = t1, t2
    return len(s1) == len(s2) == 2 and s1[0] == s2[0] and d1 == d2


def _last_axis(t: tuple) -> int:
    return len(t[0]) - 1


def _width(t: tuple) -> int:
    return t[0][-1]


def _total(t1: tuple, t2: tuple) -> int:
    return t1[0][-1] + t2[0][-1]


_merged = matmul(x, concat(tlist(w1, w2), PyObject(1)))
rules = ruleset(
    # x@w1, x@w2 -> (x@[w1|w2])[..., :n1], (x@[w1|w2])[..., n1:]   (w1, w2 constant K×N matrices)
    rule(eq_(y1, matmul(x, w1)), eq_(y2, matmul(x, w2)), is_const(w1), is_const(w2),
         eq_(ty(w1), t1), eq_(ty(w2), t2), eq_(ty(y1), ty1), holds(_mergeable, t1, t2),
         ne(w1).to(w2),
         name="merge_parallel_matmul").then(
        union(y1).with_(slice(_merged, computed(_last_axis, ty1), PyObject(0), computed(_width, t1))),
        union(y2).with_(slice(_merged, computed(_last_axis, ty1), computed(_width, t1), computed(_total, t1, t2))),
    ),
    name="multi",
)
