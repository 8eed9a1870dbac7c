"""Exporters' idioms read as one op: guarded softmaxes (safe_softmax, or softmax on finite scores) and wrapped
gather indices."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tsir.backends import runtime, targets
from tsir.ir import idioms
from tsir.ir.finite import Finiteness
from tsir.ir.ops import OPS
from tsir.ir.term import ConstantValues, Graph, Term
from tsir.lower import lower
from tsir.testing.strategies import GraphBuilder

T = Term


def _constant(b: GraphBuilder, value: float) -> Term:
    b.constants.append(np.array(value, dtype="float32"))
    return T("weight", (), (len(b.constants) - 1,), ((), "float32"))


def _masked_scores(b: GraphBuilder, padded: bool = True) -> Term:
    """Attention scores under a causal mask of -inf; with ``padded``, the last row is masked out whole."""
    mask = np.triu(np.full((5, 5), -np.inf, dtype="float32"), 1)
    if padded:
        mask[-1] = -np.inf
    b.constants.append(mask)
    return T("add", (b.input((2, 5, 5)), T("weight", (), (len(b.constants) - 1,), ((5, 5), "float32"))))


def _torch_guard(b: GraphBuilder, x: Term, axis: int) -> Term:
    """torch's ``_safe_softmax`` as torch.export writes it."""
    kept = T("logical_not", (T("equal", (x, _constant(b, -np.inf))),))
    row = T("max", (T("astype", (kept,), ("int8",)),), ((axis,), True))
    masked = T("logical_not", (T("astype", (row,), ("bool",)),))
    return T("where", (masked, _constant(b, 0.0), T("softmax", (x,), (axis,))))


def test_onnx_guard_is_safe_softmax_nan():
    b = GraphBuilder(0)
    x = _masked_scores(b)
    s = T("softmax", (x,), (2,))
    assert idioms.Reader(b.constants).read(T("where", (T("isnan", (s,)), _constant(b, 0.0), s))) == \
        T("safe_softmax", (x,), (2, "nan"))
    # any other fill is not the idiom
    kept = T("where", (T("isnan", (s,)), _constant(b, 1.0), s))
    assert idioms.Reader(b.constants).read(kept) is kept


def test_torch_guard_is_safe_softmax_masked():
    b = GraphBuilder(0)
    x = _masked_scores(b)
    assert idioms.Reader(b.constants).read(_torch_guard(b, x, 2)) == T("safe_softmax", (x,), (2, "masked"))
    guard = _torch_guard(b, x, 2)
    other_axis = T("where", (guard.args[0], guard.args[1], T("softmax", (x,), (1,))))
    assert idioms.Reader(b.constants).read(other_axis) is other_axis


def test_guard_on_finite_scores_is_a_softmax():
    """Scores that no infinity can reach (finite masks, RMSNorm's rsqrt of mean(x*x) + eps, a constant
    divisor) or under a causal mask never trip either guard; log of an input, or a division by an input,
    keeps the guard."""
    b = GraphBuilder(0)
    h = b.input((2, 5, 4))
    rms = T("multiply", (h, T("rsqrt", (T("add", (T("mean", (T("power", (h, b.scalar(2.0))),), ((2,), True)),
                                                  b.scalar(1e-6))),))))
    scores = T("divide", (T("matmul", (rms, T("transpose", (rms,), ((0, 2, 1),)))), b.scalar(2.0)))
    b.constants.append(np.triu(np.full((5, 5), np.finfo("float32").min, dtype="float32"), 1))
    x = T("add", (scores, T("weight", (), (len(b.constants) - 1,), ((5, 5), "float32"))))
    assert idioms.Reader(b.constants).read(_torch_guard(b, x, 2)) == T("softmax", (x,), (2,))
    causal = _masked_scores(b, padded=False)  # -inf entries, but a finite one in every row
    assert idioms.Reader(b.constants).read(_torch_guard(b, causal, 2)) == T("softmax", (causal,), (2,))
    for unsafe in (T("log", (b.input((2, 5, 5)),)), T("divide", (x, b.input((2, 5, 5))))):
        assert idioms.Reader(b.constants).read(_torch_guard(b, unsafe, 2)).op == "safe_softmax"


