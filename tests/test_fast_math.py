"""Fast math on CPU builds (tsir.backends.fast_math): exp, tanh, erf and sigmoid become vectorizable polynomials
close to the exact functions, and nested ones stay separate loops instead of one exponentially large expression."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from tsir.backends import fast_math, kernels, runtime, schedules, targets

SPEC = targets.resolve("x86")


def _module(ops: list[str], shape=(4, 64)) -> relax.Function:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = x
            for op in ops:
                y = bb.emit(relax.op.nn.gelu(y) if op == "gelu" else getattr(relax.op, op)(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


NUMPY = {"tanh": np.tanh, "exp": np.exp, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
         "gelu": lambda v: 0.5 * v * (1 + np.vectorize(__import__("math").erf)(v / np.sqrt(2)))}


@pytest.mark.parametrize("op", sorted(NUMPY))
def test_each_function_is_replaced_and_stays_close(op):
    mod = _module([op])
    fast = fast_math.apply(mod)
    assert f"R.{op}(" not in fast.script() and "R.nn.gelu(" not in fast.script()  # all became fast_* kernels
    assert any(name.startswith("fast_") for name in (gv.name_hint for gv in fast.functions))
    x = np.random.default_rng(0).uniform(-8, 8, (4, 64)).astype("float32")
    got = runtime.Runner(runtime.build(mod, SPEC))([x])[0]
    want = NUMPY[op](x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nested_fast_functions_are_not_inlined_into_each_other():
    """tanh(tanh(tanh(x))): each fast tanh loads its input ~10 times, so inlining one into the next would
    copy it ~10x per level; the default schedule keeps them as separate loops."""
    mod = _module(["tanh", "tanh", "tanh"])
    (kernel,) = kernels.kernels(kernels.fuse(mod, SPEC.target))
    scheduled = schedules.apply(kernel.module(), SPEC.target)
    assert len(scheduled.script()) < 60_000
    x = np.random.default_rng(1).uniform(-3, 3, (4, 64)).astype("float32")
    got = runtime.Runner(runtime.build(mod, SPEC))([x])[0]
    np.testing.assert_allclose(got, np.tanh(np.tanh(np.tanh(x.astype(np.float64)))), atol=1e-6)
