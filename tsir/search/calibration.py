"""Calibration of the analytic model against per-kernel measurements (tier 2) on one target.

Every kernel the measured search times is cached with its features (op class, FLOPs, bytes moved,
and how it was built: untuned TVM code, tuned TVM code or a library call). ``fit`` turns those into
a per-kernel overhead (a low percentile of the measured times), a compute efficiency per op class and
kernel source (median of FLOPs / (peak x time) over that class) and a bandwidth efficiency for the
other kernels (median of bytes / (bandwidth x time)). The result is stored per target as
``<cache>/calibration/<target digest>.json`` (written atomically) and ``roofline`` applies it to the
target's roofline, so the analytic tier (and its choice of library vs TVM kernels) follows what was
measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tsir.backends.kernel_cache import KernelCache, KernelKey, write_atomic
from tsir.cost import Roofline

# kernel op class -> the tsir ops whose efficiency it gives (TVM's "matmul" kernels also compute linear)
OPS_OF_CLASS = {"matmul": ("matmul", "linear"), "conv2d": ("conv2d",), "dnnl_matmul": ("dnnl_matmul",),
                "dnnl_linear": ("dnnl_linear",), "dnnl_conv2d": ("dnnl_conv2d",)}
MIN_EFFICIENCY, MAX_EFFICIENCY = 1e-4, 1.0


@dataclass(frozen=True)
class Sample:
    op_class: str
    source: str  # "untuned", "tuned" or "library"
    flops: float
    bytes: float
    seconds: float


@dataclass
class Calibration:
    target: str
    efficiency: dict[str, dict[str, float]]  # source -> op class -> fraction of peak
    bandwidth_efficiency: float
    dispatch_s: float
    kernels: int  # measured kernels it was fitted on

    def roofline(self, base: Roofline, tuned: bool) -> Roofline:
        """``base`` with the fitted values; ``tuned`` prefers the efficiencies of tuned TVM kernels."""
        order = ("tuned", "untuned", "library") if tuned else ("untuned", "tuned", "library")
        efficiency = {}
        for op_class, ops in OPS_OF_CLASS.items():
            value = next((self.efficiency[s][op_class] for s in order if op_class in self.efficiency.get(s, {})), None)
            if value is not None:
                efficiency.update(dict.fromkeys(ops, value))
        return base.calibrated(efficiency, self.bandwidth_efficiency, self.dispatch_s)


def source_kind(source: str) -> str:
    return source.split(":", 1)[0]


def samples(cache: KernelCache, target: str, exclude: set[KernelKey] = frozenset()) -> list[Sample]:
    """The measured kernels of ``target`` in ``cache`` (failed ones and ``exclude`` left out)."""
    return [Sample(f["op_class"], source_kind(key.source), f["flops"], f["bytes"], timing.median_ms / 1e3)
            for key, timing, f in cache.entries(target) if timing.median_ms and key not in exclude]


def fit(data: list[Sample], base: Roofline, target: str) -> Calibration | None:
    """Fit overhead, efficiencies and bandwidth efficiency on ``data``; None with fewer than 3 kernels."""
    if len(data) < 3:
        return None
    times = sorted(s.seconds for s in data)
    dispatch = times[len(times) // 10]  # a low percentile: what the smallest kernels cost

    def busy(s: Sample) -> float:  # the time beyond the overhead, never below a tenth of the measurement
        return max(s.seconds - dispatch, 0.1 * s.seconds)

    efficiency: dict[str, dict[str, float]] = {}
    for s in data:
        if s.op_class in OPS_OF_CLASS and s.flops > 0:
            efficiency.setdefault(s.source, {}).setdefault(s.op_class, []).append(  # type: ignore[arg-type]
                s.flops / (base.peak_flops * busy(s)))
    fitted = {src: {c: min(max(statistics.median(v), MIN_EFFICIENCY), MAX_EFFICIENCY) for c, v in classes.items()}
              for src, classes in efficiency.items()}
    memory = [s.bytes / (base.bandwidth * busy(s)) for s in data if s.op_class not in OPS_OF_CLASS and s.bytes > 0]
    bandwidth = min(max(statistics.median(memory), 0.01), 4.0) if memory else 1.0
    return Calibration(target, fitted, bandwidth, dispatch, len(data))


def path(root: str | os.PathLike, target: str) -> Path:
    return Path(root) / "calibration" / f"{hashlib.sha256(target.encode()).hexdigest()[:16]}.json"


def load(root: str | os.PathLike, target: str) -> Calibration | None:
    """The stored calibration of ``target`` (None when there is none or it cannot be read)."""
    try:
        data = json.loads(path(root, target).read_text())
        cal = Calibration(**data)
        return cal if cal.target == target else None
    except (OSError, ValueError, TypeError):
        return None


def save(root: str | os.PathLike, cal: Calibration) -> Path:
    out = path(root, cal.target)
    write_atomic(out, asdict(cal))
    return out


def refit(root: str | os.PathLike, base: Roofline, target: str) -> Calibration | None:
    """Fit on every measured kernel of ``target`` in the cache under ``root`` and store the result."""
    cal = fit(samples(KernelCache(root), target), base, target)
    if cal is not None:
        save(root, cal)
    return cal
