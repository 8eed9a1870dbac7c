"""Structured pruning: remove whole channels / neurons by magnitude, giving a smaller dense program.

A *producer* makes channels: an ungrouped ``conv2d`` (axis 1 of NCHW) or a ``matmul`` by a constant 2-D
weight (the last axis). Channels flow unchanged through element-wise ops, per-channel constant operands
(biases, scales), ``max_pool2d``, depthwise convs and a flattening ``reshape`` (NCHW -> (N, C*H*W), in
blocks of H*W) and reshapes of the leading axes of a channels-last tensor (``(B, S, C) <-> (B*S, C)``)
until *consumers* read them: an ungrouped conv (weight axis 1) or a matmul (weight rows).

Dependency groups: a residual ``add`` of two computed tensors ties both sides' channels into one group, so
every producer of the group keeps the same channels. A group whose channels reach anything else (the
model output, concat, a grouped conv, a reduction, an opaque call, another reshape) is *blocked* and is
never pruned, so the result is always a valid program. Grouped (non-depthwise) convs are boundaries.

``groups(graph)`` finds the groups; ``prune(graph, {group: keep_fraction})`` (or ``cut(graph, {group:
channel indices})``) returns a new ``Graph`` whose tensors really are smaller (new constants, new
shapes), keeping the channels with the largest weight magnitude (the L2 norms of their producer
filters, summed over the group). ``consumer_error`` is the layer-level error estimate from calibration activations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tsir.ir.ops import OPS, Category, evaluate, ops_in, with_weight
from tsir.ir.term import Graph, Term, fold, is_constant, postorder

ELEMENTWISE = ops_in(Category.UNARY)
DENSE = with_weight("KN")  # (x, W (K, N)[, bias]) layers
# (x, W (O, I, kh, kw)[, bias]) layers, channels on axis 1 when their layout is NCHW; a conv with a fused residual
# is no layer pruning can cut (its residual would have to lose the same channels)
CONVS = with_weight("OIHW") - {"dnnl_conv2d_add"}
BINARY = ops_in(Category.BINARY)


def _nchw(t: Term) -> bool:
    return OPS[t.op].layout_of(t.attrs) == "NCHW"


@dataclass
class Group:
    channels: int
    producers: list[Term] = field(default_factory=list)  # conv2d / matmul terms making the channels
    consumers: list[tuple[Term, int]] = field(default_factory=list)  # (conv2d / matmul, block) reading them
    blocked: str | None = None  # why the group cannot be pruned

    @property
    def label(self) -> str:
        kinds = sorted({p.op for p in self.producers})
        return f"{'+'.join(kinds)} {self.channels} channels ({len(self.producers)} producers)"


@dataclass
class _Flow:
    """A computed tensor's channels: a group and the block size (H*W after a flatten, else 1)."""

    group: int
    block: int = 1


