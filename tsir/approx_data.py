"""Approximate mode's data from ``.npz`` files (``tsir optimize MODEL --mode approx --data --heldout``).

Each file holds one array per model input, examples along axis 0 and each example shaped like one row of
the model's example input (``np.savez(path, x)``, or named arrays in the model's input order), and
optionally ``labels`` (one per example, for ``--metric top1`` against labels rather than agreement with
the original model). Every problem is a ``TsirError`` that names the file, the array and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tsir.approx.budget import Budget, Data
from tsir.draws import load_npz
from tsir.errors import TsirError

LABELS = "labels"


def budget_from_files(calibration: Path, heldout: Path, metric: str, max_drop: float,
                      examples: Sequence[torch.Tensor]) -> Budget:
    """The accuracy budget of a model whose example inputs are ``examples``, on the two files' data."""
    cal, cal_labels = load_split(calibration, examples, "--data")
    held, held_labels = load_split(heldout, examples, "--heldout")
    if (cal_labels is None) != (held_labels is None):
        raise TsirError(f"only one of {str(calibration)!r} and {str(heldout)!r} has {LABELS!r}; give labels in both "
                        "files or in neither")
    return Budget(Data(cal, held, cal_labels, held_labels), metric=metric, max_drop=max_drop)


def load_split(path: Path, examples: Sequence[torch.Tensor], flag: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """One file's input arrays (cast to the example inputs' dtypes) and labels (None without)."""
    arrays = load_npz(path, flag, "np.savez(path, x, labels=y)")
    labels = arrays.pop(LABELS, None)
    if len(arrays) != len(examples):
        raise TsirError(f"{flag} {str(path)!r} has {len(arrays)} input array(s) ({', '.join(arrays) or 'none'}); the "
                        f"model takes {len(examples)} input(s): save one array per input, in order, e.g. "
                        f"np.savez(path, {', '.join(f'x{i}' for i in range(len(examples)))})")
    out = []
    for (name, array), example in zip(arrays.items(), examples, strict=True):
        row = tuple(example.shape[1:])
        if array.ndim != example.dim() or tuple(array.shape[1:]) != row:
            raise TsirError(f"{flag} {str(path)!r}: array {name!r} has shape {array.shape}; the model's input takes "
                            f"examples of shape {row} (N x {' x '.join(map(str, row)) or 'scalar'}), examples along "
                            "axis 0")
        if example.dtype.is_floating_point != np.issubdtype(array.dtype, np.floating):
            raise TsirError(f"{flag} {str(path)!r}: array {name!r} is {array.dtype}; the model's input is "
                            f"{example.dtype}: save it in that type")
        out.append(np.ascontiguousarray(array, dtype=example.numpy().dtype))
    counts = {len(a) for a in out}
    if len(counts) != 1 or 0 in counts:
        raise TsirError(f"{flag} {str(path)!r}: the input arrays hold {sorted(counts)} examples; give every input the "
                        "same, non-zero number of examples")
    batch = len(examples[0])
    if len(out[0]) < batch:
        raise TsirError(f"{flag} {str(path)!r} has {len(out[0])} examples; approximate mode runs the model on whole "
                        f"batches of {batch} (the example input's batch): give at least {batch}")
    if labels is not None and (labels.ndim != 1 or len(labels) != len(out[0])):
        raise TsirError(f"{flag} {str(path)!r}: {LABELS!r} has shape {labels.shape}; give one label per example "
                        f"({len(out[0])})")
    return out, labels
