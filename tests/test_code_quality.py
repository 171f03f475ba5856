"""The code's boundaries and sizes, checked by tools (issue 17, point 4): ``ruff`` (pyflakes, no
function over 80 statements or complexity 15, imports inside functions only with a stated reason)
over ``lib/cnnlab`` and ``grader``, and ``import-linter``'s contracts (``pyproject.toml``): the
library is layered, never imports the course, and has no import cycles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "NO_COLOR": "1"})


def test_ruff_finds_nothing_in_the_library_and_the_grader():
    r = run("ruff", "check", "--no-cache", "lib/cnnlab", "grader")
    assert r.returncode == 0, r.stdout + r.stderr


def test_import_contracts_are_kept():
    r = run("lint-imports", "--no-cache")
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in r.stdout, r.stdout[-3000:]
