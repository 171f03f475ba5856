"""The student release: ``python -m grader release OUTDIR``.

Writes what students receive: ``exercises/``, ``grader/`` (without ``grader/hidden/``), ``lib/``,
``README.md``, ``Makefile``, ``pyproject.toml``, a small ``tests/`` they may run, and the expected
outputs of the *public* cases in ``grader/expected/<module>.json`` + ``.npz`` (arrays in ``.npz``
read with ``allow_pickle=False``; never pickle). No ``solutions/``, no hidden cases, no git history:
nothing from which the reference's source can be read. In the release, ``make grade`` (and
``python -m grader``) grade against those expected outputs (``grader.runner.SavedStore``).

The release is built in a temporary folder beside OUTDIR, checked (:func:`check_release`), and
only then moved into place, so a failed build never leaves a half release behind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cnnlab.errors import CnnlabError
from grader import specs
from grader.assign import assign
from grader.notebook import read_code_cells
from grader.runner import GraderError, call_id, export_expected

ROOT = Path(__file__).resolve().parent.parent
# What students get from the checkout (each only if it exists).
RELEASE_ITEMS = ("exercises", "grader", "lib", "README.md", "Makefile", "pyproject.toml",
                 ".gitignore", "LICENSE")
# Never shipped, wherever they occur (grader/hidden and grader/expected are handled apart).
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache", "*.tmp",
                                 ".hypothesis")
MARKERS = re.compile(r"#\s*(BEGIN|END) SOLUTION")

STUDENT_TEST = '''"""Tests you can run (`make test`): the grader runs on your exercises.

Your score is what `make grade` prints; these tests only check that grading works on this copy.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_expected_outputs_are_shipped():
    assert sorted(p.suffix for p in (ROOT / "grader" / "expected").iterdir())


