"""The op registry: one ``OpSpec`` per tsir op, holding every part of the op in one declaration.

A declaration carries the op's type rule, numpy reference semantics, FLOP count, category, layout,
Relax converter(s) and emitter, fuzzer maker and, for a vendor-library op, its library symbol. The
egglog constructors (``tsir.ir.lang``), the converter and emitter tables (``tsir.convert``,
``tsir.lower``), the fuzzer's makers (``tsir.testing.strategies``), the cost tables (``tsir.backends.roofline``,
``tsir.search.calibration``) and the category sets used across the house are all derived from ``OPS``.
An op that has no value for a part says why in ``missing`` (``missing_parts`` lists what is neither).
The declarations themselves live in ``tsir.ir.ops``, one module per family of ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

Shape = tuple[int, ...]
TType = tuple[Shape, str]
# (call, args, ty) -> Term | None: args are terms (a tuple of tensors as a list, anything else the Relax
# expression); ty is the call's tsir type; None keeps the call opaque (its attributes are outside the op).
Converter = Callable[[Any, list, Any], Any]
Emitter = Callable[[list, tuple, Any], Any]  # (Relax args, attrs, output type) -> Relax expression


class Choices(Protocol):
    """The random choices a maker draws (tsir.testing.strategies implements them on hypothesis)."""

    def integer(self, low: int, high: int) -> int: ...  # low..high inclusive
    def choice(self, items: Sequence) -> Any: ...
    def flag(self) -> bool: ...
    def permutation(self, items: Sequence) -> list: ...
    def subset(self, items: Sequence, min_size: int) -> list: ...  # sorted, distinct


# (choices, builder, x, pool) -> Term | None: a random use of the op on ``x`` (see tsir.testing.strategies)
Maker = Callable[[Choices, Any, Any, list], Any]


class Category(StrEnum):
    """What kind of op it is, as tinygrad's ``GroupOp``: code asks the category, never a list of names."""

    LEAF = "leaf"  # a value given from outside or made from attributes: input, weight, scalar, arange
    STRUCTURE = "structure"  # tuples and opaque calls
    UNARY = "unary"  # elementwise, one tensor
    BINARY = "binary"  # elementwise, two broadcasting tensors
    LOGIC = "logic"  # elementwise mask ops: comparisons, boolean logic, where, casts
    MOVEMENT = "movement"  # data movement: transpose, reshape, concat, slice, pad, broadcast
    REDUCE = "reduce"  # reductions over axes: mean, softmax
    NORM = "norm"  # normalizations with learned parameters: batch norm, layer norm
    POOL = "pool"  # windowed reductions
    GEMM = "gemm"  # contractions with a weight: matmul, linear, convolutions
    LIBRARY = "library"  # a GEMM-class op computed by a vendor library (oneDNN)


@dataclass(frozen=True)
class OpSpec:
    """One tsir op: ``arity`` tensor children (None: one variadic list), then the attributes ``attrs``."""

    name: str
    arity: int | None
    attrs: tuple[str, ...]
    category: Category
    infer: Callable[[tuple[TType, ...], tuple], TType] | None  # None: the type is given with the term
    evaluate: Callable[[list[np.ndarray], tuple], np.ndarray] | None
    flops: Callable[[tuple[TType, ...], TType, tuple], float] = lambda ins, out, attrs: 0.0
    kernel: bool = True  # False: costs nothing at run time (views, leaves, tuples)
    convert: Mapping[str, Converter] = field(default_factory=dict)  # Relax op name -> converter
    emit: Emitter | None = None
    make: Maker | None = None
    layout: str | None = None  # the activations' layout when fixed ("NCHW"); see ``layouts``
    layouts: tuple[str, ...] = ()  # the values of the op's ``layout`` attribute (its last), when it has one
    weight: str | None = None  # GEMM-class: the layout of the second operand ("KN", "OIHW", "OIW")
    efficiency: float | None = None  # GEMM-class: fraction of the GEMM peak a kernel reaches (analytic)
    kernel_class: str | None = None  # TVM GEMM-class op: the fused-kernel class whose fitted efficiency applies
    library: Callable[[str | None], str] | None = None  # library op: its packed function for a layout
    reorders: frozenset[str] = frozenset()  # library op: layouts in which it reorders activations in and out
    missing: Mapping[str, str] = field(default_factory=dict)  # part -> why this op has none

    def layout_of(self, attrs: tuple) -> str | None:
        """The activations' layout of one use of the op (its ``layout`` attribute, or the fixed one)."""
        return attrs[-1] if self.layouts and attrs else self.layout

    def cost_class(self, attrs: tuple = ()) -> str:
        """The key of the op's compute efficiency: its name, or for a library op its library kernel's class."""
        return library_class(self.library(self.layout_of(attrs))) if self.library else self.name

    def cost_classes(self) -> tuple[str, ...]:
        """Every key ``cost_class`` gives for this op (one per layout of a library op)."""
        if not self.library:
            return (self.name,)
        return tuple(library_class(self.library(layout)) for layout in (self.layouts or (self.layout,)))


def library_class(symbol: str) -> str:
    """The kernel class of a library call: ``tsir.dnnl.conv2d_nhwc`` -> ``dnnl_conv2d_nhwc``."""
    return "dnnl_" + symbol.removeprefix(LIBRARY_PREFIX)


OPS: dict[str, OpSpec] = {}
LIBRARY_PREFIX = "tsir.dnnl."
# Ops whose value exists only at run time (or, for tuple, is no tensor to fold): never constant-folded.
RUNTIME_ONLY = frozenset({"input", "opaque", "get_item", "tuple"})
# Parts every op has, or says why not; GEMM-class and library ops have more.
PARTS = ("infer", "evaluate", "convert", "emit", "make")
GEMM_PARTS = ("efficiency", "weight")


def register(spec: OpSpec) -> OpSpec:
    """Declare an op; a second declaration of one name is an error."""
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} is declared twice")
    OPS[spec.name] = spec
    return spec


def ops_in(*categories: Category) -> frozenset[str]:
    """The names of the ops in any of ``categories``."""
    return frozenset(name for name, spec in OPS.items() if spec.category in categories)


def with_weight(*layouts: str) -> frozenset[str]:
    """The GEMM-class and library ops whose weight (second operand) has one of ``layouts``."""
    return frozenset(name for name, spec in OPS.items() if spec.weight in layouts)


def missing_parts(spec: OpSpec) -> list[str]:
    """The parts ``spec`` neither has nor explains in ``missing`` (empty for a complete declaration)."""
    parts = list(PARTS)
    if spec.category == Category.GEMM:
        parts += [*GEMM_PARTS, "kernel_class"]
    if spec.category == Category.LIBRARY:
        parts += [*GEMM_PARTS, "library"]
    if spec.category == Category.POOL or (spec.weight or "").startswith("OI"):  # reads an image's layout
        parts.append("layout")
    return [part for part in parts if not _has(spec, part) and part not in spec.missing]


def _has(spec: OpSpec, part: str) -> bool:
    if part == "layout":
        return spec.layout is not None or bool(spec.layouts)
    if part == "convert":
        return bool(spec.convert)
    return getattr(spec, part) is not None


def numel(shape: Shape) -> int:
    return math.prod(shape)


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Numpy/Relax broadcasting; raises ValueError when the shapes do not broadcast."""
    return tuple(np.broadcast_shapes(*shapes))
