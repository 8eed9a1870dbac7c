"""Default CPU schedules (tsir.backends.schedules): every kernel of a small net gets one, outputs do not change,
and modules that call oneDNN keep their TVM kernels on one thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from tsir.backends import kernels, runtime, schedules, targets
from tsir.frontend import export, to_relax

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


class Net(torch.nn.Module):
    """conv + bias + ReLU, depthwise conv, max pool, residual add, mean, linear, softmax, layer norm, GELU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = torch.nn.Linear(8, 20)
        self.norm = torch.nn.LayerNorm(20)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = torch.nn.functional.max_pool2d(y + self.depthwise(y), 2)
        z = self.fc(y.mean(dim=(2, 3)))
        return torch.softmax(z, -1) + torch.nn.functional.gelu(self.norm(z))


@pytest.fixture(scope="module")
def module() -> tuple[tvm.IRModule, tuple[torch.Tensor]]:
    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, 20, 20),)
    return to_relax(export(Net().eval(), inputs)), inputs


@pytest.mark.parametrize("parallel", [True, False])
def test_every_kernel_is_scheduled(module, parallel):
    spec = targets.resolve("x86")
    fused = kernels.fuse(module[0], spec.target)
    scheduled = schedules.apply(fused, spec.target, parallel)
    funcs = {gv.name_hint: f for gv, f in scheduled.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    unscheduled = [name for name, f in funcs.items() if f.attrs is None or "tirx.is_scheduled" not in f.attrs]
    assert not unscheduled
    text = "".join(f.script() for f in funcs.values())
    assert "T.vectorized(" in text
    assert ("T.parallel(" in text) == parallel


def test_outputs_do_not_change(module):
    mod, inputs = module
    spec = targets.resolve("x86")
    args = [tvm.runtime.tensor(x.numpy()) for x in inputs]
    outputs = []
    for executable in (tvm.compile(mod, target=spec.target), runtime.build(mod, spec)):
        out = relax.VirtualMachine(executable, tvm.cpu())["main"](*args)
        outputs.append(runtime.flatten(out)[0])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)


def test_modules_calling_onednn_are_built_serial():
    x = relax.Var("x", relax.TensorType([2, 4], "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.call_dps_packed("tsir.dnnl.matmul", relax.Tuple([x, x]),
                                              relax.TensorType([2, 4], "float32")))
            out = bb.emit_output(bb.emit(relax.op.add(y, x)))
        bb.emit_func_output(out)
    assert schedules.calls_library(bb.get())
    assert not schedules.calls_library(to_relax(export(torch.nn.Linear(4, 4), (torch.randn(2, 4),))))
