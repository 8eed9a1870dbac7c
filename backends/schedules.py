"""Default CPU schedules for kernels that have no tuning record (x86 and ARM, any ``llvm`` target).

TVM's CPU pipeline compiles an unscheduled kernel as written: one thread, scalar loops. ``pipeline``
is TVM's own CPU pipeline with two stages added after FuseOps/FuseTIR: the tuning records (when a
database is given), then ``ApplyDefaultSchedule`` with dlight's CPU ``Reduction`` rule where it fits (softmax, layer
norm, mean: see ``Normalization``) and then ``Fallback`` below for every other kernel:

- inline what can be inlined (padding, elementwise producers and consumers);
- per remaining block: the spatial loops outside, the reduction loops inside; the innermost spatial
  loop split by the vector width (16 fp32 lanes with AVX-512) and vectorized innermost, below the
  reduction loops (conv, depthwise conv, pooling and matmul accumulate whole vectors);
- the other spatial loops fused and run in parallel across the cores when the block is big enough
  to pay for waking the thread pool.

Schedule primitives check their legality (the fuzzer caught two that are unsound into reductions, now unused); a kernel
a rule cannot schedule keeps TVM's default code. Kernels already scheduled (``tirx.is_scheduled``, e.g.
from a tuning record) are left alone.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width

from tsir.backends import fast_math

PARALLEL_MIN_WORK = 32768  # loop iterations below which one thread is faster than waking the pool


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


SMALL_BLOCK = 800  # characters of TVMScript: a block this short may be copied into a consumer several times


def _copies_little(sch: s_tir.Schedule, block_rv) -> bool:
    """Inlining copies a block's expression once per load of its output in each consumer; that is fine for a
    short expression or a single load, but nested fast-math polynomials (each loads its input ~10 times)
    would grow exponentially."""
    block = sch.get(block_rv)
    if len(block.script()) <= SMALL_BLOCK:
        return True
    name = block.writes[0].source.name
    # a consumer's script names the buffer once in T.reads and once per load
    return all(sch.get(c).script().count(f"{name}[") <= 2 for c in sch.get_consumers(block_rv))


def _inline(sch: s_tir.Schedule, blocks: list) -> list:
    """Inline producers into their consumers while any can be; returns the blocks left. Only ``compute_inline``:
    TVM's ``reverse_compute_inline`` of an epilogue into a reduction puts it inside the accumulation (wrong
    values: found by the fuzzer)."""
    while True:
        for i, block in enumerate(blocks):
            if not _copies_little(sch, block.block_rv):
                continue
            try:
                sch.compute_inline(block.block_rv)
            except Exception:  # not inlinable (a reduction, an output): stays
                continue
            blocks = blocks[:i] + blocks[i + 1:]
            break
        else:
            return blocks


def _lanes(target: Target, bits: int) -> int:
    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 2)


class Fallback(CPUScheduleRule):
    """Inline, then per block: parallel fused outer spatial loops, reductions inside, vectorized last spatial loop.

    An elementwise epilogue after a reduction (bias add, ReLU) stays its own loop nest: ``reverse_compute_at``
    into the reduction's loop gave wrong values on fuzzed graphs (as ``reverse_compute_inline`` does).
    ``parallel=False`` keeps every kernel on the calling thread (see ``pipeline``).
    """

    def __init__(self, parallel: bool = True) -> None:
        self.parallel = parallel

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if blocks is None:
            return None
        # Padding stays its own (cheap) loop: inlined into a conv it puts a bounds test on every load.
        pads = [b for b in blocks if b.is_data_pad(sch)]
        kept = {b.name for b in _inline(sch, [b for b in blocks if b not in pads]) + pads}
        blocks = [b for b in blocks if b.name in kept]  # program order
        changed = False
        for info in blocks:
            scheduled = self._block(sch, info, target)
            if scheduled is not None:
                changed = True
        return sch if changed else None

    @staticmethod
    def _width(target: Target, bits: int, extent: int) -> int | None:
        """Vector lanes for a loop of ``extent``: the whole loop up to two registers, else a dividing width."""
        lanes = _lanes(target, bits)
        if 2 <= extent <= 2 * lanes:
            return extent
        return next((w for w in (lanes, lanes // 2, lanes // 4) if w >= 2 and extent % w == 0), None)

    def _vectorize_inner(self, sch: s_tir.Schedule, block, target: Target) -> None:
        loops = sch.get_loops(block)
        extent = _extent(sch, loops[-1])
        width = self._width(target, 32, extent) if extent is not None else None
        if width is None:
            return
        inner = loops[-1] if width == extent else sch.split(loops[-1], factors=[None, width])[1]
        sch.vectorize(inner)

    def _block(self, sch: s_tir.Schedule, info, target: Target):
        """Schedule one block; returns its outer (parallel or serial) fused loop, None if left as it is."""
        kinds = info.dom_kind()
        loops = sch.get_loops(info.block_rv)
        if "O" in kinds or "S" not in kinds or len(loops) != len(kinds):
            return None
        spatial = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "S"]
        reduce = [loop for loop, kind in zip(loops, kinds, strict=True) if kind == "R"]
        extents = [_extent(sch, loop) for loop in loops]
        if any(e is None for e in extents):
            return None
        sch.reorder(*spatial, *reduce)
        block = sch.get(info.block_rv)
        bits = block.writes[0].source.dtype.bits if block.writes else 32
        last = extents[[i for i, k in enumerate(kinds) if k == "S"][-1]]
        width, vector = self._width(target, bits, last), None
        if width is not None:
            if width == last and len(spatial) > 1:
                spatial, vector = spatial[:-1], spatial[-1]
            else:
                outer, vector = sch.split(spatial[-1], factors=[None, width])
                spatial = [*spatial[:-1], outer]
            sch.reorder(*spatial, *reduce, vector)
        work = 1
        for e in extents:
            work *= e
        fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
        if self.parallel and work >= PARALLEL_MIN_WORK and _extent(sch, fused) > 1:
            sch.parallel(fused)
        if vector is not None:
            sch.vectorize(vector)
        if reduce:
            sch.decompose_reduction(info.block_rv, reduce[0])
        return fused


class Guarded(CPUScheduleRule):
    """``rule``, where an error while scheduling means "does not apply" (the kernel keeps its default code)."""

    def __init__(self, rule: CPUScheduleRule) -> None:
        self.rule = rule

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        try:
            return self.rule.apply(func, target, tunable)
        except Exception:  # a schedule primitive refused: not this rule's kernel
            return None


class Normalization(CPUScheduleRule):
    """dlight's CPU ``Reduction`` (softmax, layer norm, mean) where no reduction is a contraction: those
    read one tensor along its inner axis; matmul / conv read two and vectorize better under ``Fallback``."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        sch = s_tir.Schedule(func)
        blocks = normalize_prim_func(sch)
        if blocks is None:
            return None
        for info in blocks:
            reads = {r.source.name for r in sch.get(info.block_rv).reads}
            if not info.is_injective() and len(reads) > 1:
                return None
        return dlight.cpu.Reduction().apply(func, target, tunable)


