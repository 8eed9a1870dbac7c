"""Approximation kinds beyond linear low-rank/int8: conv low-rank, bf16 matmuls, int8 embedding tables.

Each estimate is checked against the measured error of the built kernel, and every kind is applied to a
small model through the e-graph space (decode -> lower -> build -> run) so the result stays a valid program.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from tsir.approx.sites import (
    Approximations,
    Bf16Matmul,
    Int8Conv,
    Int8Matmul,
    Int8Take,
    activation_scale,
    bf16_error,
    int8_conv,
    int8_matmul,
    lowrank_conv,
    quantize_rows,
    quantize_weight,
    to_bf16,
)
from tsir.backends import runtime, targets
from tsir.convert import relax_to_tsir
from tsir.egraph import Limits, TermEGraph
from tsir.lower import lower
from tsir.search.extract import Space, walk
from tsir.search.greedy import greedy
from tsir.source import load

X86 = targets.resolve("x86")


def _module(params: list[relax.Var], body) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(body(*params)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("rank", [4, 12])
def test_conv_lowrank_estimate_matches_measured(rank: int) -> None:
    rng = np.random.default_rng(rank)
    u, _ = np.linalg.qr(rng.standard_normal((144, 144)))
    v, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    s = np.exp(-np.arange(32) / 6.0)
    w = ((u[:, :32] * s) @ v).T.reshape(32, 16, 3, 3).astype(np.float32)  # (O, I, kh, kw), decaying spectrum
    first, second, estimate = lowrank_conv(w, rank)
    assert first.shape == (rank, 16, 3, 3) and second.shape == (32, rank, 1, 1)
    x = torch.from_numpy(rng.standard_normal((64, 16, 10, 10)).astype(np.float32))
    exact = nn.functional.conv2d(x, torch.from_numpy(w))
    approx = nn.functional.conv2d(nn.functional.conv2d(x, torch.from_numpy(first)), torch.from_numpy(second))
    measured = float((exact - approx).norm() / exact.norm())
    assert abs(measured - estimate) <= 0.1 * estimate


def test_bf16_matmul_estimate_and_lowering() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((256, 64)).astype(np.float32)
    x = rng.standard_normal((32, 256)).astype(np.float32)
    bits = to_bf16(w).view(np.uint16)
    mod = _module([relax.Var("x", relax.TensorType([32, 256], "float32"))],
                  lambda v: Bf16Matmul().rebuild([v, relax.const(bits)]))
    assert 'R.matmul(' in mod.script() and '"bfloat16"' in mod.script()
    out = runtime.Runner(runtime.build(mod, X86))([x])[0]
    measured = np.linalg.norm(out - x @ w) / np.linalg.norm(x @ w)
    estimate = np.hypot(bf16_error(w), bf16_error(x))
    assert 0 < measured and 0.3 * estimate <= measured <= 2.0 * estimate
    assert bits.nbytes * 2 == w.nbytes


def test_int8_embedding_gather_matches_estimate_and_dequantizes_rows() -> None:
    rng = np.random.default_rng(3)
    table = (rng.standard_normal((1000, 48)) * rng.uniform(0.1, 2.0, (1000, 1))).astype(np.float32)
    q, scale, estimate = quantize_rows(table)
    assert q.dtype == np.int8 and scale.shape == (1000, 1)
    ids = rng.integers(0, 1000, 512).astype(np.int32)
    mod = _module([relax.Var("ids", relax.TensorType([512], "int32"))],
                  lambda i: Int8Take(0).rebuild([relax.const(q), relax.const(scale), i]))
    assert 'R.take(' in mod.script() and '"int8"' in mod.script()
    out = runtime.Runner(runtime.build(mod, X86))([ids])[0]
    np.testing.assert_allclose(out, q[ids].astype(np.float32) * scale[ids], rtol=1e-6)
    measured = np.linalg.norm(out - table[ids]) / np.linalg.norm(table[ids])
    assert abs(measured - estimate) <= 0.15 * estimate


class Small(nn.Module):
    """An embedding table, an ungrouped conv and two linears: one site of every kind."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(512, 16)
        self.conv = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids).reshape(-1, 4, 4, 16).permute(0, 3, 1, 2)
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def _approximations(families: tuple[str, ...], int8_library: bool = False) -> tuple[Approximations, object,
                                                                                     tvm.IRModule]:
    ids = torch.randint(0, 512, (8, 16))
    source = load(Small().eval(), (ids,), None)
    graph = relax_to_tsir(source.module)
    egraph = TermEGraph(graph, families)
    egraph.saturate(Limits(iterations=4, time_s=5))
    space = Space.of(egraph.view(), X86.roofline)
    return Approximations(space, graph, X86.roofline, int8_library, int8_library), source, graph


@pytest.mark.parametrize("families", [("algebra",), ("algebra", "fusion", "library"),
                                      ("algebra", "fusion", "library", "layout")])
