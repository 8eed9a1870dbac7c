"""``Options``: everything ``tsir.optimize`` takes besides the model and its inputs, in one checked object."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tsir.approx.budget import Budget
from tsir.draws import UserData
from tsir.errors import TsirError
from tsir.rewrites import FAMILIES

MODES = ("exact", "approx")


def _quiet(*args) -> None:
    """The default ``log`` and ``on_stage``: say nothing."""


@dataclass(frozen=True)
class Options:
    """How to optimize: ``tsir.optimize(model, inputs, Options(target="arm", budget_s=30))``.

    ``optimize`` also takes these fields as keywords (``optimize(model, inputs, target="arm")``).
    """

    target: str = "x86"  # a name from tsir.backends.targets.valid_names()
    rpc: str | None = None  # "host:port:key": time whole candidates on a TVM RPC tracker's devices
    mode: str = "exact"  # "exact", or "approx": low-rank / int8 approximations within ``accuracy``
    budget_s: float = 60.0  # the search budget (saturation of a large e-graph takes 30 % of it, the search the rest)
    seed: int = 0
    families: Sequence[str] = tuple(FAMILIES)  # rule families (tsir.rewrites.FAMILIES)
    custom_convert_map: dict[str, Callable] | None = None  # torch op -> Relax converter, for the torch frontend
    out_dir: str | os.PathLike | None = None  # where model.so, report.json and report.md are written
    model_name: str | None = None  # the report's name for the model (default: its class or file name)
    measure: bool = True  # time the original and the optimized model on the target (when it runs here)
    cost: str = "analytic"  # "analytic" (roofline) or "measured" (kernels timed on the target)
    tuning_trials: int = 0  # MetaSchedule trials per kernel (0: none)
    finalists: int = 3  # cost="measured": search programs built whole and timed at the end, besides the baselines
    # (the GA's best half, the rest spread over the programs it explored)
    cache_dir: str | os.PathLike | None = None  # kernel cache and tuning database; $TSIR_CACHE_DIR, ~/.cache/tsir
    progress: bool = False  # a progress bar for the search
    accuracy: Budget | None = None  # mode="approx": the accuracy budget and its data
    verify_data: UserData | None = None  # inputs to verify on (.npz path or arrays); default: random draws
    verify_draws: int = 3  # random input draws to verify on (seeds seed + 1 on) when verify_data is None
    log: Callable[[str], None] = _quiet  # called with one line per stage start and end
    on_stage: Callable[[str, float | None], None] = _quiet  # (name, None) when a stage starts, (name, s) at its end

    def __post_init__(self) -> None:
        if self.mode == "approx" and not isinstance(self.accuracy, Budget):
            raise TsirError("mode='approx' needs accuracy=tsir.Budget(data=tsir.Data(calibration, heldout), "
                            "metric=..., max_drop=...)")
        if self.mode not in MODES:
            raise TsirError(f"unknown mode {self.mode!r}; this version supports: {', '.join(MODES)}")
        if not isinstance(self.verify_draws, int) or self.verify_draws < 1:
            raise TsirError(f"verify_draws must be a positive number of random input draws, got {self.verify_draws!r}")
        if not isinstance(self.finalists, int) or self.finalists < 1:
            raise TsirError(f"finalists must be a positive number of programs, got {self.finalists!r}")
        if not isinstance(self.budget_s, (int, float)) or self.budget_s <= 0:
            raise TsirError(f"budget_s must be a positive number of seconds, got {self.budget_s!r}")

    @classmethod
    def of(cls, options: Options | None, keywords: dict) -> Options:
        """``options`` (default ``Options()``) with ``keywords`` replacing its fields."""
        unknown = sorted(set(keywords) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"optimize() got unknown options {unknown}; see tsir.Options for the valid ones")
        if options is None:
            return cls(**keywords)
        return dataclasses.replace(options, **keywords)
