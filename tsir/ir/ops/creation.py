"""Tensors made from attributes alone (``arange``): constants, folded before run time."""

from __future__ import annotations

import numpy as np
from tvm import relax

from tsir.ir.ops.relax_args import prim_literal
from tsir.ir.registry import Category, OpSpec, register
from tsir.ir.term import Term


def _convert_arange(call, args: list, ty) -> Term | None:
    start, end, step = (prim_literal(a) for a in args[:3])
    if None in (start, end, step):
        return None
    return Term("arange", (), (start, end, step, ty[1]))


register(OpSpec(
    "arange", 0, ("start", "end", "step", "dtype"), Category.LEAF,
    lambda ins, a: ((len(range(*a[:3])) if all(isinstance(v, int) for v in a[:3]) else
                     int(np.ceil((a[1] - a[0]) / a[2])),), a[3]),
    lambda xs, a: np.arange(a[0], a[1], a[2], dtype=a[3]), kernel=False,
    convert={"relax.arange": _convert_arange},
    emit=lambda a, at, ty: relax.op.arange(at[0], at[1], at[2], dtype=at[3]),
    missing={"make": "a constant: the fuzzer's weights cover constants"}))