def test_the_grader_runs_on_my_exercises():
    result = subprocess.run([sys.executable, "-m", "grader", "check", "{exercise}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
'''


def _solution_lines(solutions: Path) -> set[str]:
    """Distinctive lines inside the solution blocks (what students must write themselves)."""
    lines: set[str] = set()
    for path in solutions.glob("*.py"):
        inside = False
        for line in path.read_text().splitlines():
            if re.search(r"#\s*BEGIN SOLUTION", line):
                inside = True
            elif re.search(r"#\s*END SOLUTION", line):
                inside = False
            elif inside:
                text = line.strip()
                if len(text) >= 30 and not text.startswith("#"):
                    lines.add(text)
    return lines


def _notebook_cells(path: Path) -> list[tuple[str, str]]:
    try:
        return read_code_cells(path)
    except (OSError, ValueError):
        return []


def check_release(release: Path, *, solutions: Path | None = None) -> list[str]:
    """Problems that would leak the reference or hidden cases; empty when the release is clean."""
    problems = []
    for forbidden in ("solutions", "grader/hidden", ".git", "tests/hostile"):
        if (release / forbidden).exists():
            problems.append(f"{forbidden}/ must not be shipped")
    solutions = solutions or ROOT / "solutions"
    reference_files = ({p.read_bytes() for p in solutions.glob("*.py")}
                       if solutions.is_dir() else set())
    solution_lines = _solution_lines(solutions) if solutions.is_dir() else set()
    for path in sorted(release.rglob("*")):
        if not path.is_file() or path.suffix in (".npz", ".png"):
            continue
        data = path.read_bytes()
        rel = path.relative_to(release)
        if data in reference_files:
            problems.append(f"{rel} is a copy of a solution file")
            continue
        text = data.decode("utf-8", "replace")
        if path.suffix == ".ipynb":  # the cells' lines, as a student sees them
            text += "\n" + "\n".join(source for _, source in _notebook_cells(path))
        if MARKERS.search(text) and path.name != "release.py" and path.name != "assign.py":
            problems.append(f"{rel} holds a solution marker")
        # lib/ is the research library the solutions may call; by design it implements some of
        # the same ideas (models, augmentation), so only course files are checked line by line.
        leaked = [] if rel.parts[0] == "lib" else [
            ln for ln in (s.strip() for s in text.splitlines()) if ln in solution_lines]
        if leaked:
            problems.append(f"{rel} holds solution code: {leaked[0][:80]!r}")
    problems += _check_expected(release / "grader" / "expected")
    return problems


def _check_expected(expected: Path) -> list[str]:
    """Every saved case must be a public case of the specs (hidden ones never ship)."""
    if not expected.is_dir():
        return ["grader/expected/ is missing: the release could not grade anything"]
    problems = []
    for jf in sorted(expected.glob("*.json")):
        module = jf.stem
        public = {call_id(ex, c) for ex in specs.load(module, include_hidden=False)
                  for c in ex.cases}
        everything = {call_id(ex, c) for ex in specs.load(module, include_hidden=True)
                      for c in ex.cases}
        saved = set(json.loads(jf.read_text())["calls"])
        hidden = sorted((saved & everything) - public)
        unknown = sorted(saved - everything)
        if hidden:
            problems.append(f"{jf.name} holds hidden cases: {', '.join(hidden[:3])}")
        if unknown:
            problems.append(f"{jf.name} holds cases no spec defines: {', '.join(unknown[:3])}")
        if not (expected / f"{module}.npz").is_file():
            problems.append(f"{module}.npz is missing beside {jf.name}")
    return problems


def build_release(outdir: str | os.PathLike, *, modules: Sequence[str] | None = None,
                  force: bool = False, stream=None) -> Path:
    """Build the student release in ``outdir`` (see the module docstring); returns its path."""
    stream = stream or sys.stdout
    out = Path(outdir).resolve()
    solutions = ROOT / "solutions"
    if not (solutions / "neurons.py").is_file():
        raise CnnlabError(f"no solutions/ in {ROOT}: build the release from the instructor's "
                          "checkout")
    if out == ROOT or ROOT in out.parents and out.parts[len(ROOT.parts)] in RELEASE_ITEMS:
        raise CnnlabError(f"{out} is inside the course's own files; choose another OUTDIR")
    if out.exists() and any(out.iterdir()) and not force:
        raise CnnlabError(f"{out} exists and is not empty; pass --force to replace it")
    unknown = [m for m in modules or () if m not in specs.MODULES]
    if unknown:
        raise CnnlabError(f"unknown module {unknown[0]!r}; choose from {', '.join(specs.MODULES)}")
    stale = assign(check=True)
    if stale:
        raise CnnlabError(f"exercises/ is stale for {', '.join(stale)}: run `python -m grader "
                          "assign` first")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        for item in RELEASE_ITEMS:
            src = ROOT / item
            if src.is_dir():
                shutil.copytree(src, stage / item, ignore=IGNORED, symlinks=False)
            elif src.is_file():
                shutil.copy2(src, stage / item)
        for secret in ("hidden", "expected"):
            shutil.rmtree(stage / "grader" / secret, ignore_errors=True)
        chosen = list(modules or specs.MODULES)
        print(f"computing the expected outputs of the public cases of {len(chosen)} module(s)",
              file=stream, flush=True)
        try:
            export_expected(stage / "grader" / "expected", modules=chosen, include_hidden=False)
        except GraderError as exc:
            raise CnnlabError(str(exc)) from None
        (stage / "tests").mkdir(exist_ok=True)
        first = specs.load(chosen[0])[0].qualname
        (stage / "tests" / "test_exercises.py").write_text(STUDENT_TEST.format(exercise=first))
        problems = check_release(stage)
        if problems:
            raise CnnlabError("the release would leak: " + "; ".join(problems))
        os.chmod(stage, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        stage.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    print(f"wrote the student release to {out} (expected outputs of the public cases of "
          f"{', '.join(chosen)}; no solutions, no hidden cases)", file=stream)
    return out


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "release", help="write the student release (instructor)",
        description="Write what students receive to OUTDIR: exercises/, grader/, lib/, README, "
                    "Makefile, tests and the expected outputs of the public cases; no solutions, "
                    "no hidden cases.")
    p.add_argument("outdir", type=Path, metavar="OUTDIR")
    p.add_argument("--force", action="store_true", help="replace OUTDIR if it is not empty")
    p.add_argument("--modules", default=None, metavar="NAMES",
                   help="comma-separated lab modules to ship expected outputs for (default: all)")
    p.set_defaults(func=_cmd_release)


add_subcommands = register_cli


def _cmd_release(args: argparse.Namespace) -> int:
    modules = [m.strip() for m in args.modules.split(",") if m.strip()] if args.modules else None
    try:
        build_release(args.outdir, modules=modules, force=args.force)
    except CnnlabError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 2
    return 0
