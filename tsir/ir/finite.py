"""Which terms hold finite values only: the assumption under which a guarded softmax is a softmax.

The assumption, stated once: a model's inputs are finite and its arithmetic does not overflow. Under it,
an infinity or a NaN comes only from a constant that holds one (a mask of -inf) or from an op that makes
one out of finite values: a division by zero, log or sqrt outside their domain, a negative power of 0, or
an op tsir does not model (``opaque``). Those ops count as finite when their operand is known to be in
their domain: a constant checked by value, or a sum of a non-negative term and a positive constant (the
``var + eps`` under every norm's square root).
"""

from __future__ import annotations

import numpy as np

from tsir.ir.term import ConstantValues, Term, postorder

# ops whose finite operands can still give an infinity or a NaN: those with a domain (op -> the operand that
# must be positive), power (finite for a whole, non-negative exponent) and the ops tsir does not model
_DOMAIN = {"divide": 1, "rsqrt": 0, "sqrt": 0, "log": 0}
_UNSAFE = {"power", "opaque", "get_item"}
_NON_NEGATIVE = {"abs", "relu", "exp", "sigmoid", "softmax", "variance", "sqrt", "rsqrt"}
_DEPTH = 8  # how far the sign checks look down a denominator (a residual stream can be thousands deep)


class Finiteness:
    """``finite(term)``: whether ``term`` holds finite values only, under the assumption above."""

    def __init__(self, values: ConstantValues) -> None:
        self.values = values
        self.memo: dict[int, bool] = {}

    def finite(self, term: Term) -> bool:
        for t in postorder(term, self.memo):  # children first, no recursion: deep graphs
            self.memo[id(t)] = self._finite_node(t)
        return self.memo[id(term)]

    def unmasked_rows(self, x: Term, axis: int) -> bool:
        """No guard around ``softmax(x, axis)`` ever fires: ``x`` is finite, or finite plus a constant mask of
        -inf entries that leaves a finite entry in every row (a causal mask)."""
        if self.finite(x):
            return True
        if x.op != "add":
            return False
        for scores, mask in (x.args, x.args[::-1]):
            value = self.values.of(mask)
            if value is not None and self.finite(scores):
                rows = np.broadcast_to(value, x.ty[0])
                return (not np.isnan(rows).any() and not np.isposinf(rows).any()
                        and bool(np.isfinite(rows).any(axis=axis).all()))
        return False

    def _finite_node(self, t: Term) -> bool:
        if t.op == "input":
            return True
        checked = t.op in ("weight", "scalar") or t.op in _DOMAIN or t.op in _UNSAFE
        value = self.values.of(t) if checked or not all(self.memo[id(a)] for a in t.args) else None
        if value is not None:  # a constant: by its value (a -inf fill that a where never selects is finite)
            return not np.issubdtype(value.dtype, np.floating) or bool(np.isfinite(value).all())
        if t.op in ("softmax", "safe_softmax"):  # a row of -inf and finite entries still gives finite values
            return self.unmasked_rows(t.args[0], t.attrs[0])
        if not all(self.memo[id(a)] for a in t.args):
            return False
        if t.op == "power":
            return _whole_exponent(t.args[1])
        if t.op in _UNSAFE:
            return False
        if t.op in _DOMAIN:
            return self._positive(t.args[_DOMAIN[t.op]], _DEPTH)
        return True

    def _positive(self, t: Term, depth: int) -> bool:
        """``t`` > 0 everywhere: a positive constant, non-negative plus positive, or a square root of those."""
        value = self.values.of(t)
        if value is not None:
            return bool((value > 0).all())
        if depth == 0:
            return False
        if t.op in ("sqrt", "rsqrt"):
            return self._positive(t.args[0], depth - 1)
        return t.op == "add" and any(self._positive(a, depth - 1) and self._non_negative(b, _DEPTH)
                                     for a, b in (t.args, t.args[::-1]))

    def _non_negative(self, t: Term, depth: int) -> bool:
        """``t`` >= 0 everywhere: a square, an op with a non-negative range, a mean or sum of those."""
        value = self.values.of(t)
        if value is not None:
            return bool((value >= 0).all())
        if t.op in _NON_NEGATIVE or (t.op == "multiply" and t.args[0] is t.args[1]):
            return True
        if t.op == "power" and t.args[1].op == "scalar" and t.args[1].attrs[0] % 2 == 0:
            return True
        if t.op in ("mean", "sum", "add", "reshape", "broadcast_to", "transpose") and depth > 0:
            return all(self._non_negative(a, depth - 1) for a in t.args)
        return False


def _whole_exponent(exponent: Term) -> bool:
    return exponent.op == "scalar" and exponent.attrs[0] >= 0 and float(exponent.attrs[0]).is_integer()
