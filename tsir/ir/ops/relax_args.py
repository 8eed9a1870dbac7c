"""What converters read from a Relax call: are its tensor arguments terms, literal prim values, int tuples."""

from __future__ import annotations

from tsir.ir.term import Term


def are_terms(*args) -> bool:
    """The arguments are tensors (terms), not tuples or other Relax expressions."""
    return all(isinstance(a, Term) for a in args)


def prim_literal(expr) -> float | int | None:
    """The literal of a Relax prim value (an IntImm / FloatImm argument), or None."""
    value = getattr(expr, "value", None)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def ints(values) -> tuple[int, ...]:
    """A Relax array attribute (strides, padding, ...) as a tuple of Python ints."""
    return tuple(int(v) for v in values)
