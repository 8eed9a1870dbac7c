"""Every code block in README.md and docs/*.md runs.

A ```python block runs as a script in a fresh interpreter with a temporary working directory; a ```bash block runs
with bash (``set -euo pipefail``) from the repository root with the venv's ``bin`` first on PATH. A block
preceded by ``<!-- docs-test: skip REASON -->`` is reported as skipped with that reason. A page's blocks
run in page order in one test (later blocks may read what earlier ones wrote).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` (any language), with their skip markers."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        marker = SKIP.match(lines[i - 1]) if i > 0 else None
        found.append(Block(page, i + 1, match[1], "\n".join(lines[i + 1:end]) + "\n",
                           marker[1] if marker else None))
        i = end + 1
    return found


RUNNABLE = [b for page in PAGES for b in blocks(page) if b.lang in ("python", "bash")]


# A page's blocks may build on each other (optimize, then read the report): they run in page order in
# one test per page. Marked blocks are reported one by one as skipped, with their reasons.
PAGES_TO_RUN = sorted({b.page for b in RUNNABLE if b.skip is None})
SKIPPED = [b for b in RUNNABLE if b.skip is not None]


def run_block(block: Block, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if block.lang == "python":  # from a file: TVMScript reads its source back
        script = tmp_path / f"block_{block.line}.py"
        script.write_text(block.code)
        cmd, cwd = [sys.executable, str(script)], tmp_path
    else:
        cmd, cwd = ["bash", "-c", "set -euo pipefail\n" + block.code], ROOT
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{block.id} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("page", PAGES_TO_RUN, ids=lambda page: str(page.relative_to(ROOT)))
def test_doc_page_blocks_run_in_order(page: Path, tmp_path):
    for block in blocks(page):
        if block.lang in ("python", "bash") and block.skip is None:
            run_block(block, tmp_path)


@pytest.mark.parametrize("block", SKIPPED, ids=lambda block: block.id)
def test_doc_block_marked_skip(block: Block):
    pytest.skip(block.skip)


def test_every_skip_has_a_reason_and_code_is_tagged():
    for page in PAGES:
        for block in blocks(page):
            assert block.skip is None or block.skip, f"{block.id}: docs-test skip needs a reason"
            assert block.lang != "sh", f"{block.id}: tag shell blocks ```bash so they run"


def test_the_collector_sees_the_guides():
    pages = {b.page.name for b in RUNNABLE if b.skip is None}
    assert {"README.md", "quickstart.md", "tutorial.md", "tvm.md", "cli.md", "report-schema.md"} <= pages
