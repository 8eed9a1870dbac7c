"""Targets are data: a ``TargetSpec`` carries its capabilities, and no code outside the target module tells
targets apart by their kind name (``spec.kind == "x86"``, ``target.kind.name != "llvm"``, ``kind in (...)``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tsir.backends import targets

REPO = Path(__file__).resolve().parents[1]
TARGET_MODULE = REPO / "backends" / "targets.py"
# tsir's target kinds and the TVM target kinds they compile to (and a few TVM has that tsir might add)
KIND_NAMES = {*targets.KINDS, "llvm", "c", "rocm", "metal", "vulkan", "opencl"}
# (file, source text) of comparisons on a kind that is not a target's
NOT_TARGETS = {("backends/runtime.py", 'module.kind == "cuda"')}  # a runtime Module's type: the CUDA kernels'


def _strings(node: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _mentions_kind(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and n.id == "kind") or (isinstance(n, ast.Attribute) and n.attr == "kind")
               for n in ast.walk(node))


def kind_tests(path: Path) -> list[str]:
    """The comparisons in ``path`` that test a kind against a target kind's name, as ``file:line: source``."""
    text = path.read_text()
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        named = any(_strings(o) & KIND_NAMES for o in operands)
        if named and any(_mentions_kind(o) for o in operands):
            source = ast.get_source_segment(text, node)
            if (rel, source) not in NOT_TARGETS:
                found.append(f"{rel}:{node.lineno}: {source}")
    return found


def test_no_kind_tests_outside_the_target_module():
    files = [p for d in ("tsir", "backends", "rewrites", "bench") for p in sorted((REPO / d).rglob("*.py"))]
    found = [hit for path in files if path != TARGET_MODULE for hit in kind_tests(path)]
    assert not found, "ask the TargetSpec's capability instead of its kind:\n" + "\n".join(found)


def test_the_check_finds_kind_tests(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('a = spec.kind == "x86"\nb = target.kind.name != "llvm"\nc = kind in ("arm", "cuda")\n'
                       'd = site.kind == "conv"\ne = spec.library_kernels\n')
    assert [hit.split(": ", 1)[1] for hit in kind_tests(planted)] == [
        'spec.kind == "x86"', 'target.kind.name != "llvm"', 'kind in ("arm", "cuda")']


def test_x86_capabilities():
    spec = targets.resolve("x86")
    assert (spec.device, spec.runs_here, spec.library_kernels, spec.cpu_schedules) == ("cpu", True, True, True)
    assert (spec.verify_on, spec.native_runner, spec.emulator, spec.nvcc_check, spec.cc) == (
        "in_process", "host", (), False, None)
    assert targets.tensor_intrinsics(spec.target) == "x86"


@pytest.mark.parametrize("name", ["arm", "arm:cortex-a76"])
def test_arm_capabilities(name):
    spec = targets.resolve(name)
    assert (spec.device, spec.runs_here, spec.library_kernels, spec.cpu_schedules) == ("cpu", False, False, True)
    assert (spec.verify_on, spec.native_runner, spec.emulator[0], spec.cc) == (
        "native_runner", "aarch64", "qemu-aarch64", "aarch64-linux-gnu-g++")
    assert targets.tensor_intrinsics(spec.target) == "arm_cpu"


def test_cuda_capabilities():
    spec = targets.resolve("cuda:sm_80")
    assert (spec.device, spec.library_kernels, spec.cpu_schedules, spec.nvcc_check) == ("cuda", False, False, True)
    assert spec.runs_here == targets.gpu_present()
    assert (spec.verify_on, spec.native_runner, spec.cc) == ("gpu", None, None)
    assert targets.tensor_intrinsics(spec.target) == "cuda"  # tuning loads CUDA's intrinsics only
