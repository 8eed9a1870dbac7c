"""Fusion-enabling forms: a matmul and its bias as one ``linear`` op that TVM fuses into one kernel."""

from egglog import PyObject, rule, ruleset, union, var

from tsir.ir.lang import Tensor, add, eq_, holds, linear, matmul, ty
from tsir.ir.ops import OPS

x, w, b, y = (var(n, Tensor) for n in "xwby")
tx, tw, tb = (var(n, PyObject) for n in ("tx", "tw", "tb"))


def _is_bias(tx: tuple, tw: tuple, tb: tuple) -> bool:
    try:
        OPS["linear"].infer((tx, tw, tb), ())
    except ValueError:
        return False
    return True


rules = ruleset(
    rule(eq_(y, add(matmul(x, w), b)), eq_(ty(x), tx), eq_(ty(w), tw), eq_(ty(b), tb),
         holds(_is_bias, tx, tw, tb), name="matmul_bias_to_linear").then(
        union(y).with_(linear(x, w, b))),  # x@w + b -> linear(x, w, b) when b runs along the last axis
    name="fusion",
)
