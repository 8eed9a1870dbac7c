"""Verification: the optimized program against the original model, on fresh inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tsir import pytree
from tsir.errors import VerificationError

DEFAULT_TOLERANCE = 1e-4  # max abs error relative to the output's scale (max |reference|), fp32


@dataclass(frozen=True)
class Verification:
    max_abs_error: float
    relative_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.relative_error <= self.tolerance


def fresh_inputs(examples: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """New random inputs shaped like ``examples``; integer inputs stay inside the examples' range."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for ex in examples:
        if ex.dtype.is_floating_point:
            out.append(torch.randn(ex.shape, generator=gen, dtype=ex.dtype))
        else:
            low, high = int(ex.min()), int(ex.max()) + 1
            out.append(torch.randint(low, high, ex.shape, generator=gen, dtype=ex.dtype))
    return out


def reference_outputs(model: Callable, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """``model``'s outputs on ``inputs``, flattened as ``torch.export`` does: a torch module, or any callable
    returning tensors or arrays, alone or nested in tuples, lists, dicts, dataclasses and ``ModelOutput``."""
    with torch.inference_mode():
        out = model(*inputs)
    return [t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in pytree.leaves(out)]


def compare(
    reference: list[np.ndarray], actual: list[np.ndarray], tolerance: float = DEFAULT_TOLERANCE
) -> Verification:
    if len(reference) != len(actual):
        raise VerificationError(f"the optimized model returns {len(actual)} outputs, the original {len(reference)}")
    max_abs, relative = 0.0, 0.0
    for ref, act in zip(reference, actual, strict=True):
        if ref.shape != act.shape:
            raise VerificationError(f"output shape {act.shape} differs from the original's {ref.shape}")
        err = float(np.max(np.abs(ref.astype(np.float64) - act.astype(np.float64)), initial=0.0))
        scale = max(float(np.max(np.abs(ref), initial=0.0)), 1e-6)
        max_abs, relative = max(max_abs, err), max(relative, err / scale)
    return Verification(max_abs, relative, tolerance)


def verify(
    model: Callable, run: Callable[[list[np.ndarray]], list[np.ndarray]],
    inputs: Sequence[torch.Tensor], tolerance: float = DEFAULT_TOLERANCE,
) -> Verification:
    """Run both on ``inputs``; raise ``VerificationError`` when they differ beyond ``tolerance``."""
    result = compare(reference_outputs(model, inputs), run([t.numpy() for t in inputs]), tolerance)
    if not result.passed:
        raise VerificationError(
            f"optimized outputs differ from the original: max abs error {result.max_abs_error:.3g}, "
            f"{result.relative_error:.3g} of the output scale (tolerance {tolerance:g})"
        )
    return result