def test_index_wraps_and_casts_are_read_as_the_plain_take():
    """ONNX's wrap of negative indices and the torch frontend's int32 cast are the take itself."""
    b = GraphBuilder(0)
    table = b.weight((7, 3))
    ids = T("input", (), ("ids",), ((1, 4), "int64"))
    b.constants += [np.array(0, dtype="int64"), np.array(7, dtype="int64"), np.array(6, dtype="int64")]
    zero, seven, six = (T("weight", (), (i,), ((), "int64")) for i in range(len(b.constants) - 3, len(b.constants)))
    wrapped = T("where", (T("less", (ids, zero)), T("add", (ids, seven)), ids))
    reader = idioms.Reader(b.constants)
    assert reader.read(T("take", (table, wrapped), (0,))) == T("take", (table, ids), (0,))
    cast = T("reshape", (T("astype", (ids,), ("int32",)),), ((4,),))
    assert reader.read(T("take", (table, cast), (0,))) == T("take", (table, T("reshape", (ids,), ((4,),))), (0,))
    other = T("take", (table, T("where", (T("less", (ids, zero)), T("add", (ids, six)), ids))), (0,))
    assert reader.read(other) is other  # a wrap by another length changes valid indices
    b.constants.append(np.arange(7).reshape(1, 7, 1))
    every = T("weight", (), (len(b.constants) - 1,), ((1, 7, 1), "int64"))
    assert reader.read(T("take", (table, every), (0,))) == T("reshape", (table,), ((1, 7, 1, 3),))


def test_negative_indices_count_from_the_end_when_built():
    b = GraphBuilder(0)
    x = b.input((5, 3))
    b.constants.append(np.array([[-1, 0, -5], [4, -2, 2]], dtype="int64"))
    i = T("weight", (), (len(b.constants) - 1,), ((2, 3), "int64"))
    graph = Graph(T("tuple", (T("take", (x, i), (0,)), T("gather_elements", (x, i), (0,)))), b.inputs, b.constants)
    value = b.values["x0"]
    mod = tvm.IRModule({"main": relax.Function([], relax.Tuple([]))})
    taken, gathered = runtime.Runner(runtime.build(lower(graph, graph.root, mod), targets.resolve("x86")))([value])
    np.testing.assert_array_equal(taken, np.take(value, b.constants[-1], axis=0))
    np.testing.assert_array_equal(gathered, np.take_along_axis(value, b.constants[-1], axis=0))


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


def test_adding_a_constant_zero_is_its_other_operand():
    b = GraphBuilder(0)
    ids = T("input", (), ("ids",), ((1, 4), "int32"))
    b.constants += [np.array(0, dtype="int32"), np.zeros((2, 4), dtype="int32"), np.array(1, dtype="int32")]
    zero, wider, one = (T("weight", (), (i,), (b.constants[i].shape, "int32")) for i in range(3))
    reader = idioms.Reader(b.constants)
    assert reader.read(T("add", (ids, zero))) is ids
    assert reader.read(T("add", (zero, ids))) is ids
    assert reader.read(T("subtract", (ids, zero))) is ids
    for kept in (T("add", (ids, wider)), T("add", (ids, one)), T("subtract", (zero, ids))):  # broadcast, 1, 0 - x
        assert reader.read(kept) is kept