def rules(parallel: bool = True) -> tuple[CPUScheduleRule, ...]:
    """The rules in the order they are tried (dlight's ``Reduction`` parallelizes; serial builds skip it)."""
    chosen = (Normalization(), Fallback()) if parallel else (Fallback(parallel=False),)
    return tuple(Guarded(r) for r in chosen)


def apply(mod: tvm.IRModule, target: Target, parallel: bool = True) -> tvm.IRModule:
    """``mod`` with every unscheduled kernel given a default CPU schedule (see the module docstring)."""
    with target:
        return dlight.ApplyDefaultSchedule(*rules(parallel))(mod)


def calls_library(mod: tvm.IRModule) -> bool:
    """Whether a Relax function of ``mod`` calls a oneDNN kernel (``call_dps_packed("tsir.dnnl.*")``)."""
    found = []

    def visit(expr) -> None:
        if (isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_dps_packed"
                and str(getattr(expr.args[0], "global_symbol", "")).startswith("tsir.dnnl.")):
            found.append(expr)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def pipeline(target: Target, parallel: bool = True, database=None) -> tvm.transform.Pass:
    """TVM's Relax CPU pipeline, on the fast forms of exp / tanh / erf / sigmoid (``fast_math``), with the
    default schedules applied after FuseOps/FuseTIR.

    With a MetaSchedule ``database``, its records are applied first (``MetaScheduleApplyDatabase`` marks
    those kernels scheduled), so a kernel with a record gets its tuned schedule and every other kernel
    the default one. ``parallel=False`` for a module that also calls oneDNN: its kernels then run on
    OpenMP's threads, and a second pool (TVM's) spinning for the same cores between kernels would slow
    both; the TVM kernels left in such a module (elementwise, pooling, normalization) stay vectorized on
    one thread."""
    backend = relax.backend.cpu_generic.pipeline

    @tvm.transform.module_pass(opt_level=0, name="TsirCpuPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        fuse = backend.library_dispatch_passes(target) + backend.legalize_passes(target)
        finish = backend.dataflow_lower_passes(target) + backend.finalize_passes(target)
        with target:
            mod = tvm.transform.Sequential(fuse)(fast_math.apply(mod))
            if database is not None:
                with database:
                    mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
            mod = apply(mod, target, parallel)
            return tvm.transform.Sequential(finish)(mod)

    return _pipeline
