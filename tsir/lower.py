"""tsir -> Relax: a chosen term graph becomes ``main`` again.

``EMITTERS`` is one table keyed by tsir op, derived from the op registry. Constant subterms (folded
weights, concatenated weights) are evaluated with the ops' reference semantics and become new Relax
constants; opaque terms re-emit their original Relax call on the new arguments.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from tsir.ir.ops import OPS
from tsir.ir.term import Graph, Term, fold, is_constant, postorder

Emitter = Callable[[list[relax.Expr], tuple, tuple], relax.Expr]  # (args, attrs, output type) -> Relax
# tsir op -> emitter, from the registry's declarations (``OpSpec.emit``). Library ops lower to a vendor
# call (``tsir.backends.dnnl.load()`` must have run in the process that executes the module).
EMITTERS: dict[str, Emitter] = {name: spec.emit for name, spec in OPS.items() if spec.emit is not None}


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
                else:
                    values[id(term)] = bb.emit(EMITTERS[term.op](args, term.attrs, term.ty))
            output = bb.emit_output(values[id(root)])
        bb.emit_func_output(output)
    main = bb.get()["main"]
    if original.attrs is not None:
        main = main.with_attrs(original.attrs)
    lowered = module.clone()
    lowered.update_func(lowered.get_global_var("main"), main)
    return lowered
