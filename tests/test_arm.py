"""ARM: cross-compiled zoo models run by the aarch64 native runner under qemu and match PyTorch."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from tsir import optimize, zoo
from tsir.backends import runtime, targets
from tsir.backends.native_files import runner as native_runner
from tsir.backends.runner import NativeRunner
from tsir.backends.targets import QEMU_AARCH64
from tsir.draws import fresh_inputs
from tsir.frontend import export, to_relax
from tsir.verify import compare, reference_outputs

ARM_MODELS = ["mlp", "lenet", "squeezenet"]


@pytest.mark.parametrize("name", ARM_MODELS)
def test_arm_build_runs_under_qemu_and_matches_torch(name, tmp_path):
    entry = zoo.load(name)
    spec = targets.resolve("arm:cortex-a76")
    library = runtime.export(runtime.build(to_relax(export(entry.module, entry.example_inputs)), spec),
                             tmp_path / f"{name}.so", spec)
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    inputs = fresh_inputs(entry.example_inputs, seed=3)
    result = NativeRunner.for_target(spec).run(library, [t.numpy() for t in inputs], warmup=1, repeat=3)
    check = compare(reference_outputs(entry.module, inputs), result.outputs)
    assert check.passed, check.problem
    assert result.timing["repeat"] == 3 and result.median_ms > 0


def test_host_runner_matches_python_vm(tmp_path):
    entry = zoo.load("mlp")
    spec = targets.resolve("x86")
    executable = runtime.build(to_relax(export(entry.module, entry.example_inputs)), spec)
    library = runtime.export(executable, tmp_path / "mlp.so", spec)
    arrays = [t.numpy() for t in entry.example_inputs]
    native = NativeRunner.for_target(spec).run(library, arrays, repeat=5)
    np.testing.assert_array_equal(native.outputs[0], runtime.Runner(executable)(arrays)[0])


def test_runner_rejects_bad_input_clearly(tmp_path):
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    done = subprocess.run([*QEMU_AARCH64, str(native_runner("aarch64")), "missing.so",
                           str(tmp_path / "broken.npy")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "missing.so" in done.stderr
    usage = subprocess.run([str(native_runner("host"))], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: tsir_runner" in usage.stderr


def test_optimize_for_arm_verifies_under_qemu_with_analytic_cost(tmp_path):
    entry = zoo.load("mlp")
    result = optimize(entry.module, entry.example_inputs, target="arm:cortex-a53", budget_s=5, out_dir=tmp_path)
    report = result.report
    assert report["search"]["cost_tier"] == "analytic"
    assert report["target"]["verified_on"].startswith("qemu-aarch64")
    assert report["verification"]["status"] == "verified-on-host"  # an emulator, not an ARM core
    assert report["verification"]["verified_on"] == report["target"]["verified_on"]
    assert report["target"]["measured_on"].startswith("not measured")
    assert (tmp_path / "model.so").read_bytes()[18:20] == (183).to_bytes(2, "little")
    result.verify(fresh_inputs(entry.example_inputs, seed=5))


def test_runner_round_trips_integer_inputs_and_tuple_outputs(tmp_path):
    class TwoOutputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 8)

        def forward(self, ids):
            vectors = self.embed(ids)
            return vectors.relu(), ids * 2

    module = TwoOutputs().eval()
    ids = torch.tensor([[1, 5, 15, 0]], dtype=torch.int64)
    spec = targets.resolve("arm")
    library = runtime.export(runtime.build(to_relax(export(module, (ids,))), spec), tmp_path / "embed.so", spec)
    result = NativeRunner.for_target(spec).run(library, [ids.numpy()], repeat=1)
    expected = [t.detach().numpy() for t in module(ids)]
    assert [o.dtype for o in result.outputs] == [np.float32, np.int64]
    np.testing.assert_allclose(result.outputs[0], expected[0], rtol=1e-6)
    np.testing.assert_array_equal(result.outputs[1], expected[1])
