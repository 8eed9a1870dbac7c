"""Every rewrite rule, checked numerically on random shapes and values (hypothesis).

Each test builds a program that matches one rule's left-hand side under its side conditions, runs
that rule's family, asserts the rule fired, and checks that every e-node of every e-class computes
its class's value. Evaluation is in float64, where these exact identities agree to ~1e-12; the
tolerance 1e-6 leaves room for float32 scalars (epsilon) without hiding a wrong rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from egglog import PyObject, union
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsir.egraph import TermEGraph
from tsir.ir import lang
from tsir.ir.term import Graph, Term
from tsir.rewrites import FAMILIES, rule_names
from tsir.testing import egraph_disagreement, rule_check

TOLERANCE = 1e-6
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Builder:
    """Makes inputs and weights with random values for one test program."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.constants: list[np.ndarray] = []
        self.inputs: list[Term] = []
        self.values: dict[str, np.ndarray] = {}

    def input(self, shape: tuple[int, ...]) -> Term:
        name = f"x{len(self.inputs)}"
        term = Term("input", (), (name,), (tuple(shape), "float32"))
        self.inputs.append(term)
        self.values[name] = self.rng.standard_normal(shape).astype("float32")
        return term

    def weight(self, shape: tuple[int, ...], positive: bool = False) -> Term:
        value = self.rng.standard_normal(shape).astype("float32")
        self.constants.append(np.abs(value) + 0.5 if positive else value)
        return Term("weight", (), (len(self.constants) - 1,), (tuple(shape), "float32"))

    def check(self, root: Term, family: str, rule: str) -> None:
        graph = Graph(Term("tuple", (root,)), self.inputs, self.constants)
        fired, disagreement = rule_check(graph, (family,), self.values)
        assert rule in fired, f"{rule} did not fire; fired: {fired}"
        assert disagreement <= TOLERANCE, f"{rule} is unsound: e-nodes disagree by {disagreement:.3g}"


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**16)


def perms(rank: int):
    return st.permutations(list(range(rank))).map(tuple)


@SETTINGS
@given(shape=shapes, data=st.data(), seed=seeds)
def test_transpose_transpose(shape, data, seed):
    b = Builder(seed)
    p, q = data.draw(perms(len(shape))), data.draw(perms(len(shape)))
    b.check(Term("transpose", (Term("transpose", (b.input(shape),), (p,)),), (q,)), "algebra", "transpose_transpose")


@SETTINGS
@given(shape=shapes, seed=seeds)
def test_transpose_identity(shape, seed):
    b = Builder(seed)
    identity = tuple(range(len(shape)))
    b.check(Term("relu", (Term("transpose", (b.input(shape),), (identity,)),)), "algebra", "transpose_identity")


def reshapes(shape: tuple[int, ...]):
    """Shapes with as many elements as ``shape``: a permutation of its dims, some merged."""
    n = int(np.prod(shape))
    return st.sampled_from([(n,), (1, n), (n, 1), tuple(reversed(shape)), (*shape, 1)])


@SETTINGS
@given(shape=shapes, data=st.data(), seed=seeds)
def test_reshape_reshape(shape, data, seed):
    b = Builder(seed)
    s1, s2 = data.draw(reshapes(shape)), data.draw(reshapes(shape))
    b.check(Term("reshape", (Term("reshape", (b.input(shape),), (s1,)),), (s2,)), "algebra", "reshape_reshape")


@SETTINGS
@given(shape=shapes, seed=seeds)
def test_reshape_identity(shape, seed):
    b = Builder(seed)
    b.check(Term("relu", (Term("reshape", (b.input(shape),), (shape,)),)), "algebra", "reshape_identity")


def broadcast_pair(shape: tuple[int, ...]):
    """A second shape that broadcasts with ``shape``: some dims set to 1, maybe fewer leading dims."""
    return st.tuples(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)),
                     st.integers(0, len(shape) - 1)).map(
        lambda m: tuple(1 if ones else d for d, ones in zip(shape, m[0], strict=True))[m[1]:])


@pytest.mark.parametrize("op, rule", [("add", "add_commute"), ("multiply", "multiply_commute")])
@SETTINGS
@given(shape=shapes, data=st.data(), seed=seeds)
def test_commute(op, rule, shape, data, seed):
    b = Builder(seed)
    other = data.draw(broadcast_pair(shape))
    b.check(Term(op, (b.input(shape), b.input(other))), "algebra", rule)


@SETTINGS
@given(batch=st.lists(st.integers(1, 3), max_size=2).map(tuple), m=st.integers(1, 5), k=st.integers(1, 6),
       n=st.integers(1, 6), bias_rank=st.integers(1, 2), seed=seeds)
