"""The fused kernels of a Relax program.

``fuse`` runs the preparation of MetaSchedule's ``compile_relax`` (legalize, annotate, fold, FuseOps,
FuseTIR), so the kernels found here are the ones the final build compiles and the tuning database
is keyed by. ``kernels`` lists each distinct PrimFunc with a structural hash and how often ``main``
calls it, and each distinct vendor-library call (``R.call_dps_packed("tsir.dnnl.*", ...)``) as a
``LibraryCall`` that is timed alone the same way. Both carry the features the analytic model is
calibrated with: an op class, FLOPs and bytes moved.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import relax

from tsir.backends import fast_math
from tsir.backends.targets import cpu_schedules
from tsir.ir.ops import OPS
from tsir.ir.registry import LIBRARY_PREFIX, library_class


@dataclass(frozen=True)
class Kernel:
    name: str
    func: tvm.tirx.PrimFunc
    structural_hash: str
    calls: int

    def module(self) -> tvm.IRModule:
        """The kernel alone, as the ``main`` of its own module (how tuning tasks see it)."""
        return tvm.IRModule({"main": self.func.with_attr("global_symbol", "main")})

    @property
    def op_class(self) -> str:
        return op_class(self.name)

    def features(self) -> dict:
        """``{"op_class", "flops", "bytes"}``: what the calibration of the analytic model fits on."""
        try:
            from tvm.s_tir.analysis import estimate_tir_flops

            flops = float(estimate_tir_flops(self.module()))
        except Exception:  # an op the estimator does not know: its FLOPs stay unknown
            flops = 0.0
        moved = 0.0
        for param in self.func.params:
            ty = param.ty
            if hasattr(ty, "shape") and hasattr(ty, "dtype"):
                moved += _numel(ty.shape) * tvm.runtime.DataType(str(ty.dtype)).bits / 8
        return {"op_class": self.op_class, "flops": flops, "bytes": float(moved)}


@dataclass(frozen=True)
class LibraryCall:
    """One distinct vendor-library call: the packed function, its argument types and its integer arguments."""

    name: str  # e.g. "tsir.dnnl.linear"
    args: tuple  # per argument: ("tensor", shape, dtype) or ("int", value)
    out: tuple  # (shape, dtype)
    calls: int

    @property
    def structural_hash(self) -> str:
        return hashlib.sha256(repr((self.name, self.args, self.out)).encode()).hexdigest()[:16]

    @property
    def op_class(self) -> str:
        return library_class(self.name)

    def module(self) -> tvm.IRModule:
        """A Relax module whose ``main`` makes this call alone (its tensors are parameters)."""
        params = [relax.Var(f"a{i}", relax.TensorType(list(a[1]), a[2])) for i, a in enumerate(self.args)
                  if a[0] == "tensor"]
        it = iter(params)
        args = [next(it) if a[0] == "tensor" else relax.prim_value(int(a[1]), "int64") for a in self.args]
        bb = relax.BlockBuilder()
        with bb.function("main", params):
            with bb.dataflow():
                out = bb.emit(relax.call_dps_packed(self.name, relax.Tuple(args),
                                                    relax.TensorType(list(self.out[0]), self.out[1])))
                bb.emit_output(out)
            bb.emit_func_output(out)
        return bb.get()

    def features(self) -> dict:
        tensors = [a for a in self.args if a[0] == "tensor"]
        out_numel = math.prod(self.out[0])
        if self.op_class.startswith("dnnl_conv"):  # weight [O, I/groups, kh, kw] (NCHW or NHWC activations)
            flops = 2.0 * out_numel * math.prod(tensors[1][1][1:])
        else:  # matmul / linear: the reduced dimension is the last one of the first input
            flops = 2.0 * out_numel * tensors[0][1][-1]
        moved = sum(math.prod(a[1]) * 4 for a in tensors) + out_numel * 4
        return {"op_class": self.op_class, "flops": float(flops), "bytes": float(moved)}


# The kernel classes of TVM's GEMM-class kernels (``OpSpec.kernel_class``: matmul, conv1d, conv2d)
KERNEL_CLASSES = tuple(sorted({spec.kernel_class for spec in OPS.values() if spec.kernel_class}))


def op_class(name: str) -> str:
    """The class of a fused kernel from its name: one of ``KERNEL_CLASSES`` (a ``dense`` kernel is a matmul)
    or ``other``."""
    return next((c for c in KERNEL_CLASSES if c in name), "matmul" if "dense" in name else "other")


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


def fuse(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """``mod`` legalized and fused as the build does it (CPU targets: on the fast math forms, see ``fast_math``)."""
    if cpu_schedules(target):
        mod = fast_math.apply(mod)
    try:
        dispatch = relax.pipeline.library_dispatch_passes(target)
    except (ValueError, AttributeError):
        dispatch = []
    passes = [*dispatch, relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
              relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    with target, tvm.transform.PassContext(opt_level=3):
        return tvm.transform.Sequential(passes)(mod)


def kernels(fused: tvm.IRModule) -> list[Kernel]:
    """Distinct PrimFuncs of a fused module, with the number of times ``main`` calls each."""
    return [k for k in all_kernels(fused) if isinstance(k, Kernel)]


def all_kernels(fused: tvm.IRModule) -> list[Kernel | LibraryCall]:
    """Distinct PrimFuncs and vendor-library calls of a fused module, with their call counts."""
    calls: Counter[str] = Counter()
    library: Counter[tuple] = Counter()

    def visit(expr) -> None:
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return
        if expr.op.name == "relax.call_tir":
            calls[expr.args[0].name_hint] += 1
        elif (expr.op.name == "relax.call_dps_packed" and isinstance(expr.args[0], relax.ExternFunc)
              and str(expr.args[0].global_symbol).startswith(LIBRARY_PREFIX)):
            out = expr.ty
            library[(str(expr.args[0].global_symbol), tuple(_arg(a) for a in expr.args[1].fields),
                     (tuple(int(s) for s in out.shape), str(out.dtype)))] += 1

    relax.analysis.post_order_visit(fused["main"], visit)
    out: list[Kernel | LibraryCall] = []
    for gv, func in fused.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc) and calls[gv.name_hint]:
            bare = func.without_attr("global_symbol")
            out.append(Kernel(gv.name_hint, func, f"{tvm_ffi.structural_hash(bare):x}", calls[gv.name_hint]))
    out.extend(LibraryCall(name, args, ty, n) for (name, args, ty), n in library.items())
    return out


def _arg(expr) -> tuple:
    if isinstance(expr, tvm.tirx.IntImm) or not hasattr(expr.ty, "shape"):  # a PrimValue argument
        return ("int", int(expr.value))
    info = expr.ty
    return ("tensor", tuple(int(s) for s in info.shape), str(info.dtype))
