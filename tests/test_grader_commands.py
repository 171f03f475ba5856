"""Every command the grader prints works when copied into the folder it was printed in: the
repository root, ``exercises/`` (whose Makefile forwards) and a sub-folder; the exercise files'
own command too; and run with a Python that lacks the course's packages, the grader says in one
line what to run instead. The repository's ``exercises/`` is blank, so the first-run scoreboard
is what a student sees on a fresh clone: one row per lab and where to start.

Real processes: ``make`` and the grader, run through a shell as a student would type them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from grader.specs import LABS

ROOT = Path(__file__).resolve().parent.parent
SUBFOLDER = ROOT / "grader" / "specs"          # any folder of the repository
PRINTED = re.compile(r"start with (\S+): `([^`]+)`")


def shell(command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CNNLAB_CWD"}
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def first_run(command: str, cwd: Path) -> tuple[str, str]:
    """Run ``command`` (a full grading of the blank exercises) in ``cwd``; check the first-run
    scoreboard and return the file and the command it says to start with."""
    r = shell(command, cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    for _, title in LABS:   # one row per lab, not one per exercise
        assert len(re.findall(rf"│ {re.escape(title)} +│ \d+ exercises +│", r.stdout)) == 1, title
    assert r.stdout.count("not attempted") == len(LABS), r.stdout
    start = PRINTED.findall(r.stdout)
    assert len(start) == 1, r.stdout
    return start[0]


def check_works(command: str, cwd: Path) -> None:
    r = shell(command, cwd)
    assert r.returncode == 0, f"`{command}` in {cwd}:\n{r.stdout}{r.stderr}"
    assert "neurons.sigmoid" in r.stdout and "not attempted" in r.stdout, r.stdout


def test_printed_commands_work_from_the_root_exercises_and_a_subfolder():
    file, command = first_run("make grade", ROOT)
    assert (file, command) == ("exercises/neurons.py", "make check EX=sigmoid")
    check_works(command, ROOT)

    exercises = ROOT / "exercises"
    file, command = first_run("make grade", exercises)
    assert (file, command) == ("neurons.py", "make check EX=sigmoid")
    check_works(command, exercises)
    assert (exercises / file).is_file()
    header = re.search(r"grade one function with `([^`]+)`", (exercises / file).read_text())
    assert header and header.group(1) == command   # the file's own command: works here too

    python = shlex.quote(os.path.relpath(sys.executable, SUBFOLDER))
    file, command = first_run(f"{python} -m grader", SUBFOLDER)
    assert (file, command) == ("../../exercises/neurons.py", "make -C ../.. check EX=sigmoid")
    assert (SUBFOLDER / file).is_file()
    check_works(command, SUBFOLDER)


def test_a_python_without_the_packages_says_in_one_line_how_to_run(tmp_path):
    bare = tmp_path / "bare"   # a Python without numpy, rich, jax or cnnlab
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    r = shell(f"{bare / 'bin' / 'python'} -m grader check sigmoid", ROOT)
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("grader: error: this Python") and r.stderr.rstrip().endswith(
        "run: make check EX=sigmoid"), r.stderr
    check_works("make check EX=sigmoid", ROOT)


def test_make_check_without_a_name_says_how():
    r = shell("make check", ROOT / "exercises")
    assert r.returncode != 0 and "usage: make check EX=NAME" in r.stderr, r.stderr


@pytest.mark.exhaustive
def test_make_grade_on_a_fresh_clone_prints_no_warning_of_ours(tmp_path):
    """A fresh clone: `make grade` creates .venv (minutes) and prints the first scoreboard with
    no warning from this project (pip's notes about this machine's package index are not ours)."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    r = shell("make grade", clone)
    assert r.returncode == 0, r.stdout + r.stderr
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "warning" in ln.lower()
            and not re.match(r"WARNING: Location '.*' is ignored", ln)]
    assert not ours, "\n".join(ours)
    assert "start with exercises/neurons.py: `make check EX=sigmoid`" in r.stdout
