"""Approximations: alternatives to exact e-classes, kept beside the e-graph and never unioned into it.

A ``Site`` is a constant float32 weight e-class that an input-program node reads; its ``kind`` says which:

- ``matmul``: a 2-D weight ``W (K, N)`` of a ``matmul``/``linear``;
- ``conv``: a 4-D weight ``W (O, I, kh, kw)`` of an ungrouped ``conv2d``;
- ``embedding``: a 2-D table ``E (V, D)`` gathered by a ``take``.

Each site has a knob (``Site.choices``; index 0 is exact) and, per choice, an error estimate computed
from the weight (and calibration activations for int8/bf16):

- ``rank{r}`` (matmul): ``W`` replaced by its truncated SVD ``A (K, r) @ B (r, N)``; the estimate is the
  relative Frobenius norm of the discarded singular values, ``||W - W_r|| / ||W||`` (the expected relative
  output error for inputs with uncorrelated, equal-variance features).
- ``rank{r}`` (conv): spatial-then-pointwise: ``W`` as a matrix ``(O, I*kh*kw)`` factored by SVD into a
  ``kh x kw`` conv to ``r`` channels and a ``1 x 1`` conv to ``O``; same estimate (over im2col patches).
- ``int8`` (matmul): per-output-channel symmetric int8 weights and a static per-tensor symmetric int8
  activation scale calibrated on the calibration set (clipping chosen by ``activation_scale``), after a
  SmoothQuant per-input-channel scale migration when that rounds with less error (``int8_matmul``); lowered to
  an ``int8 x int8 -> int32`` Relax matmul, or with ``library`` to oneDNN's VNNI int8 matmul
  (``tsir.dnnl.int8_matmul``, backends/native/dnnl/dnnl_int8.cc). The estimate combines the relative
  weight and activation rounding errors.
- ``rank{r}+int8`` (matmul, the two largest ranks): both low-rank factors as int8 matmuls, the middle
  activation calibrated too; the estimate adds the truncation and rounding errors in quadrature.
- ``bf16`` (matmul): weights stored as bfloat16, activations cast to bfloat16, accumulated in float32;
  estimated like int8 from the two relative rounding errors.
- ``int8`` (embedding): per-row symmetric int8 table and a per-row float32 scale; gather, then
  dequantize. The estimate is the relative Frobenius rounding error of the table.

Structured pruning adds one gene per prunable channel group of the input program
(``tsir.approx.prune_genes``). ``Approximations.decode`` decodes a genome in the order the compression
literature recommends: the exact program the class genes choose, pruned by the pruning genes
(``prune.cut``), then every chosen node on a site's weight class replaced by its choice made from the
*pruned* weight (``variant``: SVD, int8 scales and estimates of the pruned weight and activations), with
its bias and ReLU kept, whatever exact rewrites chose around it.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass, field
from typing import NamedTuple

import ml_dtypes
import numpy as np
import tvm
from tvm import relax

from tsir.approx import prune
from tsir.approx.prune import expand
from tsir.approx.prune_genes import LEVELS, PruneGenes
from tsir.backends.roofline import Roofline, type_bytes
from tsir.errors import TsirError
from tsir.ir.ops import OPS, with_weight
from tsir.ir.term import Graph, Term, fold, postorder
from tsir.search.extract import Genome, Space, to_term, walk

RANK_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2)  # ranks tried per layer, as fractions of min(K, N)
INT8_SPEEDUP = 4.0  # analytic model: int8 GEMMs at 4x the fp32 rate (VNNI); measured tiers time them
BF16_SPEEDUP = 2.0  # analytic model: bf16 GEMMs at 2x the fp32 rate (AVX512-BF16)
COMBINED = 2  # the largest ranks also offered as rank+int8
MIN_WEIGHT = 4096  # smaller weights are not worth approximating
SMOOTHING = (None, 0.5, 0.75)  # SmoothQuant migration strengths tried per int8 matmul (None: none)
MATMULS = with_weight("KN")  # (x, W[, bias]) nodes a site replaces
# (x, W[, bias]) conv nodes a site replaces (NCHW: sites are conv2d nodes); not a conv with a fused residual
CONVS = with_weight("OIHW") - {"dnnl_conv2d_add"}


@dataclass(frozen=True)
class Choice:
    name: str  # "exact", "rank{r}", "int8" or "bf16"
    error: float  # estimated relative output error of the layer
    size_bytes: int  # bytes of weights the choice keeps
    cost_s: float  # analytic run time of the replacement kernels
    weights: tuple[int, ...] = ()  # indices of its weights in the extended constant table
    opaque: tuple[int, ...] = ()  # keys of its kernels in the extended opaque table (two for rank+int8)


@dataclass
class Site:
    eclass: int
    weight_class: int
    label: str  # "linear 512x256"
    shape: tuple[int, ...]
    in_type: tuple  # the activation's type (the index type for an embedding)
    out_type: tuple
    kind: str = "matmul"  # "matmul", "conv" or "embedding"
    choices: list[Choice] = field(default_factory=list)
    attrs: tuple = ()  # a conv's (strides, padding, dilation, groups)


class Decoded(NamedTuple):
    graph: Graph  # with the approximations' constants and kernels
    root: Term
    levels: list[int]  # the pruning genes' levels the decoded program applies (0 where a gene did not apply)


def _op(name: str) -> types.SimpleNamespace:
    """What ``tsir.report.layers`` reads from an opaque kernel (``.call.op.name``)."""
    return types.SimpleNamespace(op=types.SimpleNamespace(name=name))


@dataclass(frozen=True)
class Int8Matmul:
    """An ``int8 x int8 -> int32`` matmul with static scales, emitted as a Relax subgraph (an opaque kernel).

    ``smooth`` (SmoothQuant): per-input-channel factors ``s`` migrated from the activation into the weight,
    ``x @ W = (x / s) @ (s W)``; the weight was quantized as ``s W`` and ``x / s`` is quantized here."""

    x_scale: float  # activation step: x / smooth ~= x_scale * q(x / smooth)
    w_scale: np.ndarray  # (N,) per-output-channel weight step
    library: bool = False  # call oneDNN's s8 x s8 -> s32 matmul (tsir.dnnl.int8_matmul) instead of TVM code
    smooth: np.ndarray | None = None  # (K,) SmoothQuant factors, or None
    call = _op("tsir.int8_matmul")

    def rebuild(self, args: list[relax.Expr]) -> relax.Expr:
        x, wq = args
        scale = relax.const((self.x_scale * self.w_scale).astype(np.float32))
        kdim = int(x.ty.shape[-1])
        smooth = np.ones(kdim, np.float32) if self.smooth is None else self.smooth
        inv = relax.const((1.0 / (self.x_scale * smooth.astype(np.float64))).astype(np.float32))  # (K,)
        if self.library:
            shape = [*list(x.ty.shape)[:-1], len(self.w_scale)]
            return relax.call_dps_packed("tsir.dnnl.int8_matmul", relax.Tuple([x, wq, scale, inv]),
                                         relax.TensorType(shape, "float32"))
        scaled = relax.op.multiply(x, inv)
        clipped = relax.op.clip(relax.op.round(scaled), tvm.tirx.FloatImm("float32", -127.0),
                                tvm.tirx.FloatImm("float32", 127.0))
        acc = relax.op.matmul(relax.op.astype(clipped, "int8"), wq, out_dtype="int32")
        return relax.op.multiply(relax.op.astype(acc, "float32"), scale)


@dataclass(frozen=True)
class Int8Conv:
    """oneDNN's ``int8 x int8 -> int32`` NHWC convolution with static scales (``tsir.dnnl.int8_conv2d_nhwc``,
    groups 1): ``act(conv(q(x), Wq) * x_scale * w_scale + bias)`` on float32 NHWC activations, quantized in
    the call; ``relu``: the activation."""

    x_scale: float  # activation step: x ~= x_scale * q(x)
    w_scale: np.ndarray  # (O,) per-output-channel weight step
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    relu: bool
    call = _op("tsir.int8_conv2d")

    def rebuild(self, args: list[relax.Expr]) -> relax.Expr:
        x, wq, bias = args
        n, h, w, c = (int(v) for v in x.ty.shape)
        (_, out_ch, oh, ow), _ = OPS["conv2d"].infer(
            (((n, c, h, w), "float32"), (tuple(int(v) for v in wq.ty.shape), "int8")),
            (self.strides, self.padding, self.dilation, 1))
        scale = relax.const((self.x_scale * self.w_scale).astype(np.float32))
        inv = relax.const(np.full(c, 1.0 / self.x_scale, np.float32))
        ints = [relax.prim_value(int(v), "int64") for v in (*self.strides, *self.padding, *self.dilation, self.relu)]
        return relax.call_dps_packed("tsir.dnnl.int8_conv2d_nhwc", relax.Tuple([x, wq, bias, scale, inv, *ints]),
                                     relax.TensorType([n, oh, ow, out_ch], "float32"))


@dataclass(frozen=True)
class Bf16Matmul:
    """``x @ W`` with ``x`` cast to bfloat16 and ``W`` stored as bfloat16, accumulated in float32.

    The weight travels through tsir as its raw uint16 bits (numpy has no bfloat16 Relax constants);
    ``rebuild`` turns that constant back into a bfloat16 one."""

    call = _op("tsir.bf16_matmul")

    def rebuild(self, args: list[relax.Expr]) -> relax.Expr:
        x, bits = args
        w = relax.const(tvm.runtime.tensor(bits.value.numpy().view(ml_dtypes.bfloat16)))
        return relax.op.matmul(relax.op.astype(x, "bfloat16"), w, out_dtype="float32")


@dataclass(frozen=True)
class Int8Take:
    """``take(E, idx)`` from a per-row int8 table: ``take(Eq, idx) * take(scale, idx)`` in float32."""

    axis: int
    call = _op("tsir.int8_take")

    def rebuild(self, args: list[relax.Expr]) -> relax.Expr:
        table, scale, idx = args
        rows = relax.op.astype(relax.op.take(table, idx, axis=self.axis), "float32")
        return relax.op.multiply(rows, relax.op.take(scale, idx, axis=self.axis))


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (output channel) symmetric int8: ``w ~= q * scale``."""
    scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-row symmetric int8 ``table ~= q * scale`` (scale ``(V, 1)``) and the relative rounding error."""
    scale = (np.maximum(np.abs(table).max(axis=1, keepdims=True), 1e-12) / 127.0).astype(np.float32)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    error = float(np.linalg.norm(table - q * scale) / max(np.linalg.norm(table), 1e-30))
    return q, scale, error


def to_bf16(w: np.ndarray) -> np.ndarray:
    """``w`` rounded to bfloat16 (round to nearest even), as an ml_dtypes array."""
    return w.astype(ml_dtypes.bfloat16)


def bf16_error(x: np.ndarray) -> float:
    """Relative error of rounding ``x`` to bfloat16."""
    return float(np.linalg.norm(x - to_bf16(x).astype(np.float32)) / max(np.linalg.norm(x), 1e-30))


def lowrank(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """``A (K, r)``, ``B (r, N)`` with ``A @ B`` the best rank-``r`` approximation, and the estimate."""
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    error = float(math.sqrt((s[rank:] ** 2).sum() / max((s**2).sum(), 1e-30)))
    return (u[:, :rank] * s[:rank]).astype(np.float32), vt[:rank].astype(np.float32), error


def lowrank_conv(w: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Spatial-then-pointwise factors of a conv weight ``(O, I, kh, kw)``: ``(r, I, kh, kw)`` and
    ``(O, r, 1, 1)``, and the estimate (``lowrank`` of the ``(I*kh*kw, O)`` im2col matrix)."""
    o = w.shape[0]
    a, b, error = lowrank(w.reshape(o, -1).T, rank)  # (I*kh*kw, r), (r, O)
    return a.T.reshape(rank, *w.shape[1:]).copy(), b.T.reshape(o, rank, 1, 1).copy(), error


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


