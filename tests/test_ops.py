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
