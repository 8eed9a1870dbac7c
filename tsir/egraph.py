"""The e-graph of one model: insert its term graph, saturate under limits, read the result back.

``TermEGraph`` owns an egglog ``EGraph``. ``saturate`` runs the analysis rules to a fixed point and
then one iteration of every enabled rule family per round, until nothing changes or a limit is hit.
``view`` returns the e-graph as plain Python data (e-classes of e-nodes) for the extractors.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field

from egglog import EGraph, PyObject, set_

from tsir._compat.egglog import serialized
from tsir.ir import lang
from tsir.ir.ops import OPS
from tsir.ir.term import Graph, Term, postorder
from tsir.rewrites import AFTER_PASSES, FAMILIES, MULTI_PATTERN


@dataclass(frozen=True)
class Limits:
    """When to stop growing the e-graph."""

    iterations: int = 12
    nodes: int = 20_000
    time_s: float = 30.0
    multi_pattern_passes: int = 1  # multi-pattern rules only widen the graph: run them this many rounds
    # rounds run whatever the clock says (a batch norm folded into its conv, then a oneDNN conv with its
    # activation fused, takes four), so a short budget on a busy machine still gets the same basic program
    min_iterations: int = 5
    # nor is the clock read while the e-graph is smaller than this: a model of a few hundred ops saturates in
    # a second or two, and then gives the same program however short the budget or busy the machine
    timed_from_enodes: int = 10_000

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.nodes <= 0 or self.time_s <= 0 or self.min_iterations < 0 \
                or self.timed_from_enodes < 0:
            raise ValueError(f"saturation limits must be positive, got {self}")


@dataclass
class SaturationReport:
    iterations: int = 0
    enodes: int = 0
    stop_reason: str = "saturated"
    time_s: float = 0.0
    matches_per_rule: dict[str, int] = field(default_factory=dict)
    enodes_per_iteration: list[int] = field(default_factory=list)

    def fired(self) -> dict[str, int]:
        return {name: n for name, n in self.matches_per_rule.items() if n}


@dataclass(frozen=True)
class ENode:
    op: str
    children: tuple[int, ...]  # e-class indices, tensor children first (a variadic op has one list)
    attrs: tuple


@dataclass
class EGraphView:
    """An e-graph as Python data: ``classes[c]`` lists the e-nodes of e-class ``c``."""

    classes: list[list[ENode]]
    types: list[object]
    root: int
    original: dict[int, int]  # e-class -> index of the e-node the input program used


class TermEGraph:
    """One model's e-graph, seeded with its tsir term graph."""

    def __init__(self, graph: Graph, families: tuple[str, ...] = tuple(FAMILIES)) -> None:
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown rule families {unknown}; choose from {sorted(FAMILIES)}")
        self.graph = graph
        self.families = families
        self.egraph = EGraph()
        self._original_lets: dict[str, Term] = {}
        self._insert(graph.root)

    def _insert(self, root: Term) -> None:
        exprs: dict[int, object] = {}
        facts = []
        for i, term in enumerate(postorder(root)):
            children = [exprs[id(a)] for a in term.args]
            if OPS[term.op].arity is None:
                children = [lang.tlist(*children)]
            expr = lang.CONSTRUCTORS[term.op](*children, *(PyObject(a) for a in term.attrs))
            name = "root" if term is root else f"n{i}"
            exprs[id(term)] = self.egraph.let(name, expr)
            self._original_lets[f"${name}"] = term
            facts.append(set_(lang.ty(exprs[id(term)])).to(PyObject(term.ty)))
        self.egraph.register(*facts)
        self.root_expr = exprs[id(root)]

    def enode_count(self) -> int:
        return sum(size for fn, size in self.egraph.all_function_sizes() if fn in _STRUCTURE)

    def saturate(self, limits: Limits = Limits()) -> SaturationReport:
        report = SaturationReport()
        start = time.perf_counter()
        exact = [FAMILIES[f] for f in self.families if f not in MULTI_PATTERN]
        multi = [f for f in self.families if f in MULTI_PATTERN]
        self.egraph.run(lang.analysis.saturate())
        report.enodes_per_iteration.append(self.enode_count())
        while True:
            if report.iterations >= limits.iterations:
                report.stop_reason = "iteration limit"
                break
            bounded = report.iterations < limits.multi_pattern_passes
            schedule = exact + [FAMILIES[f] if bounded else AFTER_PASSES[f] for f in multi]
            if not schedule:
                break
            changed = False
            for rules in schedule:
                run = self.egraph.run(rules)
                changed |= run.updated
                for decl, n in run.num_matches_per_rule.items():
                    report.matches_per_rule[decl.name] = report.matches_per_rule.get(decl.name, 0) + n
            self.egraph.run(lang.analysis.saturate())
            report.iterations += 1
            report.enodes_per_iteration.append(self.enode_count())
            if not changed:
                break
            if report.enodes_per_iteration[-1] >= limits.nodes:
                report.stop_reason = "node limit"
                break
            large = report.enodes_per_iteration[-1] >= limits.timed_from_enodes
            if large and report.iterations >= limits.min_iterations and time.perf_counter() - start >= limits.time_s:
                report.stop_reason = "time limit"
                break
        report.time_s = time.perf_counter() - start
        report.enodes = report.enodes_per_iteration[-1]
        return report

    def view(self) -> EGraphView:
        data = serialized(self.egraph)
        nodes, class_data = data["nodes"], data["class_data"]
        index: dict[str, int] = {}
        for cid, info in class_data.items():
            if info["type"].endswith((".Tensor", ".TensorList")):
                index[cid] = len(index)
        classes: list[list[ENode]] = [[] for _ in index]
        types: list[object] = [None] * len(index)
        values = {n["eclass"]: _literal(n["op"]) for k, n in nodes.items() if k.startswith("primitive-")}
        for node in nodes.values():
            op = _OP_NAMES.get(node["op"], node["op"])
            if op == "ty":
                types[index[nodes[node["children"][0]]["eclass"]]] = values[node["eclass"]]
            if node["eclass"] not in index or node.get("subsumed"):
                continue
            kids = [nodes[c] for c in node["children"]]
            children = tuple(index[k["eclass"]] for k in kids if k["eclass"] in index)
            attrs = tuple(values[k["eclass"]] for k in kids if k["eclass"] not in index)
            classes[index[node["eclass"]]].append(ENode(op, children, attrs))
        for members in classes:
            members.sort(key=lambda n: (n.op, n.children, repr(n.attrs)))
        term_class: dict[int, int] = {}
        root = -1
        for cid, info in class_data.items():
            for let in info.get("let", "").split(", "):
                if let in self._original_lets:
                    term_class[id(self._original_lets[let])] = index[cid]
                    root = index[cid] if let == "$root" else root
        original = {
            term_class[id(t)]: _find_original(classes, term_class, t) for t in self._original_lets.values()
        }
        return EGraphView(classes, types, root, original)


