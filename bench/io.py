"""Where benchmark results go, written atomically (a crash never leaves half a file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# bench/results of the folder it runs in (the checkout's, for `make bench`), or $TSIR_BENCH_RESULTS
RESULTS_DIR = Path(os.environ.get("TSIR_BENCH_RESULTS", "bench/results"))


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".tmp", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)
    return path
