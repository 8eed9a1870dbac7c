"""The tsir op declarations, one module per family; importing this package declares every op.

Each op is one ``OpSpec`` (``tsir.ir.registry``) with its attributes, type rule, numpy semantics,
FLOP count, category, layout, Relax converter(s) and emitter, fuzzer maker and library symbol. A type is
``(shape, dtype)``; attribute values are plain Python literals (ints, floats, strings, tuples) so they
survive the round trip through the e-graph unchanged. The numpy semantics are the reference that
rewrite tests and constant folding use; they follow Relax's definition of each op.
"""

from __future__ import annotations

import numpy as np

from tsir.ir.ops import (  # noqa: F401  (declare the ops)
    contraction,
    creation,
    elementwise,
    library,
    movement,
    nn,
    structure,
)
from tsir.ir.ops.nn import TO_NCHW, TO_NHWC
from tsir.ir.registry import (
    OPS,
    RUNTIME_ONLY,
    Category,
    OpSpec,
    Shape,
    TType,
    broadcast_shapes,
    numel,
    ops_in,
    with_weight,
)

__all__ = ["OPS", "RUNTIME_ONLY", "Category", "OpSpec", "Shape", "TType", "TO_NCHW", "TO_NHWC", "LIBRARY_OPS",
           "broadcast_shapes", "evaluate", "numel", "ops_in", "with_weight"]

LIBRARY_OPS = ops_in(Category.LIBRARY)


def evaluate(op: str, inputs: list[np.ndarray], attrs: tuple) -> np.ndarray:
    """Run one op on numpy arrays with its reference semantics."""
    spec = OPS[op]
    if spec.evaluate is None:
        raise ValueError(f"op {op!r} has no reference semantics")
    return spec.evaluate(inputs, attrs)
