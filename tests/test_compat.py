"""The private-API adapters (``tsir._compat``): each still does its job on the installed libraries.

An upgrade of TVM or egglog fails here first, naming the adapter to re-check; and nothing outside the
adapters reaches into a private API of either library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import egglog
import pytest
from egglog import EGraph, Expr, i64Like, rewrite, rule, ruleset, union

from tsir._compat import egglog as egglog_compat
from tsir._compat import tvm as tvm_compat

REPO = Path(__file__).resolve().parents[1]


def test_the_adapters_were_written_for_the_installed_versions():
    installed = {"egglog": version("egglog"), "apache-tvm": version("apache-tvm")}
    assert installed == {"egglog": egglog_compat.TESTED_WITH, "apache-tvm": tvm_compat.TESTED_WITH}, (
        "a library was upgraded: re-check tsir/_compat/egglog.py and tsir/_compat/tvm.py against it (every private "
        "API they use), run tests/test_compat.py, then update TESTED_WITH")


class Num(Expr):
    def __init__(self, value: i64Like) -> None: ...

    def __add__(self, other: Num) -> Num: ...


def test_declared_rules_lists_a_rulesets_rules_by_name():
    a, b = egglog.vars_("a b", Num)
    rules = ruleset(rule(a + b, name="commute").then(union(a + b).with_(b + a)),
                    rule(a + Num(0), name="add_zero").then(union(a + Num(0)).with_(a)), name="num")
    assert [r.name for r in egglog_compat.declared_rules(rules)] == ["commute", "add_zero"]


def test_serialized_reads_every_eclass_and_its_enodes():
    a, b = egglog.vars_("a b", Num)
    egraph = EGraph()
    egraph.register(Num(1) + Num(2))
    egraph.run(ruleset(rewrite(a + b).to(b + a)) * 2)
    data = egglog_compat.serialized(egraph)
    adds = [n for n in data["nodes"].values() if n["op"] == "· + ·"]  # 1 + 2 and 2 + 1, in one e-class
    assert len(adds) == 2 and len({n["eclass"] for n in adds}) == 1
    assert data["class_data"][adds[0]["eclass"]]["type"].endswith(".Num")  # what tsir.egraph.view reads
    primitives = {n["op"]: n["eclass"] for k, n in data["nodes"].items() if k.startswith("primitive-")}
    assert primitives == {"1": "i64-1", "2": "i64-2"}  # each primitive in an e-class of its own


@pytest.mark.parametrize(("family", "other", "intrinsic"), [("x86", "cuda", "dot_16x4_avx512"),
                                                              ("cuda", "x86", "mma_ldmatrix_f16_a")])
def test_load_tensor_intrinsics_registers_one_family_only(family, other, intrinsic):
    loaded, skipped = (f"{tvm_compat.TENSOR_INTRIN}.{name}" for name in (family, other))
    code = (f"import sys; from tsir._compat.tvm import load_tensor_intrinsics; load_tensor_intrinsics('{family}'); "
            "import tvm.s_tir.tensor_intrin as t; from tvm import s_tir; "
            f"print('{loaded}' in sys.modules, '{skipped}' in sys.modules, "
            f"s_tir.TensorIntrin.get('{intrinsic}', allow_missing=True) is not None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "False", "True"]


def test_no_private_library_api_outside_the_adapters():
    """``x._name`` / ``x.__egg_...__`` on a TVM or egglog object, or ``from tvm... import _name``, only in _compat."""
    libraries = ("tvm", "egglog", "tvm_ffi")
    found = []
    for path in [p for d in ("tsir", "backends", "rewrites", "bench") for p in (REPO / d).rglob("*.py")]:
        if "_compat" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in libraries:
                found += [f"{path.name}:{node.lineno}: {a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith(("__egg", "_serialize", "_normalized")):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "sys.modules":
                found.append(f"{path.name}:{node.lineno}: sys.modules[...]")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                found.append(f"{path.name}:{node.lineno}: {node.func.id}(...)")
    assert not found, "private library APIs outside tsir/_compat:\n" + "\n".join(found)