def test_matmul_bias_to_linear(batch, m, k, n, bias_rank, seed):
    b = Builder(seed)
    bias = b.weight((n,) if bias_rank == 1 else (1, n))
    product = Term("matmul", (b.input((*batch, m, k)), b.weight((k, n))))
    b.check(Term("add", (product, bias)), "fusion", "matmul_bias_to_linear")


@SETTINGS
@given(m=st.integers(1, 5), k=st.integers(1, 6), n1=st.integers(1, 6), n2=st.integers(1, 6), seed=seeds)
def test_merge_parallel_matmul(m, k, n1, n2, seed):
    b = Builder(seed)
    x = b.input((m, k))
    left, right = Term("matmul", (x, b.weight((k, n1)))), Term("matmul", (x, b.weight((k, n2))))
    b.check(Term("tuple", (left, right)), "multi", "merge_parallel_matmul")


conv_shapes = st.fixed_dictionaries({
    "n": st.integers(1, 2), "groups": st.sampled_from([1, 2]), "cin_per_group": st.integers(1, 3),
    "cout_per_group": st.integers(1, 3), "size": st.integers(5, 8), "kernel": st.sampled_from([1, 3]),
    "stride": st.integers(1, 2), "pad": st.integers(0, 1), "dilation": st.integers(1, 2),
})


def conv(b: Builder, c: dict) -> Term:
    cin, cout = c["cin_per_group"] * c["groups"], c["cout_per_group"] * c["groups"]
    x = b.input((c["n"], cin, c["size"], c["size"]))
    w = b.weight((cout, c["cin_per_group"], c["kernel"], c["kernel"]))
    attrs = ((c["stride"],) * 2, (c["pad"],) * 4, (c["dilation"],) * 2, c["groups"])
    return Term("conv2d", (x, w), attrs)


def channel_vector(b: Builder, channels: int, positive: bool = False) -> Term:
    return b.weight((channels,), positive)


@SETTINGS
@given(c=conv_shapes, eps=st.sampled_from([1e-5, 1e-3]), seed=seeds)
def test_batch_norm_affine(c, eps, seed):
    b = Builder(seed)
    y = conv(b, c)
    channels = y.ty[0][1]
    stats = [channel_vector(b, channels), channel_vector(b, channels), channel_vector(b, channels),
             channel_vector(b, channels, positive=True)]
    b.check(Term("batch_norm", (y, *stats), (1, eps)), "folding", "batch_norm_affine")


@SETTINGS
@given(c=conv_shapes, rank=st.sampled_from([3, 4]), seed=seeds)
def test_conv_scale_fold(c, rank, seed):
    b = Builder(seed)
    y = conv(b, c)
    channels = y.ty[0][1]
    scale = b.weight((1, channels, 1, 1) if rank == 4 else (channels, 1, 1))
    b.check(Term("multiply", (y, scale)), "folding", "conv_scale_fold")


@pytest.mark.parametrize("outer, rule", [("multiply", "distribute_constant_scale"), ("add", "combine_constant_bias")])
@SETTINGS
@given(shape=shapes, data=st.data(), seed=seeds)
def test_constant_folding_of_add_chains(outer, rule, shape, data, seed):
    b = Builder(seed)
    c1, c2 = b.weight(data.draw(broadcast_pair(shape))), b.weight(data.draw(broadcast_pair(shape)))
    b.check(Term(outer, (Term("add", (b.input(shape), c1)), c2)), "folding", rule)


def test_every_rule_has_a_property_test():
    tested = {"transpose_transpose", "transpose_identity", "reshape_reshape", "reshape_identity", "add_commute",
              "multiply_commute", "matmul_bias_to_linear", "merge_parallel_matmul", "batch_norm_affine",
              "conv_scale_fold", "distribute_constant_scale", "combine_constant_bias",
              # library family: tests/test_library.py
              "matmul_to_dnnl", "linear_to_dnnl", "dnnl_linear_relu", "conv2d_bias_to_dnnl", "dnnl_conv2d_relu"}
    declared = {r for family in FAMILIES for r in rule_names(family)}
    assert declared == tested


def test_a_wrong_rule_is_caught():
    """The checker is not vacuous: an e-graph with a false union disagrees by far more than TOLERANCE."""
    b = Builder(0)
    x = b.input((3, 4))
    graph = Graph(Term("tuple", (Term("relu", (x,)),)), b.inputs, b.constants)
    egraph = TermEGraph(graph, ())
    view = egraph.view()
    assert egraph_disagreement(view, graph, b.values) <= TOLERANCE
    egraph.egraph.register(union(lang.relu(lang.input(PyObject("x0")))).with_(lang.input(PyObject("x0"))))
    egraph.egraph.run(lang.analysis.saturate())
    assert egraph_disagreement(egraph.view(), graph, b.values) > 1e-2
