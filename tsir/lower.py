"""tsir -> Relax: a chosen term graph becomes ``main`` again.

``EMITTERS`` is one table keyed by tsir op. Constant subterms (folded weights, concatenated weights)
are evaluated with the ops' reference semantics and become new Relax constants; opaque terms
re-emit their original Relax call on the new arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from tsir.ir.term import Graph, Term, fold, is_constant, postorder

Emitter = Callable[[list[relax.Expr], tuple], relax.Expr]
EMITTERS: dict[str, Emitter] = {
    "relu": lambda a, at: relax.op.nn.relu(a[0]),
    "sigmoid": lambda a, at: relax.op.sigmoid(a[0]),
    "tanh": lambda a, at: relax.op.tanh(a[0]),
    "sqrt": lambda a, at: relax.op.sqrt(a[0]),
    "exp": lambda a, at: relax.op.exp(a[0]),
    "add": lambda a, at: relax.op.add(a[0], a[1]),
    "subtract": lambda a, at: relax.op.subtract(a[0], a[1]),
    "multiply": lambda a, at: relax.op.multiply(a[0], a[1]),
    "divide": lambda a, at: relax.op.divide(a[0], a[1]),
    "transpose": lambda a, at: relax.op.permute_dims(a[0], list(at[0])),
    "reshape": lambda a, at: relax.op.reshape(a[0], list(at[0])),
    "concat": lambda a, at: relax.op.concat(a, axis=at[0]),
    "slice": lambda a, at: relax.op.strided_slice(a[0], axes=[at[0]], begin=[at[1]], end=[at[2]]),
    "matmul": lambda a, at: relax.op.matmul(a[0], a[1]),
    "conv2d": lambda a, at: relax.op.nn.conv2d(a[0], a[1], strides=at[0], padding=at[1], dilation=at[2],
                                               groups=at[3]),
    "batch_norm": lambda a, at: relax.TupleGetItem(
        relax.op.nn.batch_norm(*a, axis=at[0], epsilon=at[1], training=False), 0),
    "max_pool2d": lambda a, at: relax.op.nn.max_pool2d(a[0], at[0], at[1], at[2], at[3]),
    "max_pool2d_nhwc": lambda a, at: relax.op.nn.max_pool2d(a[0], at[0], at[1], at[2], at[3], layout="NHWC"),
    "pad": lambda a, at: relax.op.nn.pad(a[0], list(at[0])),
    "mean": lambda a, at: relax.op.mean(a[0], list(at[0]), keepdims=at[1]),
    "clip": lambda a, at: relax.op.clip(a[0], tvm.tirx.FloatImm("float32", at[0]),
                                        tvm.tirx.FloatImm("float32", at[1])),
    "softmax": lambda a, at: relax.op.nn.softmax(a[0], at[0]),
    "gelu": lambda a, at: relax.op.nn.gelu(a[0]),
    "layer_norm": lambda a, at: relax.op.nn.layer_norm(a[0], a[1], a[2], [at[0]], at[1]),
    "broadcast_to": lambda a, at: relax.op.broadcast_to(a[0], list(at[0])),
    "get_item": lambda a, at: relax.TupleGetItem(a[0], at[0]),
    "tuple": lambda a, at: relax.Tuple(a),
}


def _dps(func: str, out_ty: tuple, *args: relax.Expr) -> relax.Expr:
    """``R.call_dps_packed(func, args)`` writing a fresh tensor of type ``out_ty``."""
    return relax.call_dps_packed(func, relax.Tuple(list(args)), relax.TensorType(list(out_ty[0]), out_ty[1]))


def _int(value: int) -> relax.Expr:
    return relax.prim_value(int(value), "int64")


def _const(weight: relax.Expr) -> relax.Expr:
    """``const_w`` of a library call: 1 when the weights are a Relax constant (oneDNN packs them once)."""
    return _int(isinstance(weight, tvm.ir.expr.Constant))


# Ops that lower to a vendor-library call: the emitter also gets the output type (library ops are
# destination-passing; ``tsir.backends.dnnl.load()`` must have run in the process that executes the module).
TypedEmitter = Callable[[list[relax.Expr], tuple, tuple], relax.Expr]
LIBRARY_EMITTERS: dict[str, TypedEmitter] = {
    "dnnl_matmul": lambda a, at, ty: _dps("tsir.dnnl.matmul", ty, a[0], a[1]),
    "dnnl_linear": lambda a, at, ty: _dps("tsir.dnnl.linear", ty, *a, _int(at[0]), _const(a[1])),
    "dnnl_conv2d": lambda a, at, ty: _dps("tsir.dnnl.conv2d", ty, *a, *_conv_args(at), _const(a[1])),
    "dnnl_conv2d_nhwc": lambda a, at, ty: _dps("tsir.dnnl.conv2d_nhwc", ty, *a, *_conv_args(at), _const(a[1])),
}


def _conv_args(attrs: tuple) -> list[relax.Expr]:
    """A library conv's attributes as call arguments: strides, padding, dilation, groups, then its activation
    as (code, low, high): 0 none, 1 ReLU, 2 clip to [low, high]."""
    strides, padding, dilation, groups, act = attrs
    code, (low, high) = (2, act) if isinstance(act, tuple) else (int(bool(act)), (0.0, 0.0))
    floats = [relax.prim_value(tvm.tirx.FloatImm("float64", float(v))) for v in (low, high)]
    return [*(_int(v) for v in (*strides, *padding, *dilation, groups, code)), *floats]


def lower(graph: Graph, root: Term, module: tvm.IRModule) -> tvm.IRModule:
    """``module`` with its ``main`` replaced by the program ``root`` (inputs as in ``graph``)."""
    original = module["main"]
    params = [relax.Var(t.attrs[0], relax.TensorType(list(t.ty[0]), t.ty[1])) for t in graph.inputs]
    values: dict[int, relax.Expr] = {id(t): p for t, p in zip(graph.inputs, params, strict=True)}
    constant: dict[int, bool] = {}
    folded: dict[int, np.ndarray] = {}
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            for term in postorder(root):
                if id(term) in values:
                    continue
                if is_constant(term, constant):
                    array = fold(term, graph.constants, folded)
                    values[id(term)] = relax.const(array, dtype=str(array.dtype))  # keeps int64 as int64
                    continue
                args = [values[id(a)] for a in term.args]
                if term.op == "opaque":
                    values[id(term)] = bb.emit(graph.opaque_calls[term.attrs[0]].rebuild(args))
                elif term.op in LIBRARY_EMITTERS:
                    values[id(term)] = bb.emit(LIBRARY_EMITTERS[term.op](args, term.attrs, term.ty))
                elif term.op == "linear":
                    values[id(term)] = bb.emit(relax.op.add(bb.emit(relax.op.matmul(args[0], args[1])), args[2]))
                else:
                    values[id(term)] = bb.emit(EMITTERS[term.op](args, term.attrs))
            output = bb.emit_output(values[id(root)])
        bb.emit_func_output(output)
    main = bb.get()["main"]
    if original.attrs is not None:
        main = main.with_attrs(original.attrs)
    lowered = module.clone()
    lowered.update_func(lowered.get_global_var("main"), main)
    return lowered
