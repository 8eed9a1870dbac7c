"""Pruning genes: every prunable channel group of the input program is a knob of the approximate search.

A gene picks one of ``LEVELS`` (the share of the group's channels kept; index 0 keeps them all). The
input program's groups (``prune.channel_flow``) fix, per level, the channels kept (by magnitude,
``prune.keep_channels``) and the error estimate (``prune.consumer_error`` of every consumer of the group
on its calibration input, summed). Per e-class of the input program they give the share of the work that
remains (output channels kept times input channels read), which the objectives apply to the node a genome
chooses for that class. ``keep_for`` maps the genes onto the groups of a decoded program.
"""

from __future__ import annotations

import numpy as np

from tsir.approx import prune
from tsir.ir.term import Graph, fold, postorder

LEVELS = (1.0, 0.875, 0.75, 0.5)  # channel shares a pruning gene can keep


class PruneGenes:
    """The prunable groups of an input program (``graph``, whose terms have the e-classes ``classes``,
    by term id) as genes."""

    def __init__(self, graph: Graph, classes: dict[int, int]) -> None:
        found, flow = prune.channel_flow(graph)
        gene_of = {k: i for i, k in enumerate(k for k, g in enumerate(found) if not g.blocked)}
        self.graph = graph
        self.groups = [g for g in found if not g.blocked]
        self.keep = [[None] + [prune.keep_channels(graph, g, f) for f in LEVELS[1:]] for g in self.groups]
        self.out_gene: dict[int, int] = {}  # e-class -> the gene of the channels it carries
        for t in postorder(graph.root):
            f = flow.get(id(t))
            if f is not None and f[0] in gene_of and id(t) in classes:
                self.out_gene[classes[id(t)]] = gene_of[f[0]]
        self.in_gene: dict[int, tuple[int, int]] = {}  # consumer e-class -> (gene, block) of what it reads
        self.layers: list[tuple[int, int]] = []  # (e-class, weight bytes) of every producer and consumer
        for i, g in enumerate(self.groups):
            for t, block in g.consumers:
                self.in_gene[classes[id(t)]] = (i, block)
            for t in [p for p in g.producers] + [c for c, _ in g.consumers]:
                self.layers.append((classes[id(t)], fold(t.args[1], graph.constants, {}).nbytes))
        self.layers = sorted(set(self.layers))
        self.error: list[list[float]] = [[0.0] * len(LEVELS) for _ in self.groups]

    def __len__(self) -> int:
        return len(self.groups)

    def activation_terms(self) -> list:
        """Every consumer's input in the input program (the calibration activations ``set_activations``
        needs, in this order)."""
        return [t.args[0] for g in self.groups for t, _ in g.consumers]

    def set_activations(self, activations: list[np.ndarray]) -> None:
        """The error estimate of each gene level: its consumers' ``consumer_error`` summed."""
        acts = iter(activations)
        memo: dict = {}
        for i, g in enumerate(self.groups):
            for t, block in g.consumers:
                x, w = next(acts), fold(t.args[1], self.graph.constants, memo)
                for level in range(1, len(LEVELS)):
                    self.error[i][level] += prune.consumer_error(t, block, x, w, self.keep[i][level])

    def kept(self, gene: int | None, levels: list[int]) -> np.ndarray | None:
        """The channels gene ``gene`` keeps at ``levels`` (None: all)."""
        return None if gene is None else self.keep[gene][levels[gene]]

    def share(self, gene: int | None, levels: list[int]) -> float:
        kept = self.kept(gene, levels)
        return 1.0 if kept is None else len(kept) / self.groups[gene].channels

    def work_share(self, c: int, levels: list[int]) -> float:
        """The share of e-class ``c``'s work (and weight) left: output channels kept times input ones read."""
        return self.share(self.out_gene.get(c), levels) * self.share(self.in_gene.get(c, (None, 1))[0], levels)

    def bytes_saved(self, levels: list[int], skip: set[int]) -> float:
        """Weight bytes pruning removes from the producers and consumers outside ``skip`` (e-classes)."""
        return sum(nbytes * (1.0 - self.work_share(c, levels)) for c, nbytes in self.layers if c not in skip)

    def total_error(self, levels: list[int]) -> float:
        return sum(self.error[i][level] for i, level in enumerate(levels))

    def keep_for(self, graph: Graph, classes: dict[int, int], levels: list[int]) -> tuple[dict, list[int]]:
        """The channels to keep per group of the decoded program ``graph`` (for ``prune.cut``) and the levels
        that apply: a gene whose channels the decoded program groups differently (blocked, merged with
        another gene's, another channel count) is not applied (level 0)."""
        found, _ = prune.channel_flow(graph)
        keep, applied = {}, [0] * len(self.groups)
        for k, g in enumerate(found):
            genes = {self.out_gene.get(classes.get(id(p), -1)) for p in g.producers}
            if g.blocked or len(genes) != 1 or None in genes:
                continue
            gene = genes.pop()
            if levels[gene] and g.channels == self.groups[gene].channels:
                keep[k] = self.keep[gene][levels[gene]]
                applied[gene] = levels[gene]
        return keep, applied
