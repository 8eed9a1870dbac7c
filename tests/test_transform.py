"""tsir inside TVM: the Synthesize pass on a TVMScript module, in Sequential, and the tvm.compile pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

import tsir.stages
from tsir import VerificationError
from tsir.transform import STAMP, Synthesize, pipeline, tvm_target


@tvm.script.ir_module
class Dense:
    """relu(x @ (w^T)^T + b): the double transpose cancels and matmul + bias becomes linear."""

    @R.function
    def main(x: R.Tensor((4, 16), "float32"), w: R.Tensor((16, 8), "float32"),
             b: R.Tensor((8,), "float32")) -> R.Tensor((4, 8), "float32"):
        with R.dataflow():
            t = R.permute_dims(w, [1, 0])
            y = R.matmul(x, R.permute_dims(t, [1, 0]))
            z = R.nn.relu(R.add(y, b))
            R.output(z)
        return z


RNG = np.random.default_rng(0)
X, W, B = (RNG.standard_normal(s).astype("float32") for s in [(4, 16), (16, 8), (8,)])


def expected(x=X, w=W, b=B) -> np.ndarray:
    return np.maximum(x @ w + b, 0)


def run(mod_or_exec, *arrays) -> np.ndarray:
    exe = mod_or_exec if isinstance(mod_or_exec, relax.VMExecutable) else tvm.compile(mod_or_exec, tvm_target())
    vm = relax.VirtualMachine(exe, tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def ops(mod: tvm.IRModule) -> list[str]:
    return [b.value.op.name for block in mod["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call)]


def test_params_as_inputs_rewrite_and_verify():
    synth = Synthesize(budget_s=3)
    out = synth(Dense)
    assert "relax.permute_dims" not in ops(out)  # the transposes cancelled
    assert synth.report["program"]["optimized"] in ({"linear": 1, "relu": 1}, {"dnnl_linear": 1})  # TVM or oneDNN
    assert synth.report["verification"]["status"] == "verified" and synth.report["verification"]["reference"] == "tvm"
    np.testing.assert_allclose(run(out, X, W, B), expected(), rtol=1e-5, atol=1e-5)


def test_bound_params_fold_into_constants():
    bound = relax.transform.BindParams("main", {"w": tvm.runtime.tensor(W), "b": tvm.runtime.tensor(B)})(Dense)
    assert [p.name for p in bound["main"].params] == ["x"]
    synth = Synthesize(budget_s=3)
    out = synth(bound)
    assert synth.report["input"]["inputs"] == [{"shape": [4, 16], "dtype": "float32"}]
    assert "relax.permute_dims" not in ops(out)
    np.testing.assert_allclose(run(out, X), expected(), rtol=1e-5, atol=1e-5)


def test_pass_in_sequential_is_idempotent():
    seq = tvm.transform.Sequential([Synthesize(budget_s=3), relax.transform.CanonicalizeBindings()])
    once = seq(Dense)
    assert str(once["main"].attrs[STAMP]) == "x86/exact"
    again_pass = Synthesize(budget_s=3)
    again = again_pass(once)
    assert again_pass.report is None  # recognised as already optimized for x86/exact
    tvm.ir.assert_structural_equal(again, once)


def test_tvm_compile_pipeline_runs_the_pass_then_lowers():
    exe = tvm.compile(Dense, tvm_target(), relax_pipeline=pipeline(budget_s=3))
    np.testing.assert_allclose(run(exe, X, W, B), expected(), rtol=1e-5, atol=1e-5)


def test_pipeline_applies_a_tuning_database(tmp_path):
    # an empty MetaSchedule database: the hook runs (legalize + apply) and the default kernels remain
    exe = tvm.compile(Dense, tvm_target(), relax_pipeline=pipeline(budget_s=3, database=tmp_path))
    np.testing.assert_allclose(run(exe, X, W, B), expected(), rtol=1e-5, atol=1e-5)
    assert (tmp_path / "database_tuning_record.json").exists()


def test_pass_refuses_a_result_that_fails_verification(monkeypatch):
    def wrong_lower(graph, root, module):  # drops the relu: the numbers change
        lowered = module.clone()
        main = lowered["main"]
        bb = relax.BlockBuilder()
        with bb.function("main", main.params):
            with bb.dataflow():
                y = bb.emit(relax.op.add(relax.op.matmul(main.params[0], main.params[1]), main.params[2]))
                out = bb.emit_output(y)
            bb.emit_func_output(out)
        lowered.update_func(lowered.get_global_var("main"), bb.get()["main"])
        return lowered

    monkeypatch.setattr(tsir.stages, "lower", wrong_lower)
    with pytest.raises(VerificationError, match="differ from the original"):
        Synthesize(budget_s=2)(Dense)


def test_unknown_target_fails_when_the_pass_is_made():
    with pytest.raises(tsir.TargetError, match="known targets"):
        Synthesize(target="tpu")


@tvm.script.ir_module
class Dynamic:
    @R.function
    def main(x: R.Tensor(("n", 16), "float32")) -> R.Tensor(("n", 16), "float32"):
        with R.dataflow():
            y = R.nn.relu(x)
            R.output(y)
        return y


def test_symbolic_shapes_and_a_missing_main_are_bad_input():
    with pytest.raises(tsir.StaticShapeError, match="symbolic size n"):
        Synthesize(budget_s=2)(Dynamic)
    renamed = tvm.IRModule({"forward": Dense["main"]})
    with pytest.raises(tsir.TsirError, match="no function 'main'"):
        tsir.optimize(renamed, budget_s=2)
