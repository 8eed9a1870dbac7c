"""Implementation choice: a GEMM-class op or a layer norm computed by oneDNN instead of TVM-generated code.

Each rule unions a TVM op with the same value computed by a library op (``dnnl_*`` in the op table);
the search picks per op. Guards keep the library to what it supports: fp32, dense NCHW/OIHW
convolutions, ``[K, N]`` linear weights, a bias with one value per output channel. A 1-D convolution
goes to oneDNN's 2-D convolution over an image of height 1 (the same primitive; the reshapes are views).
ReLU (and for convs a clip such as ReLU6) is fused into the library call as a post-op. A oneDNN conv
also runs in the NHWC layout (no reorders inside the call) between two transposes; the layout family
moves those transposes until consecutive convs' pairs cancel. An NHWC conv whose output is added to a tensor of
its own type (a residual) takes the sum as a post-op too, and then the ReLU after it.
"""

from egglog import PyObject, rule, ruleset, union, var

from tsir._compat.egglog import declared_rules
from tsir.ir.lang import (
    Tensor,
    add,
    broadcast_to,
    clip,
    computed,
    conv1d,
    conv2d,
    dnnl_conv2d,
    dnnl_conv2d_add,
    dnnl_layer_norm,
    dnnl_linear,
    dnnl_matmul,
    eq_,
    holds,
    layer_norm,
    linear,
    matmul,
    relu,
    reshape,
    scalar,
    transpose,
    ty,
)
from tsir.ir.ops import TO_NCHW, TO_NHWC
from tsir.rewrites._common import CONTRACTION, shape

x, w, b, r, y = (var(n, Tensor) for n in "xwbry")
tx, tw, tb, tr, ty_ = (var(n, PyObject) for n in ("tx", "tw", "tb", "tr", "ty"))
strides, padding, dilation, groups, act, layout = (
    var(n, PyObject) for n in ("strides", "padding", "dilation", "groups", "act", "layout"))
_NCHW, _NHWC, _ONE, _ZERO = PyObject("NCHW"), PyObject("NHWC"), PyObject(1), PyObject(0)
low, high = var("low", PyObject), var("high", PyObject)
axis, eps = var("axis", PyObject), var("eps", PyObject)

MAX_RANK = 6  # oneDNN's matmul takes at most 6 dimensions


def _fp32(*types: tuple) -> bool:
    return all(t[1] == "float32" for t in types)


def _matmul_ok(tx: tuple, tw: tuple) -> bool:
    return _fp32(tx, tw) and max(len(tx[0]), len(tw[0])) <= MAX_RANK


def _linear_ok(tx: tuple, tw: tuple, tb: tuple) -> bool:
    return _fp32(tx, tw, tb) and len(tw[0]) == 2


def _conv_bias_ok(tw: tuple, tb: tuple, tx: tuple) -> bool:
    """``b`` adds one value per output channel of a convolution with weight type ``tw`` on a channels-first
    ``tx``: ``(1, O, 1, ...)`` or ``(O, 1, ...)`` with one 1 per spatial axis."""
    channels, ones = tw[0][0], (1,) * (len(tw[0]) - 2)
    return _fp32(tx, tw, tb) and tuple(tb[0]) in ((1, channels, *ones), (channels, *ones))


def _same_type(a: tuple, b: tuple) -> bool:
    """A residual of the conv's own shape and dtype (no broadcast: oneDNN adds it element for element)."""
    return tuple(a[0]) == tuple(b[0]) and a[1] == b[1] == "float32"


def _zero_bias(tw: tuple) -> tuple:
    """The shape of a per-output-channel bias of a 2-D convolution (weight type ``tw``): ``(O, 1, 1)``."""
    return (tw[0][0], 1, 1)


def _zeros(tw):
    """A zero bias for a convolution that has none (a constant, folded before run time)."""
    return broadcast_to(scalar(PyObject(0.0)), computed(_zero_bias, tw))


def _image(tx: tuple) -> tuple:
    """A sequence ``(N, C, L)`` as an image of height 1: ``(N, C, 1, L)``."""
    n, c, length = tx[0]
    return (n, c, 1, length)


