"""Structured pruning: dependency groups on residual and grouped-conv models, dense smaller programs that
build and run, and the error estimate against the measured error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from tsir.approx import prune as P
from tsir.backends import runtime, targets
from tsir.convert import relax_to_tsir
from tsir.ir.ops import evaluate
from tsir.ir.term import Graph, postorder
from tsir.lower import lower
from tsir.source import load

X86 = targets.resolve("x86")


def _graph(model: nn.Module, x: torch.Tensor):
    torch.manual_seed(0)
    source = load(model.eval(), (x,), None)
    return source, relax_to_tsir(source.module)


def _run(source, graph: Graph, x: np.ndarray) -> np.ndarray:
    return runtime.Runner(runtime.build(lower(graph, graph.root, source.module), X86))([x])[0]


def _weights(graph: Graph) -> dict[str, list[tuple]]:
    """Shapes of the constant operands of every conv/matmul in the program, by op."""
    out: dict[str, list[tuple]] = {}
    for t in postorder(graph.root):
        if t.op in ("conv2d", "matmul"):
            out.setdefault(t.op, []).append(t.args[1].ty[0])
    return out


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 64)
        self.head = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = y + torch.relu(self.body(y))  # residual: stem and body keep the same channels
        y = nn.functional.max_pool2d(y, 2).flatten(1)
        h = torch.relu(self.fc1(y))
        h = h + torch.relu(self.fc2(h))  # residual over neurons
        return self.head(h)


def test_residual_groups_prune_together_and_stay_valid() -> None:
    x = torch.randn(4, 3, 8, 8)
    source, graph = _graph(Residual(), x)
    groups = P.groups(graph)
    free = [g for g in groups if not g.blocked]
    assert sorted(g.label for g in free) == ["conv2d 16 channels (2 producers)", "matmul 64 channels (2 producers)"]
    assert all("output" in g.blocked for g in groups if g.blocked)  # only the head's 5 classes stay
    conv = next(g for g in free if "conv2d" in g.label)
    assert sorted(b for _, b in conv.consumers) == [1, 16]  # the body conv, and fc1 after the flatten (4x4 blocks)
    pruned = P.prune(graph, {groups.index(g): 0.5 for g in free})
    before, after = _weights(graph), _weights(pruned)
    assert after["conv2d"] == [(8, 3, 3, 3), (8, 8, 3, 3)] and before["conv2d"] == [(16, 3, 3, 3), (16, 16, 3, 3)]
    assert sorted(after["matmul"]) == [(32, 5), (32, 32), (128, 32)]  # (K, N) after the transposes folded
    out = _run(source, pruned, x.numpy())
    assert out.shape == (4, 5) and np.isfinite(out).all()
    assert sum(c.nbytes for c in _used(pruned)) < 0.4 * sum(c.nbytes for c in _used(graph))
    full = P.prune(graph, {groups.index(g): 1.0 for g in free})  # keeping everything changes nothing
    np.testing.assert_allclose(_run(source, full, x.numpy()), source.reference(x).detach().numpy(), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="cannot be pruned"):
        P.prune(graph, {groups.index(next(g for g in groups if g.blocked)): 0.5})


def _used(graph: Graph) -> list[np.ndarray]:
    return [graph.constants[t.attrs[0]] for t in postorder(graph.root) if t.op == "weight"]


class Grouped(nn.Module):
    """A depthwise conv (prunable through), a grouped conv (a boundary) and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.point = nn.Conv2d(16, 32, 1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.dw(torch.relu(self.stem(x))))
        y = torch.relu(self.grouped(torch.relu(self.point(y))))
        return self.fc(nn.functional.max_pool2d(y, 2).flatten(1))


def test_grouped_conv_is_a_boundary_and_depthwise_prunes_through() -> None:
    x = torch.randn(2, 3, 8, 8)
    source, graph = _graph(Grouped(), x)
    groups = P.groups(graph)
    stem = next(g for g in groups if g.channels == 16)
    point = next(g for g in groups if g.channels == 32)
    assert stem.blocked is None and [c.op for c, _ in stem.consumers] == ["conv2d"]
    assert "groups=4" in point.blocked  # channels read by a grouped conv must all stay
    pruned = P.prune(graph, {groups.index(stem): 0.25})
    convs = [t for t in postorder(pruned.root) if t.op == "conv2d"]
    assert [t.args[1].ty[0] for t in convs][:3] == [(4, 3, 3, 3), (4, 1, 3, 3), (32, 4, 1, 1)]
    assert convs[1].attrs[3] == 4  # the depthwise conv keeps one filter per remaining channel
    assert convs[3].args[1].ty[0] == (32, 8, 3, 3) and convs[3].attrs[3] == 4  # untouched
    out = _run(source, pruned, x.numpy())
    assert out.shape == (2, 10) and np.isfinite(out).all()


