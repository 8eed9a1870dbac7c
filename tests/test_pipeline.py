"""The optimize pipeline: folding reaches the program, opaque ops pass through, results export."""

from __future__ import annotations

import json

import torch
import tvm
from tvm import relax

from tsir import optimize, zoo
from tsir.backends.runtime import flatten
from tsir.convert import relax_to_tsir
from tsir.frontend import export, to_relax
from tsir.ir.registry import OPS
from tsir.ir.term import postorder


class ConvLogSoftmaxHead(torch.nn.Module):
    """conv -> BN -> log-softmax over channels -> linear: log-softmax is an op tsir does not model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8 * 6 * 6, 5)
        torch.nn.init.uniform_(self.bn.running_var, 0.5, 1.5)
        torch.nn.init.normal_(self.bn.running_mean)

    def forward(self, x):
        y = torch.log_softmax(self.bn(self.conv(x)), dim=1)
        return self.fc(y.flatten(1))


def test_opaque_op_passes_through_and_verifies():
    torch.manual_seed(0)
    model, inputs = ConvLogSoftmaxHead().eval(), (torch.randn(1, 3, 6, 6),)
    graph = relax_to_tsir(to_relax(export(model, inputs)))
    opaque = [t for t in graph.nodes() if t.op == "opaque"]
    assert [graph.opaque_calls[t.attrs[0]].call.op.name for t in opaque] == ["relax.nn.log_softmax"]
    result = optimize(model, inputs, budget_s=10, measure=False)
    assert result.report["verification"]["status"] == "verified"
    assert result.report["verification"]["inputs"]["seeds"] == [1, 2, 3]
    assert result.report["program"]["optimized"]["opaque"] == 1
    assert "batch_norm" not in result.report["program"]["optimized"]


def test_conv_batch_norm_folds_away_in_resnet18():
    """ResNet-18's 20 batch norms fold into their convolutions on import, as the ONNX exporter folds them."""
    entry = zoo.load("resnet18")
    result = optimize(entry.module, entry.example_inputs, budget_s=20, measure=False)
    before, after = result.report["program"]["original"], result.report["program"]["optimized"]
    assert "batch_norm" not in before and "batch_norm" not in after
    convs = ("conv2d", "dnnl_conv2d", "dnnl_conv2d_add")  # TVM or oneDNN road (either layout, a residual fused)
    assert before["conv2d"] == 20 and sum(after.get(op, 0) for op in convs) == 20


class LinearBatchNorm(torch.nn.Module):
    """linear -> BatchNorm1d -> ReLU: a batch norm after no convolution, which the e-graph folds."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.bn = torch.nn.Linear(12, 8), torch.nn.BatchNorm1d(8)
        torch.nn.init.uniform_(self.bn.running_var, 0.5, 1.5)
        torch.nn.init.normal_(self.bn.running_mean)

    def forward(self, x):
        return torch.relu(self.bn(self.fc(x)))


def test_batch_norm_after_a_linear_folds_in_the_egraph():
    torch.manual_seed(0)
    result = optimize(LinearBatchNorm().eval(), (torch.randn(4, 12),), budget_s=5, measure=False)
    assert result.report["program"]["original"]["batch_norm"] == 1
    assert "batch_norm" not in result.report["program"]["optimized"]
    fired = result.report["rules_fired"]["folding"]
    assert fired["batch_norm_affine"] >= 1 and fired["linear_scale_fold"] >= 1


def test_linear_bias_form_is_chosen_for_mlp():
    entry = zoo.load("mlp")
    result = optimize(entry.module, entry.example_inputs, budget_s=10, measure=False)
    after = result.report["program"]["optimized"]
    assert after.get("linear", 0) + after.get("dnnl_linear", 0) == 3  # TVM or oneDNN road
    assert "matmul" not in after and "dnnl_matmul" not in after


def test_export_and_report_written(tmp_path):
    entry = zoo.load("mlp")
    out = tmp_path / "out"
    optimize(entry.module, entry.example_inputs, budget_s=10, out_dir=out)
    written = ["model.so", "pareto.png", "report.json", "report.md", "search_curve.png", "tvm.log"]
    assert sorted(p.name for p in out.iterdir()) == written
    report = json.loads((out / "report.json").read_text())
    assert report["verification"]["status"] == "verified" and report["latency_ms"]["optimized"] > 0
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "model.so")), tvm.cpu())
    got = flatten(vm["main"](tvm.runtime.tensor(entry.example_inputs[0].numpy())))[0]
    want = entry.module(*entry.example_inputs).detach().numpy()
    assert abs(got - want).max() <= 1e-4 * abs(want).max()


def test_resnext_block_runs_fewer_kernels_than_the_original():
    """Batch norms fold into the convolutions and a ReLU into a oneDNN conv: fewer run-time ops (views such as
    reshape aside), and a program the cost model rates strictly cheaper than the original (the original is only
    a seed of the search)."""
    entry = zoo.load("resnext_block")
    result = optimize(entry.module, entry.example_inputs, budget_s=10, measure=False)
    original = sum(n for op, n in result.report["program"]["original"].items() if OPS[op].kernel)
    kernels = [layer["op"] for layer in result.report["layers"] if OPS[layer["op"]].kernel]
    assert "batch_norm" not in kernels and len(kernels) < original == 10
    search = result.report["search"]
    assert search["predicted_s"] < search["seeds_predicted_s"]["original"]


def test_graph_inputs_keep_their_names_and_types():
    entry = zoo.load("nasrnn")
    graph = relax_to_tsir(to_relax(export(entry.module, entry.example_inputs)))
    assert [t.ty for t in graph.inputs] == [(tuple(x.shape), "float32") for x in entry.example_inputs]
    assert all(t.op != "input" or t in graph.inputs for t in postorder(graph.root))
