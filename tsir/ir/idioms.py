"""Exporters' idioms: the multi-op patterns that ``torch.export`` and the ONNX exporter write for one op,
read back as that op while a model is converted (the converter sees constants' values; the e-graph does not).

- torch's ``_safe_softmax`` (scaled dot-product attention): ``where(not any(x != -inf), 0, softmax(x))``,
  written as equal / logical_not / astype / max / astype / logical_not / where;
- the ONNX exporter's guard on the same softmax: ``where(isnan(softmax(x)), 0, softmax(x))``.
Both become ``safe_softmax(x, axis, guard)``; ``guard`` keeps which rows are zeroed ("masked": rows that
are all -inf; "nan": NaN results), so each keeps its own exact semantics. Where ``x`` holds finite values
only, or finite scores plus a constant mask that leaves a finite entry in every row (``tsir.ir.finite``:
finite inputs, no overflow), neither guard ever fires, and the idiom is a plain softmax, which is what the
ONNX exporter writes for the same attention.

Gathers' indices are read back too: ``take`` and ``gather_elements`` count negative indices from the end,
so the ONNX exporter's wrap ``where(less(i, 0), add(i, n), i)`` is ``i`` itself, and a cast of integer
indices to an integer type wide enough for the axis (TVM's torch frontend casts token ids to int32) changes
no valid index.
Adding a constant zero (``cumsum(mask) + 0`` in torch's position ids) is read as its other operand.
"""

from __future__ import annotations

import numpy as np

from tsir.ir.finite import Finiteness
from tsir.ir.term import Term, fold, is_constant


class Reader:
    """Reads the idioms of one model, whose constant table is ``constants``."""

    def __init__(self, constants: list[np.ndarray]) -> None:
        self.constants = constants
        self.finiteness = Finiteness(constants)

    def read(self, term: Term) -> Term:
        """``term``, or the op it spells when it is the root of an idiom."""
        if term.op == "where":
            guarded = _safe_softmax(term, self.constants)
            if guarded is None:
                return term
            x, (axis, _guard) = guarded.args[0], guarded.attrs
            return Term("softmax", (x,), (axis,)) if self.finiteness.unmasked_rows(x, axis) else guarded
        if term.op in ("take", "gather_elements"):
            return _gather(term, self.constants)
        if term.op in ("add", "subtract"):
            return _zero_added(term, self.constants)
        return term


def _zero_added(term: Term, constants: list[np.ndarray]) -> Term:
    """``x`` for ``x + 0``, ``0 + x`` and ``x - 0`` with a constant zero of any dtype that leaves x's type
    (torch.export keeps ``cumsum(mask) + past_length`` with a past length of 0; the ONNX exporter folds it)."""
    x, other = term.args
    candidates = [(x, other), (other, x)] if term.op == "add" else [(x, other)]
    for kept, zero in candidates:
        if kept.ty == term.ty and zero.op in ("weight", "scalar") and _constant_equal(zero, constants, 0):
            return kept
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


def _gather(gather: Term, constants: list[np.ndarray]) -> Term:
    """``take(x, i)`` or ``gather_elements(x, i)`` without the wraps and casts around its indices that change no
    valid index."""
    (x, index), (axis,) = gather.args, gather.attrs
    plain = _plain_index(index, x.ty[0][axis], constants)
    return gather if plain is index else Term(gather.op, (x, plain), (axis,))


def _plain_index(index: Term, n: int, constants: list[np.ndarray]) -> Term:
    """``index`` without the negative-index wraps and the wide-enough integer casts in its chain of reshapes."""
    if index.op == "reshape":
        inner = _plain_index(index.args[0], n, constants)
        return index if inner is index.args[0] else Term("reshape", (inner,), index.attrs)
    if index.op == "astype" and index.args[0].ty[1].startswith("int") and np.iinfo(index.ty[1]).max >= n:
        return _plain_index(index.args[0], n, constants)
    if _wraps_negative(index, n, constants):
        return _plain_index(index.args[2], n, constants)
    return index


def _wraps_negative(index: Term, n: int, constants: list[np.ndarray]) -> bool:
    """``index`` is ``where(less(i, 0), add(i, n), i)``."""
    if index.op != "where":
        return False
    condition, wrapped, i = index.args
    return (condition.op == "less" and condition.args[0] is i and _constant_equal(condition.args[1], constants, 0)
            and wrapped.op == "add" and i in wrapped.args
            and _constant_equal(wrapped.args[1] if wrapped.args[0] is i else wrapped.args[0], constants, n))