class Mlp(nn.Module):
    def __init__(self, conv: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = conv
        self.first = nn.Conv2d(1, 16, 3, padding=1) if conv else nn.Linear(64, 96)
        self.last = nn.Linear(16 * 4 * 4 if conv else 96, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.first(x))
        return self.last(nn.functional.max_pool2d(y, 2).flatten(1) if self.conv else y)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("fraction", [0.75, 0.5])
def test_estimate_matches_measured_error(conv: bool, fraction: float) -> None:
    x = torch.randn(256, 1, 8, 8) if conv else torch.randn(256, 64)
    model = Mlp(conv).eval()
    source, graph = _graph(model, x)
    groups = P.groups(graph)
    (group,) = [g for g in groups if not g.blocked]
    keep = P.keep_channels(graph, group, fraction)
    assert len(keep) == int(np.ceil(fraction * group.channels))
    (consumer, block), = group.consumers
    with torch.no_grad():
        y = torch.relu(model.first(x))
        act = (nn.functional.max_pool2d(y, 2).flatten(1) if conv else y).numpy()
    w = model.last.weight.detach().numpy().T
    estimate = P.consumer_error(consumer, block, act, w, keep)
    reference = source.reference(x).detach().numpy()
    measured = np.linalg.norm(_run(source, P.prune(graph, {groups.index(group): fraction}), x.numpy()) - reference)
    measured /= np.linalg.norm(reference)
    assert estimate > 0 and measured == pytest.approx(estimate, rel=1e-3)


def _interpret(graph: Graph, inputs: list[np.ndarray]) -> np.ndarray:
    """The program's first output with the ops' reference semantics (numpy; no TVM build)."""
    values: dict[int, np.ndarray] = {id(t): x for t, x in zip(graph.inputs, inputs, strict=True)}
    for t in postorder(graph.root):
        if id(t) in values:
            continue
        if t.op == "weight":
            values[id(t)] = graph.constants[t.attrs[0]]
        elif t.op == "tuple":
            values[id(t)] = values[id(t.args[0])]
        else:
            values[id(t)] = evaluate(t.op, [values[id(a)] for a in t.args], t.attrs)
    return values[id(graph.root)]


class RandomNet(nn.Module):
    """conv -> [depthwise] -> conv with an optional residual, flatten, an MLP with an optional residual."""

    def __init__(self, width: int, hidden: int, depthwise: bool, residual: bool) -> None:
        super().__init__()
        self.depthwise, self.residual = depthwise, residual
        self.stem = nn.Conv2d(2, width, 3, padding=1)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.body = nn.Conv2d(width, width, 1)
        self.fc1 = nn.Linear(width * 4, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        z = self.body(torch.relu(self.dw(y)) if self.depthwise else y)
        y = y + z if self.residual else torch.relu(z)
        h = torch.relu(self.fc1(nn.functional.max_pool2d(y, 2).flatten(1)))
        h = h + torch.relu(self.fc2(h)) if self.residual else torch.relu(self.fc2(h))
        return self.head(h)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# at least two channels kept per group: a depthwise conv cut to one channel has groups == 1 and would be
# counted as a producer below (hypothesis found it: width 2, depthwise, fractions 0.1)
@given(width=st.integers(4, 12), hidden=st.integers(4, 24), depthwise=st.booleans(), residual=st.booleans(),
       fractions=st.lists(st.sampled_from([0.3, 0.5, 0.8, 1.0]), min_size=6, max_size=6))
def test_pruning_any_fractions_keeps_a_valid_program(width, hidden, depthwise, residual, fractions) -> None:
    torch.manual_seed(width * 31 + hidden)
    x = torch.randn(2, 2, 4, 4)
    source, graph = _graph(RandomNet(width, hidden, depthwise, residual), x)
    groups = P.groups(graph)
    free = [i for i, g in enumerate(groups) if not g.blocked]
    assert len(free) == (2 if residual else 4)  # residuals tie stem/body and fc1/fc2 into one group each
    reference = source.reference(x).detach().numpy()
    np.testing.assert_allclose(_interpret(P.prune(graph, {i: 1.0 for i in free}), [x.numpy()]), reference,
                               rtol=1e-4, atol=1e-5)
    pruned = P.prune(graph, dict(zip(free, fractions, strict=False)))
    out = _interpret(pruned, [x.numpy()])
    assert out.shape == reference.shape and np.isfinite(out).all()
    share = dict(zip(free, fractions, strict=False))
    expected = sorted(int(np.ceil(share[i] * g.channels)) if i in share else g.channels
                      for i, g in enumerate(groups) for _ in g.producers)
    produced = sorted(t.ty[0][1] if t.op == "conv2d" else t.ty[0][-1] for t in postorder(pruned.root)
                      if t.op == "matmul" or (t.op == "conv2d" and t.attrs[3] == 1))
    assert produced == expected  # every producer of a group keeps exactly its group's channels
    assert sum(c.nbytes for c in _used(pruned)) <= sum(c.nbytes for c in _used(graph))


class Ffn(nn.Module):
    """A transformer feed-forward block on (batch, tokens, channels): torch.export reshapes around each linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.up, self.down = nn.Linear(16, 48), nn.Linear(48, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(nn.functional.gelu(self.up(x)))


def test_channels_last_reshapes_carry_channels() -> None:
    x = torch.randn(4, 6, 16)
    model = Ffn().eval()
    source, graph = _graph(model, x)
    assert "reshape" in {t.op for t in postorder(graph.root)}
    (group,) = [g for g in P.groups(graph) if not g.blocked]  # the residual's 16 channels reach the output
    assert group.channels == 48
    pruned = P.prune(graph, {P.groups(graph).index(group): 0.5})
    assert sorted(_weights(pruned)["matmul"]) == [(16, 24), (24, 16)]
    out = _run(source, pruned, x.numpy())
    reference = source.reference(x).detach().numpy()
    (consumer, block), = group.consumers
    with torch.no_grad():
        act = nn.functional.gelu(model.up(x)).numpy().reshape(-1, 48)
    keep = P.keep_channels(graph, group, 0.5)
    w = model.down.weight.detach().numpy().T
    estimate = P.consumer_error(consumer, block, act, w, keep)
    measured = np.linalg.norm(out - reference) / np.linalg.norm(act @ w)  # relative to the matmul's output
    assert estimate > 0 and measured == pytest.approx(estimate, rel=1e-2)
