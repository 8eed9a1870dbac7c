"""ONNX ``Pad`` nodes that pad nothing, as ``Identity``, before TVM imports the model.

TVM's ONNX frontend writes every constant ``Pad`` as a TE kernel (``R.call_tir`` of ``topi.nn.pad``), which
tsir can only keep opaque. The torch exporter keeps a model's conditional pads even where, at the exported
shape, they pad nothing (Swin pads its windows to a multiple of the window size); their torch twin imports
with no pad at all. A ``Pad`` whose pads are a constant of zeros copies its input, which ``Identity`` says.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The graph's initializers and ``Constant`` node outputs, by name."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def zero_pads_as_identity(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each ``Pad`` of constant zero pads (opset 11 on: pads are its second input) an
    ``Identity``; the same object when there is none."""
    values = _constants(model.graph)

    def pads_nothing(node: onnx.NodeProto) -> bool:
        pads = values.get(node.input[1]) if node.op_type == "Pad" and len(node.input) > 1 else None
        return pads is not None and pads.size > 0 and not pads.any()

    empty = [i for i, node in enumerate(model.graph.node) if pads_nothing(node)]
    if not empty:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i in empty:
        node = out.graph.node[i]
        node.CopyFrom(onnx.helper.make_node("Identity", [node.input[0]], list(node.output), name=node.name))
    return out
