"""The two real models of approximate mode with their data: a model, example inputs and a ``Budget``.

``digits``: the trained digits CNN, batch 64, top-1 accuracy on the held-out split (max drop 0.5 points).
``minilm``: all-MiniLM-L6-v2, batch 8 x 24 tokens, cosine similarity of embeddings to the original's on
held-out sentences (max drop 0.01, i.e. mean cosine >= 0.99).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tsir.approx import digits, minilm
from tsir.approx.budget import Budget, Data

Loaded = tuple[torch.nn.Module, tuple[torch.Tensor, ...], Budget]


def load_digits(max_drop: float = 0.005) -> Loaded:
    model, data = digits.load()
    budget = Budget(Data([data.calibration(256)], [data.heldout_x], data.train_y[:256], data.heldout_y),
                    metric="top1", max_drop=max_drop)
    return model, (torch.from_numpy(data.heldout_x[:64]),), budget


def load_minilm(max_drop: float = 0.01, batch: int = 8) -> Loaded:
    calibration, heldout = minilm.sentences()
    cal, held = minilm.tokenize(calibration), minilm.tokenize(heldout)
    budget = Budget(Data(list(cal), list(held)), metric="cosine", max_drop=max_drop)
    example = tuple(torch.from_numpy(np.ascontiguousarray(a[:batch])) for a in cal)
    return minilm.load(), example, budget


REAL: dict[str, Callable[..., Loaded]] = {"digits": load_digits, "minilm": load_minilm}
