"""Packaging: every package tsir imports is declared in pyproject.toml (a dependency or an extra), and the
native parts are found as package data. ``make check-install`` proves the whole road (pip install of a clean
clone into a fresh venv); these are its cheap halves."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from tsir.backends import dnnl, native_files

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("tsir", "backends", "rewrites", "bench")  # installed as tsir, tsir.backends, tsir.rewrites, tsir.bench


def imported_packages() -> dict[str, str]:
    """Top-level module -> a file importing it, for every absolute import of a non-standard module."""
    found: dict[str, str] = {}
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("__future__", "tsir", "bench"):
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    requirements = [*project["dependencies"], *extras]
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_every_imported_package_is_declared():
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, where in imported_packages().items():
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not names & declared():
            missing.append(f"{module} (distribution {sorted(names)}, imported in {where})")
    assert not missing, "imported but not declared in pyproject.toml:\n" + "\n".join(missing)


def test_the_check_sees_an_undeclared_import():
    assert {"scipy", "ml-dtypes", "scikit-learn", "hypothesis"} <= declared()
    assert "sklearn" in imported_packages() and "no-such-package" not in declared()


def test_native_parts_are_package_data():
    assert native_files.NATIVE_DIR == Path(native_files.__file__).resolve().parent / "_native"
    assert dnnl.library_path() == native_files.NATIVE_DIR / "host" / "lib" / "libtsir_dnnl.so"
    assert native_files.runner("host").is_file() and dnnl.library_path().is_file()  # make native installed them
