"""Pruning genes in the approximate search: the estimate of a gene against the measured error, int8 scales
of the pruned weights, and random genomes (class genes, site knobs, pruning genes) on residual and grouped
models decode to valid programs with the channels their genes ask for."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tsir.approx.prune_genes import LEVELS
from tsir.approx.sites import Approximations, Int8Matmul, int8_matmul
from tsir.backends import runtime, targets
from tsir.convert import relax_to_tsir
from tsir.egraph import Limits, TermEGraph
from tsir.ir.term import Term, postorder
from tsir.lower import lower
from tsir.search.extract import Space
from tsir.source import load

X86 = targets.resolve("x86")


def _approximations(model: nn.Module, x: torch.Tensor, families=("algebra",)):
    source = load(model.eval(), (x,), None)
    graph = relax_to_tsir(source.module)
    egraph = TermEGraph(graph, families)
    egraph.saturate(Limits(iterations=3, time_s=5))
    approx = Approximations(Space.of(egraph.view(), X86.roofline), graph, X86.roofline)
    terms = approx.activation_terms()
    acts = runtime.Runner(runtime.build(lower(graph, Term("tuple", tuple(terms)), source.module), X86))([x.numpy()])
    approx.build_choices(acts)
    return approx, source


def _run(approx: Approximations, source, genome: list[int], x: np.ndarray) -> tuple[np.ndarray, object]:
    decoded = approx.decode(genome)
    return runtime.Runner(runtime.build(lower(decoded.graph, decoded.root, source.module), X86))([x])[0], decoded


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.fc1, self.fc2 = nn.Linear(64, 96), nn.Linear(96, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_pruning_gene_estimate_matches_measured_error(level: int) -> None:
    x = torch.randn(256, 64)
    approx, source = _approximations(Mlp(), x)
    assert len(approx.pruning) == 1 and approx.pruning.groups[0].channels == 96
    n, sites = len(approx.space.view.classes), len(approx.sites)
    genome = approx.space.original() + [0] * sites + [level]
    out, decoded = _run(approx, source, genome, x.numpy())
    assert decoded.levels == [level]
    reference = source.reference(x).detach().numpy()
    measured = np.linalg.norm(out - reference) / np.linalg.norm(reference)
    latency, size, estimate = approx.objectives(genome)
    assert estimate == pytest.approx(approx.pruning.error[0][level])
    assert estimate > 0 and measured == pytest.approx(estimate, rel=1e-3)  # fc2 is linear in what was removed
    full_latency, full_size, _ = approx.objectives(genome[:n + sites] + [0])
    kept = int(np.ceil(LEVELS[level] * 96))
    assert size == pytest.approx(full_size - (96 - kept) * (64 + 10) * 4)  # fc1 columns and fc2 rows
    assert latency < full_latency


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.fc2 = nn.Linear(64, 96), nn.Linear(96, 64)  # both large enough to be int8 sites

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def test_int8_after_pruning_quantizes_the_pruned_weight() -> None:
    x = torch.randn(256, 64)
    model = Wide().eval()
    approx, source = _approximations(model, x)
    assert [s.shape for s in approx.sites] == [(64, 96), (96, 64)] and len(approx.pruning) == 1
    int8 = [c.name for c in approx.sites[1].choices].index("int8")
    genome = approx.space.original() + [0, int8, 3]  # fc2 int8, reading the 96 hidden channels cut to 48
    out, decoded = _run(approx, source, genome, x.numpy())
    keep = approx.pruning.keep[0][3]
    (kernel,) = [decoded.graph.opaque_calls[t.attrs[0]] for t in postorder(decoded.root) if t.op == "opaque"]
    assert isinstance(kernel, Int8Matmul) and len(keep) == 48
    with torch.no_grad():
        act = torch.relu(model.fc1(x)).numpy()
    w = model.fc2.weight.detach().numpy().T
    pruned = int8_matmul(w[keep], act[:, keep], library=False)[1]  # prune, then quantize
    unpruned = int8_matmul(w, act, library=False)[1]
    np.testing.assert_allclose(kernel.w_scale, pruned.w_scale, rtol=1e-6)
    assert kernel.x_scale == pytest.approx(pruned.x_scale)
    assert not np.allclose(kernel.w_scale, unpruned.w_scale)  # the order matters for these scales
    reference = source.reference(x).detach().numpy()
    measured = np.linalg.norm(out - reference) / np.linalg.norm(reference)
    _, _, estimate = approx.objectives(genome)
    assert measured <= 2 * estimate  # pruning and rounding errors summed bound what the two do together


class Residual(nn.Module):
    """conv -> [depthwise | grouped] conv -> residual add, flatten, an MLP with a residual."""

    def __init__(self, width: int, hidden: int, depthwise: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, width, 3, padding=1)
        self.mid = nn.Conv2d(width, width, 3, padding=1, groups=width if depthwise else 2)
        self.body = nn.Conv2d(width, width, 1)
        self.fc1 = nn.Linear(width * 4, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = y + self.body(torch.relu(self.mid(y)))
        h = torch.relu(self.fc1(nn.functional.max_pool2d(y, 2).flatten(1)))
        return self.head(h + torch.relu(self.fc2(h)))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.sampled_from([8, 16]), hidden=st.sampled_from([64, 96]), depthwise=st.booleans(),
       families=st.sampled_from([("algebra",), ("algebra", "fusion")]), seed=st.integers(0, 2**16))
def test_random_genomes_with_pruning_genes_decode_to_valid_programs(width, hidden, depthwise, families, seed) -> None:
    torch.manual_seed(seed)
    x = torch.randn(4, 2, 4, 4)
    approx, source = _approximations(Residual(width, hidden, depthwise), x, families)
    assert len(approx.pruning) >= 1  # fc1/fc2's residual group; the conv group too unless the grouped conv blocks it
    rng = random.Random(seed)
    genome = [rng.randrange(len(nodes)) for nodes in approx.space.view.classes]
    genome += [rng.randrange(k) for k in approx.knobs()]
    out, decoded = _run(approx, source, genome, x.numpy())
    reference = source.reference(x).detach().numpy()
    assert out.shape == reference.shape and np.isfinite(out).all()
    levels = approx.levels(genome)
    assert decoded.levels == levels  # these exact rewrites keep every group prunable: each gene applies
    unpruned = genome[:len(genome) - len(levels)] + [0] * len(levels)
    _, plain = _run(approx, source, unpruned, x.numpy())
    if any(levels):
        assert _bytes(decoded.graph, decoded.root) < _bytes(plain.graph, plain.root)
    for gene, level in enumerate(levels):  # each gene's channels: as many as its level keeps, wherever they flow
        group = approx.pruning.groups[gene]
        kept = group.channels if level == 0 else len(approx.pruning.keep[gene][level])
        assert _channels(decoded.root, kept) and (kept == group.channels or not _channels(decoded.root, group.channels))


def _bytes(graph, root) -> int:
    return sum(graph.constants[t.attrs[0]].nbytes for t in set(postorder(root)) if t.op == "weight")


def _channels(root, n: int) -> bool:
    """Some relu in the program has ``n`` channels (the groups' tensors all pass a relu here)."""
    return any(t.ty[0][1 if len(t.ty[0]) == 4 else -1] == n for t in postorder(root) if t.op == "relu")
