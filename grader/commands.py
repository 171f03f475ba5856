"""The commands the grader prints, written to work when copied into the folder it was run from.

Students grade with ``make check EX=NAME`` and ``make grade``: the repository's Makefile creates
the virtual environment on first use and runs the grader with it, and ``exercises/Makefile``
forwards every target to it, so both work in the repository and in ``exercises/``. From any other
folder the printed command says where the repository is (``make -C ../.. check EX=NAME``). A
submission folder of one's own is graded with the Python command instead.

Standard library only, and importable by an old Python: ``python -m grader`` checks with it that
the running Python has the course's packages before importing anything else (:func:`preflight`).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent   # the checkout this grader belongs to
NEEDED = ("numpy", "rich", "jax", "cnnlab")      # what grading imports; cnnlab is installed by make


def find_root(start: Path | None = None) -> Path:
    """The repository the user works in: the nearest folder at or above ``start`` (the current
    folder) holding ``exercises/`` and a ``Makefile``; else the checkout of this grader."""
    here = _abs(start)
    for folder in [here, *here.parents]:
        if (folder / "exercises").is_dir() and (folder / "Makefile").is_file():
            return folder
    return ROOT


def default_submission() -> Path:
    return find_root() / "exercises"


def user_cwd() -> Path:
    """The folder the user typed the command in: ``$CNNLAB_CWD`` when ``exercises/Makefile``
    forwarded it to the repository's Makefile, else the current folder."""
    forwarded = os.environ.get("CNNLAB_CWD", "")
    return Path(forwarded) if forwarded and os.path.isdir(forwarded) else Path.cwd()


def _abs(path: Path | str | None) -> Path:
    """An absolute path without resolving symlinks (the venv's python is one); None: the user's
    folder (:func:`user_cwd`)."""
    return Path(os.path.abspath(user_cwd() if path is None else path))


def _where(target: Path, cwd: Path) -> str:
    """``target`` as typed from ``cwd``: relative within the repository, absolute otherwise."""
    root = find_root(cwd)

    def inside(p: Path) -> bool:
        return p == root or root in p.parents

    return os.path.relpath(target, cwd) if inside(cwd) and inside(target) else str(target)


def show_path(path: Path | str, cwd: Path | None = None) -> str:
    """A path to print: relative to the current folder when both are in the repository."""
    return _where(_abs(path), _abs(cwd))


def make_command(target: str, *, cwd: Path | None = None, **variables: str) -> str:
    """``make TARGET VAR=value`` that works from ``cwd``: plain in the repository and in
    ``exercises/`` (whose Makefile forwards), with ``-C`` to the repository elsewhere."""
    cwd = _abs(cwd)
    root = find_root(cwd)
    here = cwd == root or (cwd == root / "exercises" and (cwd / "Makefile").is_file())
    parts = ["make"] if here else ["make", "-C", shlex.quote(_where(root, cwd))]
    parts.append(target)
    parts += [f"{k}={shlex.quote(v)}" for k, v in variables.items() if v]
    return " ".join(parts)


def check_command(names: list[str], *, submission: Path | str | None = None,
                  cwd: Path | None = None) -> str:
    """The command that grades ``names`` again, as typed in ``cwd``."""
    cwd = _abs(cwd)
    root = find_root(cwd)
    sub = _abs(submission) if submission is not None else root / "exercises"
    if sub == root / "exercises":
        return make_command("check", cwd=cwd, EX=" ".join(names))
    python = shlex.quote(_where(_abs(sys.executable), cwd))
    return f"{python} -m grader check {' '.join(map(shlex.quote, names))} " \
           f"--submission {shlex.quote(_where(sub, cwd))}"


def run_hint(argv: list[str], cwd: Path | None = None) -> str:
    """How to run ``python -m grader ARGV`` in the project's environment, as typed in ``cwd``."""
    cwd = _abs(cwd)
    if len(argv) > 1 and argv[0] == "check" and not any(a.startswith("-") for a in argv):
        return make_command("check", cwd=cwd, EX=" ".join(argv[1:]))
    if not argv or argv == ["grade"]:
        return make_command("grade", cwd=cwd)
    venv = _where(find_root(cwd) / ".venv" / "bin" / "python", cwd)
    return f"{make_command('grade', cwd=cwd)} once (it creates .venv), then " \
           f"{shlex.quote(venv)} -m grader {' '.join(map(shlex.quote, argv))}"


def preflight(argv: list[str]) -> str | None:
    """None when this Python can grade; else the one line that says how to run the grader."""
    if sys.version_info < (3, 11):
        missing = "Python >= 3.11"
    else:
        missing = next((f"the module {m!r}" for m in NEEDED
                        if importlib.util.find_spec(m) is None), None)
    if missing is None:
        return None
    return (f"grader: error: this Python ({sys.executable}) lacks {missing}: grading runs in the "
            f"project's environment; run: {run_hint(argv)}")