def test_every_kind_decodes_to_a_valid_program(families: tuple[str, ...]) -> None:
    """Each site's choices on the original program; with the layout family on the cheapest program, whose
    conv is oneDNN's in NHWC (its low-rank factors run between transposes, its int8 kernel on it directly);
    with the library, int8 matmuls and convs as oneDNN's kernels where the CPU has VNNI."""
    if "library" in families:
        from tsir.backends import dnnl

        try:
            dnnl.load()
        except Exception as err:  # the oneDNN extension is not built here
            pytest.skip(f"oneDNN extension unavailable: {err}")
    int8 = "library" in families and targets.host_has_vnni()  # oneDNN's int8 matmul and conv kernels
    approx, source, graph = _approximations(families, int8)
    assert sorted(s.kind for s in approx.sites) == ["conv", "embedding", "matmul"]  # fc2 (64x10) is too small
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((64, *t.ty[0][1:])).astype(np.float32) for t in approx.activation_terms()]
    approx.build_choices(calib)
    names = {s.kind: [c.name for c in s.choices] for s in approx.sites}
    assert names["embedding"] == ["exact", "int8"] and "bf16" in names["matmul"] and "int8" in names["matmul"]
    assert sum(n.endswith("+int8") for n in names["matmul"]) == 2
    assert any(n.startswith("rank") for n in names["conv"]) and ("int8" in names["conv"]) == int8
    ids = rng.integers(0, 512, (8, 16)).astype(np.int64)
    with torch.no_grad():
        reference = source.reference(torch.from_numpy(ids)).numpy()
    space = approx.space
    n = len(space.view.classes)
    base = greedy(space) if "layout" in families else space.original()
    if "layout" in families:
        assert any(space.node(base, c).attrs[-1:] == ("NHWC",) for c in walk(space, base)
                   if space.node(base, c).op == "dnnl_conv2d")
    sites = len(approx.sites)
    for pick in range(1, max(approx.knobs())):
        genome = base[:n] + [min(pick, k - 1) for k in approx.knobs()[:sites]] + [0] * len(approx.pruning)
        applied = {s.kind: c.name for _, s, c in approx.applied(genome)}
        assert set(applied) == {"conv", "embedding", "matmul"}
        graph2, root, _ = approx.decode(genome)
        mod = lower(graph2, root, source.module)
        out = runtime.Runner(runtime.build(mod, X86))([ids])[0]
        assert out.shape == reference.shape
        error = np.linalg.norm(out - reference) / np.linalg.norm(reference)
        _, size, estimate = approx.objectives(genome)
        assert error <= 3 * estimate + 1e-3, (applied, error, estimate)
        assert size < space.size_bytes(genome)


def test_int8_library_kernel_is_integer_onednn_and_matches_tvm_int8() -> None:
    from tsir.backends import dnnl

    try:
        dnnl.load()
    except Exception as err:  # the oneDNN extension is not built here
        pytest.skip(f"oneDNN extension unavailable: {err}")
    import tvm_ffi

    if tvm_ffi.get_global_func("tsir.dnnl.int8_matmul", allow_missing=True) is None:
        pytest.skip("this libtsir_dnnl.so predates dnnl_int8.cc")
    if not targets.host_has_vnni():
        pytest.skip("no VNNI on this CPU: oneDNN's int8 matmul saturates in int16 there, so tsir never offers it "
                    "(test_int8_library_kernel_is_not_offered_without_vnni)")
    rng = np.random.default_rng(4)
    w = rng.standard_normal((192, 96)).astype(np.float32)
    x = rng.standard_normal((2, 24, 192)).astype(np.float32)
    q, w_scale = quantize_weight(w)
    x_scale = float(np.abs(x).max()) / 127
    outs = []
    for library in (False, True):
        mod = _module([relax.Var("x", relax.TensorType([2, 24, 192], "float32"))],
                      lambda v, lib=library: Int8Matmul(x_scale, w_scale, lib).rebuild([v, relax.const(q)]))
        script = mod.script()
        assert ('"tsir.dnnl.int8_matmul"' in script) == library  # oneDNN's s8 x s8 -> s32 matmul
        assert library or ('"int8"' in script and 'out_dtype="int32"' in script)
        outs.append(runtime.Runner(runtime.build(mod, X86))([x])[0])
    qx = np.clip(np.round(x / x_scale), -127, 127).astype(np.int32)
    np.testing.assert_allclose(outs[1], (qx @ q.astype(np.int32)) * (x_scale * w_scale), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-4)
    assert tvm_ffi.get_global_func("tsir.dnnl.int8_impl")()  # oneDNN named the int8 implementation it chose


def _int8_onednn() -> None:
    """Skip unless oneDNN's int8 kernels run here (the extension built, a CPU with VNNI)."""
    from tsir.backends import dnnl

    try:
        dnnl.load()
    except Exception as err:  # the oneDNN extension is not built here
        pytest.skip(f"oneDNN extension unavailable: {err}")
    if not targets.host_has_vnni():
        pytest.skip("no VNNI on this CPU: tsir offers oneDNN's int8 kernels only with it")


