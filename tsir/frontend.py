"""Import: a PyTorch model (through ``torch.export``) into a Relax ``IRModule`` with static shapes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import tvm
from tvm import relax
from tvm.relax.frontend.torch import from_exported_program
from tvm.relax.frontend.torch.exported_program_translator import ExportedProgramImporter

from tsir.errors import StaticShapeError, TsirError, UnsupportedOpError
from tsir.pytree import leaves

_CUSTOM_MAP_EXAMPLE = """\
    def convert_my_op(node, importer):           # node: torch.fx.Node, importer: the TVM frontend
        x = importer.env[node.args[0]]
        return importer.block_builder.emit(relax.op.nn.relu(x))   # any Relax expression

    tsir.optimize(model, inputs, custom_convert_map={"%s": convert_my_op})"""


def export(model: torch.nn.Module, example_inputs: Sequence) -> torch.export.ExportedProgram:
    """``torch.export`` the model in inference mode with static shapes.

    ``example_inputs`` are the positional arguments: tensors, or any nesting of tuples, lists, dicts and
    dataclasses of tensors (``tsir.pytree``); dataclasses in the inputs or outputs are registered with pytree.
    """
    if not isinstance(example_inputs, (tuple, list)) or not all(
        isinstance(t, torch.Tensor) for t in leaves(example_inputs)
    ):
        raise TsirError("example_inputs must be a tuple of torch.Tensor (or of nested tuples, lists, dicts and "
                        "dataclasses of them), e.g. (torch.randn(1, 3, 32, 32),)")
    model = model.eval()
    try:
        with torch.no_grad():
            leaves(model(*example_inputs))  # registers the output's dataclasses, which torch.export must know
        program = torch.export.export(model, tuple(example_inputs))
    except Exception as err:  # torch.export reports many error types; keep its message
        raise TsirError(f"torch.export could not trace the model: {err}") from err
    return _views_as_reshapes(program)


def _views_as_reshapes(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with every ``view`` a ``reshape``, unless it mutates a tensor in place.

    Decomposing re-traces the graph with fake tensors, whose strides can differ from eager ones: GPT-2's
    attention at batch 8 transposes and reshapes the attention's output, which eager makes contiguous but the
    fake tensor keeps strided, and the ``view`` after it then fails ("Cannot view a tensor with shape ...").
    Without in-place ops a view and a reshape compute the same value; a reshape copies when strides need it.
    """
    calls = [n for n in program.graph_module.graph.nodes if n.op == "call_function"]
    if any(getattr(n.target, "_schema", None) is not None and n.target._schema.is_mutable for n in calls):
        return program
    for node in calls:
        if node.target is torch.ops.aten.view.default:
            node.target = torch.ops.aten.reshape.default
    program.graph_module.recompile()
    return program


def unsupported_ops(program: torch.export.ExportedProgram, custom: dict[str, Callable]) -> list[str]:
    """Every call in the exported graph that the TVM frontend cannot convert."""
    known = ExportedProgramImporter().convert_map.keys() | custom.keys()
    return sorted({
        node.target.__name__
        for node in program.graph.nodes
        if node.op == "call_function" and node.target.__name__ not in known
    })


def _cumsum(node: torch.fx.Node, importer) -> relax.Var:
    """``cumsum`` in the dtype torch gives it: bool and integer inputs sum in int64.

    TVM's own converter keeps the input dtype, so a causal mask's ``cumsum`` of a bool tensor (GPT-2, Llama)
    becomes a bool scan whose add LLVM's code generator rejects (``CodeGenLLVM::CreateAdd``: ``t.MatchesCode(
    kDLFloat)``), and an int32 one overflows where torch does not.
    """
    x = importer.env[node.args[0]]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dtype = str(node.meta["val"].dtype).removeprefix("torch.")
    return importer.block_builder.emit(relax.op.cumsum(x, dim, dtype))


# converters tsir ships for frontend gaps; a user's custom_convert_map entry for the same op wins
BUILTIN_CONVERTERS: dict[str, Callable] = {"cumsum.default": _cumsum}


def to_relax(
    program: torch.export.ExportedProgram, custom_convert_map: dict[str, Callable] | None = None
) -> tvm.IRModule:
    """Convert an exported program to Relax, with weights bound as constants."""
    custom = {**BUILTIN_CONVERTERS, **(custom_convert_map or {})}
    program = program.run_decompositions()  # the frontend sees core ATen ops; decompose once, here
    missing = unsupported_ops(program, custom)
    if missing:
        raise UnsupportedOpError(
            f"the TVM PyTorch frontend cannot convert {len(missing)} op(s): {', '.join(missing)}.\n"
            "Rewrite them in the model with supported ops, or give a converter for each:\n"
            + _CUSTOM_MAP_EXAMPLE % missing[0]
        )
    mod = from_exported_program(program, keep_params_as_input=False, custom_convert_map=custom or None,
                                run_ep_decomposition=False)
    check_static(mod)
    return drop_none_outputs(mod)


def drop_none_outputs(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` without the null values the frontend returns for a model's ``None`` outputs (torch.export
    keeps ``None`` as an output leaf; ``tsir.pytree.leaves`` leaves it out on the reference side too)."""
    func = mod["main"]
    body = func.body
    if len(body.blocks) != 1 or not isinstance(body.body, relax.Var):
        return mod
    bindings = list(body.blocks[0].bindings)
    nulls = {b.var for b in bindings if isinstance(b.value, relax.Call) and b.value.op == tvm.ir.Op.get(
        "relax.null_value")}
    last = bindings[-1]
    if not nulls or last.var != body.body or not isinstance(last.value, relax.Tuple):
        return mod
    fields = [f for f in last.value.fields if f not in nulls]
    output = relax.Var(last.var.name, relax.TupleType([f.ty for f in fields]))
    kept = [b for b in bindings[:-1] if b.var not in nulls] + [relax.VarBinding(output, relax.Tuple(fields))]
    block = type(body.blocks[0])(kept)
    main = relax.Function(func.params, relax.SeqExpr([block], output), output.ty, func.is_pure, func.attrs)
    lowered = mod.clone()
    lowered.update_func(lowered.get_global_var("main"), main)
    return lowered


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
