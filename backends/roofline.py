"""Analytic cost: a roofline model per target, for instant ranking of candidate programs.

A kernel's time is ``max(flops / (peak * efficiency[op]), bytes / (bandwidth * bandwidth_efficiency))
+ dispatch`` (and for a library call its own overhead and layout reorders), plus a small share of the lesser
of the two terms: kernels of one shape that are bound by memory and dispatch alike then rank by their
compute rate instead of tying, which would leave the choice to the order of the e-graph. Ops that are views (reshape),
leaves and tuples cost nothing; a node whose inputs are all constant costs nothing at run time, since it
is folded when the program is lowered. ``Roofline.work`` gives a kernel's parts, so that ops fused into
one kernel (``tsir.search.fusion``) are priced as one: their compute summed, the bytes crossing the
group's boundary moved once, one dispatch.

The efficiencies start from the fixed table ``COMPUTE_EFFICIENCY``; ``Roofline.calibrated`` replaces
them (and the bandwidth efficiency and dispatch overhead) with values fitted on kernels measured on the
target (``tsir.search.calibration``), so the choice between a library kernel and TVM's own code follows
measurements when there are any.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tsir.ir.ops import OPS, numel

_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1}


@dataclass(frozen=True)
class Work:
    """One kernel's work: compute time at its op's rate, bytes read and written, and its time outside both
    (layout reorders in and out, a library call's own overhead)."""

    compute_s: float
    moved_bytes: float
    fixed_s: float


@dataclass(frozen=True)
class Roofline:
    """Peak arithmetic rate, memory bandwidth and per-kernel dispatch overhead of one target."""

    name: str
    peak_flops: float  # FLOP/s
    bandwidth: float  # bytes/s
    dispatch_s: float  # seconds per kernel launch
    library_call_s: float = 0.0  # a library call's overhead on top of ``dispatch_s`` (primitive lookup, descriptors)
    efficiency: tuple[tuple[str, float], ...] = ()  # (cost class, fraction of peak) replacing COMPUTE_EFFICIENCY's
    bandwidth_efficiency: float = 1.0  # fraction of ``bandwidth`` memory-bound kernels reach

    def kernel_s(self, op: str, in_types: list, out_type, attrs: tuple = ()) -> float:
        """Run time of one kernel of ``op`` on its own."""
        work = self.work(op, in_types, out_type, attrs)
        return 0.0 if work is None else self.time_s(work.compute_s, work.moved_bytes, work.fixed_s)

    def work(self, op: str, in_types: list, out_type, attrs: tuple = ()) -> Work | None:
        """What one kernel of ``op`` does (None: the op is no kernel)."""
        spec = OPS.get(op)
        if spec is None or not spec.kernel:
            return None
        flops = spec.flops(tuple(in_types), out_type, ())
        moved = sum(type_bytes(t) for t in (*in_types, out_type))
        rate = self.peak_flops * self.compute_efficiency(spec.cost_class(attrs))
        # activations reordered into the kernel's blocked layout and back, before and after it: read + write each
        reorders = spec.layout_of(attrs) in spec.reorders
        reordered = 2 * (type_bytes(in_types[0]) + type_bytes(out_type)) if reorders else 0.0
        call = self.library_call_s if spec.library else 0.0
        return Work(flops / rate, moved, reordered / (self.bandwidth * self.bandwidth_efficiency) + call)

    def time_s(self, compute_s: float, moved_bytes: float, fixed_s: float = 0.0) -> float:
        """Run time of a kernel that computes for ``compute_s``, reads and writes ``moved_bytes`` and spends
        ``fixed_s`` outside both."""
        memory = moved_bytes / (self.bandwidth * self.bandwidth_efficiency)
        bound = max(compute_s, memory) + OTHER_BOUND_SHARE * min(compute_s, memory)
        return bound + fixed_s + self.dispatch_s

    def compute_efficiency(self, cost_class: str) -> float:
        """The fraction of peak a kernel of ``cost_class`` (``OpSpec.cost_class``) reaches."""
        return dict(self.efficiency).get(cost_class, COMPUTE_EFFICIENCY.get(cost_class, 1.0))

    def calibrated(self, efficiency: dict[str, float], bandwidth_efficiency: float, dispatch_s: float) -> Roofline:
        """This roofline with fitted efficiencies per op (others keep the table) and a fitted overhead."""
        return replace(self, efficiency=tuple(sorted(efficiency.items())), bandwidth_efficiency=bandwidth_efficiency,
                       dispatch_s=dispatch_s)


OTHER_BOUND_SHARE = 0.01  # of the lesser of compute and memory time, paid on top of the greater

# Fraction of the GEMM peak a kernel of each GEMM-class op reaches on x86 (`python -m bench.ops` measures
# them per op): TVM's code when tuned by MetaSchedule (~177 of ~500 GFLOP/s on 64x512x2048; untuned it is
# ~1 GFLOP/s) versus oneDNN (~430-480 for brgemm matmul, less for small shapes and NCHW conv).
# Ops not listed are assumed to run at the roofline. A calibration fitted on measured kernels overrides these.
# The table comes from the op registry (``OpSpec.efficiency``), keyed by cost class (a library op: per layout).
COMPUTE_EFFICIENCY = {key: spec.efficiency for spec in OPS.values() if spec.efficiency is not None
                      for key in spec.cost_classes()}


def type_bytes(ty) -> float:
    """Bytes of a type (a tuple type counts all its fields)."""
    if ty is None:
        return 0.0
    if len(ty) == 2 and isinstance(ty[1], str):
        return float(numel(ty[0]) * _BYTES.get(ty[1], 4))
    return sum(type_bytes(t) for t in ty)


# 2 cores of AMD Zen 5 (AVX-512): ~500 GFLOP/s fp32 GEMM peak measured with ONNX Runtime on this machine
# class (shared/DESIGN.md); ~40 GB/s sustained DRAM bandwidth for two cores; ~2 µs per Relax VM kernel call, and
# ~1 µs more for a oneDNN call (``python -m bench.ops`` on a 2-core Zen 4: a 1x256 @ 256x10 matmul took 2.0 µs
# in oneDNN, 0.9 µs in TVM's code; oneDNN wins from a few hundred kFLOP on).
X86_HOST = Roofline("x86", peak_flops=5.0e11, bandwidth=4.0e10, dispatch_s=2.0e-6, library_call_s=1.0e-6)