class _Analysis:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.const: dict[int, bool] = {}
        self.parent: list[int] = []
        self.groups: list[Group] = []
        self.flow: dict[int, _Flow] = {}
        for term in postorder(graph.root):
            if term.op in ("input", "weight", "scalar") or is_constant(term, self.const) or term is graph.root:
                continue
            self._visit(term)
        for arg in graph.root.args if graph.root.op == "tuple" else (graph.root,):
            self._block(arg, "reaches the model output")

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def _new(self, channels: int) -> int:
        self.parent.append(len(self.groups))
        self.groups.append(Group(channels))
        return len(self.groups) - 1

    def _union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            ga, gb = self.groups[a], self.groups[b]
            ga.producers += gb.producers
            ga.consumers += gb.consumers
            ga.blocked = ga.blocked or gb.blocked
        return a

    def _block(self, term: Term, why: str) -> None:
        f = self.flow.get(id(term))
        if f is not None:
            g = self.groups[self.find(f.group)]
            g.blocked = g.blocked or f"{why} (from {term.op})"

    def _is_const(self, t: Term) -> bool:
        return is_constant(t, self.const)

    def _visit(self, t: Term) -> None:
        flows = [self.flow.get(id(a)) for a in t.args]
        consumed = self._consume(t, flows)
        if self._produce(t):
            return
        if t.op in ELEMENTWISE or (t.op == "max_pool2d" and _nchw(t)):
            if flows and flows[0] is not None:
                self.flow[id(t)] = flows[0]
            return
        if t.op in BINARY and len(t.args) == 2:
            self._binary(t, flows)
            return
        if t.op in CONVS and _nchw(t) and self._depthwise(t) and flows[0] is not None:
            self.flow[id(t)] = flows[0]
            return
        if t.op == "reshape" and flows[0] is not None and flows[0].block == 1 and self._flattens(t):
            shape = t.args[0].ty[0]
            self.flow[id(t)] = _Flow(flows[0].group, math.prod(shape[2:]))
            return
        if t.op == "reshape" and flows[0] is not None and flows[0].block == 1 and self._keeps_last_axis(t):
            self.flow[id(t)] = flows[0]
            return
        if not consumed:
            for a in t.args:
                self._block(a, f"read by {t.op}" + (f" groups={t.attrs[3]}" if t.op == "conv2d" else ""))

    def layer(self, t: Term) -> str | None:
        """"dense" (a matmul-like op by a constant 2-D weight ``(K, N)``), "conv" (an ungrouped conv by a
        constant weight) or None. Library ops count (pruning runs before any approximation, so it meets
        float32 weights only)."""
        if len(t.args) < 2 or not self._is_const(t.args[1]):
            return None
        if t.op in DENSE:
            return "dense" if len(t.args[1].ty[0]) == 2 and len(t.ty[0]) >= 2 else None
        if t.op in CONVS and t.attrs[3] == 1 and _nchw(t):
            return "conv"
        return None

    def _consume(self, t: Term, flows: list[_Flow | None]) -> bool:
        """``t`` reads a channel flow through its weight: record it as a consumer."""
        if not flows or flows[0] is None:
            return False
        kind = self.layer(t)
        if kind is None or (kind == "conv" and flows[0].block != 1):
            return False
        self.groups[self.find(flows[0].group)].consumers.append((t, flows[0].block))
        return True

    def _produce(self, t: Term) -> bool:
        kind = self.layer(t)
        if kind is None:
            return False
        g = self._new(t.ty[0][-1] if kind == "dense" else t.ty[0][1])
        self.groups[g].producers.append(t)
        self.flow[id(t)] = _Flow(g)
        return True

    def _binary(self, t: Term, flows: list[_Flow | None]) -> None:
        a, b = t.args
        fa, fb = flows
        if fa is not None and fb is not None:
            if fa.block == fb.block == 1 and a.ty == b.ty:
                self.flow[id(t)] = _Flow(self._union(fa.group, fb.group))  # residual: one dependency group
            else:
                self._block(a, "mixed with"), self._block(b, "mixed with")
            return
        f, x, other = (fa, a, b) if fa is not None else (fb, b, a)
        if f is None:
            return
        if f.block == 1 and self._is_const(other) and self._per_channel(other, x):
            self.flow[id(t)] = f
        else:
            self._block(x, "combined with a non-per-channel operand by")

    @staticmethod
    def _channel_axis(ty: tuple) -> int:
        return 1 if len(ty[0]) == 4 else len(ty[0]) - 1

    def _per_channel(self, const: Term, x: Term) -> bool:
        """``const`` broadcasts against ``x`` with at most the channel axis not 1 (a bias or a scale)."""
        shape, xshape = const.ty[0], x.ty[0]
        axis = self._channel_axis(x.ty)
        if len(shape) > len(xshape):
            return False
        padded = (1,) * (len(xshape) - len(shape)) + tuple(shape)
        return all(d == 1 or (i == axis and d == xshape[axis]) for i, d in enumerate(padded))

    @staticmethod
    def _depthwise(t: Term) -> bool:
        return t.attrs[3] > 1 and t.attrs[3] == t.args[0].ty[0][1] == t.ty[0][1] and t.args[1].ty[0][1] == 1

    @staticmethod
    def _keeps_last_axis(t: Term) -> bool:
        """A reshape of the leading axes only (``(B, S, C) <-> (B*S, C)``), channels last on both sides."""
        before, after = t.args[0].ty[0], t.ty[0]
        return 4 not in (len(before), len(after)) and len(before) >= 2 and len(after) >= 2 \
            and before[-1] == after[-1]

    @staticmethod
    def _flattens(t: Term) -> bool:
        shape = t.args[0].ty[0]
        return len(shape) == 4 and t.ty[0] == (shape[0], math.prod(shape[1:]))


