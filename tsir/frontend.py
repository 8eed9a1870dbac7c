"""Import: a PyTorch model (through ``torch.export``) into a Relax ``IRModule`` with static shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from tsir.errors import StaticShapeError, TsirError, UnsupportedOpError

_CUSTOM_MAP_EXAMPLE = """\
    def convert_my_op(node, importer):           # node: torch.fx.Node, importer: the TVM frontend
        x = importer.env[node.args[0]]
        return importer.block_builder.emit(relax.op.nn.relu(x))   # any Relax expression

    tsir.optimize(model, inputs, custom_convert_map={"%s": convert_my_op})"""


def export(model: torch.nn.Module, example_inputs: Sequence[torch.Tensor]) -> torch.export.ExportedProgram:
    """``torch.export`` the model in inference mode with static shapes."""
    if not isinstance(example_inputs, (tuple, list)) or not all(
        isinstance(t, torch.Tensor) for t in example_inputs
    ):
        raise TsirError("example_inputs must be a tuple of torch.Tensor, e.g. (torch.randn(1, 3, 32, 32),)")
    model = model.eval()
    try:
        return torch.export.export(model, tuple(example_inputs))
    except Exception as err:  # torch.export reports many error types; keep its message
        raise TsirError(f"torch.export could not trace the model: {err}") from err


def unsupported_ops(program: torch.export.ExportedProgram, custom: dict[str, Callable]) -> list[str]:
    """Every call in the exported graph that the TVM frontend cannot convert."""
    known = ExportedProgramImporter().convert_map.keys() | custom.keys()
    return sorted({
        node.target.__name__
        for node in program.graph.nodes
        if node.op == "call_function" and node.target.__name__ not in known
    })


def to_relax(
    program: torch.export.ExportedProgram, custom_convert_map: dict[str, Callable] | None = None
) -> tvm.IRModule:
    """Convert an exported program to Relax, with weights bound as constants."""
    custom = dict(custom_convert_map or {})
    missing = unsupported_ops(program.run_decompositions(), custom)  # the frontend sees core ATen ops
    if missing:
        raise UnsupportedOpError(
            f"the TVM PyTorch frontend cannot convert {len(missing)} op(s): {', '.join(missing)}.\n"
            "Rewrite them in the model with supported ops, or give a converter for each:\n"
            + _CUSTOM_MAP_EXAMPLE % missing[0]
        )
    mod = from_exported_program(program, keep_params_as_input=False, custom_convert_map=custom or None)
    check_static(mod)
    return mod


def check_static(mod: tvm.IRModule) -> None:
    """Raise ``StaticShapeError`` naming the first parameter with a symbolic dimension."""
    for param in mod["main"].params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType) or ty.shape is None:
            raise StaticShapeError(f"input {param.name!r} has no known shape; tsir needs static shapes")
        for dim, size in enumerate(ty.shape.values):
            if not isinstance(size, tvm.tirx.IntImm):
                raise StaticShapeError(
                    f"input {param.name!r} has a symbolic size {size} at dim {dim}; tsir needs static "
                    "shapes: export without dynamic_shapes (or specialize that dim) and optimize once per "
                    "shape you deploy"
                )
