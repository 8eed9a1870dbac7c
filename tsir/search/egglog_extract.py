"""egglog's own extraction (its default cost: one per e-node, tree cost) mapped onto a genome.

The extracted expression is walked from the root e-class down: at each e-class, the e-node with the
same op, the same attributes and children that match recursively is the one egglog chose.
"""

from __future__ import annotations

from egglog import PyObject, get_callable_args, get_callable_fn

from tsir._compat.egglog import identity
from tsir.egraph import TermEGraph
from tsir.search.extract import Genome, Space

_OP_NAMES = {"·.cons": "cons", "TensorList.nil": "nil"}


def egglog_extraction(egraph: TermEGraph, space: Space) -> Genome:
    """The genome of egglog's ``extract`` of the root (classes it does not reach keep the original)."""
    expr = egraph.egraph.extract(egraph.root_expr)
    genome = space.original()
    memo: dict[tuple[int, int], bool] = {}
    alive: list = []  # keeps visited sub-expressions alive, so their ids stay unique

    def match(c: int, e) -> bool:
        alive.append(e)
        key = (c, identity(e))  # shared sub-expressions share it: linear, not tree-sized
        if key in memo:
            return memo[key]
        memo[key] = False
        fn = str(get_callable_fn(e))
        op = _OP_NAMES.get(fn, fn)
        args = get_callable_args(e) or ()
        attrs = tuple(a.value for a in args if isinstance(a, PyObject))
        kids = [a for a in args if not isinstance(a, PyObject)]
        for i, node in enumerate(space.view.classes[c]):
            if node.op == op and node.attrs == attrs and len(node.children) == len(kids) and all(
                match(k, sub) for k, sub in zip(node.children, kids, strict=True)
            ):
                genome[c] = i
                memo[key] = True
                break
        return memo[key]

    if not match(space.view.root, expr):
        raise AssertionError("egglog's extraction does not match any program of the e-graph view")
    return genome