def smoothing(x: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel factors ``s = max|x_k|^alpha / max|W_k,:|^(1-alpha)``: ``x / s`` has
    flatter channels (transformer activations have outlier channels) at the price of a less flat ``s W``."""
    ax = np.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
    aw = np.abs(w).max(axis=1)
    return (np.maximum(ax, 1e-5) ** alpha / np.maximum(aw, 1e-5) ** (1 - alpha)).astype(np.float32)


def int8_conv(w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Conv weight ``w (O, I, kh, kw)`` as per-output-channel int8, its steps ``(O,)``, the activation step for
    ``x`` (a per-tensor step) and the estimated relative output error: the weight and activation rounding
    errors in quadrature."""
    q, w_scale = quantize_weight(w.reshape(w.shape[0], -1).T)
    q = np.ascontiguousarray(q.T.reshape(w.shape))
    x_scale = activation_scale(x)
    w_error = float(np.linalg.norm(w - q * w_scale[:, None, None, None]) / max(np.linalg.norm(w), 1e-30))
    return q, w_scale, x_scale, math.hypot(w_error, activation_error(x, x_scale))


def int8_matmul(w: np.ndarray, x: np.ndarray, library: bool) -> tuple[np.ndarray, Int8Matmul, list[float]]:
    """The int8 weight, the kernel and the (weight, activation) relative rounding errors for ``x @ w``, with
    the SmoothQuant strength of ``SMOOTHING`` (None: no migration) whose errors are the smallest."""
    best = None
    for alpha in SMOOTHING:
        s = None if alpha is None else smoothing(x, w, alpha)
        ws, xs = (w, x) if s is None else (w * s[:, None], x / s)
        q, scale = quantize_weight(ws)
        x_scale = activation_scale(xs)
        errors = [float(np.linalg.norm(ws - q * scale) / max(np.linalg.norm(ws), 1e-30)),
                  activation_error(xs, x_scale)]
        if best is None or math.hypot(*errors) < math.hypot(*best[2]):
            best = (q, Int8Matmul(x_scale, scale, library, s), errors)
    return best


class Approximations:
    """The sites of a search space, their choices, and the extended constant/opaque tables they use."""

    def __init__(self, space: Space, graph: Graph, roofline: Roofline, library: bool = False,
                 int8_library: bool = False) -> None:
        """``library``: low-rank factors call oneDNN; ``int8_library``: int8 matmuls call oneDNN
        (``tsir.dnnl.int8_matmul``); both loaded in this process."""
        self.space, self.graph, self.library, self.int8_library = space, graph, library, int8_library
        self.constants = list(graph.constants)
        self.opaque = dict(graph.opaque_calls)
        self.sites: list[Site] = []
        self.roofline = roofline
        self._by_weight: dict[int, int] = {}  # weight class -> site
        self._weight_terms: dict[int, Term] = {}
        self._inputs: dict[int, Term] = {}  # matmul site class -> its activation term in the input program
        self._take_axis: dict[int, int] = {}
        self._site_data: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}  # site -> (weight, activations)
        self._variants: dict[tuple, Choice] = {}  # (site, choice, rows kept, columns kept) -> pruned choice
        terms: dict[int, Term] = {}
        root = to_term_capture(space, space.original(), terms)
        classes = {}
        for c, t in terms.items():
            classes.setdefault(id(t), c)
        self.pruning = PruneGenes(Graph(root, graph.inputs, graph.constants, graph.opaque_calls), classes)
        for c, i in space.view.original.items():
            node = space.view.classes[c][i]
            kind = self._kind(node)
            if kind is None:
                continue
            args = node.children
            w = args[0] if kind == "embedding" else args[1]
            wty = space.view.types[w]
            if w in self._by_weight or not space.constant[w] or wty[1] != "float32" or math.prod(wty[0]) < MIN_WEIGHT:
                continue
            if kind == "conv" and node.attrs[3] != 1:
                continue  # grouped/depthwise convs have no cheaper factorization here
            x = args[1] if kind == "embedding" else args[0]
            self._by_weight[w] = len(self.sites)
            self._weight_terms[c] = terms[w]
            self._inputs[c] = terms[x]
            if kind == "embedding":
                self._take_axis[c] = node.attrs[0]
            label = {"matmul": node.op, "conv": "conv2d", "embedding": "embedding"}[kind]
            self.sites.append(Site(c, w, f"{label} {'x'.join(map(str, wty[0]))}", tuple(wty[0]),
                                   space.view.types[x], space.view.types[c], kind, attrs=node.attrs))

    def _kind(self, node) -> str | None:
        def ndim(c: int) -> int:
            ty = self.space.view.types[c]
            return len(ty[0]) if isinstance(ty, tuple) and len(ty) == 2 and isinstance(ty[1], str) else -1

        if node.op in ("matmul", "linear") and ndim(node.children[1]) == 2:
            return "matmul"
        if node.op == "conv2d" and ndim(node.children[1]) == 4:
            return "conv"
        if node.op == "take" and ndim(node.children[0]) == 2:
            return "embedding"
        return None

    def _calibrated(self, site: Site) -> bool:
        """Whether ``site`` has choices calibrated on its input activation: matmuls (int8, bf16), and convs
        where oneDNN's int8 convolution is loaded."""
        return site.kind == "matmul" or (site.kind == "conv" and self.int8_library)

    def activation_terms(self) -> list[Term]:
        """Each calibrated site's input activation in the input program (to calibrate int8/bf16), then every
        prunable group's consumer inputs (``PruneGenes.activation_terms``)."""
        return [self._inputs[s.eclass] for s in self.sites if self._calibrated(s)] + self.pruning.activation_terms()

    def build_choices(self, activations: list[np.ndarray] | None) -> None:
        """Fill every site's choices; ``activations`` (one calibration array per term of
        ``activation_terms``) enable int8 and bf16 matmuls and the pruning genes' error estimates."""
        acts = iter(activations or [])
        for k, site in enumerate(self.sites):
            w = fold(self._weight_terms[site.eclass], self.graph.constants, {})
            x = next(acts) if activations is not None and self._calibrated(site) else None
            self._site_data[k] = (w, x)
            if site.kind == "matmul":
                site.choices = [self._matmul_choice(name, w, x, site.in_type, site.out_type)
                                for name in self._matmul_names(w, x)]
            elif site.kind == "conv":
                self._conv_choices(site, w, x)
            else:
                self._embedding_choices(site, w)
        if activations is not None:
            self.pruning.set_activations(list(acts))

    def _matmul_names(self, w: np.ndarray, x: np.ndarray | None) -> list[str]:
        ranks = [f"rank{r}" for r in self._ranks(w.shape)]
        if x is None:
            return ["exact", *ranks]
        return ["exact", *ranks, "int8", *(f"{r}+int8" for r in ranks[-COMBINED:]), "bf16"]

    def _matmul_choice(self, name: str, w: np.ndarray, x: np.ndarray | None, xty: tuple, out_ty: tuple) -> Choice:
        """The choice ``name`` for weight ``w (K, N)`` read by calibration activations ``x``."""
        kdim, ndim = w.shape
        exact = self.roofline.kernel_s("matmul", [xty, ((kdim, ndim), "float32")], out_ty)
        if name == "exact":
            return Choice("exact", 0.0, w.nbytes, exact)
        if name.startswith("rank"):
            rank = min(int(name[4:].split("+")[0]), kdim, ndim)
            a, b, error = lowrank(w, rank)
            mid = ((*xty[0][:-1], rank), "float32")
            cost = (self.roofline.kernel_s("matmul", [xty, ((kdim, rank), "float32")], mid)
                    + self.roofline.kernel_s("matmul", [mid, ((rank, ndim), "float32")], out_ty))
            if name.endswith("+int8"):
                return self._rank_int8(name, a, b, error, cost, x)
            return Choice(name, error, a.nbytes + b.nbytes, cost, self._add(a, b))
        if name == "int8":
            q, kernel, errors = int8_matmul(w, x, self.int8_library)
            cost = max(exact / INT8_SPEEDUP, (type_bytes(xty) / 4 + q.nbytes + type_bytes(out_ty))
                       / self.roofline.bandwidth)
            return Choice("int8", math.hypot(*errors), q.nbytes + kernel.w_scale.nbytes, cost, self._add(q),
                          (self._kernel(kernel),))
        bits = to_bf16(w).view(np.uint16)
        error = math.hypot(bf16_error(w), bf16_error(x))
        cost = max(exact / BF16_SPEEDUP, (type_bytes(xty) / 2 + bits.nbytes + type_bytes(out_ty))
                   / self.roofline.bandwidth)
        return Choice("bf16", error, bits.nbytes, cost, self._add(bits), (self._kernel(Bf16Matmul()),))

    def _rank_int8(self, name: str, a: np.ndarray, b: np.ndarray, truncation: float, cost: float,
                   x: np.ndarray) -> Choice:
        """Low rank, then int8: both factors ``a``, ``b`` as int8 matmuls; the middle activation ``x @ a``
        is calibrated on the same data. The estimate adds the rank truncation and the four rounding errors
        in quadrature."""
        errors = [truncation]
        kernels, weights, size = [], [], 0
        for act, w in ((x, a), (x.reshape(-1, x.shape[-1]) @ a, b)):
            q, kernel, rounding = int8_matmul(w, act, self.int8_library)
            errors += rounding
            kernels.append(self._kernel(kernel))
            weights.append(q)
            size += q.nbytes + kernel.w_scale.nbytes
        return Choice(name, math.sqrt(sum(e * e for e in errors)), size, cost / INT8_SPEEDUP,
                      self._add(*weights), tuple(kernels))

    def _conv_choices(self, site: Site, w: np.ndarray, x: np.ndarray | None) -> None:
        exact = self.space.node_cost[site.eclass][self.space.view.original[site.eclass]]
        names = ["exact", *(f"rank{r}" for r in self._ranks((math.prod(w.shape[1:]), w.shape[0])))]
        names += ["int8"] if x is not None else []
        site.choices = [self._conv_choice(name, w, exact, x, site.attrs) for name in names]

    def _conv_choice(self, name: str, w: np.ndarray, exact: float, x: np.ndarray | None = None,
                     attrs: tuple = ()) -> Choice:
        """The choice ``name`` for conv weight ``w (O, I, kh, kw)``; ``exact``: the exact conv's cost; ``x``:
        its NCHW calibration input and ``attrs`` its (strides, padding, dilation, groups), for int8."""
        if name == "exact":
            return Choice("exact", 0.0, w.nbytes, exact)
        if name == "int8":  # two kernels: without and with a fused ReLU
            q, w_scale, x_scale, error = int8_conv(w, x)
            strides, padding, dilation = attrs[:3]
            kernels = tuple(self._kernel(Int8Conv(x_scale, w_scale, tuple(strides), tuple(padding), tuple(dilation),
                                                  relu)) for relu in (False, True))
            zero_bias = np.zeros(w.shape[0], np.float32)  # for a plain conv2d, whose bias (if any) is added after
            return Choice("int8", error, q.nbytes + w_scale.nbytes, exact / INT8_SPEEDUP, self._add(q, zero_bias),
                          kernels)
        out_ch, kin = w.shape[0], math.prod(w.shape[1:])
        rank = min(int(name[4:]), out_ch, kin)
        a, b, error = lowrank_conv(w, rank)
        share = rank * (kin + out_ch) / (kin * out_ch)  # the factors' FLOPs relative to the conv's
        return Choice(name, error, a.nbytes + b.nbytes, exact * share, self._add(a, b))

    def _embedding_choices(self, site: Site, table: np.ndarray) -> None:
        exact = self.space.node_cost[site.eclass][self.space.view.original[site.eclass]]
        site.choices = [Choice("exact", 0.0, table.nbytes, exact)]
        q, scale, error = quantize_rows(table)
        site.choices.append(Choice("int8", error, q.nbytes + scale.nbytes, exact, self._add(q, scale),
                                   (self._kernel(Int8Take(self._take_axis[site.eclass])),)))

    @staticmethod
    def _ranks(shape: tuple[int, int]) -> list[int]:
        """Ranks from ``RANK_FRACTIONS`` whose factors are smaller than the ``(K, N)`` weight."""
        kdim, ndim = shape
        ranks = sorted({max(1, int(min(shape) * f)) for f in RANK_FRACTIONS})
        return [r for r in ranks if r * (kdim + ndim) < kdim * ndim]

    def knobs(self) -> tuple[int, ...]:
        """Number of choices per site, then per pruning gene (the genome's extra genes)."""
        return tuple(len(s.choices) for s in self.sites) + (len(LEVELS),) * len(self.pruning)

    def levels(self, genome: Genome) -> list[int]:
        """The pruning genes of ``genome`` (indices into ``LEVELS``)."""
        start = len(self.space.view.classes) + len(self.sites)
        return list(genome[start:start + len(self.pruning)])

    def _add(self, *arrays: np.ndarray) -> tuple[int, ...]:
        self.constants.extend(arrays)
        return tuple(range(len(self.constants) - len(arrays), len(self.constants)))

    def _kernel(self, kernel) -> int:
        key = max(self.opaque, default=-1) + 1
        self.opaque[key] = kernel
        return key

    def _site_of(self, node) -> int | None:
        if node.op in MATMULS or node.op in CONVS:
            k = self._by_weight.get(node.children[1])
            return k if k is not None and self.sites[k].kind == ("matmul" if node.op in MATMULS else "conv") else None
        if node.op == "take":
            k = self._by_weight.get(node.children[0])
            return k if k is not None and self.sites[k].kind == "embedding" else None
        return None

    def _uses(self, genome: Genome) -> dict[int, int]:
        """The site each chosen node reads the weight of, by e-class."""
        uses = {}
        for c in walk(self.space, genome):
            k = self._site_of(self.space.node(genome, c))
            if k is not None:
                uses[c] = k
        return uses

    def kept(self, k: int, levels: list[int]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The weight rows (input channels, after a flatten their elements) and output channels site ``k``
        keeps under the pruning ``levels`` (None: all)."""
        site = self.sites[k]
        if site.kind == "embedding":
            return None, None
        gene, block = self.pruning.in_gene.get(site.eclass, (None, 1))
        rows = self.pruning.kept(gene, levels)
        cols = self.pruning.kept(self.pruning.out_gene.get(site.eclass), levels)
        return (None if rows is None else expand(rows, block)), cols

    def variant(self, k: int, i: int, levels: list[int]) -> Choice:
        """Choice ``i`` of site ``k`` made from the weight pruned by ``levels`` (prune first, then factor or
        quantize: estimates, int8 scales and sizes refer to the pruned weight)."""
        rows, cols = self.kept(k, levels)
        site = self.sites[k]
        if rows is None and cols is None:
            return site.choices[i]
        key = (k, i, None if rows is None else len(rows), None if cols is None else len(cols))
        if key not in self._variants:
            w, x = self._site_data[k]
            name = site.choices[i].name
            if site.kind == "conv":
                w = w[:, rows] if rows is not None else w
                w = w[cols] if cols is not None else w
                share = w.size / self._site_data[k][0].size
                x = x[:, rows] if x is not None and rows is not None else x
                self._variants[key] = self._conv_choice(name, w, site.choices[0].cost_s * share, x, site.attrs)
            else:
                w = w[rows] if rows is not None else w
                w = w[:, cols] if cols is not None else w
                x = x[..., rows] if x is not None and rows is not None else x
                xty = ((*site.in_type[0][:-1], w.shape[0]), site.in_type[1])
                out_ty = ((*site.out_type[0][:-1], w.shape[1]), site.out_type[1])
                self._variants[key] = self._matmul_choice(name, w, x, xty, out_ty)
        return self._variants[key]

    def applied(self, genome: Genome) -> list[tuple[int, Site, Choice]]:
        """The (e-class, site, choice) triples that decoding ``genome`` approximates or prunes (a pruned
        exact layer's choice is named "exact")."""
        n, levels = len(self.space.view.classes), self.levels(genome)
        out = []
        for c, k in self._uses(genome).items():
            choice = self.variant(k, genome[n + k], levels)
            if choice is not self.sites[k].choices[0]:
                out.append((c, self.sites[k], choice))
        return out

    def objectives(self, genome: Genome) -> tuple[float, float, float]:
        """(latency s, size bytes, summed error estimate) of the approximate, pruned program: a pruned
        node's cost scales with the channels it keeps (``PruneGenes.work_share``)."""
        levels = self.levels(genome)
        applied = {c: (site, choice) for c, site, choice in self.applied(genome)}
        latency = 0.0
        for c in walk(self.space, genome):
            site, choice = applied.get(c, (None, None))
            if choice is None or choice.name == "exact":
                latency += self.space.node_cost[c][genome[c]] * self.pruning.work_share(c, levels)
            else:
                latency += choice.cost_s
        sites = {site.weight_class: (site, choice) for site, choice in applied.values()}
        size = float(self.space.size_bytes(genome)) - self.pruning.bytes_saved(levels, {s.eclass for s in self.sites})
        error = self.pruning.total_error(levels)
        for site, choice in sites.values():
            size += choice.size_bytes - site.choices[0].size_bytes
            error += choice.error
        return latency, size, error

    def decode(self, genome: Genome) -> Decoded:
        """The approximate program: the chosen exact program, pruned (``prune.cut``), then every site's
        choice made from its pruned weight."""
        n, uses, classes, sites = len(self.space.view.classes), self._uses(genome), {}, {}

        def record(c: int, term: Term) -> Term:
            classes.setdefault(id(term), c)
            if c in uses:
                sites[id(term)] = uses[c]
            return term

        root = to_term(self.space, genome, record)
        keep, levels = self.pruning.keep_for(Graph(root, self.graph.inputs, self.graph.constants,
                                                   self.graph.opaque_calls), classes, self.levels(genome))
        variants = {t: self.variant(k, genome[n + k], levels) for t, k in sites.items()}  # before the cut's copy
        exact = Graph(root, self.graph.inputs, self.constants, self.opaque)
        pruned, new = prune.cut(exact, keep)
        chosen = {id(new[t]): (sites[t], v) for t, v in variants.items() if v.name != "exact"}
        out: dict[int, Term] = {}
        for t in postorder(pruned.root):
            args = tuple(out[id(a)] for a in t.args)
            term = t if all(a is b for a, b in zip(args, t.args, strict=True)) else Term(t.op, args, t.attrs, t.ty)
            if id(t) in chosen:
                k, choice = chosen[id(t)]
                term = self._replace(self._checked(term, k, levels), choice)
            out[id(t)] = term
        root = out[id(pruned.root)]
        return Decoded(Graph(root, self.graph.inputs, pruned.constants, self.opaque), root, levels)

    def _checked(self, term: Term, k: int, levels: list[int]) -> Term:
        """``term`` (a pruned site node), after checking that its weight has the shape its choice was made for."""
        rows, cols = self.kept(k, levels)
        shape = list(self._site_data[k][0].shape)
        if self.sites[k].kind != "embedding":
            out_axis, in_axis = (1, 0) if self.sites[k].kind == "matmul" else (0, 1)
            shape[in_axis] = shape[in_axis] if rows is None else len(rows)
            shape[out_axis] = shape[out_axis] if cols is None else len(cols)
        weight = term.args[0] if self.sites[k].kind == "embedding" else term.args[1]
        if tuple(weight.ty[0]) != tuple(shape):
            raise TsirError(f"decoding {self.sites[k].label}: its pruned weight is {weight.ty[0]}, not the "
                            f"{tuple(shape)} its approximation was made for (a tsir bug: please report it)")
        return term

    def _leaf(self, i: int) -> Term:
        return Term("weight", (), (i,), (self.constants[i].shape, str(self.constants[i].dtype)))

    def _int8_conv(self, term: Term, choice: Choice) -> Term:
        """``term`` (a conv2d, or oneDNN's with its bias and activation) as oneDNN's int8 NHWC convolution; an
        NCHW conv's input and output transposed around it, a clip (ReLU6) applied after it."""
        nhwc = OPS[term.op].layout_of(term.attrs) == "NHWC"
        x = term.args[0] if nhwc else Term("transpose", (term.args[0],), ((0, 2, 3, 1),))
        library = term.op == "dnnl_conv2d"
        bias = term.args[2] if library else self._leaf(choice.weights[1])
        act = term.attrs[4] if library else False
        shape = term.ty[0] if nhwc else tuple(term.ty[0][i] for i in (0, 2, 3, 1))
        out = Term("opaque", (x, self._leaf(choice.weights[0]), bias), (choice.opaque[act is True],),
                   (shape, "float32"))
        out = Term("clip", (out,), act) if isinstance(act, tuple) else out
        return out if nhwc else Term("transpose", (out,), ((0, 3, 1, 2),))

    def _replace(self, term: Term, choice: Choice) -> Term:
        leaves = [self._leaf(i) for i in choice.weights]
        if term.op == "take":  # an embedding gather
            return Term("opaque", (*leaves, term.args[1]), choice.opaque, term.ty)
        x = term.args[0]
        if term.op in CONVS and choice.name == "int8":
            return self._int8_conv(term, choice)
        if term.op in CONVS:  # the two factors as NCHW convs; an NHWC library conv's input and output transposed
            nhwc = OPS[term.op].layout_of(term.attrs) == "NHWC"
            x = Term("transpose", (x,), ((0, 3, 1, 2),)) if nhwc else x
            strides, padding, dilation = term.attrs[:3]
            mid = Term("conv2d", (x, leaves[0]), (strides, padding, dilation, 1))
            out = Term("conv2d", (mid, leaves[1]), ((1,) * len(strides), (0,) * len(padding), (1,) * len(dilation), 1))
            if term.op == "dnnl_conv2d":
                bias = term.args[2]
                out = Term("add", (out, Term("reshape", (bias,), ((1, out.ty[0][1], 1, 1),))))
                out = activation(out, term.attrs[4])
            return Term("transpose", (out,), ((0, 2, 3, 1),)) if nhwc else out
        if len(choice.opaque) == 2:  # rank+int8: two int8 matmuls through the rank-r middle
            rank = self.constants[choice.weights[0]].shape[1]
            mid = Term("opaque", (x, leaves[0]), choice.opaque[:1], ((*x.ty[0][:-1], rank), "float32"))
            out = Term("opaque", (mid, leaves[1]), choice.opaque[1:], term.ty)
        elif choice.opaque:
            out = Term("opaque", (x, leaves[0]), choice.opaque, term.ty)
        else:
            op = "dnnl_matmul" if self.library else "matmul"  # the factors as oneDNN calls when it is loaded
            out = Term(op, (Term(op, (x, leaves[0])), leaves[1]))
        if term.op in ("linear", "dnnl_linear"):
            out = Term("add", (out, term.args[2]))
        return Term("relu", (out,)) if term.op == "dnnl_linear" and term.attrs[0] else out


def activation(x: Term, act: bool | tuple[float, float]) -> Term:
    """``x`` followed by a library conv's fused activation: none, ReLU (True) or clip to ``(low, high)``."""
    if isinstance(act, tuple):
        return Term("clip", (x,), act)
    return Term("relu", (x,)) if act else x


def to_term_capture(space: Space, genome: Genome, terms: dict[int, Term]) -> Term:
    """Decode ``genome`` recording every class's term in ``terms``."""
    def record(c: int, term: Term) -> Term:
        terms[c] = term
        return term

    return to_term(space, genome, record)
