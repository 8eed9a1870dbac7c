"""Shared pieces of the rule families: pattern variables, shape helpers, and the fp32 tolerance classes.

Every rule's tolerance is the largest fp32 disagreement ``|lhs - rhs| / max(max|lhs|, 1)`` its
property test accepts (inputs standard normal, contractions of at most ~64 terms):

- ``EXACT`` (0): the two sides do the same fp32 operations on the same values (data movement,
  commutativity, identities, max/relu orderings), so they agree bit for bit.
- ``ELEMENTWISE`` (1e-5): a few elementwise roundings are reordered (constant chains): each side is
  within 2-3 ulp (u = 6e-8) of Σ|terms| <= ~20 (standard-normal operands), so <= ~4e-6.
- ``CONTRACTION`` (1e-3): a sum of n products is reassociated (matmul/conv reordering, weight folding):
  the standard bound is n·u·Σ|terms|; for n <= 64 standard-normal terms Σ|terms| <= ~50, giving
  ~2e-4 worst case (typical errors are ~1e-6). A wrong rule is off by O(0.1-1).
"""

from __future__ import annotations

from egglog import PyObject, var

from tsir.ir.lang import Tensor, TensorList

EXACT, ELEMENTWISE, CONTRACTION = 0.0, 1e-5, 1e-3

x, y, z, a, b, c, w, w1, w2, w3, b1, b2, b3, y1, y2, y3, s = (
    var(n, Tensor) for n in ("x", "y", "z", "a", "b", "c", "w", "w1", "w2", "w3", "b1", "b2", "b3", "y1",
                             "y2", "y3", "s"))
rest = var("rest", TensorList)
p, q, s1, s2, tx, ty_, tw, ta, tb, tc, t1, t2, t3, v = (
    var(n, PyObject) for n in ("p", "q", "s1", "s2", "tx", "ty", "tw", "ta", "tb", "tc", "t1", "t2", "t3", "v"))
strides, padding, dilation, groups, axis, begin, mid, end, layout = (
    var(n, PyObject) for n in ("strides", "padding", "dilation", "groups", "axis", "begin", "mid", "end", "layout"))


def shape(t: tuple) -> tuple:
    return tuple(t[0])


def rank(t: tuple) -> int:
    return len(t[0])
