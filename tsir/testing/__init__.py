"""Testing rewrite rules: evaluate every e-node of an e-graph and check each e-class agrees.

After rules run, all e-nodes of one e-class must compute the same value. ``egraph_disagreement``
evaluates one program per class (the minimum-depth one) with the ops' reference semantics, then every
e-node on those class values, and returns the largest relative disagreement. In float64 an exact
identity agrees to ~1e-12; in float32 (what models run in) each rule has a documented tolerance.

``assert_rule_sound(rule, cases)`` is the public entry point for checking a rule (yours or ours) on
random programs from ``tsir.testing.strategies``.
"""

from __future__ import annotations

import numpy as np
from egglog import Ruleset, ruleset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tsir.egraph import EGraphView, TermEGraph
from tsir.errors import VerificationError
from tsir.ir import lang
from tsir.ir.ops import OPS, evaluate
from tsir.ir.term import Graph, Term, postorder
from tsir.search.extract import min_depth_nodes
from tsir.verify import Tolerance, compare


class Case:
    """A test program and values for its inputs (its repr is the program, for readable reproducers)."""

    def __init__(self, graph: Graph, inputs: dict[str, np.ndarray]) -> None:
        self.graph, self.inputs = graph, inputs

    def __repr__(self) -> str:
        return f"Case(\n{program_text(self.graph.root)}\n)"


def program_text(root: Term) -> str:
    """A program as one line per node, e.g. ``%3 = matmul(%1, %2)  # (4, 6)``."""
    names: dict[int, str] = {}
    lines = []
    for term in postorder(root):
        names[id(term)] = f"%{len(names)}"
        args = ", ".join([*(names[id(a)] for a in term.args), *map(repr, term.attrs)])
        lines.append(f"  {names[id(term)]} = {term.op}({args})  # {term.ty}")
    return "\n".join(lines)


def _node_value(node, values: list, inputs: dict, constants: list[np.ndarray], dtype):
    if node.op == "nil":
        return []
    if node.op == "cons":
        rest, head = node.children
        return [values[head], *values[rest]]
    if node.op == "input":
        return inputs[node.attrs[0]]
    if node.op == "weight":
        return in_precision(constants[node.attrs[0]], dtype)
    args = values[node.children[0]] if OPS[node.op].arity is None else [values[k] for k in node.children]
    out = evaluate(node.op, list(args), node.attrs)
    return in_precision(out, dtype) if isinstance(out, np.ndarray) else out


def in_precision(array: np.ndarray, dtype) -> np.ndarray:
    """A float array in ``dtype``; integer and boolean arrays (indices, masks) as they are."""
    return array.astype(dtype) if np.issubdtype(array.dtype, np.floating) else array


def _rel_diff(a, b) -> float:
    """The largest difference of two values (arrays or nested lists of them) relative to the reference's scale
    (at least 1), by ``tsir.verify.compare``: inf where non-finite values disagree or shapes differ."""
    try:
        result = compare(_flat(a), _flat(b), Tolerance(rtol=0.0, atol=0.0, scale=0.0, floor=1.0))
    except VerificationError:  # another number or shape of values
        return np.inf
    return result.relative_error


def _flat(value) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _flat(v)]
    return [np.asarray(value, np.float64)]


def egraph_disagreement(view: EGraphView, graph: Graph, inputs: dict[str, np.ndarray], dtype=np.float64) -> float:
    """Largest relative difference between any e-node and its e-class's value (0 for a sound e-graph)."""
    best = min_depth_nodes(view)
    values: list = [None] * len(view.classes)
    done = [False] * len(view.classes)
    inputs = {k: np.asarray(v, dtype) for k, v in inputs.items()}
    while not all(done):
        progress = False
        for c, nodes in enumerate(view.classes):
            node = nodes[best[c]]
            if not done[c] and all(done[k] for k in node.children):
                values[c] = _node_value(node, values, inputs, graph.constants, dtype)
                done[c], progress = True, True
        if not progress:
            raise AssertionError("some e-class has no finite program")
    return max(
        _rel_diff(values[c], _node_value(node, values, inputs, graph.constants, dtype))
        for c, nodes in enumerate(view.classes) for node in nodes
    )


def rule_check(graph: Graph, families: tuple[str, ...], inputs: dict[str, np.ndarray]) -> tuple[dict, float]:
    """Saturate ``graph`` with ``families``; return the rules that fired and the e-graph's disagreement."""
    egraph = TermEGraph(graph, families)
    report = egraph.saturate()
    return report.fired(), egraph_disagreement(egraph.view(), graph, inputs)


def run_rule(graph: Graph, rules: Ruleset, iterations: int = 4) -> tuple[TermEGraph, dict[str, int]]:
    """An e-graph of ``graph`` after ``iterations`` rounds of ``rules`` alone; returns it and the firings."""
    egraph = TermEGraph(graph, ())
    egraph.egraph.run(lang.analysis.saturate())
    fired: dict[str, int] = {}
    for _ in range(iterations):
        run = egraph.egraph.run(rules)
        egraph.egraph.run(lang.analysis.saturate())
        for decl, n in run.num_matches_per_rule.items():
            fired[decl.name] = fired.get(decl.name, 0) + n
        if not run.updated:
            break
    return egraph, {k: n for k, n in fired.items() if n}


def assert_rule_sound(rule, cases: st.SearchStrategy[Case], *, tolerance: float | None = None,
                      max_examples: int = 25, must_fire: bool = True, dtype=np.float32,
                      iterations: int = 4) -> None:
    """Check ``rule`` on programs drawn from ``cases``: it fires, and every e-class agrees within ``tolerance``.

    ``rule`` is an egglog rule (``egglog.rule(...)``) or the name of a built-in rule (its tolerance is
    then ``tsir.rewrites.tolerance(name)``). Values are evaluated in ``dtype`` (float32, like models).
    The rule runs ``iterations`` rounds (use 1 for a multi-pattern merge: merges feed themselves);
    a falsifying program is shrunk by hypothesis and reported with its disagreement.
    """
    from tsir import rewrites

    if isinstance(rule, str):
        name, tolerance = rule, rewrites.tolerance(rule) if tolerance is None else tolerance
        rule = rewrites.rule(name)
    else:
        name = None
    if tolerance is None:
        raise ValueError("assert_rule_sound: give tolerance= (the largest relative fp32 error the rule may cause)")
    rules = ruleset(rule)

    @settings(max_examples=max_examples, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(case=cases)
    def check(case: Case) -> None:
        egraph, fired = run_rule(case.graph, rules, iterations)
        if must_fire:
            assert fired and (name is None or name in fired), f"the rule did not fire on\n{case!r}"
        disagreement = egraph_disagreement(egraph.view(), case.graph, case.inputs, dtype)
        assert disagreement <= tolerance, (
            f"{name or 'rule'} is unsound: e-nodes disagree by {disagreement:.3g} > {tolerance:g} on\n{case!r}")

    check()
