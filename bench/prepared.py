"""What preparing a system gives the worker: one inference call (what is timed) and its outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prepared:
    call: Callable[[], object]  # one inference on the case's inputs
    outputs: Callable[[], list[np.ndarray]]  # one inference, its outputs flattened as torch.export does
    notes: dict = field(default_factory=dict)  # settings chosen while preparing, for the row
    first_call_ms: float | None = None  # set when preparing already timed the first call; else the worker times it
