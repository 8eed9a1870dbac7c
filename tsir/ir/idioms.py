"""Exporters' idioms: the multi-op patterns that ``torch.export`` and the ONNX exporter write for one op,
read back as that op while a model is converted (the converter sees constants' values; the e-graph does not).

- torch's ``_safe_softmax`` (scaled dot-product attention): ``where(not any(x != -inf), 0, softmax(x))``,
  written as equal / logical_not / astype / max / astype / logical_not / where;
- the ONNX exporter's guard on the same softmax: ``where(isnan(softmax(x)), 0, softmax(x))``.
Both become ``safe_softmax(x, axis, guard)``; ``guard`` keeps which rows are zeroed ("masked": rows that
are all -inf; "nan": NaN results), so each keeps its own exact semantics.
"""

from __future__ import annotations

import numpy as np

from tsir.ir.term import Term, fold, is_constant


def read(term: Term, constants: list[np.ndarray]) -> Term:
    """``term``, or the op it spells when it is the root of an idiom."""
    if term.op == "where":
        return _safe_softmax(term, constants) or term
    return term


def _constant_equal(term: Term, constants: list[np.ndarray], value: float) -> bool:
    """``term`` is a constant whose every element is ``value``."""
    if not is_constant(term, {}):
        return False
    return bool(np.all(fold(term, constants, {}) == value))


def _safe_softmax(where: Term, constants: list[np.ndarray]) -> Term | None:
    condition, zero, s = where.args
    if s.op != "softmax" or where.ty != s.ty or not _constant_equal(zero, constants, 0.0):
        return None
    (x,), (axis,) = s.args, s.attrs
    if condition.op == "isnan" and condition.args[0] is s:
        return Term("safe_softmax", (x,), (axis, "nan"))
    if _fully_masked_rows(condition, constants) == (x, axis):
        return Term("safe_softmax", (x,), (axis, "masked"))
    return None


def _fully_masked_rows(condition: Term, constants: list[np.ndarray]) -> tuple[Term, int] | None:
    """``(x, axis)`` when ``condition`` is torch's test "every element of the row along axis is -inf":
    logical_not(astype(max(astype(logical_not(equal(x, -inf)), int8), axis, keepdims), bool))."""
    chain = [("logical_not", ()), ("astype", ("bool",)), ("max", None), ("astype", None), ("logical_not", ())]
    node, reduced = condition, None
    for op, attrs in chain:
        if node.op != op or (attrs is not None and node.attrs != attrs):
            return None
        if op == "max":
            reduced = node.attrs
        node = node.args[0]
    axes, keepdims = reduced
    if node.op != "equal" or len(axes) != 1 or not keepdims or not _constant_equal(node.args[1], constants, -np.inf):
        return None
    return node.args[0], axes[0]
