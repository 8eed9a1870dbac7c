"""Relax ops that tsir models since the rule library grew: each converts (no opaque node) and round-trips."""

from __future__ import annotations

import torch

from tsir.backends import runtime, targets
from tsir.convert import relax_to_tsir
from tsir.draws import fresh_inputs
from tsir.frontend import export, to_relax
from tsir.lower import lower
from tsir.verify import verify


class NewOps(torch.nn.Module):
    def forward(self, x: torch.Tensor):
        a, b = torch.split(x, [2, 3], dim=1)
        padded = torch.nn.functional.pad(x, (1, 1, 2, 0))
        pooled = torch.nn.functional.max_pool2d(torch.relu(padded), 2)
        normed = torch.nn.functional.layer_norm(x, (4,))
        return (x[:, 1:3], a * 2, b, torch.clamp(x, 0, 6), pooled.mean(dim=(2, 3), keepdim=True),
                torch.softmax(x, dim=-1), torch.nn.functional.gelu(normed), x.unsqueeze(0))


def test_new_ops_convert_and_round_trip():
    model, inputs = NewOps().eval(), (torch.randn(2, 5, 4, 4),)
    mod = to_relax(export(model, inputs))
    graph = relax_to_tsir(mod)
    ops = {t.op for t in graph.nodes()}
    assert "opaque" not in ops
    assert {"slice", "pad", "max_pool2d", "mean", "clip", "softmax", "gelu", "layer_norm", "reshape"} <= ops
    runner = runtime.Runner(runtime.build(lower(graph, graph.root, mod), targets.resolve("x86")))
    verify(model, runner, fresh_inputs(inputs, seed=3))  # raises VerificationError on a mismatch


class TemporalConv(torch.nn.Module):
    """conv1d + batch norm + ReLU, then a strided grouped conv1d: a speech/audio front end."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm = torch.nn.Conv1d(4, 8, 3, padding=1), torch.nn.BatchNorm1d(8)
        self.down = torch.nn.Conv1d(8, 8, 3, stride=2, groups=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.down(torch.relu(self.norm(self.conv(x)))))


def test_conv1d_converts_folds_and_takes_the_library_road():
    """conv1d is modeled (no opaque node), its batch norm folds into it on import, and the optimized model
    (oneDNN's 2-D convolution over height 1 where the search picks it) matches PyTorch."""
    from tsir import optimize

    model, inputs = TemporalConv().eval(), (torch.randn(2, 4, 16),)
    with torch.no_grad():
        model.norm.running_mean.uniform_(-1, 1)
        model.norm.running_var.uniform_(0.5, 2.0)
    graph = relax_to_tsir(to_relax(export(model, inputs)))
    ops = {t.op for t in graph.nodes()}
    assert "opaque" not in ops and "batch_norm" not in ops and "conv1d" in ops
    result = optimize(model, inputs, budget_s=10, measure=False)
    assert result.report["verification"]["status"] == "verified"
    assert result.report["rules_fired"]["library"]["conv1d_bias_to_dnnl"] >= 1


class MaskedAttention(torch.nn.Module):
    """Token embeddings, position ids from a padding mask (cumsum), a causal mask made from shapes and
    scaled dot-product attention over it: the mask ops decoders are built from."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.cumsum((ids != 0).int(), dim=1) - 1
        x = self.embed(ids) + positions.unsqueeze(-1).float()
        n = ids.shape[1]
        causal = torch.arange(n).unsqueeze(0) <= torch.arange(n).unsqueeze(1)
        q = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * x
        attended = torch.nn.functional.scaled_dot_product_attention(q[:, None], x[:, None], x[:, None],
                                                                      attn_mask=causal)
        return torch.where(attended > 0, attended, -attended.abs()).sum(-1)


def test_mask_ops_convert_fold_and_round_trip():
    model, inputs = MaskedAttention().eval(), (torch.randint(0, 50, (2, 6)),)
    mod = to_relax(export(model, inputs))
    graph = relax_to_tsir(mod)
    ops = {t.op for t in graph.nodes()}
    assert "opaque" not in ops
    # the causal mask leaves a finite score in every row, so torch's guarded softmax reads as a softmax
    assert {"take", "cumsum", "softmax", "where", "sum", "rsqrt", "power"} <= ops and "safe_softmax" not in ops
    runner = runtime.Runner(runtime.build(lower(graph, graph.root, mod), targets.resolve("x86")))
    verify(model, runner, fresh_inputs(inputs, seed=3))
