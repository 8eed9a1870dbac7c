"""ONNX ``Clip`` back to ``R.clip``: TVM's ONNX frontend emits it as TE kernels (``R.call_tir`` of
``topi.maximum`` then ``topi.minimum``), which tsir can only keep opaque; its torch twin (ReLU6, hardtanh)
imports as one ``R.clip``. With constant scalar bounds (folded on import), the pair is the same clip."""

from __future__ import annotations

import math

import tvm
from tvm import relax

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
Constant = tvm.ir.expr.GenericConst


def _bound(binding: relax.VarBinding) -> tuple[str, relax.Expr, float] | None:
    """``("maximum" | "minimum", x, bound)`` when ``binding`` is a TE max/min of ``x`` and a constant scalar."""
    call = binding.value
    if not isinstance(call, relax.Call) or call.op != _CALL_TIR or not isinstance(call.args[1], relax.Tuple):
        return None
    kind = call.args[0].name_hint.rstrip("0123456789")
    fields = call.args[1].fields
    if kind not in ("maximum", "minimum") or len(fields) != 2 or not isinstance(fields[1], Constant):
        return None
    value = fields[1].value.numpy()
    x_type = fields[0].ty
    if value.shape != () or str(fields[1].ty.dtype) != "float32" or str(getattr(x_type, "dtype", "")) != "float32":
        return None
    return kind, fields[0], float(value)


def _clip(x: relax.Expr, low: float, high: float) -> relax.Call:
    return relax.op.clip(x, tvm.tirx.FloatImm("float32", low), tvm.tirx.FloatImm("float32", high))


def clips_from_call_tir(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with each TE max/min of a constant scalar as ``R.clip``, a max feeding only a min as one clip."""
    func = mod["main"]
    if len(func.body.blocks) != 1:
        return mod
    bindings = list(func.body.blocks[0].bindings)
    uses: dict[relax.Var, int] = {}

    def count(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    for b in bindings:
        relax.analysis.post_order_visit(b.value, count)
    count(func.body.body)
    found = {b.var: _bound(b) for b in bindings}
    if not any(found.values()):
        return mod
    rewritten = []
    for b in bindings:
        bound = found[b.var]
        if bound is None:
            rewritten.append(b)
            continue
        kind, x, value = bound
        inner = found.get(x) if isinstance(x, relax.Var) else None
        if kind == "minimum" and inner is not None and inner[0] == "maximum" and uses[x] == 1 and inner[2] <= value:
            clip = _clip(inner[1], inner[2], value)  # min(max(x, lo), hi) = clip(x, lo, hi)
        else:
            clip = _clip(x, value, math.inf) if kind == "maximum" else _clip(x, -math.inf, value)
        rewritten.append(relax.VarBinding(b.var, clip))
    block = type(func.body.blocks[0])(rewritten)
    main = relax.Function(func.params, relax.SeqExpr([block], func.body.body), func.ret_ty, func.is_pure,
                          func.attrs)
    out = mod.clone()
    out.update_func(out.get_global_var("main"), main)
    return relax.transform.DeadCodeElimination(["main"])(out)
