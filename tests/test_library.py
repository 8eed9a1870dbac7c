"""The oneDNN road: library rules (e-graph soundness), the native kernels against numpy, and an exported
module that calls oneDNN running in a fresh process."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import weakref

import numpy as np
import pytest
import torch
import tvm
import tvm_ffi
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsir import optimize, zoo
from tsir.backends import dnnl
from tsir.ir.ops import OPS, TO_NHWC, evaluate
from tsir.ir.ops.library import conv_activation, float_bits
from tsir.ir.term import Graph, Term
from tsir.testing import rule_check
from tsir.testing.strategies import GraphBuilder, seeds

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _extension():
    dnnl.load()  # make native builds it; a missing build fails here with the command that fixes it


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
batches = st.lists(st.integers(1, 3), max_size=2).map(tuple)
conv_shapes = st.fixed_dictionaries({
    "n": st.integers(1, 2), "groups": st.sampled_from([1, 2]), "cin_per_group": st.integers(1, 3),
    "cout_per_group": st.integers(1, 3), "size": st.integers(5, 8), "kernel": st.sampled_from([1, 3]),
    "stride": st.integers(1, 2), "pad": st.integers(0, 1), "dilation": st.integers(1, 2),
})


# ---- rules: their property tests are in tests/test_rules.py (CASES) like every other rule's ----
def test_library_rules_respect_their_guards():
    """A per-width bias on a conv (not per channel) and a float64 matmul are left to TVM (the conv itself may
    become a oneDNN conv without bias; the add stays outside it)."""
    b = GraphBuilder(0)
    x = b.input((1, 2, 5, 5))
    y = Term("conv2d", (x, b.weight((3, 2, 3, 3))), ((1, 1), (1, 1, 1, 1), (1, 1), 1))
    x64 = Term("input", (), ("x64",), ((2, 3), "float64"))
    y64 = Term("input", (), ("y64",), ((3, 4), "float64"))
    b.values.update(x64=np.ones((2, 3)), y64=np.ones((3, 4)))
    b.inputs += [x64, y64]
    graph = Graph(Term("tuple", (Term("add", (y, b.weight((5,)))), Term("matmul", (x64, y64)))), b.inputs, b.constants)
    fired, disagreement = rule_check(graph, ("library",), b.values)
    assert set(fired) <= {"conv2d_to_dnnl", "dnnl_conv2d_to_nhwc"} and disagreement == 0.0


# ---- native kernels against the numpy reference of the op table ------------------------------
def _call(name: str, arrays: list[np.ndarray], scalars: list, out_shape: tuple[int, ...]) -> np.ndarray:
    out = tvm.runtime.tensor(np.full(out_shape, np.nan, "float32"))
    tvm_ffi.get_global_func(name)(*(tvm.runtime.tensor(a) for a in arrays), *scalars, out)
    return out.numpy()


def _close(got: np.ndarray, arrays: list[np.ndarray], op: str, attrs: tuple) -> None:
    want = evaluate(op, [a.astype(np.float64) for a in arrays], attrs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max(initial=0))))


@SETTINGS
@given(a_batch=batches, ones=st.lists(st.booleans(), min_size=2, max_size=2), drop=st.integers(0, 2),
       m=st.integers(1, 17), k=st.integers(1, 33), n=st.integers(1, 17), seed=seeds)
def test_native_matmul(a_batch, ones, drop, m, k, n, seed):
    rng = np.random.default_rng(seed)
    b_batch = tuple(1 if one else d for d, one in zip(a_batch, ones, strict=False))[drop:]  # broadcasts
    a, w = rng.standard_normal((*a_batch, m, k), "float32"), rng.standard_normal((*b_batch, k, n), "float32")
    out_shape = np.broadcast_shapes(a_batch, b_batch) + (m, n)
    _close(_call("tsir.dnnl.matmul", [a, w], [], out_shape), [a, w], "dnnl_matmul", ())


@SETTINGS
@given(batch=batches, m=st.integers(1, 17), k=st.integers(1, 65), n=st.integers(1, 33), relu=st.booleans(),
       const_w=st.booleans(), seed=seeds)
def test_native_linear(batch, m, k, n, relu, const_w, seed):
    rng = np.random.default_rng(seed)
    x, w, bias = (rng.standard_normal(s, "float32") for s in ((*batch, m, k), (k, n), (n,)))
    got = _call("tsir.dnnl.linear", [x, w, bias], [int(relu), int(const_w)], (*batch, m, n))
    _close(got, [x, w, bias], "dnnl_linear", (relu,))


@SETTINGS
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=5).map(tuple), eps=st.sampled_from([1e-5, 1e-12]),
       scale=st.sampled_from([1e-3, 1.0, 100.0]), seed=seeds)
def test_native_layer_norm(shape, eps, scale, seed):
    rng = np.random.default_rng(seed)
    # an offset mean too, of the spread's size (a far larger one loses the spread to float32 rounding of x itself)
    x = ((rng.standard_normal(shape) + rng.standard_normal()) * scale).astype("float32")
    gamma, beta = (rng.standard_normal(shape[-1:], "float32") for _ in range(2))
    got = _call("tsir.dnnl.layer_norm", [x, gamma, beta], [float_bits(eps)], shape)
    _close(got, [x, gamma, beta], "dnnl_layer_norm", (len(shape) - 1, eps))


@SETTINGS
@given(c=conv_shapes, act=st.sampled_from([False, True, (0.0, 6.0), (-0.5, 0.25)]), const_w=st.booleans(),
       pads=st.tuples(*[st.integers(0, 2)] * 4), nhwc=st.booleans(), seed=seeds)
def test_native_conv2d(c, act, const_w, pads, nhwc, seed):
    rng = np.random.default_rng(seed)
    cin, cout, k = c["cin_per_group"] * c["groups"], c["cout_per_group"] * c["groups"], c["kernel"]
    x = rng.standard_normal((c["n"], cin, c["size"], c["size"]), "float32")
    if nhwc:
        x = np.ascontiguousarray(x.transpose(TO_NHWC))
    w = rng.standard_normal((cout, c["cin_per_group"], k, k), "float32")
    bias = rng.standard_normal((cout,), "float32")
    attrs = ((c["stride"], c["stride"] + 1), pads, (c["dilation"], 1), c["groups"], act, "NHWC" if nhwc else "NCHW")
    out_shape = evaluate("dnnl_conv2d", [x, w, bias], attrs).shape
    scalars = [*attrs[0], *pads, *attrs[2], c["groups"], *conv_activation(act), int(const_w)]
    got = _call(OPS["dnnl_conv2d"].library(attrs[-1]), [x, w, bias], scalars, out_shape)
    _close(got, [x, w, bias], "dnnl_conv2d", attrs)


@SETTINGS
@given(c=conv_shapes, act=st.sampled_from([False, True, (0.0, 6.0)]), const_w=st.booleans(),
       pads=st.tuples(*[st.integers(0, 2)] * 4), seed=seeds)
def test_native_conv2d_with_a_residual(c, act, const_w, pads, seed):
    """act(conv(x) + bias + r) in NHWC: the residual added by a binary post-op, before the activation."""
    rng = np.random.default_rng(seed)
    cin, cout, k = c["cin_per_group"] * c["groups"], c["cout_per_group"] * c["groups"], c["kernel"]
    x = rng.standard_normal((c["n"], c["size"], c["size"], cin), "float32")
    w = rng.standard_normal((cout, c["cin_per_group"], k, k), "float32")
    bias = rng.standard_normal((cout,), "float32")
    attrs = ((c["stride"], c["stride"] + 1), pads, (c["dilation"], 1), c["groups"], act, "NHWC")
    out_shape = evaluate("dnnl_conv2d", [x, w, bias], attrs).shape
    r = rng.standard_normal(out_shape, "float32")
    scalars = [*attrs[0], *pads, *attrs[2], c["groups"], *conv_activation(act), int(const_w)]
    got = _call("tsir.dnnl.conv2d_nhwc_add", [x, w, bias, r], scalars, out_shape)
    _close(got, [x, w, bias, r], "dnnl_conv2d_add", attrs)
    with pytest.raises(ValueError, match="output's shape"):
        _call("tsir.dnnl.conv2d_nhwc_add", [x, w, bias, r[..., :0]], scalars, out_shape)


def _packs_per_tensor(call, weights: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """``call(w_tensor) -> output`` packs each constant weight once (``weights`` is emptied, so that only the
    tensors hold them): every weight (same shape, one after another)
    gets its own packed copy, never a stale one, and the cache holds each weight tensor (so its address cannot
    be reused) until a later weight comes while nobody else holds it."""
    alive = []
    for want in expected:
        w = weights.pop(0)  # the only reference to it from here on
        alive.append(weakref.ref(w))
        w_tensor = tvm_ffi.from_dlpack(w)  # shares w's buffer: w lives as long as the tensor
        for _ in range(2):  # the second call reads the packed copy
            np.testing.assert_allclose(call(w_tensor), want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
        del w, w_tensor
        gc.collect()
        assert [ref() is not None for ref in alive] == [False] * (len(alive) - 1) + [True]


def test_native_packed_weights_follow_their_tensor():
    rng = np.random.default_rng(0)
    x, bias = rng.standard_normal((2, 16, 9, 9), "float32"), rng.standard_normal(32, "float32")
    conv = tvm_ffi.get_global_func("tsir.dnnl.conv2d")
    attrs = ((1, 1), (1, 1, 1, 1), (1, 1), 1, False, "NCHW")
    weights = [rng.standard_normal((32, 16, 3, 3), "float32") for _ in range(3)]
    expected = [evaluate("dnnl_conv2d", [a.astype(np.float64) for a in (x, w, bias)], attrs) for w in weights]

    def call(w_tensor) -> np.ndarray:
        out = tvm.runtime.tensor(np.full((2, 32, 9, 9), np.nan, "float32"))
        conv(tvm.runtime.tensor(x), w_tensor, tvm.runtime.tensor(bias), 1, 1, 1, 1, 1, 1, 1, 1, 1,
             *conv_activation(False), 1, out)
        return out.numpy()

    _packs_per_tensor(call, weights, expected)
    assert tvm_ffi.get_global_func("tsir.dnnl.packed_weights")() >= 1


def test_native_int8_packed_weights_follow_their_tensor():
    """The int8 matmul of approximate mode keys its packed weights like the fp32 path."""
    rng = np.random.default_rng(1)
    k, n = 64, 40
    x = rng.standard_normal((8, k), "float32")
    scale, inv = np.full(n, 0.01, "float32"), np.full(k, 40.0, "float32")
    qx = np.clip(np.round(x * inv), -127, 127).astype(np.int64)
    # |w| <= 60: without VNNI oneDNN sums pairs of u8 x s8 products in int16, which larger weights can saturate
    weights = [rng.integers(-60, 61, (k, n)).astype(np.int8) for _ in range(3)]
    expected = [(qx @ w.astype(np.int64)) * scale for w in weights]
    int8 = tvm_ffi.get_global_func("tsir.dnnl.int8_matmul")

    def call(w_tensor) -> np.ndarray:
        out = tvm.runtime.tensor(np.full((8, n), np.nan, "float32"))
        int8(tvm.runtime.tensor(x), w_tensor, tvm.runtime.tensor(scale), tvm.runtime.tensor(inv), out)
        return out.numpy()

    _packs_per_tensor(call, weights, expected)
    assert tvm_ffi.get_global_func("tsir.dnnl.int8_packed_weights")() >= 1


def test_native_rejects_bad_arguments():
    x, w = np.ones((2, 3), "float32"), np.ones((4, 5), "float32")
    with pytest.raises(ValueError, match="do not contract"):
        _call("tsir.dnnl.linear", [x, w, np.ones(5, "float32")], [0, 0], (2, 5))
    with pytest.raises(TypeError, match="float32"):
        _call("tsir.dnnl.matmul", [x.astype("float64"), w[:3]], [], (2, 5))


def test_missing_build_names_the_fix(tmp_path):
    env = {**os.environ, "TSIR_DNNL_LIB": str(tmp_path / "libtsir_dnnl.so")}
    proc = subprocess.run([sys.executable, "-c", "from tsir.backends import dnnl; dnnl.load()"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "make native" in proc.stderr


# ---- end to end: optimize picks oneDNN, the exported library runs in a fresh process ------------
def test_exported_library_runs_in_a_fresh_process(tmp_path):
    entry = zoo.load("mlp", 16)
    result = optimize(entry.module, entry.example_inputs, budget_s=4, measure=False)
    # the two larger layers (64x256, 256x256) on oneDNN; the 256x10 head, a few kFLOP, may stay TVM's (cheaper call)
    assert result.report["program"]["optimized"].get("dnnl_linear", 0) >= 2
    assert "tsir.dnnl.linear" in result.module.script()
    library = result.export(tmp_path / "model.so")
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(7))
    np.save(tmp_path / "x.npy", x.numpy())
    with torch.no_grad():
        want = entry.module(x).numpy()
    script = textwrap.dedent(f"""
        import numpy as np, tvm
        from tvm import relax
        from tsir.backends import dnnl
        dnnl.load()
        vm = relax.VirtualMachine(tvm.runtime.load_module({str(library)!r}), tvm.cpu())
        out = vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / "x.npy")!r})))
        np.save({str(tmp_path / "y.npy")!r}, out.numpy() if hasattr(out, "numpy") else out[0].numpy())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-4, atol=1e-5)