def _as_2d(values: tuple, pad: int) -> tuple:
    """1-D strides/dilation ``(s,)`` as 2-D ``(pad, s)``; 1-D padding ``(l, r)`` as 2-D ``(pad, l, pad, r)``."""
    return (pad, *values) if len(values) == 1 else (pad, values[0], pad, values[1])


def _pair(low: float, high: float) -> tuple[float, float]:
    return (float(low), float(high))


_NHWC_CONV = dnnl_conv2d(x, w, b, strides, padding, dilation, groups, PyObject(False), _NHWC)  # no activation yet

RULES = [
    # matmul(a, b) -> dnnl_matmul(a, b)   fp32, rank <= 6
    rule(eq_(y, matmul(x, w)), eq_(ty(x), tx), eq_(ty(w), tw), holds(_matmul_ok, tx, tw), name="matmul_to_dnnl").then(
        union(y).with_(dnnl_matmul(x, w))),
    # linear(x, w, b) -> dnnl_linear(x, w, b, relu=False)   fp32, w is [K, N]
    rule(eq_(y, linear(x, w, b)), eq_(ty(x), tx), eq_(ty(w), tw), eq_(ty(b), tb), holds(_linear_ok, tx, tw, tb),
         name="linear_to_dnnl").then(
        union(y).with_(dnnl_linear(x, w, b, PyObject(False)))),
    # relu(dnnl_linear(x, w, b, False)) -> dnnl_linear(x, w, b, True)   ReLU as a oneDNN post-op
    rule(eq_(y, relu(dnnl_linear(x, w, b, PyObject(False)))), name="dnnl_linear_relu").then(
        union(y).with_(dnnl_linear(x, w, b, PyObject(True)))),
    # conv2d(x, w) + b -> dnnl_conv2d(x, w, b, act=False, NCHW)   fp32, b per output channel
    rule(eq_(y, add(conv2d(x, w, strides, padding, dilation, groups), b)), eq_(ty(x), tx), eq_(ty(w), tw),
         eq_(ty(b), tb), holds(_conv_bias_ok, tw, tb, tx), name="conv2d_bias_to_dnnl").then(
        union(y).with_(dnnl_conv2d(x, w, b, strides, padding, dilation, groups, PyObject(False), _NCHW))),
    # conv1d(x, w) + b -> reshape(dnnl_conv2d(x as (N, C, 1, L), w as (O, I, 1, K), b, ...), (N, O, L'))
    #   fp32, b per output channel: oneDNN's 2-D convolution over an image of height 1
    rule(eq_(y, add(conv1d(x, w, strides, padding, dilation, groups), b)), eq_(ty(x), tx), eq_(ty(w), tw),
         eq_(ty(b), tb), eq_(ty(y), ty_), holds(_conv_bias_ok, tw, tb, tx), name="conv1d_bias_to_dnnl").then(
        union(y).with_(reshape(dnnl_conv2d(reshape(x, computed(_image, tx)), reshape(w, computed(_image, tw)), b,
                                           computed(_as_2d, strides, _ONE), computed(_as_2d, padding, _ZERO),
                                           computed(_as_2d, dilation, _ONE), groups, PyObject(False), _NCHW),
                               computed(shape, ty_)))),
    # conv2d(x, w) -> dnnl_conv2d(x, w, 0, ...)   a convolution without bias (exporters drop a zero bias)
    rule(eq_(y, conv2d(x, w, strides, padding, dilation, groups)), eq_(ty(x), tx), eq_(ty(w), tw),
         holds(_fp32, tx, tw), name="conv2d_to_dnnl").then(
        union(y).with_(dnnl_conv2d(x, w, _zeros(tw), strides, padding, dilation, groups, PyObject(False), _NCHW))),
    # conv1d(x, w) -> reshape(dnnl_conv2d(x as (N, C, 1, L), w as (O, I, 1, K), 0, ...), (N, O, L'))
    rule(eq_(y, conv1d(x, w, strides, padding, dilation, groups)), eq_(ty(x), tx), eq_(ty(w), tw), eq_(ty(y), ty_),
         holds(_fp32, tx, tw), name="conv1d_to_dnnl").then(
        union(y).with_(reshape(dnnl_conv2d(reshape(x, computed(_image, tx)), reshape(w, computed(_image, tw)),
                                           _zeros(tw), computed(_as_2d, strides, _ONE),
                                           computed(_as_2d, padding, _ZERO), computed(_as_2d, dilation, _ONE),
                                           groups, PyObject(False), _NCHW),
                               computed(shape, ty_)))),
    # relu(dnnl_conv2d(x, w, b, ..., False, layout)) -> dnnl_conv2d(x, w, b, ..., True, layout)
    rule(eq_(y, relu(dnnl_conv2d(x, w, b, strides, padding, dilation, groups, PyObject(False), layout))),
         name="dnnl_conv2d_relu").then(
        union(y).with_(dnnl_conv2d(x, w, b, strides, padding, dilation, groups, PyObject(True), layout))),
    # clip(dnnl_conv2d(x, w, b, ..., False, layout), low, high) -> dnnl_conv2d(x, w, b, ..., (low, high), layout)
    rule(eq_(y, clip(dnnl_conv2d(x, w, b, strides, padding, dilation, groups, PyObject(False), layout), low, high)),
         name="dnnl_conv2d_clip").then(
        union(y).with_(dnnl_conv2d(x, w, b, strides, padding, dilation, groups, computed(_pair, low, high),
                                   layout))),
    # dnnl_conv2d(x, w, b, ..., False, NHWC) + r -> dnnl_conv2d_add(x, w, b, r, ..., False, NHWC)
    #   r of the output's type: the residual added by a oneDNN binary post-op; and the same for r + conv (the
    #   library family also runs without the algebra's add_commute)
    *(rule(eq_(y, add(*operands)), eq_(ty(r), tr), eq_(ty(y), ty_), holds(_same_type, tr, ty_), name=name).then(
        union(y).with_(dnnl_conv2d_add(x, w, b, r, strides, padding, dilation, groups, PyObject(False), _NHWC)))
      for name, operands in (("dnnl_conv2d_residual", (_NHWC_CONV, r)),
                             ("dnnl_conv2d_residual_first", (r, _NHWC_CONV)))),
    # relu(dnnl_conv2d_add(..., False, NHWC)) -> dnnl_conv2d_add(..., True, NHWC)   after the sum, as in a ResNet
    rule(eq_(y, relu(dnnl_conv2d_add(x, w, b, r, strides, padding, dilation, groups, PyObject(False), layout))),
         name="dnnl_conv2d_residual_relu").then(
        union(y).with_(dnnl_conv2d_add(x, w, b, r, strides, padding, dilation, groups, PyObject(True), layout))),
    # layer_norm(x, g, b) -> dnnl_layer_norm(x, g, b)   fp32 (over the last axis, as the op always is)
    rule(eq_(y, layer_norm(x, w, b, axis, eps)), eq_(ty(x), tx), holds(_fp32, tx), name="layer_norm_to_dnnl").then(
        union(y).with_(dnnl_layer_norm(x, w, b, axis, eps))),
    # dnnl_conv2d(x, ..., NCHW) -> transpose(dnnl_conv2d(transpose(x, NHWC), ..., NHWC), NCHW)
    rule(eq_(y, dnnl_conv2d(x, w, b, strides, padding, dilation, groups, act, _NCHW)),
         name="dnnl_conv2d_to_nhwc").then(
        union(y).with_(transpose(dnnl_conv2d(transpose(x, PyObject(TO_NHWC)), w, b, strides, padding, dilation,
                                             groups, act, PyObject("NHWC")), PyObject(TO_NCHW)))),
]
rules = ruleset(*RULES, name="library")

# oneDNN sums in its own blocked order: the same contraction, reassociated (see rewrites._common).
TOLERANCE = {r.name: CONTRACTION for r in declared_rules(rules)}