def test_onnx_group_norm_is_group_norm():
    """The ONNX exporter's group norm (reshape to groups, mean / variance, then ones and zeros, the reshape
    back, the per-channel scale and shift) reads as ``group_norm`` and computes the same."""
    b = GraphBuilder(0)
    x = b.input((2, 6, 5))
    reader = idioms.Reader(b.constants)

    def read(op, args, attrs=()):
        return reader.read(T(op, tuple(args), attrs))

    def constant(value):
        b.constants.append(np.asarray(value, dtype="float32"))
        return T("weight", (), (len(b.constants) - 1,), (b.constants[-1].shape, "float32"))

    g = read("reshape", [x], ((2, 3, 10),))
    centered = read("subtract", [g, read("mean", [g], ((2,), True))])
    std = read("sqrt", [read("add", [read("variance", [g], ((2,), True)), b.scalar(1e-5)])])
    normed = read("add", [read("multiply", [read("divide", [centered, std]), constant(np.ones((3, 1)))]),
                          constant(np.zeros((3, 1)))])
    gamma, beta = np.linspace(0.5, 2, 6).reshape(6, 1), np.linspace(-1, 1, 6).reshape(6, 1)
    out = read("add", [read("multiply", [read("reshape", [normed], ((2, 6, 5),)), constant(gamma)]), constant(beta)])
    assert out.op == "group_norm" and out.args[0] is x and out.attrs == (3, 1e-5)
    expected = OPS["group_norm"].evaluate([b.values["x0"], gamma.ravel().astype("float32"),
                                           beta.ravel().astype("float32")], (3, 1e-5))
    got = OPS["group_norm"].evaluate([b.values["x0"], *(b.constants[a.attrs[0]] for a in out.args[1:])], out.attrs)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_a_deep_denominator_is_no_recursion():
    """The sign checks look a bounded way down: a division by a residual stream thousands of adds deep is
    simply not known to be finite."""
    b = GraphBuilder(0)
    x, step = b.input((2, 4)), b.input((2, 4))
    stream = x
    for _ in range(3000):
        stream = T("add", (stream, step))
    assert not Finiteness(ConstantValues(b.constants)).finite(T("divide", (x, stream)))


def _evaluate(term: Term, values: dict, constants: list) -> np.ndarray:
    """``term``'s value on the inputs ``values`` (by name) with the reference semantics of its ops."""
    if term.op == "input":
        return values[term.attrs[0]]
    if term.op == "weight":
        return constants[term.attrs[0]]
    return OPS[term.op].evaluate([_evaluate(a, values, constants) for a in term.args], term.attrs)


def test_batch_norm_after_a_conv_folds_into_its_weights():
    """conv + batch norm, with or without the conv's bias and in 1-D and 2-D, reads as one conv with new weights
    and a per-channel bias (the form the ONNX exporter writes), and computes the same; a batch norm after
    anything else is kept."""
    rng = np.random.default_rng(0)
    b = GraphBuilder(0)
    reader = idioms.Reader(b.constants)

    def constant(value):
        b.constants.append(np.asarray(value, dtype="float32"))
        return T("weight", (), (len(b.constants) - 1,), (b.constants[-1].shape, "float32"))

    def stats(c):
        return [constant(rng.uniform(0.5, 2, c)), constant(rng.normal(size=c)), constant(rng.normal(size=c)),
                constant(rng.uniform(0.5, 2, c))]

    x2, x1 = b.input((1, 3, 6, 6)), b.input((1, 3, 7))
    conv2 = T("conv2d", (x2, constant(rng.normal(size=(4, 3, 3, 3)))), ((1, 1), (1, 1, 1, 1), (1, 1), 1))
    conv1 = T("conv1d", (x1, constant(rng.normal(size=(4, 3, 3)))), ((1,), (0, 0), (1,), 1))
    biased = T("add", (conv1, constant(rng.normal(size=(1, 4, 1)))))
    for x, conv in ((conv2, conv2), (biased, conv1)):
        norm = T("batch_norm", (x, *stats(4)), (1, 1e-3))
        folded = reader.read(T("tuple", (norm, *norm.args[3:]))).args[0]
        assert folded.op == "add" and folded.args[0].op == conv.op and folded.args[0].args[0] is conv.args[0]
        assert folded.args[1].ty[0] == (1, 4) + (1,) * (len(x.ty[0]) - 2)
        np.testing.assert_allclose(_evaluate(folded, b.values, b.constants), _evaluate(norm, b.values, b.constants),
                                   rtol=1e-5, atol=1e-5)
    after_relu = T("batch_norm", (T("relu", (conv2,)), *stats(4)), (1, 1e-3))
    kept = T("tuple", (after_relu, *after_relu.args[3:]))
    assert reader.read(kept) is kept
    assert reader.read(T("pad", (x2,), ((0,) * 8,))) is x2
