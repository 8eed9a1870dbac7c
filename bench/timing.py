"""Interleaved timing: every system of one (model, batch) is sampled in turn, round after round, so
drifting machine load hits all of them alike. Each sample is a block of calls sized to ``block_ms``,
after ``pause_ms`` of idle time: the previous system's threads may still spin-wait for work for a while
(OpenMP, ONNX Runtime), and on two cores a spinning thread of another process stalls every parallel
region of the system being timed.

A sampler runs ``n`` calls and returns the time per call in ms (here: in the system's own process).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

Sampler = Callable[[int], float]
SLOW_MS = 500.0


def interleaved(samplers: dict[str, Sampler], *, warmup: int, rounds: int, block_ms: float,
                cap_s: float, pause_ms: float = 0.0) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Per system, ``rounds`` samples of per-call ms (fewer, but at least 3, once a system used ``cap_s``),
    and the error of each system whose sampler raised (it is sampled no further)."""
    number, spent, samples, errors = {}, dict.fromkeys(samplers, 0.0), {name: [] for name in samplers}, {}
    for name, sample in samplers.items():
        try:
            if sample(1) < SLOW_MS and warmup > 1:  # a slow system is warm after one call
                sample(warmup - 1)
            number[name] = max(1, int(block_ms / max(sample(1), 1e-3)))
        except Exception as err:
            errors[name] = f"while warming up: {type(err).__name__}: {err}"
    names = [n for n in samplers if n not in errors]
    for r in range(rounds if names else 0):  # none left: every system failed to prepare or warm up
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate who goes first
            if name in errors or (spent[name] > cap_s and len(samples[name]) >= 3):
                continue
            time.sleep(pause_ms / 1e3)
            try:
                per_call = samplers[name](number[name])
            except Exception as err:
                errors[name] = f"while timing: {type(err).__name__}: {err}"
                continue
            samples[name].append(per_call)
            spent[name] += per_call * number[name] / 1e3
    return {n: v for n, v in samples.items() if n not in errors}, errors


def summary(samples: list[float]) -> dict[str, float]:
    p10, median, p90 = np.percentile(samples, [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90), "samples": len(samples)}
