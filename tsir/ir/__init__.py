"""The tsir IR: the op registry, the op declarations, terms and the egglog term language."""

from tsir.ir import ops  # noqa: F401  (declares every op in the registry before any term is built)
