"""Bad input gets one clear error naming the problem and the fix, and leaves no files behind."""

from __future__ import annotations

import pytest
import torch

from tsir import StaticShapeError, TargetError, TsirError, UnsupportedOpError, optimize, zoo


class Unsupported(torch.nn.Module):
    def forward(self, x):
        return torch.special.erfinv(torch.tanh(x)) + torch.lgamma(x.abs() + 1)


def test_unsupported_frontend_ops_are_all_listed_with_the_fix():
    with pytest.raises(UnsupportedOpError) as err:
        optimize(Unsupported(), (torch.randn(2, 3),))
    message = str(err.value)
    assert "erfinv.default" in message and "lgamma.default" in message
    assert "custom_convert_map" in message


def test_dynamic_shapes_name_the_dim():
    model = torch.nn.Linear(4, 2).eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(model, (torch.randn(8, 4),), dynamic_shapes=({0: batch},))
    with pytest.raises(StaticShapeError) as err:
        optimize(program, (torch.randn(8, 4),))
    assert "static shapes" in str(err.value) and "dim 0" in str(err.value)


def test_unknown_target():
    entry = zoo.load("mlp")
    with pytest.raises(TargetError, match="unknown target 'tpu'.*known targets: x86"):
        optimize(entry.module, entry.example_inputs, target="tpu")


@pytest.mark.parametrize("budget", [0, -5])
def test_non_positive_budget(budget):
    entry = zoo.load("mlp")
    with pytest.raises(TsirError, match="budget_s must be a positive number"):
        optimize(entry.module, entry.example_inputs, budget_s=budget)


@pytest.mark.parametrize("where", ["under_a_file", "in_proc"])
def test_unwritable_output_directory_fails_before_any_work(tmp_path, where):
    entry = zoo.load("mlp")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "sub" if where == "under_a_file" else "/proc/tsir-out"
    with pytest.raises(TsirError, match="cannot create output directory.*choose another"):
        optimize(entry.module, entry.example_inputs, out_dir=out)
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]


def test_unknown_zoo_model_lists_names():
    with pytest.raises(ValueError, match="resnet18"):
        zoo.load("resnet1000")
