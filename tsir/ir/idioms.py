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

Gathers' indices are read back too (a take of every index in order is a reshape); ``take`` and
``gather_elements`` count negative indices from the end, so the ONNX exporter's wrap
``where(less(i, 0), add(i, n), i)`` is ``i`` itself, and a cast of integer indices to an integer type wide
enough for the axis (TVM's torch frontend casts token ids to int32) changes no valid index.
Adding a constant zero or multiplying by a constant one is read as the other operand, and a reshape and its
way back as nothing, and so is a pad of zero widths. The ONNX exporter's group norm (a reshape to groups,
mean and variance, then the per-channel scale and shift) is read as ``group_norm``. A batch norm right after
a convolution with constant weights is folded into new weights and a bias, as the ONNX exporter does on
export, so a model and its ONNX twin start from one program.
"""

from __future__ import annotations

import numpy as np

from tsir.ir.finite import Finiteness
from tsir.ir.term import ConstantValues, Term


class Reader:
    """Reads the idioms of one model, whose constant table is ``constants``."""

    def __init__(self, constants: list[np.ndarray]) -> None:
        self.constants = constants
        self.values = ConstantValues(constants)
        self.finiteness = Finiteness(self.values)

    def read(self, term: Term) -> Term:
        """``term``, or the op it spells when it is the root of an idiom."""
        if term.op == "where":
            guarded = _safe_softmax(term, self.values)
            if guarded is None:
                return term
            x, (axis, _guard) = guarded.args[0], guarded.attrs
            return Term("softmax", (x,), (axis,)) if self.finiteness.unmasked_rows(x, axis) else guarded
        if term.op in ("take", "gather_elements"):
            return _gather(term, self.values)
        if term.op in ("add", "subtract", "multiply", "divide"):
            operand = _identity_applied(term, self.values)
            if operand is not term:
                return operand  # already read when it was converted
        if term.op == "divide":
            return self._group_norm(term) or term
        if term.op in ("multiply", "add"):
            return self._norm_affine(term) or term
        if term.op == "reshape" and term.args[0].op == "reshape" and term.ty == term.args[0].args[0].ty:
            return term.args[0].args[0]  # a reshape and its way back
        if term.op == "pad" and not any(term.attrs[0]):
            return term.args[0]  # no padding at all
        if term.op == "tuple" and term.args and term.args[0].op == "batch_norm":
            folded = self._batch_norm_into_conv(term.args[0])
            return term if folded is None else Term("tuple", (folded, *term.args[1:]))
        return term

    def _batch_norm_into_conv(self, norm: Term) -> Term | None:
        """``batch_norm(conv(x, w) [+ c])`` with constant weight, bias and statistics on the channel axis:
        ``conv(x, w * s) + t``, folded here as the ONNX exporter does on export."""
        x, *params = norm.args
        (axis, eps), bias = norm.attrs, None
        if x.op == "add" and x.args[0].op in ("conv2d", "conv1d"):
            x, bias = x.args
            bias = self.values.of(bias)
            if bias is None or (bias := _per_channel(bias, x.ty[0])) is None:
                return None
        weight = self.values.of(x.args[1]) if x.op in ("conv2d", "conv1d") and axis == 1 else None
        gamma, beta, mean, var = (self.values.of(p) for p in params)
        if weight is None or any(v is None for v in (gamma, beta, mean, var)):
            return None
        scale = gamma / np.sqrt(var + np.float32(eps))
        shift = beta - mean * scale if bias is None else (bias - mean) * scale + beta
        view = (1, -1) + (1,) * (len(x.ty[0]) - 2)
        scaled = (weight * scale.reshape(-1, *(1,) * (weight.ndim - 1))).astype(weight.dtype)
        conv = Term(x.op, (x.args[0], self._weight(scaled)), x.attrs)
        return Term("add", (conv, self._weight(shift.reshape(view).astype(weight.dtype))))

    def _group_norm(self, divide: Term) -> Term | None:
        """The ONNX exporter's group norm, ``(g - mean(g)) / sqrt(var(g) + eps)`` over the last axis of
        ``g = reshape(x, (N, groups, -1))``: ``group_norm(x, 1, 0)`` (its affine is read by ``_norm_affine``)."""
        centered, std = divide.args
        if centered.op != "subtract" or std.op != "sqrt" or std.args[0].op != "add" or len(divide.ty[0]) != 3:
            return None
        g, mean = centered.args
        variance, eps = sorted(std.args[0].args, key=lambda t: t.op != "variance")
        reduced = ((2,), True)
        if (mean.op, variance.op, eps.op) != ("mean", "variance", "scalar") or eps.attrs[0] < 0 \
                or mean.args[0] is not g or variance.args[0] is not g or not mean.attrs == variance.attrs == reduced:
            return None
        x = g.args[0] if g.op == "reshape" else g
        n, groups, _ = g.ty[0]
        shape, dtype = x.ty
        if len(shape) < 3 or shape[0] != n or shape[1] % groups:
            return None
        ones, zeros = (self._weight(np.full(shape[1], v, dtype=dtype)) for v in (1, 0))
        norm = Term("group_norm", (x, ones, zeros), (groups, float(eps.attrs[0])))
        return norm if norm.ty == divide.ty else Term("reshape", (norm,), (divide.ty[0],))

    def _norm_affine(self, term: Term) -> Term | None:
        """``group_norm(x, g, b) * s`` and ``group_norm(x, g, b) + t`` for constants of one value per channel:
        the group norm with ``g * s, b * s`` or ``b + t``."""
        for norm, c in (term.args, term.args[::-1]):
            value = self.values.of(c) if norm.op == "group_norm" and norm.ty == term.ty else None
            if value is not None:
                per_channel = _per_channel(value, norm.ty[0])
                if per_channel is None:
                    return None
                x, gamma, beta = norm.args
                g, b = (self.values.of(t) for t in (gamma, beta))
                g, b = (g * per_channel, b * per_channel) if term.op == "multiply" else (g, b + per_channel)
                return Term("group_norm", (x, self._weight(g), self._weight(b)), norm.attrs)
        return None

    def _weight(self, value: np.ndarray) -> Term:
        self.constants.append(value)
        return Term("weight", (), (len(self.constants) - 1,), (value.shape, str(value.dtype)))


def _per_channel(value: np.ndarray, shape: tuple) -> np.ndarray | None:
    """``value``, broadcast against ``shape``, as one value per channel (axis 1); None when it varies on
    another axis or adds axes."""
    if value.ndim > len(shape):
        return None
    full = (1,) * (len(shape) - value.ndim) + value.shape
    if any(d != 1 for i, d in enumerate(full) if i != 1) or full[1] not in (1, shape[1]):
        return None
    return np.broadcast_to(value.reshape(full[1]), (shape[1],)).astype(value.dtype)


def _identity_applied(term: Term, values: ConstantValues) -> Term:
    """``x`` for ``x + 0``, ``0 + x``, ``x - 0``, ``x * 1``, ``1 * x`` and ``x / 1`` with a constant of any
    dtype that leaves x's type (torch keeps ``cumsum(mask) + past_length`` with a past length of 0; the ONNX
    exporter's group norm scales by ones and shifts by zeros)."""
    x, other = term.args
    identity = 0 if term.op in ("add", "subtract") else 1
    candidates = [(x, other), (other, x)] if term.op in ("add", "multiply") else [(x, other)]
    for kept, c in candidates:
        if kept.ty == term.ty and _constant_equal(c, values, identity):
            return kept
    return term


