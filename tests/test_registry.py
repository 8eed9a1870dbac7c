"""The op registry: every op is declared whole (or says why a part is missing), and every table the house
uses (egglog constructors, converters, emitters, fuzzer makers, cost tables, category sets) agrees with it."""

from __future__ import annotations

import random

import pytest
import tvm
from egglog import PyObject

from tsir.backends import dnnl, kernels
from tsir.backends.roofline import COMPUTE_EFFICIENCY
from tsir.convert import CONVERTERS
from tsir.ir import lang
from tsir.ir.registry import OPS, PARTS, Category, OpSpec, missing_parts, ops_in, with_weight
from tsir.ir.term import postorder
from tsir.lower import EMITTERS
from tsir.search.calibration import OPS_OF_CLASS
from tsir.testing.strategies import MAKERS, GraphBuilder


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_declared_whole(op):
    spec = OPS[op]
    assert missing_parts(spec) == [], f"{op} lacks {missing_parts(spec)}: declare them or say why in `missing`"
    for part, why in spec.missing.items():
        assert why.strip(), f"{op}: the reason for no {part!r} is empty"
        assert getattr(spec, part, None) in (None, {}), f"{op} has a {part!r} and a reason for having none"


def test_an_incomplete_declaration_is_caught():
    """The completeness check is not vacuous: a GEMM-class op without a maker, efficiency or layout fails it."""
    bare = OpSpec("conv3d", 2, ("strides",), Category.GEMM, OPS["conv2d"].infer, OPS["conv2d"].evaluate,
                  convert={"relax.nn.conv3d": lambda call, args, ty: None}, emit=lambda a, at, ty: None,
                  weight="OIDHW", kernel_class="conv3d")
    assert missing_parts(bare) == ["make", "efficiency", "layout"]
    assert missing_parts(OpSpec("scale", 1, (), Category.UNARY, None, None)) == list(PARTS)


def test_egglog_constructors_are_the_registry():
    assert set(lang.CONSTRUCTORS) == set(OPS)
    for name, spec in OPS.items():
        assert getattr(lang, name) is lang.CONSTRUCTORS[name]
        children = _dummy_children(spec.arity)
        expr = lang.CONSTRUCTORS[name](*children, *(PyObject(0) for _ in spec.attrs))  # arity + attributes
        assert str(expr).startswith(f"{name}(")
        with pytest.raises(TypeError):
            lang.CONSTRUCTORS[name](*children, *(PyObject(0) for _ in (*spec.attrs, "one too many")))


def _dummy_children(arity: int | None) -> list:
    if arity is None:
        return [lang.tlist(lang.input(PyObject("x")))]
    return [lang.input(PyObject(f"x{i}")) for i in range(arity)]


def test_converters_and_emitters_are_the_registry():
    declared = {relax_op: fn for spec in OPS.values() for relax_op, fn in spec.convert.items()}
    assert {k: CONVERTERS[k] for k in declared} == declared
    for relax_op in declared:
        assert tvm.ir.Op.get(relax_op).name == relax_op  # a real Relax op (a typo fails here)
    assert EMITTERS == {name: spec.emit for name, spec in OPS.items() if spec.emit}


def test_the_fuzzer_draws_every_op_with_a_maker():
    assert {name for name in MAKERS if name in OPS} == {name for name, spec in OPS.items() if spec.make}
    for op in sorted(name for name, spec in OPS.items() if spec.make):
        made = set()
        for seed in range(20):  # on an image and on a matrix, as graphs() starts
            b = GraphBuilder(seed)
            for x in (b.input((2, 4, 5, 5)), b.input((3, 4))):
                term = OPS[op].make(_Choices(random.Random(seed)), b, x, [x])
                made |= {t.op for t in postorder(term)} if term is not None else set()
        assert op in made, f"the maker of {op} never makes it"


class _Choices:
    """``tsir.ir.registry.Choices`` on a seeded ``random.Random`` (for makers called outside hypothesis)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, items):
        return self.rng.choice(list(items))

    def flag(self) -> bool:
        return self.rng.random() < 0.5

    def permutation(self, items) -> list:
        return self.rng.sample(list(items), len(list(items)))

    def subset(self, items, min_size: int) -> list:
        items = list(items)
        return sorted(self.rng.sample(items, self.rng.randint(min_size, len(items))))


def test_cost_tables_come_from_the_registry():
    gemm = ops_in(Category.GEMM, Category.LIBRARY)
    assert gemm == {"matmul", "linear", "conv1d", "conv2d", "dnnl_matmul", "dnnl_linear", "dnnl_conv2d",
                    "dnnl_conv2d_add", "dnnl_layer_norm"}
    for op in gemm:
        assert all(COMPUTE_EFFICIENCY[key] == OPS[op].efficiency for key in OPS[op].cost_classes())
    for op in ops_in(Category.GEMM):
        assert op in OPS_OF_CLASS[OPS[op].kernel_class]
    assert kernels.op_class("fused_conv1d_ncw_add") == "conv1d" and kernels.op_class("fused_dense_add") == "matmul"
    assert OPS["dnnl_conv2d"].cost_classes() == ("dnnl_conv2d", "dnnl_conv2d_nhwc")  # one per layout


def test_library_symbols_are_the_extensions_functions():
    for op in ops_in(Category.LIBRARY):
        spec = OPS[op]
        for layout in spec.layouts or (spec.layout,):
            assert spec.library(layout) in dnnl.FUNCTIONS


def test_layout_is_an_attribute_not_a_name():
    for name, spec in OPS.items():
        assert not name.endswith(("_nhwc", "_nchw", "_ncw", "_nwc")), f"{name}: put the layout in an attribute"
        if spec.layouts:
            assert spec.attrs[-1] == "layout" and spec.layout is None
    assert with_weight("OIHW") == {"conv2d", "dnnl_conv2d", "dnnl_conv2d_add"} and with_weight("OIW") == {"conv1d"}
