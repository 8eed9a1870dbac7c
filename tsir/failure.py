"""Internal failures on valid models: name the stage, the op and the node, and leave a small reproducer.

When a stage fails inside tsir or TVM (not bad input: that is a ``TsirError``), ``internal_error`` wraps the
exception. For the build, it finds the first binding of ``main`` whose call alone fails to build and writes
that one-op Relax module as TVMScript (``failing_op.py``) into the output directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import tvm
from tvm import relax

REPRODUCER = "failing_op.py"


class InternalError(RuntimeError):
    """A failure inside tsir or TVM on a valid model (a bug): the message names the stage, op and node."""


def internal_error(stage: str, error: Exception, module: tvm.IRModule | None,
                   build: Callable[[tvm.IRModule], object] | None, out_dir: Path | None) -> InternalError:
    """The ``InternalError`` for ``error`` raised in ``stage``; when ``module`` and ``build`` are given, the
    failing op is located and its reproducer written to ``out_dir`` (a fresh temporary directory if None)."""
    where = ""
    if module is not None and build is not None:
        found = failing_binding(module, build)
        if found is not None:
            node, op, one_op = found
            directory = out_dir or Path(tempfile.mkdtemp(prefix="tsir-failure-"))
            path = directory / REPRODUCER
            path.write_text(f"# tsir {stage} failed on node {node} ({op}): {type(error).__name__}\n"
                            f"{one_op.script(show_meta=True)}\n")
            where = f" at node {node} ({op}); reproducer: {path}"
    return InternalError(f"internal error in stage {stage!r}{where}: {type(error).__name__}: {_last_line(error)}. "
                         "This is a bug in tsir or TVM, not in the model: please report it with the reproducer")


def failing_binding(module: tvm.IRModule, build: Callable[[tvm.IRModule], object]):
    """``(node name, op name, one-op module)`` of the first call of ``main`` that fails to build alone."""
    for block in module["main"].body.blocks:
        for binding in block.bindings:
            if not isinstance(binding.value, relax.Call) or not isinstance(binding.value.op, tvm.ir.Op):
                continue
            one_op = _alone(module, binding.value)
            try:
                build(one_op)
            except Exception:  # noqa: BLE001  any failure of the op alone is what we look for
                return binding.var.name, binding.value.op.name, one_op
    return None


def _alone(module: tvm.IRModule, call: relax.Call) -> tvm.IRModule:
    """``module`` whose ``main`` is ``call`` alone, its variables as parameters (functions it calls kept)."""
    params: dict[relax.Var, relax.Var] = {}

    def swap(arg: relax.Expr) -> relax.Expr:
        if isinstance(arg, relax.Var):
            if arg not in params:
                params[arg] = relax.Var(arg.name, arg.ty)
            return params[arg]
        if isinstance(arg, relax.Tuple):
            return relax.Tuple([swap(f) for f in arg.fields])
        return arg

    args = [swap(a) for a in call.args]
    bb = relax.BlockBuilder()
    with bb.function("main", list(params.values())):
        with bb.dataflow():
            out = bb.emit_output(relax.Call(call.op, args, call.attrs, call.ty_args))
        bb.emit_func_output(out)
    alone = module.clone()
    alone.update_func(alone.get_global_var("main"), bb.get()["main"])
    return relax.transform.DeadCodeElimination(["main"])(alone)


def _last_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