@pytest.mark.parametrize(("relu", "strides", "padding"), [(False, (1, 1), (1, 1, 1, 1)), (True, (2, 1), (0, 1, 2, 0))])
def test_int8_conv_kernel_computes_the_integer_convolution(relu, strides, padding) -> None:
    """``tsir.dnnl.int8_conv2d_nhwc``: act(scale[o] * conv(q(x), Wq) + bias[o]) on NHWC float32, where q rounds
    x / x_scale to the int8 grid, against the same integer convolution computed exactly in float64."""
    _int8_onednn()
    rng = np.random.default_rng(5)
    w = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    x = rng.standard_normal((2, 9, 7, 16)).astype(np.float32)
    bias = rng.standard_normal(24).astype(np.float32)
    q, w_scale, _, _ = int8_conv(w, x.transpose(0, 3, 1, 2))
    x_scale = float(np.abs(x).max()) / 127
    kernel = Int8Conv(x_scale, w_scale, strides, padding, (1, 1), relu)
    mod = _module([relax.Var("x", relax.TensorType(list(x.shape), "float32"))],
                  lambda v: kernel.rebuild([v, relax.const(q), relax.const(bias)]))
    out = runtime.Runner(runtime.build(mod, X86))([x])[0]
    qx = torch.from_numpy(np.clip(np.round(x / x_scale), -127, 127).astype(np.float64)).permute(0, 3, 1, 2)
    pt, pl, pb, pr = padding
    acc = nn.functional.conv2d(nn.functional.pad(qx, (pl, pr, pt, pb)), torch.from_numpy(q.astype(np.float64)),
                               stride=strides).permute(0, 2, 3, 1).numpy()
    expected = acc * (x_scale * w_scale) + bias
    expected = np.maximum(expected, 0) if relu else expected
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_int8_conv_estimate_matches_measured_error() -> None:
    """The int8 conv estimate (weight and activation rounding in quadrature) against the error the quantized
    convolution makes on its calibration activations."""
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((32, 16, 3, 3)) * rng.uniform(0.2, 2, (32, 1, 1, 1))).astype(np.float32)
    x = np.maximum(rng.standard_normal((8, 16, 10, 10)), 0).astype(np.float32)  # post-ReLU activations, NCHW
    q, w_scale, x_scale, estimate = int8_conv(w, x)
    assert q.dtype == np.int8 and q.shape == w.shape and w_scale.shape == (32,)
    qx = np.clip(np.round(x / x_scale), -127, 127) * x_scale
    exact = nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    approx = nn.functional.conv2d(torch.from_numpy(qx.astype(np.float32)),
                                  torch.from_numpy((q * w_scale[:, None, None, None]).astype(np.float32)),
                                  padding=1).numpy()
    measured = np.linalg.norm(approx - exact) / np.linalg.norm(exact)
    assert 0.3 * estimate <= measured <= 1.5 * estimate, (measured, estimate)


def test_int8_library_kernel_is_not_offered_without_vnni(monkeypatch) -> None:
    """oneDNN's int8 matmul is a choice only where the CPU has VNNI (elsewhere its int16 sums saturate)."""
    spec = targets.resolve("x86")
    assert spec.library_kernels
    for vnni in (False, True):
        monkeypatch.setattr(targets, "host_has_vnni", lambda v=vnni: v)
        assert spec.int8_library_kernels == vnni
    assert not targets.resolve("arm").int8_library_kernels


@pytest.mark.parametrize("library", [False, True])
def test_smoothquant_migrates_outlier_channels_into_the_weight(library: bool) -> None:
    if library:
        from tsir.backends import dnnl

        try:
            dnnl.load()
        except Exception as err:  # the oneDNN extension is not built here
            pytest.skip(f"oneDNN extension unavailable: {err}")
    rng = np.random.default_rng(5)
    k, n = 128, 64
    outliers = np.ones(k, np.float32)
    outliers[rng.choice(k, 4, replace=False)] = 40.0  # a few huge channels, as after LayerNorm in transformers
    calib = (rng.standard_normal((512, k)) * outliers).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32) / np.sqrt(k)
    q, kernel, errors = int8_matmul(w, calib, library)
    assert kernel.smooth is not None and kernel.smooth.shape == (k,)  # migration rounds with less error here
    plain = Int8Matmul(activation_scale(calib), quantize_weight(w)[1], library)
    x = (rng.standard_normal((32, k)) * outliers).astype(np.float32)
    measured = []
    for kern, weight in ((kernel, q), (plain, quantize_weight(w)[0])):
        mod = _module([relax.Var("x", relax.TensorType([32, k], "float32"))],
                      lambda v, kern=kern, weight=weight: kern.rebuild([v, relax.const(weight)]))
        out = runtime.Runner(runtime.build(mod, X86))([x])[0]
        measured.append(np.linalg.norm(out - x @ w) / np.linalg.norm(x @ w))
    assert measured[0] < 0.5 * measured[1]  # smoothing beats the plain per-tensor activation scale
    assert 0.3 * np.hypot(*errors) <= measured[0] <= 3 * np.hypot(*errors)
