"""Calibration of the analytic model against per-kernel measurements (tier 2) on one target.

Every kernel the measured search times is cached with its features (op class, FLOPs, bytes moved,
and how it was built: untuned TVM code, tuned TVM code or a library call). ``fit`` turns those into
a per-kernel overhead, a compute efficiency per op class and kernel source, and a bandwidth
efficiency for the other kernels, by one least-squares fit (see ``fit``). The result is stored per target as
``<cache>/calibration/<target digest>.json`` (written atomically) and ``roofline`` applies it to the
target's roofline, so the analytic tier (and its choice of library vs TVM kernels) follows what was
measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tsir.backends.kernel_cache import KernelCache, KernelKey, write_atomic
from tsir.backends.roofline import Roofline
from tsir.ir.ops import OPS


def _ops_of_class() -> dict[str, tuple[str, ...]]:
    """Kernel op class -> the cost classes whose efficiency it gives, from the op registry: a TVM GEMM-class
    op's ``kernel_class`` (TVM's "matmul" kernels also compute linear), a library op's call per layout."""
    out: dict[str, tuple[str, ...]] = {}
    for name, spec in OPS.items():
        if spec.kernel_class:
            out[spec.kernel_class] = (*out.get(spec.kernel_class, ()), name)
        elif spec.library:
            out.update({key: (key,) for key in spec.cost_classes()})
    return out


OPS_OF_CLASS = _ops_of_class()
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
    """Fit overhead, efficiencies and bandwidth efficiency on ``data``; None with fewer than 3 kernels.

    A non-negative least-squares fit of ``seconds = overhead + flops / rate[source, class]`` for the
    GEMM-class kernels and ``+ bytes / bandwidth`` for the others, on errors relative to each time (so
    small kernels count as much as large ones).
    """
    if len(data) < 3:
        return None
    from scipy.optimize import nnls

    compute = sorted({(s.source, s.op_class) for s in data if s.op_class in OPS_OF_CLASS and s.flops > 0})
    columns = {c: i + 1 for i, c in enumerate(compute)}
    memory_column = len(columns) + 1
    matrix = np.zeros((len(data), memory_column + 1))
    for row, s in enumerate(data):
        matrix[row, 0] = 1.0
        if (s.source, s.op_class) in columns:
            matrix[row, columns[(s.source, s.op_class)]] = s.flops
        else:
            matrix[row, memory_column] = s.bytes
    seconds = np.array([s.seconds for s in data])
    scale = np.abs(matrix).max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(matrix / scale / seconds[:, None], np.ones(len(data)))
    solution = solution / scale
    efficiency: dict[str, dict[str, float]] = {}
    for (source, op_class), i in columns.items():
        rate = 1.0 / solution[i] if solution[i] > 0 else base.peak_flops * MAX_EFFICIENCY
        efficiency.setdefault(source, {})[op_class] = float(min(max(rate / base.peak_flops, MIN_EFFICIENCY),
                                                                MAX_EFFICIENCY))
    has_memory = matrix[:, memory_column].any()
    bandwidth = 1.0 / solution[memory_column] / base.bandwidth if has_memory and solution[memory_column] > 0 else 1.0
    return Calibration(target, efficiency, float(min(max(bandwidth, 0.01), 4.0)), float(solution[0]), len(data))


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