def _literal(text: str) -> object:
    """An attribute back from its repr; ``inf``/``nan`` (e.g. clip's open bound) are read as floats."""
    return ast.literal_eval(_FloatNames().visit(ast.parse(text, mode="eval")))


class _FloatNames(ast.NodeTransformer):
    """``inf`` and ``nan`` in a repr as float constants (``literal_eval`` rejects names)."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in ("inf", "nan"):
            return ast.copy_location(ast.Constant(float(node.id)), node)
        return node


def list_items(classes: list[list[ENode]], c: int) -> list[int]:
    """The element e-classes of a ``TensorList`` e-class (through its first e-node at each step)."""
    items = []
    while classes[c][0].op == "cons":
        rest, head = classes[c][0].children
        items.append(head)
        c = rest
    return items


def _find_original(classes: list[list[ENode]], term_class: dict[int, int], term: Term) -> int:
    c = term_class[id(term)]
    want = [term_class[id(a)] for a in term.args]
    for i, node in enumerate(classes[c]):
        if node.op != term.op or node.attrs != term.attrs:
            continue
        variadic = OPS[term.op].arity is None
        if (list_items(classes, node.children[0]) if variadic else list(node.children)) == want:
            return i
    raise AssertionError(f"e-class {c} lost its original node {term}")


_OP_NAMES = {"·.cons": "cons", "TensorList.nil": "nil"}
_STRUCTURE = {*lang.CONSTRUCTORS.values(), lang.TensorList.nil, lang.TensorList.cons}
