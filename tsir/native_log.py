"""Native output to a log file: TVM's C++ warnings (``Scope Saving``, ``pow(x, y) where y >= 3``, ...) are
written straight to file descriptor 2; inside ``native_stderr_to(path)`` they go to ``path`` instead, while
Python's ``sys.stderr`` (progress views, error messages) still reaches the terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def native_stderr_to(path: Path) -> Iterator[None]:
    sys.stderr.flush()
    terminal = os.dup(2)
    python_stderr = sys.stderr
    sys.stderr = open(os.dup(terminal), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(terminal, 2)
        os.close(terminal)