def _constant_equal(term: Term, values: ConstantValues, value: float) -> bool:
    """``term`` is a constant whose every element is ``value``."""
    folded = values.of(term)
    return folded is not None and bool(np.all(folded == value))


def _safe_softmax(where: Term, values: ConstantValues) -> Term | None:
    condition, zero, s = where.args
    if s.op != "softmax" or where.ty != s.ty or not _constant_equal(zero, values, 0.0):
        return None
    (x,), (axis,) = s.args, s.attrs
    if condition.op == "isnan" and condition.args[0] is s:
        return Term("safe_softmax", (x,), (axis, "nan"))
    if _fully_masked_rows(condition, values) == (x, axis):
        return Term("safe_softmax", (x,), (axis, "masked"))
    return None


def _fully_masked_rows(condition: Term, values: ConstantValues) -> tuple[Term, int] | None:
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
    if node.op != "equal" or len(axes) != 1 or not keepdims or not _constant_equal(node.args[1], values, -np.inf):
        return None
    return node.args[0], axes[0]


def _gather(gather: Term, values: ConstantValues) -> Term:
    """``take(x, i)`` or ``gather_elements(x, i)`` without the wraps and casts around its indices that change no
    valid index; a take of every index in order is a reshape (the ONNX exporter's pooling writes one)."""
    (x, index), (axis,) = gather.args, gather.attrs
    n = x.ty[0][axis]
    plain = _plain_index(index, n, values)
    if gather.op == "take" and (taken := values.of(plain)) is not None and np.array_equal(taken.ravel(), np.arange(n)):
        return Term("reshape", (x,), (gather.ty[0],))
    return gather if plain is index else Term(gather.op, (x, plain), (axis,))


def _plain_index(index: Term, n: int, values: ConstantValues) -> Term:
    """``index`` without the negative-index wraps and the wide-enough integer casts in its chain of reshapes."""
    if index.op == "reshape":
        inner = _plain_index(index.args[0], n, values)
        return index if inner is index.args[0] else Term("reshape", (inner,), index.attrs)
    if index.op == "astype" and index.args[0].ty[1].startswith("int") and np.iinfo(index.ty[1]).max >= n:
        return _plain_index(index.args[0], n, values)
    if _wraps_negative(index, n, values):
        return _plain_index(index.args[2], n, values)
    return index


def _wraps_negative(index: Term, n: int, values: ConstantValues) -> bool:
    """``index`` is ``where(less(i, 0), add(i, n), i)``."""
    if index.op != "where":
        return False
    condition, wrapped, i = index.args
    return (condition.op == "less" and condition.args[0] is i and _constant_equal(condition.args[1], values, 0)
            and wrapped.op == "add" and i in wrapped.args
            and _constant_equal(wrapped.args[1] if wrapped.args[0] is i else wrapped.args[0], values, n))
