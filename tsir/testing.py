"""Helpers for testing rewrite rules: evaluate every e-node of an e-graph and check each e-class agrees.

After rules run, all e-nodes of one e-class must compute the same value. ``egraph_disagreement``
evaluates one program per class (the minimum-depth one) in float64 with the ops' reference semantics,
then every e-node on those class values, and returns the largest relative disagreement. Float64 makes
an exact identity agree to ~1e-12, so a wrong rule stands out by many orders of magnitude.
"""

from __future__ import annotations

import numpy as np

from tsir.egraph import EGraphView, TermEGraph
from tsir.ir.ops import OPS, evaluate
from tsir.ir.term import Graph
from tsir.search.extract import min_depth_nodes


def _node_value(node, values: list, inputs: dict, constants: list[np.ndarray]):
    if node.op == "nil":
        return []
    if node.op == "cons":
        rest, head = node.children
        return [values[head], *values[rest]]
    if node.op == "input":
        return inputs[node.attrs[0]]
    if node.op == "weight":
        return constants[node.attrs[0]].astype(np.float64)
    args = values[node.children[0]] if OPS[node.op].arity is None else [values[k] for k in node.children]
    return evaluate(node.op, list(args), node.attrs)


def _rel_diff(a, b) -> float:
    if isinstance(a, (list, tuple)):
        return max((_rel_diff(x, y) for x, y in zip(a, b, strict=True)), default=0.0)
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return np.inf
    return float(np.max(np.abs(a - b), initial=0.0) / max(np.max(np.abs(a), initial=0.0), 1.0))


def egraph_disagreement(view: EGraphView, graph: Graph, inputs: dict[str, np.ndarray]) -> float:
    """Largest relative difference between any e-node and its e-class's value (0 for a sound e-graph)."""
    best = min_depth_nodes(view)
    values: list = [None] * len(view.classes)
    done = [False] * len(view.classes)
    inputs = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    while not all(done):
        progress = False
        for c, nodes in enumerate(view.classes):
            node = nodes[best[c]]
            if not done[c] and all(done[k] for k in node.children):
                values[c], done[c], progress = _node_value(node, values, inputs, graph.constants), True, True
        if not progress:
            raise AssertionError("some e-class has no finite program")
    return max(
        _rel_diff(values[c], _node_value(node, values, inputs, graph.constants))
        for c, nodes in enumerate(view.classes) for node in nodes
    )


def rule_check(graph: Graph, families: tuple[str, ...], inputs: dict[str, np.ndarray]) -> tuple[dict, float]:
    """Saturate ``graph`` with ``families``; return the rules that fired and the e-graph's disagreement."""
    egraph = TermEGraph(graph, families)
    report = egraph.saturate()
    return report.fired(), egraph_disagreement(egraph.view(), graph, inputs)
