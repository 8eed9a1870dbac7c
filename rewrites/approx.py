"""Approximations: alternatives to exact e-classes, kept beside the e-graph and never unioned into it.

A ``Site`` is a constant 2-D weight e-class that an input-program ``matmul``/``linear`` multiplies by.
Each site has a knob (``Site.choices``; index 0 is exact) and, per choice, an error estimate computed
from the weight (and calibration activations for int8):

- ``rank{r}``: the weight ``W (K, N)`` replaced by its truncated SVD ``A (K, r) @ B (r, N)``; the
  estimate is the relative Frobenius norm of the discarded singular values, ``||W - W_r|| / ||W||``
  (the expected relative output error for inputs with uncorrelated, equal-variance features).
- ``int8``: per-output-channel symmetric int8 weights and a static per-tensor symmetric int8 activation
  scale calibrated on the calibration set (clipping chosen by ``activation_scale``); lowered to an
  ``int8 x int8 -> int32`` Relax matmul. The estimate combines the relative weight and activation
  rounding errors.

``Approximations.decode`` applies a knob vector while a genome is decoded (``to_term``'s hook): every
chosen ``matmul``/``linear``/``dnnl_matmul``/``dnnl_linear`` node on a site's weight class is replaced
(with its bias and ReLU kept), whatever exact rewrites chose around it.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from tsir.cost import Roofline, type_bytes
from tsir.ir.term import Graph, Term, fold
from tsir.search.extract import Genome, Space, to_term, walk

RANK_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)  # ranks tried per layer, as fractions of min(K, N)
INT8_SPEEDUP = 4.0  # analytic model: int8 GEMMs at 4x the fp32 rate (VNNI); measured tiers time them
MIN_WEIGHT = 4096  # smaller weights are not worth approximating
MATMULS = ("matmul", "linear", "dnnl_matmul", "dnnl_linear")  # (x, W[, bias]) nodes a site replaces


@dataclass(frozen=True)
class Choice:
    name: str  # "exact", "rank{r}" or "int8"
    error: float  # estimated relative output error of the layer
    size_bytes: int  # bytes of weights the choice keeps
    cost_s: float  # analytic run time of the replacement kernels
    weights: tuple[int, ...] = ()  # indices of its weights in the extended constant table
    opaque: int | None = None  # key of its int8 kernel in the extended opaque table


@dataclass
class Site:
    eclass: int
    weight_class: int
    label: str  # "linear 512x256"
    shape: tuple[int, int]
    in_type: tuple  # the activation's type
    out_type: tuple
    choices: list[Choice] = field(default_factory=list)


@dataclass(frozen=True)
class Int8Matmul:
    """An ``int8 x int8 -> int32`` matmul with static scales, emitted as a Relax subgraph (an opaque kernel)."""

    x_scale: float  # activation step: x ~= x_scale * q(x)
    w_scale: np.ndarray  # (N,) per-output-channel weight step
    call = types.SimpleNamespace(op=types.SimpleNamespace(name="tsir.int8_matmul"))  # what report.layers names

    def rebuild(self, args: list[relax.Expr]) -> relax.Expr:
        x, wq = args
        scaled = relax.op.multiply(x, relax.const(np.float32(1.0 / self.x_scale)))
        clipped = relax.op.clip(relax.op.round(scaled), tvm.tirx.FloatImm("float32", -127.0),
                                tvm.tirx.FloatImm("float32", 127.0))
        acc = relax.op.matmul(relax.op.astype(clipped, "int8"), wq, out_dtype="int32")
        return relax.op.multiply(relax.op.astype(acc, "float32"),
                                 relax.const((self.x_scale * self.w_scale).astype(np.float32)))


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (output channel) symmetric int8: ``w ~= q * scale``."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def lowrank(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``A (K, r)``, ``B (r, N)`` with ``A @ B`` the best rank-``r`` approximation, and the estimate."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    error = float(math.sqrt((s[rank:] ** 2).sum() / max((s**2).sum(), 1e-30)))
    return (u[:, :rank] * s[:rank]).astype(np.float32), vt[:rank].astype(np.float32), error


def activation_error(x: np.ndarray, scale: float) -> float:
    """Relative error of rounding activations ``x`` to the int8 grid of step ``scale``."""
    q = np.clip(np.round(x / scale), -127, 127) * scale
    return float(np.linalg.norm(x - q) / max(np.linalg.norm(x), 1e-30))


def activation_scale(x: np.ndarray) -> float:
    """The int8 step for ``x`` among clipping at the max or the 99.99th / 99.9th percentile of ``|x|``
    that rounds ``x`` with the least error (outliers otherwise waste the grid, as in transformers)."""
    ax = np.abs(x).ravel()
    steps = [max(float(np.percentile(ax, q)), 1e-12) / 127.0 for q in (100.0, 99.99, 99.9)]
    return min(steps, key=lambda step: activation_error(x, step))


class Approximations:
    """The sites of a search space, their choices, and the extended constant/opaque tables they use."""

    def __init__(self, space: Space, graph: Graph, roofline: Roofline) -> None:
        self.space, self.graph = space, graph
        self.constants = list(graph.constants)
        self.opaque = dict(graph.opaque_calls)
        self.sites: list[Site] = []
        self.roofline = roofline
        self._by_weight: dict[int, int] = {}  # weight class -> site
        self._weight_terms: dict[int, Term] = {}
        self._inputs: dict[int, Term] = {}  # site class -> its activation term in the input program
        terms: dict[int, Term] = {}
        to_term_capture(space, space.original(), terms)
        for c, i in space.view.original.items():
            node = space.view.classes[c][i]
            if node.op not in ("matmul", "linear") or not space.constant[node.children[1]]:
                continue
            wty = space.view.types[node.children[1]]
            if len(wty[0]) != 2 or wty[1] != "float32" or wty[0][0] * wty[0][1] < MIN_WEIGHT:
                continue
            if node.children[1] in self._by_weight:
                continue
            self._by_weight[node.children[1]] = len(self.sites)
            self._weight_terms[c] = terms[node.children[1]]
            self._inputs[c] = terms[node.children[0]]
            self.sites.append(Site(c, node.children[1], f"{node.op} {wty[0][0]}x{wty[0][1]}", tuple(wty[0]),
                                   space.view.types[node.children[0]], space.view.types[c]))

    def activation_terms(self) -> list[Term]:
        """Each site's input activation in the input program (to calibrate int8 scales)."""
        return [self._inputs[s.eclass] for s in self.sites]

    def build_choices(self, activations: list[np.ndarray] | None) -> None:
        """Fill every site's choices; ``activations`` (one calibration array per site) enable int8."""
        for k, site in enumerate(self.sites):
            w = fold(self._weight_terms[site.eclass], self.graph.constants, {})
            xty, out_ty = site.in_type, site.out_type
            kdim, ndim = w.shape
            exact = self.roofline.kernel_s("matmul", [xty, ((kdim, ndim), "float32")], out_ty)
            site.choices = [Choice("exact", 0.0, w.nbytes, exact)]
            for rank in sorted({max(1, int(min(w.shape) * f)) for f in RANK_FRACTIONS}):
                if rank * (kdim + ndim) >= kdim * ndim:
                    continue
                a, b, error = lowrank(w, rank)
                mid = ((*xty[0][:-1], rank), "float32")
                cost = (self.roofline.kernel_s("matmul", [xty, ((kdim, rank), "float32")], mid)
                        + self.roofline.kernel_s("matmul", [mid, ((rank, ndim), "float32")], out_ty))
                site.choices.append(Choice(f"rank{rank}", error, a.nbytes + b.nbytes, cost, self._add(a, b)))
            if activations is not None:
                x = activations[k]
                q, scale = quantize_weight(w)
                x_scale = activation_scale(x)
                w_err = float(np.linalg.norm(w - q * scale) / max(np.linalg.norm(w), 1e-30))
                error = math.hypot(w_err, activation_error(x, x_scale))
                cost = max(exact / INT8_SPEEDUP, (type_bytes(xty) / 4 + q.nbytes + type_bytes(out_ty))
                           / self.roofline.bandwidth)
                key = max(self.opaque, default=-1) + 1
                self.opaque[key] = Int8Matmul(x_scale, scale)
                site.choices.append(Choice("int8", error, q.nbytes + scale.nbytes, cost, self._add(q), key))

    def knobs(self) -> tuple[int, ...]:
        """Number of choices per site (the genome's extra genes)."""
        return tuple(len(s.choices) for s in self.sites)

    def _add(self, *arrays: np.ndarray) -> tuple[int, ...]:
        self.constants.extend(arrays)
        return tuple(range(len(self.constants) - len(arrays), len(self.constants)))

    def applied(self, genome: Genome) -> list[tuple[Site, Choice]]:
        """The (e-class, site, non-exact choice) triples that decoding ``genome`` applies."""
        n = len(self.space.view.classes)
        out = []
        for c in walk(self.space, genome):
            node = self.space.node(genome, c)
            k = self._by_weight.get(node.children[1]) if node.op in MATMULS else None
            if k is not None and genome[n + k] != 0:
                out.append((c, self.sites[k], self.sites[k].choices[genome[n + k]]))
        return out

    def objectives(self, genome: Genome) -> tuple[float, float, float]:
        """(latency s, size bytes, summed error estimate) of the approximate program."""
        latency, size, error = self.space.cost(genome), float(self.space.size_bytes(genome)), 0.0
        sites = {}
        for c, site, choice in self.applied(genome):
            latency += choice.cost_s - self.space.node_cost[c][genome[c]]
            sites[site.weight_class] = (site, choice)
        for site, choice in sites.values():
            size += choice.size_bytes - site.choices[0].size_bytes
            error += choice.error
        return latency, size, error

    def decode(self, genome: Genome) -> tuple[Graph, Term]:
        """The approximate program: its graph (extended tables) and root."""
        chosen = {c: choice for c, _, choice in self.applied(genome)}

        def substitute(c: int, term: Term) -> Term:
            choice = chosen.get(c)
            return term if choice is None else self._replace(term, choice)

        root = to_term(self.space, genome, substitute)
        return Graph(root, self.graph.inputs, self.constants, self.opaque), root

    def _replace(self, term: Term, choice: Choice) -> Term:
        x = term.args[0]
        leaves = [Term("weight", (), (i,), (self.constants[i].shape, str(self.constants[i].dtype)))
                  for i in choice.weights]
        if choice.opaque is not None:
            out = Term("opaque", (x, leaves[0]), (choice.opaque,), term.ty)
        else:
            out = Term("matmul", (Term("matmul", (x, leaves[0])), leaves[1]))
        if term.op in ("linear", "dnnl_linear"):
            out = Term("add", (out, term.args[2]))
        return Term("relu", (out,)) if term.op == "dnnl_linear" and term.attrs[0] else out


def to_term_capture(space: Space, genome: Genome, terms: dict[int, Term]) -> Term:
    """Decode ``genome`` recording every class's term in ``terms``."""
    def record(c: int, term: Term) -> Term:
        terms[c] = term
        return term

    return to_term(space, genome, record)
