"""Accuracy budgets: a metric, calibration and held-out data, and the largest accepted drop.

A metric maps ``(outputs, reference, labels)`` to a score (higher is better), where ``outputs`` and
``reference`` are the optimized and original model's first output over a whole split and ``labels``
are the split's labels or None. The drop of a candidate is ``metric(reference) - metric(outputs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tsir.errors import TsirError

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]


def top1(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> float:
    """Accuracy against ``labels``; without labels, top-1 agreement with the original model."""
    target = labels if labels is not None else reference.argmax(-1)
    return float((outputs.argmax(-1) == target).mean())


def cosine(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Mean cosine similarity of each row (last axis) to the original's."""
    o, r = outputs.reshape(-1, outputs.shape[-1]), reference.reshape(-1, reference.shape[-1])
    sims = (o * r).sum(-1) / np.maximum(np.linalg.norm(o, axis=-1) * np.linalg.norm(r, axis=-1), 1e-30)
    return float(sims.mean())


def relative_error(outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None = None) -> float:
    """Minus the relative L2 error to the original (so that higher is better, like the other metrics)."""
    return -float(np.linalg.norm(outputs - reference) / max(np.linalg.norm(reference), 1e-30))


METRICS: dict[str, Metric] = {"top1": top1, "cosine": cosine, "relative_error": relative_error}


@dataclass(frozen=True)
class Data:
    """Model inputs (one array per model input, examples along axis 0) for calibration and held-out checks."""

    calibration: Sequence[np.ndarray]
    heldout: Sequence[np.ndarray]
    calibration_labels: np.ndarray | None = None
    heldout_labels: np.ndarray | None = None


@dataclass(frozen=True)
class Budget:
    """``metric``: a name in ``METRICS`` or a callable; the pick's drop on ``data.heldout`` is <= ``max_drop``."""

    data: Data
    metric: str | Metric = "top1"
    max_drop: float = 0.005

    def __post_init__(self) -> None:
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise TsirError(f"unknown accuracy metric {self.metric!r}; use one of {', '.join(METRICS)} "
                            "or a callable (outputs, reference, labels) -> score")
        if not self.max_drop >= 0:
            raise TsirError(f"max_drop must be >= 0, got {self.max_drop!r}")
        for name, arrays in (("calibration", self.data.calibration), ("heldout", self.data.heldout)):
            if not arrays or len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
                raise TsirError(f"Budget data.{name} must be a non-empty list of input arrays with the same "
                                "number of examples each")

    @property
    def score(self) -> Metric:
        return METRICS[self.metric] if isinstance(self.metric, str) else self.metric

    @property
    def name(self) -> str:
        return self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom")


def run_batched(runner: Callable[[list[np.ndarray]], Sequence[np.ndarray]], arrays: Sequence[np.ndarray],
                batch: int) -> np.ndarray:
    """``runner``'s first output over all examples of ``arrays``, run ``batch`` at a time (the last chunk padded by
    repetition): how a candidate, or a peer, is scored on calibration or held-out data."""
    n, outs = len(arrays[0]), []
    for i in range(0, n, batch):
        chunk = [a[i:i + batch] for a in arrays]
        pad = batch - len(chunk[0])
        if pad:
            chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
        outs.append(runner(chunk)[0][:batch - pad])
    return np.concatenate(outs)


def fidelity(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """The default fidelity numbers of ``outputs`` against the original's."""
    return {"top1_agreement": top1(outputs, reference, None), "cosine": cosine(outputs, reference),
            "relative_error": -relative_error(outputs, reference)}


def random_budget(example_inputs: Sequence, max_drop: float = 0.01, batches: int = 2, seed: int = 0) -> Budget:
    """The fidelity default for a model without data (random weights, like the bench zoo): relative output
    error to the original <= ``max_drop`` on random inputs shaped like ``example_inputs`` (``batches`` of
    them to calibrate, as many others held out). Float inputs are standard normal; integer inputs are drawn
    uniformly from the range the examples span (token ids stay valid)."""
    rng = np.random.default_rng(seed)

    def draw(x: np.ndarray) -> np.ndarray:
        shape = (batches * x.shape[0], *x.shape[1:])
        if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
            return rng.integers(int(x.min()), int(x.max()) + 1, shape).astype(x.dtype)
        return rng.standard_normal(shape).astype(x.dtype)

    arrays = [np.asarray(x) for x in example_inputs]
    return Budget(Data([draw(x) for x in arrays], [draw(x) for x in arrays]), metric="relative_error",
                  max_drop=max_drop)