def groups(graph: Graph) -> list[Group]:
    """The channel dependency groups of ``graph``'s program (blocked ones included, with the reason)."""
    return channel_flow(graph)[0]


def channel_flow(graph: Graph) -> tuple[list[Group], dict[int, tuple[int, int]]]:
    """``groups(graph)`` and, by term id, each computed tensor's channels as (index into those groups,
    block size)."""
    analysis = _Analysis(graph)
    roots = [i for i, _ in enumerate(analysis.groups) if analysis.find(i) == i]
    index = {r: k for k, r in enumerate(roots)}
    flow = {t: (index[analysis.find(f.group)], f.block) for t, f in analysis.flow.items()}
    return [analysis.groups[r] for r in roots], flow


def keep_channels(graph: Graph, group: Group, fraction: float) -> np.ndarray:
    """The sorted indices of the ``ceil(fraction * channels)`` largest-magnitude channels of ``group``."""
    memo: dict = {}
    score = np.zeros(group.channels)
    for p in group.producers:
        w = fold(p.args[1], graph.constants, memo)
        score += np.linalg.norm(w.reshape(w.shape[0], -1), axis=1) if p.op in CONVS else np.linalg.norm(w, axis=0)
    n = max(1, math.ceil(fraction * group.channels))
    return np.sort(np.argsort(-score, kind="stable")[:n])


def prune(graph: Graph, fractions: dict[int, float]) -> Graph:
    """``graph`` with group ``g`` of ``groups(graph)`` cut to ``fractions[g]`` of its channels (dense)."""
    found = groups(graph)
    for k in fractions:
        if found[k].blocked:
            raise ValueError(f"group {k} ({found[k].label}) cannot be pruned: {found[k].blocked}")
    return cut(graph, {k: keep_channels(graph, found[k], f) for k, f in fractions.items() if f < 1.0})[0]


def cut(graph: Graph, keep: dict[int, np.ndarray]) -> tuple[Graph, dict[int, Term]]:
    """``graph`` with group ``g`` of ``groups(graph)`` cut to the channels ``keep[g]`` (sorted indices), and
    every term's replacement in the new graph, by the old term's id."""
    analysis = _Analysis(graph)
    roots = [i for i, _ in enumerate(analysis.groups) if analysis.find(i) == i]
    for k in keep:
        if analysis.groups[roots[k]].blocked:
            group = analysis.groups[roots[k]]
            raise ValueError(f"group {k} ({group.label}) cannot be pruned: {group.blocked}")
    rewriter = _Rewriter(graph, analysis, {roots[k]: idx for k, idx in keep.items()})
    return rewriter.run(), rewriter.new


