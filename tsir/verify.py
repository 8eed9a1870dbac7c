"""Verification: the optimized program against the original model, and the one comparison tsir uses everywhere.

``compare`` (used by ``verify``, the fuzzer, the rule tests' helpers and bench) checks each output:

- non-finite values match exactly: NaN where the reference has NaN, Inf of the same sign where it has Inf;
- every finite element: ``|a - b| <= atol + rtol * |b|`` (``b`` the reference), with ``atol`` scaled to the
  output: ``tolerance.atol * scale``, where ``scale`` is the output's largest finite ``|b|`` (at least
  ``tolerance.floor``);
- the whole output: ``max |a - b| <= tolerance.scale * scale`` (the scale-relative bound).

The default tolerance depends on the dtype the program computes in (``TOLERANCES``; integers and booleans
match exactly). The result names the worst element: output number, index, both values, and how far it is
from its bound (``ratio``, 1 is the bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from tsir import pytree
from tsir.errors import VerificationError


@dataclass(frozen=True)
class Tolerance:
    rtol: float  # per element, relative to |reference|
    atol: float  # per element, relative to the output's scale (its largest finite |reference|)
    scale: float  # max abs error of an output, relative to its scale
    floor: float = 1e-6  # the smallest scale (an all-zero output)


# By the dtype of the optimized program's output. float32: reordered fp32 sums (fusion, folding, other kernels)
# differ by ~1e-7..1e-6 of the output's scale on the zoo models; an element wrong by 1e-5 of the scale plus
# 1e-4 of itself is a wrong program, not rounding. Half precisions scale with their epsilon (2^-10, 2^-7).
TOLERANCES = {
    "float64": Tolerance(rtol=1e-9, atol=1e-10, scale=1e-9),
    "float32": Tolerance(rtol=1e-4, atol=1e-5, scale=1e-4),
    "float16": Tolerance(rtol=1e-2, atol=1e-3, scale=1e-2),
    "bfloat16": Tolerance(rtol=5e-2, atol=1e-2, scale=5e-2),
}
EXACT = Tolerance(rtol=0.0, atol=0.0, scale=0.0)  # integers, booleans (and any dtype not listed)


def tolerance_for(dtype: np.dtype) -> Tolerance:
    """The default tolerance of an output computed in ``dtype``."""
    return TOLERANCES.get(np.dtype(dtype).name, EXACT)


@dataclass(frozen=True)
class Worst:
    """The element furthest from its bound (the first mismatching one for non-finite values)."""

    output: int
    index: tuple[int, ...]
    reference: float
    actual: float
    ratio: float  # |a - b| / (atol + rtol * |b|): above 1 fails; inf for a non-finite mismatch


@dataclass(frozen=True)
class Verification:
    passed: bool
    max_abs_error: float  # over finite elements of all outputs; inf when non-finite values disagree
    relative_error: float  # the largest max abs error of an output relative to its scale
    tolerance: Tolerance  # of the worst element's output
    worst: Worst | None  # None when there are no elements
    problem: str = ""  # why it failed, naming the worst element

    def describe(self) -> str:
        """One line: the errors, the bound, and the worst element."""
        text = (f"max abs error {self.max_abs_error:.3g}, {self.relative_error:.3g} of the output scale "
                f"(bound {self.tolerance.scale:g}; per element atol {self.tolerance.atol:g} x scale + "
                f"rtol {self.tolerance.rtol:g})")
        if self.worst is not None:
            w = self.worst
            text += (f"; worst: output {w.output} at {list(w.index)}: {w.actual:.6g} vs {w.reference:.6g}, "
                     f"{w.ratio:.3g} of its bound")
        return text


def compare(reference: Sequence[np.ndarray], actual: Sequence[np.ndarray],
            tolerance: Tolerance | None = None) -> Verification:
    """Compare two flat lists of output arrays (see the module docstring); ``tolerance`` None: per dtype."""
    if len(reference) != len(actual):
        raise VerificationError(f"the optimized model returns {len(actual)} outputs, the original {len(reference)}")
    results = []
    for k, (ref, act) in enumerate(zip(reference, actual, strict=True)):
        ref, act = np.asarray(ref), np.asarray(act)
        if ref.shape != act.shape:
            raise VerificationError(f"output {k} has shape {act.shape}, the original's {ref.shape}")
        results.append(_compare_one(k, ref, act, tolerance or tolerance_for(act.dtype)))
    if not results:
        return Verification(True, 0.0, 0.0, tolerance or TOLERANCES["float32"], None)
    failed = [r for r in results if not r.passed]
    worst = failed[0] if failed else max(results, key=lambda r: r.worst.ratio if r.worst else -1.0)
    return replace(worst, max_abs_error=max(r.max_abs_error for r in results),
                   relative_error=max(r.relative_error for r in results))


def _compare_one(k: int, ref: np.ndarray, act: np.ndarray, tol: Tolerance) -> Verification:
    b, a = ref.astype(np.float64).ravel(), act.astype(np.float64).ravel()
    finite_b, finite_a = np.isfinite(b), np.isfinite(a)
    same = (np.isnan(b) & np.isnan(a)) | (np.isinf(b) & (a == b))
    bad = ~(finite_b & finite_a) & ~same
    if bad.any():
        i = int(np.argmax(bad))
        worst = Worst(k, _index(i, ref.shape), float(b[i]), float(a[i]), np.inf)
        what = "NaN" if np.isnan(a[i]) else f"{a[i]:g}"
        return Verification(False, np.inf, np.inf, tol, worst,
                            f"output {k} has {what} at {list(worst.index)} where the original has {b[i]:g}")
    both = finite_b & finite_a
    if not both.any():
        return Verification(True, 0.0, 0.0, tol, None)
    scale = max(float(np.max(np.abs(b[both]))), tol.floor)
    err = np.zeros_like(b)
    err[both] = np.abs(a[both] - b[both])
    bound = tol.atol * scale + tol.rtol * np.abs(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(err == 0, 0.0, err / bound)
    i = int(np.argmax(ratios))
    worst = Worst(k, _index(i, ref.shape), float(b[i]), float(a[i]), float(ratios[i]))
    max_abs = float(err.max())
    result = Verification(True, max_abs, max_abs / scale, tol, worst)
    if worst.ratio > 1:
        excess = f"{worst.ratio:.3g}x its bound" if bound[i] > 0 else "it must match exactly"
        return replace(result, passed=False, problem=f"output {k} at {list(worst.index)} is {a[i]:.6g}, the "
                       f"original {b[i]:.6g}: off by {err[i]:.3g}, {excess}")
    if max_abs > tol.scale * scale:
        return replace(result, passed=False, problem=f"output {k} is off by up to {max_abs:.3g}, "
                       f"{max_abs / scale:.3g} of its scale {scale:.3g} (bound {tol.scale:g})")
    return result


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def reference_outputs(model: Callable, inputs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """``model``'s outputs on ``inputs``, flattened as ``torch.export`` does: a torch module, or any callable
    returning tensors or arrays, alone or nested in tuples, lists, dicts, dataclasses and ``ModelOutput``."""
    with torch.inference_mode():
        out = model(*inputs)
    return [t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in pytree.leaves(out)]


def verify(
    model: Callable, run: Callable[[list[np.ndarray]], list[np.ndarray]],
    inputs: Sequence[torch.Tensor], tolerance: Tolerance | None = None, label: str = "the verification inputs",
) -> Verification:
    """Run both on ``inputs``; raise ``VerificationError`` when the original's outputs are not finite there
    (nothing to compare against) or when the two differ (see ``compare``)."""
    result = _check(model, run, inputs, tolerance, label)
    if not result.passed:
        raise VerificationError(f"optimized outputs differ from the original on {label}: {result.problem} "
                                f"({result.describe()})")
    return result


def verify_all(model: Callable, run: Callable[[list[np.ndarray]], list[np.ndarray]],
               draws: dict[str, Sequence[torch.Tensor]], tolerance: Tolerance | None = None) -> Verification:
    """``verify`` on every draw (label -> inputs); raises at the first draw that fails."""
    return _merge([verify(model, run, inputs, tolerance, label) for label, inputs in draws.items()])


def distance(model: Callable, run: Callable[[list[np.ndarray]], list[np.ndarray]],
             draws: dict[str, Sequence[torch.Tensor]]) -> Verification:
    """How far an approximate program is from the original on ``draws`` (information: its check is the held-out
    budget); raises where the original is not finite or the two disagree on non-finite values."""
    results = [_check(model, run, inputs, None, label) for label, inputs in draws.items()]
    broken = [r for r in results if r.max_abs_error == np.inf]
    if broken:
        raise VerificationError(f"the approximate program's outputs are not finite where the original's are: "
                                f"{broken[0].problem}")
    return _merge(results)


def _check(model: Callable, run: Callable[[list[np.ndarray]], list[np.ndarray]], inputs: Sequence[torch.Tensor],
           tolerance: Tolerance | None, label: str) -> Verification:
    """``compare`` on ``inputs``; raises when the original's outputs are not all finite."""
    reference = _finite_reference(model, inputs, label)
    return compare(reference, run([t.numpy() for t in inputs]), tolerance)


