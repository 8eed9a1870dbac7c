"""Leaves (inputs, weights, scalars), tuples and opaque calls: the ops that hold a program together."""

from __future__ import annotations

import numpy as np
from tvm import relax

from tsir.ir.registry import Category, OpSpec, register
from tsir.ir.term import Term

LEAF, STRUCTURE = Category.LEAF, Category.STRUCTURE
_GIVEN = "a leaf: it is created with its value, never computed"
_NOT_DRAWN = "the fuzzer builds it itself (GraphBuilder) rather than drawing it as an op"

register(OpSpec("input", 0, ("name",), LEAF, None, None, kernel=False,  # a function parameter
                missing={"infer": _GIVEN, "evaluate": "its value is given at run time", "convert": _GIVEN,
                         "emit": "becomes a parameter of main", "make": _NOT_DRAWN}))
register(OpSpec("weight", 0, ("index",), LEAF, None, None, kernel=False,  # an entry of the constant table
                missing={"infer": _GIVEN, "evaluate": "folding reads the constant table",
                         "convert": "Relax constants become weights", "emit": "folded into a Relax constant",
                         "make": _NOT_DRAWN}))
register(OpSpec("scalar", 0, ("value",), LEAF, lambda ins, a: ((), "float32"),
                lambda xs, a: np.array(a[0], dtype="float32"), kernel=False,
                missing={"convert": "Relax's float32 scalar constants become scalars (convert.py)",
                         "emit": "folded into a Relax constant", "make": _NOT_DRAWN}))
register(OpSpec("opaque", None, ("key",), STRUCTURE, None, None,  # a Relax call tsir does not model; type given
                missing={"infer": "its type is the Relax call's", "evaluate": "it runs only when built",
                         "convert": "made for every call no converter takes", "emit": "re-emits its Relax call",
                         "make": "the fuzzer draws modeled ops only"}))


def _tuple_convert(call, args: list, ty) -> Term | None:
    return Term("tuple", tuple(args)) if all(isinstance(a, Term) for a in args) else None


register(OpSpec("get_item", 1, ("index",), STRUCTURE, None, None, kernel=False,  # element of a tuple-valued opaque
                emit=lambda a, at, ty: relax.TupleGetItem(a[0], at[0]),
                missing={"infer": "its type is the Relax binding's", "evaluate": "it reads an opaque call's tuple",
                         "convert": "made for TupleGetItem bindings", "make": "the fuzzer draws no opaque calls"}))
register(OpSpec("tuple", None, (), STRUCTURE, lambda ins, a: ins, lambda xs, a: tuple(xs), kernel=False,
                emit=lambda a, at, ty: relax.Tuple(a),
                missing={"convert": "made for Relax Tuple bindings and tuple-valued converters",
                         "make": "the fuzzer builds its output tuple itself"}))
