"""GEMM-class ops: matmul, linear (matmul + bias) and convolutions (1-D NCW and 2-D NCHW).

A convolution over ``nd`` spatial axes has attributes ``(strides, padding, dilation, groups)``:
``strides`` and ``dilation`` one value per spatial axis, ``padding`` the befores then the afters
(conv2d: top, left, bottom, right; conv1d: left, right), as Relax writes them.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from tsir.ir.ops.relax_args import are_terms, ints
from tsir.ir.registry import Category, OpSpec, TType, broadcast_shapes, numel, register
from tsir.ir.term import Term

GEMM = Category.GEMM
# TVM's GEMM-class kernels as the analytic road builds them: untuned, with tsir's default schedule (only the
# measured road tunes, and a calibration fitted on its kernels replaces these). Matmul/linear: 10-40 % of the
# fp32 peak on the zoo's shapes (`python -m bench.ops` on a 2-core Zen 4; MetaSchedule-tuned code reaches
# ~35 %). Convolutions: 1-15 % (the schedule vectorizes the innermost spatial loop, a few lanes on small
# images: a 1x1 conv 192->32 on 2x2 ran at 5 GFLOP/s of 208), 4 % as fitted by the calibration there.
TVM_GEMM_EFFICIENCY = 0.15
TVM_CONV_EFFICIENCY = 0.05


# ---- matmul and linear ---------------------------------------------------------------------------
def infer_matmul(ins: tuple[TType, ...], attrs: tuple) -> TType:
    (a, dtype), (b, _) = ins[0], ins[1]
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise ValueError(f"matmul: shapes {a} and {b} do not contract")
    return broadcast_shapes(a[:-2], b[:-2]) + (a[-2], b[-1]), dtype


def matmul_flops(ins: tuple[TType, ...], out: TType, attrs: tuple) -> float:
    return 2.0 * numel(out[0]) * ins[0][0][-1]


def infer_linear(ins: tuple[TType, ...], attrs: tuple) -> TType:
    out = infer_matmul(ins[:2], ())
    bias = ins[2][0]
    if broadcast_shapes(out[0], bias) != out[0] or numel(bias) != out[0][-1]:
        raise ValueError(f"linear: bias {bias} must broadcast along the last axis of {out[0]}")
    return out


def _convert_matmul(call, args: list, ty) -> Term | None:
    a, b = args
    if not are_terms(a, b) or len(a.ty[0]) < 2 or len(b.ty[0]) < 2 or a.ty[1] != b.ty[1]:
        return None
    if call.attrs.out_dtype is not None and str(call.attrs.out_dtype) not in ("", "void", a.ty[1]):  # None: TVMScript
        return None
    return Term("matmul", (a, b))


def _make_matmul(d, b, x: Term, pool: list[Term]) -> Term | None:
    shape = x.ty[0]
    if len(shape) < 2:
        return None
    others = [t for t in pool if len(t.ty[0]) == 2 and t.ty[0][0] == shape[-1]]
    if others and d.flag():
        return Term("matmul", (x, d.choice(others)))
    return Term("matmul", (x, b.weight((shape[-1], d.integer(1, 5)), fan_in=shape[-1])))


def _make_linear(d, b, x: Term, pool: list[Term]) -> Term | None:
    shape = x.ty[0]
    if len(shape) < 2:
        return None
    n = d.integer(1, 5)
    return Term("linear", (x, b.weight((shape[-1], n), fan_in=shape[-1]), b.weight((n,))))


register(OpSpec(
    "matmul", 2, (), GEMM, infer_matmul, lambda xs, a: np.matmul(xs[0], xs[1]), matmul_flops,
    convert={"relax.matmul": _convert_matmul}, emit=lambda a, at, ty: relax.op.matmul(a[0], a[1]),
    make=_make_matmul, weight="KN", efficiency=TVM_GEMM_EFFICIENCY, kernel_class="matmul"))
register(OpSpec(
    "linear", 3, (), GEMM, infer_linear, lambda xs, a: np.matmul(xs[0], xs[1]) + xs[2], matmul_flops,
    emit=lambda a, at, ty: relax.op.add(relax.op.matmul(a[0], a[1]), a[2]), make=_make_linear, weight="KN",
    efficiency=TVM_GEMM_EFFICIENCY, kernel_class="matmul",  # TVM fuses it into a "matmul" kernel
    missing={"convert": "Relax has no linear op: the fusion family forms it from matmul + bias"}))


# ---- convolutions --------------------------------------------------------------------------------
def conv_infer(name: str, nd: int):
    """The type rule of an ``nd``-D convolution (channels first)."""

    def infer(ins: tuple[TType, ...], attrs: tuple) -> TType:
        (x, dtype), (w, _) = ins[0], ins[1]
        strides, padding, dilation, groups = attrs[:4]
        if len(x) != nd + 2 or len(w) != nd + 2 or x[1] != w[1] * groups or w[0] % groups:
            raise ValueError(f"{name}: input {x} and weight {w} do not match with groups={groups}")
        spatial = []
        for i in range(nd):
            span = dilation[i] * (w[2 + i] - 1) + 1
            spatial.append((x[2 + i] + padding[i] + padding[i + nd] - span) // strides[i] + 1)
        if min(spatial) <= 0:
            raise ValueError(f"{name}: kernel {w[2:]} (dilation {dilation}) does not fit input {x[2:]}")
        return (x[0], w[0], *spatial), dtype

    return infer


def conv_evaluate(nd: int):
    """The numpy semantics of an ``nd``-D convolution (channels first), one einsum per group."""
    spatial, kernel = "hwd"[:nd], "ijk"[:nd]
    subscripts = f"nc{spatial}{kernel},oc{kernel}->no{spatial}"

    def evaluate(xs: list[np.ndarray], attrs: tuple) -> np.ndarray:
        x, w = xs
        strides, padding, dilation, groups = attrs[:4]
        x = np.pad(x, ((0, 0), (0, 0), *((padding[i], padding[i + nd]) for i in range(nd))))
        out_c, in_per_group = w.shape[:2]
        span = tuple((w.shape[2 + i] - 1) * dilation[i] + 1 for i in range(nd))
        windows = np.lib.stride_tricks.sliding_window_view(x, span, axis=tuple(range(2, 2 + nd)))
        windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
                           *(slice(None, None, d) for d in dilation))]
        per_group = out_c // groups
        outs = []
        for g in range(groups):
            xg = windows[:, g * in_per_group:(g + 1) * in_per_group]
            wg = w[g * per_group:(g + 1) * per_group]
            outs.append(np.einsum(subscripts, xg, wg, optimize=True))
        return np.concatenate(outs, axis=1).astype(xs[0].dtype)

    return evaluate


def conv_flops(ins: tuple[TType, ...], out: TType, attrs: tuple) -> float:
    return 2.0 * numel(out[0]) * numel(ins[1][0][1:])



def _conv_converter(op: str, layouts: tuple[str, str, str]):
    def convert(call, args: list, ty) -> Term | None:
        at = call.attrs
        if (at.data_layout, at.kernel_layout, at.out_layout) != layouts or not are_terms(args[0], args[1]):
            return None
        if str(at.out_dtype) not in ("", "void", "None", args[0].ty[1]):  # "None": TVM's ONNX frontend
            return None
        return Term(op, (args[0], args[1]), (ints(at.strides), ints(at.padding), ints(at.dilation), int(at.groups)))

    return convert


def _conv_maker(op: str, nd: int):
    def make(d, b, x: Term, pool: list[Term]) -> Term | None:
        if nd == 1 and len(x.ty[0]) == 4:  # read an image as a sequence: (N, C, H*W)
            n, c, h, w = x.ty[0]
            x = Term("reshape", (x,), ((n, c, h * w),))
        if len(x.ty[0]) != nd + 2:
            return None
        c = x.ty[0][1]
        groups = d.choice([g for g in (1, 2) if c % g == 0])
        k = d.choice([1, 3])
        cout = groups * d.integer(1, 3)
        attrs = ((d.integer(1, 2),) * nd, (d.integer(0, 1),) * (2 * nd), (1,) * nd, groups)
        return Term(op, (x, b.weight((cout, c // groups, *(k,) * nd), fan_in=c // groups * k**nd)), attrs)

    return make


_CONV_ATTRS = ("strides", "padding", "dilation", "groups")
for _name, _nd, _layout, _weight in (("conv2d", 2, "NCHW", "OIHW"), ("conv1d", 1, "NCW", "OIW")):
    register(OpSpec(
        _name, 2, _CONV_ATTRS, GEMM, conv_infer(_name, _nd), conv_evaluate(_nd), conv_flops,
        convert={f"relax.nn.{_name}": _conv_converter(_name, (_layout, _weight, _layout))},
        emit=lambda a, at, ty, n=_name: getattr(relax.op.nn, n)(a[0], a[1], strides=at[0], padding=at[1],
                                                                 dilation=at[2], groups=at[3]),
        make=_conv_maker(_name, _nd), layout=_layout, weight=_weight, efficiency=TVM_CONV_EFFICIENCY,
        kernel_class=_name))
