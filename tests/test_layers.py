"""The layers point one way: ir <- rewrites <- egraph/search <- pipeline <- api/cli, and backends depend on
the ir and the target data only. Read statically (ast) from the sources, so nothing is imported.

Every import counts for the order, also one inside a function; only imports run when a module loads
(module level, outside ``if TYPE_CHECKING:``) count for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# package name -> its source directory (pyproject.toml's package-dir)
ROOTS = {"tsir": REPO / "tsir", "tsir.rewrites": REPO / "rewrites", "tsir.backends": REPO / "backends",
         "tsir.bench": REPO / "bench"}

# layer -> the modules in it (a name covers its submodules); the longest matching prefix decides
LAYERS = {
    "compat": ("tsir._compat",),  # adapters for the libraries' private APIs, below everything
    "ir": ("tsir.errors", "tsir.ir", "tsir.convert", "tsir.lower"),
    "targets": ("tsir.backends.targets", "tsir.backends.presets", "tsir.backends.roofline"),
    "backends": ("tsir.backends",),
    "rewrites": ("tsir.rewrites",),
    "search": ("tsir.egraph", "tsir.search", "tsir.approx"),
    "pipeline": ("tsir.frontend", "tsir.source", "tsir.pytree", "tsir.onnx_clip", "tsir.onnx_pads", "tsir.draws",
                 "tsir.approx_data", "tsir.verify", "tsir.report", "tsir.failure", "tsir.native_log", "tsir.stages",
                 "tsir.options"),
    "api": ("tsir", "tsir.api", "tsir.cli", "tsir.__main__", "tsir.transform", "tsir.zoo", "tsir.testing",
            "tsir.bench"),
}
# layer -> the layers it may import (besides itself)
MAY_IMPORT = {
    "compat": set(),
    "ir": {"compat"},
    "targets": {"compat", "ir"},
    "backends": {"compat", "ir", "targets"},
    "rewrites": {"compat", "ir"},
    "search": {"compat", "ir", "targets", "backends", "rewrites"},
    "pipeline": {"compat", "ir", "targets", "backends", "rewrites", "search"},
    "api": {"compat", "ir", "targets", "backends", "rewrites", "search", "pipeline"},
}


def modules() -> dict[str, Path]:
    """Every module of the installed ``tsir`` package, by dotted name."""
    found = {}
    for package, directory in ROOTS.items():
        for path in directory.rglob("*.py"):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if package == "tsir" and parts and f"tsir.{parts[0]}" in ROOTS:
                continue
            found[name] = path
    return found


def layer(module: str) -> str:
    best = max(((prefix, name) for name, prefixes in LAYERS.items() for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=lambda pair: len(pair[0]), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return best[1]


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(imported tsir module, whether it is imported when ``name`` loads) for each import in the file."""
    tree = ast.parse(path.read_text(), str(path))
    at_load = set()

    def top_level(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                at_load.add(id(node))
            elif isinstance(node, ast.If) and ast.unparse(node.test) != "TYPE_CHECKING":
                top_level(node.body)
                top_level(node.orelse)
            elif isinstance(node, ast.Try):
                top_level(node.body)

    top_level(tree.body)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # ``from package import submodule`` imports the submodule; ``from module import name`` the module
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found += [(target, id(node) in at_load) for target in targets if target in known and target != name]
    return found


def graph() -> dict[str, list[tuple[str, bool]]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_import_follows_the_layer_order():
    wrong = sorted({f"{name} ({layer(name)}) imports {target} ({layer(target)})"
                   for name, edges in graph().items() for target, _ in edges
                   if layer(target) != layer(name) and layer(target) not in MAY_IMPORT[layer(name)]})
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_module_import_cycle():
    edges = {name: sorted({t for t, at_load in targets if at_load}) for name, targets in graph().items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in edges[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not cycles, "module import cycles:\n" + "\n".join(cycles)


def test_the_walker_sees_an_edge_against_the_order(tmp_path):
    """The check itself: a rewrite module importing the search is reported, a relative import is resolved."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ..search import extract\n\ndef f():\n    from tsir.egraph import TermEGraph\n")
    known = {"tsir.rewrites.bad", "tsir.search", "tsir.search.extract", "tsir.egraph"}
    found = imports("tsir.rewrites.bad", bad, known)
    assert found == [("tsir.search.extract", True), ("tsir.egraph", False)]
    assert {layer(t) for t, _ in found} == {"search"} and "search" not in MAY_IMPORT["rewrites"]


def test_importing_backends_stays_light():
    """``import tsir.backends.jobs`` (what the measurement child does) loads neither egglog, the rules nor the API
    (torch it does: ``import tvm`` imports it)."""
    import subprocess
    import sys

    code = ("import sys, tsir.backends.jobs, tsir.backends.child; "
            "print(sorted(m for m in ('egglog', 'tsir.rewrites', 'tsir.api') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
