"""Benchmarks. The thread and wait policy (``bench.policy``) is decided here, on first import, before
TVM, oneDNN (GNU OpenMP) or torch start; the workers of a run inherit it."""

from .policy import apply

POLICY = apply()