class _Rewriter:
    def __init__(self, graph: Graph, analysis: _Analysis, keep: dict[int, np.ndarray]) -> None:
        self.graph, self.analysis, self.keep = graph, analysis, keep
        self.constants = list(graph.constants)
        self.memo: dict = {}
        self.cuts: dict[tuple, Term] = {}  # one leaf per (constant, cut): consumers sharing a weight still share it
        self.new: dict[int, Term] = {}

    def kept(self, term: Term) -> tuple[np.ndarray | None, int]:
        """The kept channels of a computed tensor (None: all) and its block size."""
        f = self.analysis.flow.get(id(term))
        if f is None:
            return None, 1
        return self.keep.get(self.analysis.find(f.group)), f.block

    def leaf(self, array: np.ndarray) -> Term:
        self.constants.append(np.ascontiguousarray(array))
        return Term("weight", (), (len(self.constants) - 1,), (array.shape, str(array.dtype)))

    def const(self, term: Term, axis: int, idx: np.ndarray | None, block: int = 1) -> Term:
        """A constant ``term`` folded and cut to ``idx`` along ``axis`` (in blocks of ``block``)."""
        if idx is None:
            return self.new.get(id(term), term)
        key = (id(term), axis, id(idx), block)
        if key not in self.cuts:
            array = fold(term, self.graph.constants, self.memo)
            self.cuts[key] = self.leaf(np.take(array, expand(idx, block), axis=axis))
        return self.cuts[key]

    def run(self) -> Graph:
        for t in postorder(self.graph.root):
            self.new[id(t)] = self.rebuild(t)
        root = self.new[id(self.graph.root)]
        return Graph(root, self.graph.inputs, self.constants, self.graph.opaque_calls)

    def rebuild(self, t: Term) -> Term:
        if not t.args or is_constant(t, self.analysis.const):
            return t
        args = [self.new[id(a)] for a in t.args]
        attrs = t.attrs
        own, _ = self.kept(t)
        src, block = self.kept(t.args[0])
        kind = self.analysis.layer(t)
        if kind is not None and (src is not None or own is not None):
            args[1] = self.cut(t.args[1], kind, src, block, own)
            if own is not None and len(t.args) > 2:  # a producer's biases go with its filters
                args[2] = self.channels(t.args[2], own)
        elif t.op in CONVS and src is not None:  # depthwise: one filter (and bias) per kept channel
            args[1] = self.const(t.args[1], 0, src)
            if len(t.args) > 2:
                args[2] = self.channels(t.args[2], src)
            attrs = (*attrs[:3], len(src), *attrs[4:])
        elif t.op in BINARY and own is not None:
            for i, a in enumerate(t.args):
                if self.analysis._is_const(a) and self.analysis._per_channel(a, t):
                    shape = a.ty[0]
                    axis = self.analysis._channel_axis(t.ty) - (len(t.ty[0]) - len(shape))
                    if shape[axis] != 1:
                        args[i] = self.const(a, axis, own)
        elif t.op == "reshape" and src is not None and self.analysis.flow.get(id(t)) is not None:
            shape = t.args[0].ty[0]
            if block == 1 and self.analysis._keeps_last_axis(t):
                attrs = ((*t.ty[0][:-1], len(src)),)
            else:
                attrs = ((shape[0], len(src) * math.prod(shape[2:])),)
        if all(n is o for n, o in zip(args, t.args, strict=True)) and attrs == t.attrs:
            return t
        return Term(t.op, tuple(args), attrs, t.ty)  # the type is inferred again, except for opaque calls

    def cut(self, weight: Term, kind: str, src: np.ndarray | None, block: int, own: np.ndarray | None) -> Term:
        """A layer's constant weight without the input rows / channels of a consumer (``src``, in blocks of
        ``block``) and the output columns / filters of a producer (``own``)."""
        key = (id(weight), kind, id(src), block, id(own))
        if key not in self.cuts:
            w = fold(weight, self.graph.constants, self.memo)
            if src is not None:
                w = np.take(w, expand(src, block), axis=0 if kind == "dense" else 1)
            if own is not None:
                w = np.take(w, own, axis=1 if kind == "dense" else 0)
            self.cuts[key] = self.leaf(w)
        return self.cuts[key]

    def channels(self, term: Term, idx: np.ndarray) -> Term:
        """A per-channel constant (one non-1 axis, e.g. a bias) cut to ``idx``."""
        key = (id(term), "channels", id(idx))
        if key not in self.cuts:
            array = fold(term, self.graph.constants, self.memo)
            shape = [len(idx) if d != 1 else 1 for d in array.shape]
            self.cuts[key] = self.leaf(np.take(array.reshape(-1), idx).reshape(shape))
        return self.cuts[key]


def expand(idx: np.ndarray, block: int) -> np.ndarray:
    """Channel indices ``idx`` as the element indices of their blocks of ``block`` (after a flatten)."""
    return (idx[:, None] * block + np.arange(block)).ravel() if block > 1 else idx


def consumer_error(consumer: Term, block: int, x: np.ndarray, w: np.ndarray, keep: np.ndarray) -> float:
    """Relative output error of ``consumer`` (a matmul or conv reading pruned channels in blocks of
    ``block``) on calibration input ``x`` when only the ``keep`` channels remain: the removed channels'
    contribution ``||f(x_removed, w)|| / ||f(x, w)||`` (``f`` is linear in ``x``)."""
    conv = consumer.op in CONVS
    axis = 1 if conv else x.ndim - 1
    removed = x.copy()
    index = [slice(None)] * x.ndim
    index[axis] = expand(keep, block)
    removed[tuple(index)] = 0
    op, attrs = ("conv2d", consumer.attrs) if consumer.op == "conv2d" else ("matmul", ())
    full = evaluate(op, [x, w], attrs)
    return float(np.linalg.norm(evaluate(op, [removed, w], attrs))
                 / max(np.linalg.norm(full), 1e-30))
