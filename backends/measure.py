"""The whole-program measurement result shared by the local and the RPC measurers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    median_ms: float | None
    error: str | None
