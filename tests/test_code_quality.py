"""The code's boundaries and sizes, checked by tools (issue 17, point 4): ``ruff`` (pyflakes, no
function over 80 statements or complexity 15, imports inside functions only with a stated reason)
over ``lib/cnnlab`` and ``grader``, and ``import-linter``'s contracts (``pyproject.toml``): the
library is layered, never imports the course, and has no import cycles."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
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


def test_every_import_inside_a_function_says_why_and_none_is_waived_wholesale():
    """ruff's PLC0415 is on everywhere (no per-file waiver), and each ``# noqa: PLC0415`` that
    lets an import stay inside a function carries its reason: ``# noqa: PLC0415 - why``."""
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert "PLC0415" in ruff["select"]
    waived = {glob: codes for glob, codes in ruff.get("per-file-ignores", {}).items()
              if "PLC0415" in codes}
    assert not waived, waived
    silent = []
    files = [*(ROOT / "lib" / "cnnlab").rglob("*.py"), *(ROOT / "grader").rglob("*.py")]
    for path in sorted(files):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.search(r"#\s*noqa:[\sA-Z0-9,]*PLC0415[\sA-Z0-9,]*(.*)$", line)
            if match and not re.match(r"-\s*\S", match.group(1).strip()):
                silent.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not silent, "\n".join(silent)
