"""On-disk cache of per-kernel latencies, shared by candidates, runs and models.

One small JSON file per kernel, named by a digest of (structural hash, target, kernel source), where
the source says how the kernel is built: ``untuned:parallel`` / ``untuned:serial`` (the default schedule,
serial in a program that calls oneDNN), ``tuned:<record digest>`` or ``library:<name>``.
Writes are atomic (temporary file + rename), so an interrupted run leaves either the old entry or
the new one. A file that cannot be parsed or does not hold what its name promises is reported with a
warning naming it, removed, and measured again. An entry may carry the kernel's features (op class,
FLOPs, bytes) for the calibration of the analytic model (``entries`` lists them).

``ProgramCache`` keeps, per candidate program, the list of its kernels (key, calls, features), so a
warm run neither lowers nor fuses the programs it has seen before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# TSIR_CACHE_DIR moves it (one cache per project or CI job); the default is shared by every run of this user
DEFAULT_DIR = Path(os.environ.get("TSIR_CACHE_DIR", Path.home() / ".cache" / "tsir"))


class CorruptCacheWarning(UserWarning):
    """A cache file was unreadable; it was removed and its entry will be rebuilt."""


@dataclass(frozen=True)
class KernelKey:
    structural_hash: str
    target: str
    source: str  # "untuned:parallel", "untuned:serial", "tuned:<digest>" or "library:<name>"

    def digest(self) -> str:
        text = json.dumps([self.structural_hash, self.target, self.source])
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class KernelTiming:
    median_ms: float | None
    error: str | None = None


class KernelCache:
    """Latency per ``KernelKey``, stored under ``root/<kind>/`` (``kernels``, or ``e2e`` for whole programs)."""

    def __init__(self, root: str | os.PathLike = DEFAULT_DIR, kind: str = "kernels") -> None:
        self.dir = Path(root) / kind
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def path(self, key: KernelKey) -> Path:
        d = key.digest()
        return self.dir / d[:2] / f"{d}.json"

    def get(self, key: KernelKey) -> KernelTiming | None:
        path = self.path(key)
        try:
            data = json.loads(path.read_text())
            if data["key"] != [key.structural_hash, key.target, key.source]:
                raise ValueError("key mismatch")
            timing = KernelTiming(data["median_ms"], data.get("error"))
            if timing.median_ms is None and timing.error is None:
                raise ValueError("neither a latency nor an error")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(f"corrupt kernel cache file {path} ({err}); removing it, the kernel will be measured "
                          "again", CorruptCacheWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return timing

    def put(self, key: KernelKey, timing: KernelTiming, features: dict | None = None) -> None:
        data = {"key": [key.structural_hash, key.target, key.source], "median_ms": timing.median_ms,
                "error": timing.error}
        if features is not None:
            data["features"] = features
        write_atomic(self.path(key), data)

    def entries(self, target: str) -> Iterator[tuple[KernelKey, KernelTiming, dict]]:
        """Every readable entry of ``target`` that carries features (unreadable files are skipped here)."""
        for path in sorted(self.dir.glob("*/*.json")):
            try:
                data = json.loads(path.read_text())
                key = KernelKey(*data["key"])
                if key.target == target and "features" in data:
                    yield key, KernelTiming(data["median_ms"], data.get("error")), data["features"]
            except (ValueError, KeyError, TypeError, OSError):
                continue


class ProgramCache:
    """The kernels of each candidate program: ``root/programs/<digest>.json`` holding a list of kernel records."""

    def __init__(self, root: str | os.PathLike = DEFAULT_DIR) -> None:
        self.dir = Path(root) / "programs"
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.json"

    def get(self, digest: str) -> list[dict] | None:
        path = self.path(digest)
        try:
            data = json.loads(path.read_text())
            if data["digest"] != digest or not isinstance(data["kernels"], list):
                raise ValueError("key mismatch")
            return data["kernels"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as err:
            warnings.warn(f"corrupt program cache file {path} ({err}); removing it", CorruptCacheWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None

    def put(self, digest: str, kernels: list[dict]) -> None:
        write_atomic(self.path(digest), {"digest": digest, "kernels": kernels})


def write_atomic(path: Path, data: object) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(data, f)
    os.replace(f.name, path)
