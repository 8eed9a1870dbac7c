"""The whole-program cost: programs grouped into the kernels TVM runs, and priced per kernel."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tsir import zoo
from tsir.backends import targets
from tsir.backends.kernels import all_kernels
from tsir.backends.kernels import fuse as tvm_fuse
from tsir.backends.roofline import X86_HOST, type_bytes
from tsir.convert import relax_to_tsir
from tsir.egraph import TermEGraph
from tsir.frontend import export, to_relax
from tsir.ir.term import Term
from tsir.lower import lower
from tsir.search.extract import Space, to_term, walk
from tsir.search.fusion import Pattern, fuse, fuses
from tsir.search.greedy import greedy
from tsir.testing.strategies import GraphBuilder, graphs


def _space(outputs_of) -> tuple[Space, list[int]]:
    """The unsaturated e-graph of the program ``outputs_of(builder)`` makes, and its original genome."""
    b = GraphBuilder(0)
    case = b.case(*outputs_of(b))
    egraph = TermEGraph(case.graph, ())
    space = Space.of(egraph.view(), X86_HOST)
    return space, space.original()


def _groups(space: Space, genome: list[int]) -> list[list[str]]:
    fused = fuse(walk(space, genome), lambda c: space.node(genome, c), lambda c: space.node_work[c][genome[c]])
    return sorted([space.node(genome, c).op for c in group] for group in fused.groups)


def _dense_relu(b: GraphBuilder) -> tuple[Term, Term, Term, Term]:
    x, w, bias = b.input((8, 64)), b.weight((64, 32)), b.weight((32,))
    return x, w, bias, Term("relu", (Term("add", (Term("matmul", (x, w)), bias)),))


def test_a_matmul_takes_its_bias_and_activation_and_pays_one_dispatch_and_its_boundary_bytes():
    space, genome = _space(lambda b: (_dense_relu(b)[3],))
    assert _groups(space, genome) == [["matmul", "add", "relu"]]
    x_ty, w_ty, b_ty, out_ty = ((8, 64), "float32"), ((64, 32), "float32"), ((32,), "float32"), ((8, 32), "float32")
    compute = X86_HOST.work("matmul", [x_ty, w_ty], out_ty).compute_s + sum(
        X86_HOST.work(op, ins, out_ty).compute_s for op, ins in (("add", [out_ty, b_ty]), ("relu", [out_ty])))
    moved = sum(type_bytes(t) for t in (x_ty, w_ty, b_ty, out_ty))
    assert space.cost(genome) == X86_HOST.time_s(compute, moved)
    assert space.cost(genome) < space.node_sum(genome) - 2 * X86_HOST.dispatch_s


def test_a_value_used_twice_ends_its_kernel_and_reductions_and_library_calls_fuse_with_nothing():
    def program(b: GraphBuilder):
        r = _dense_relu(b)[3]
        soft = Term("exp", (Term("softmax", (Term("add", (r, r)),), (1,)),))
        library = Term("relu", (Term("dnnl_matmul", (r, b.weight((32, 16)))),))
        return Term("exp", (r,)), soft, library

    space, genome = _space(program)
    assert _groups(space, genome) == sorted([["matmul", "add", "relu"], ["exp"], ["add"], ["softmax"], ["exp"],
                                             ["dnnl_matmul"], ["relu"]])


def test_fusion_rules_follow_tvm_patterns():
    assert fuses(Pattern.ELEMWISE, Pattern.INJECTIVE) and fuses(Pattern.INJECTIVE, Pattern.ELEMWISE)
    assert fuses(Pattern.CONTRACTION, Pattern.ELEMWISE)
    assert not fuses(Pattern.CONTRACTION, Pattern.INJECTIVE) and not fuses(Pattern.ELEMWISE, Pattern.CONTRACTION)
    assert not fuses(Pattern.ELEMWISE, Pattern.REDUCTION) and not fuses(Pattern.REDUCTION, Pattern.ELEMWISE)
    assert not any(fuses(Pattern.OPAQUE, p) or fuses(p, Pattern.OPAQUE) for p in Pattern)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs(max_ops=8))
def test_groups_partition_the_kernels_and_fusing_never_costs_more(case):
    space = Space.of(TermEGraph(case.graph, ()).view(), X86_HOST)
    genome = space.original()
    order = walk(space, genome)
    fused = fuse(order, lambda c: space.node(genome, c), lambda c: space.node_work[c][genome[c]])
    members = [c for group in fused.groups for c in group]
    assert sorted(members) == sorted(c for c in order if space.node_work[c][genome[c]] is not None)
    for group in fused.groups:  # each merged producer had one reader, inside its group
        assert all(fused.users[c] and all(u in group for u in fused.users[c]) for c in group[:-1])
    assert space.cost(genome) <= space.node_sum(genome) * (1 + 1e-12)
    saved = len(members) - len(fused.groups)
    assert space.cost(genome) <= space.node_sum(genome) - saved * X86_HOST.dispatch_s * (1 - 1e-9)


def test_groups_are_the_kernels_tvm_builds_less_the_reshapes_it_makes_views():
    entry = zoo.load("resnet18")
    original = to_relax(export(entry.module, entry.example_inputs))
    graph = relax_to_tsir(original)
    egraph = TermEGraph(graph)
    egraph.saturate()
    spec = targets.resolve("x86")
    space = Space.of(egraph.view(), spec.roofline)
    for genome in (space.original(), greedy(space)):
        kernels = all_kernels(tvm_fuse(lower(graph, to_term(space, genome), original), spec.target))
        calls = sum(k.calls for k in kernels if not k.name.startswith(("reshape", "fused_reshape_reshape")))
        assert len(_groups(space, genome)) == calls
