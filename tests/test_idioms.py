"""Exporters' idioms read as one op: torch's and the ONNX exporter's guarded softmax become safe_softmax."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tsir.backends import runtime, targets
from tsir.ir import idioms
from tsir.ir.term import Graph, Term
from tsir.lower import lower
from tsir.testing.strategies import GraphBuilder

T = Term


def _constant(b: GraphBuilder, value: float) -> Term:
    b.constants.append(np.array(value, dtype="float32"))
    return T("weight", (), (len(b.constants) - 1,), ((), "float32"))


def test_onnx_guard_is_safe_softmax_nan():
    b = GraphBuilder(0)
    x = b.input((2, 5))
    s = T("softmax", (x,), (1,))
    assert idioms.read(T("where", (T("isnan", (s,)), _constant(b, 0.0), s)), b.constants) == \
        T("safe_softmax", (x,), (1, "nan"))
    # any other fill is not the idiom
    kept = T("where", (T("isnan", (s,)), _constant(b, 1.0), s))
    assert idioms.read(kept, b.constants) is kept


def test_torch_guard_is_safe_softmax_masked():
    b = GraphBuilder(0)
    x = b.input((2, 5))
    s = T("softmax", (x,), (1,))
    kept = T("logical_not", (T("equal", (x, _constant(b, -np.inf))),))
    row = T("max", (T("astype", (kept,), ("int8",)),), ((1,), True))
    masked = T("logical_not", (T("astype", (row,), ("bool",)),))
    assert idioms.read(T("where", (masked, _constant(b, 0.0), s)), b.constants) == \
        T("safe_softmax", (x,), (1, "masked"))
    other_axis = T("where", (masked, _constant(b, 0.0), T("softmax", (x,), (0,))))
    assert idioms.read(other_axis, b.constants) is other_axis


def test_safe_softmax_zeroes_fully_masked_rows_when_built():
    """The emitted Relax and the reference semantics agree on rows that are all -inf (0, not NaN)."""
    b = GraphBuilder(0)
    x = b.input((3, 4))
    graph = Graph(T("tuple", (T("safe_softmax", (x,), (1, "masked")), T("safe_softmax", (x,), (1, "nan")))),
                  b.inputs, b.constants)
    value = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
    value[1] = -np.inf
    value[2, :2] = -np.inf
    mod = tvm.IRModule({"main": relax.Function([], relax.Tuple([]))})
    runner = runtime.Runner(runtime.build(lower(graph, graph.root, mod), targets.resolve("x86")))
    for out in runner([value]):
        assert np.all(out[1] == 0) and np.isfinite(out).all()
        e = np.exp(value[0] - value[0].max())
        np.testing.assert_allclose(out[0], e / e.sum(), rtol=1e-5)
        assert np.all(out[2, :2] == 0)