def check_reference(model: Callable, draws: dict[str, Sequence[torch.Tensor]]) -> None:
    """Raise the error of ``verify`` when the original's outputs are not all finite on some draw (called before
    the search, so that unusable inputs are reported before the budget is spent)."""
    for label, inputs in draws.items():
        _finite_reference(model, inputs, label)


def _finite_reference(model: Callable, inputs: Sequence[torch.Tensor], label: str) -> list[np.ndarray]:
    reference = reference_outputs(model, inputs)
    for k, ref in enumerate(reference):
        values = ref.astype(np.float64, copy=False)
        if not np.isfinite(values).all():
            i = _index(int(np.argmax(~np.isfinite(values))), ref.shape)
            raise VerificationError(
                f"the original model's output {k} is {values[i]:g} at {list(i)} on {label}: a comparison there "
                "proves nothing. Give inputs the model is meant for: optimize(..., verify_data=...) or "
                "tsir optimize --verify-data inputs.npz")
    return reference


def _merge(results: list[Verification]) -> Verification:
    """The result whose worst element is closest to (or furthest over) its bound, with the largest errors."""
    worst = max(results, key=lambda r: r.worst.ratio if r.worst else -1.0)
    return replace(worst, max_abs_error=max(r.max_abs_error for r in results),
                   relative_error=max(r.relative_error for r in results))


def as_report(result: Verification) -> dict:
    """The numbers of ``result`` for ``report["verification"]``."""
    tol, worst = result.tolerance, result.worst
    return {"max_abs_error": result.max_abs_error, "relative_error": result.relative_error,
            "tolerance": tol.scale, "rtol": tol.rtol, "atol": tol.atol,
            "worst": None if worst is None else {"output": worst.output, "index": [int(i) for i in worst.index],
                                                 "reference": worst.reference, "actual": worst.actual,
                                                 "ratio": worst.ratio if np.isfinite(worst.ratio) else None}}
