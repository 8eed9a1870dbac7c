"""The tsir term language in egglog: one typed constructor per op of the registry, derived from ``OPS``.

Tensor children are ``Tensor`` (or a ``TensorList`` for variadic ops); attributes are ``PyObject``
literals, hashed by value. Two analyses live beside the constructors: ``ty`` (the type of an
e-class, computed by the type rules of ``tsir.ir.ops``) and ``is_const`` (the e-class has a
constant-only program, so it can be folded before run time).
"""

from __future__ import annotations

import inspect

from egglog import Bool, Expr, PyObject, eq, function, relation, rule, ruleset, set_, var

from tsir.ir.ops import OPS, RUNTIME_ONLY, OpSpec


class Tensor(Expr):
    """A tensor-valued (or, for ``opaque``/``tuple``, tuple-valued) program."""


class TensorList(Expr):
    """The children of a variadic op, as a cons list."""

    @classmethod
    def nil(cls) -> TensorList: ...

    def cons(self, head: Tensor) -> TensorList: ...  # type: ignore[empty-body]


def _constructor(spec: OpSpec):
    """The egglog function of one op: its tensor children (a ``TensorList`` when variadic), then its attributes."""
    children = [("args", TensorList)] if spec.arity is None else [(f"x{i}", Tensor) for i in range(spec.arity)]
    params = [*children, *((name, PyObject) for name in spec.attrs)]

    def declared(*args): ...

    declared.__name__ = declared.__qualname__ = spec.name
    declared.__module__ = __name__
    declared.__signature__ = inspect.Signature(
        [inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=t) for p, t in params],
        return_annotation=Tensor)
    declared.__annotations__ = {**dict(params), "return": Tensor}
    return function(declared)


# One constructor per op of the registry, under the op's name (``lang.conv2d(x, w, strides, ...)``).
CONSTRUCTORS = {name: _constructor(spec) for name, spec in OPS.items()}
globals().update(CONSTRUCTORS)


@function(merge=lambda old, new: old)
def ty(t: Tensor) -> PyObject:
    """The type of an e-class: ``(shape, dtype)``."""


@function(merge=lambda old, new: old)
def list_ty(xs: TensorList) -> PyObject:
    """The types of a list's elements, as a tuple."""


is_const = relation("is_const", Tensor)
list_const = relation("list_const", TensorList)

LEAVES = ("weight", "scalar")


def tlist(*items: Tensor) -> TensorList:
    """Build a ``TensorList`` from its elements."""
    out = TensorList.nil()
    for item in reversed(items):
        out = out.cons(item)
    return out


def eq_(a, b):
    """The fact ``a == b``."""
    return eq(a).to(b)


def _infer_call(name: str, arity: int | None):
    infer = OPS[name].infer
    if arity is None:
        return lambda *values: infer(values[0], values[1:])
    return lambda *values: infer(values[:arity], values[arity:])


def _analysis_rules():
    """Type and constness rules for every op with a type rule, derived from the op table."""
    y = var("y", Tensor)
    head, xs, rest = var("head", Tensor), var("xs", TensorList), var("rest", TensorList)
    rules = [
        rule(eq_(xs, TensorList.nil())).then(set_(list_ty(xs)).to(PyObject(()))),
        rule(eq_(xs, rest.cons(head)), eq_(ty(head), var("th", PyObject)),
             eq_(list_ty(rest), var("tr", PyObject))).then(
            set_(list_ty(xs)).to(PyObject(lambda th, tr: (th, *tr))(var("th", PyObject), var("tr", PyObject)))),
        rule(eq_(xs, TensorList.nil())).then(list_const(xs)),
        rule(eq_(xs, rest.cons(head)), is_const(head), list_const(rest)).then(list_const(xs)),
    ]
    for leaf in LEAVES:
        rules.append(rule(eq_(y, CONSTRUCTORS[leaf](var("a", PyObject)))).then(is_const(y)))
    for name, spec in OPS.items():
        if spec.infer is None:
            continue
        attrs = [var(f"a{i}", PyObject) for i in range(len(spec.attrs))]
        if spec.arity is None:
            children, types = [xs], [list_ty(xs)]
            const_facts = [list_const(xs)]
        else:
            children = [var(f"x{i}", Tensor) for i in range(spec.arity)]
            types = [ty(c) for c in children]
            const_facts = [is_const(c) for c in children]
        type_vars = [var(f"t{i}", PyObject) for i in range(len(types))]
        term = CONSTRUCTORS[name](*children, *attrs)
        rules.append(rule(eq_(y, term), *(eq_(t, tv) for t, tv in zip(types, type_vars, strict=True))).then(
            set_(ty(y)).to(PyObject(_infer_call(name, spec.arity))(*type_vars, *attrs))))
        if name not in RUNTIME_ONLY and name not in LEAVES:
            rules.append(rule(eq_(y, term), *const_facts).then(is_const(y)))
    return rules


analysis = ruleset(*_analysis_rules(), name="analysis")


def holds(predicate, *args: PyObject):
    """The fact ``predicate(*args)`` is true, for guards computed in Python from types and attributes."""
    return eq(PyObject(predicate)(*args).to_bool()).to(Bool(True))


def computed(fn, *args: PyObject) -> PyObject:
    """An attribute computed in Python when the rule fires."""
    return PyObject(fn)(*args)
