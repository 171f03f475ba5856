"""Labs as notebooks: what the grader takes from a notebook, and ``check()`` for a notebook cell.

Every lab has a notebook, ``exercises/notebooks/NN_<lab>.ipynb``, generated with the lab's module
from the same solution file (:mod:`grader.assign`). A student may write a function in the module,
in the notebook, or some in each. **The grader extracts the student's code from the notebook**
and grades it through the lab's module, the same way for ``make grade``, ``python -m grader
check``, ``grade-class`` and Gradescope:

- From the notebook's code cells it takes top-level ``import`` statements, function and class
  definitions, and the assignments of cells that define a function or class (constants kept beside
  the function that uses them). Statements that *run* something — checks, plots, prints, loops,
  assignments in other cells — stay in the notebook; so do imports of ``grader`` (the check
  cell's).
  Lines of IPython syntax (``%magic``, ``!shell``) are ignored; a cell that is not valid Python is
  skipped with a warning.
- An exercise counts as written in the notebook when its definition no longer contains the
  generated ``raise NotImplementedError(...)``. Written exercises, and the imports and helpers the
  module does not already have, are appended to the lab's module (later definitions win, as in
  the kernel); exercises still blank in the notebook keep the module's version. An exercise
  written in both the module and the notebook is graded from the notebook, with a warning.
- Without a module file (a submission of notebooks only) the base is the blank module of the
  course (``exercises/<lab>.py`` of this checkout).

``make grade`` therefore grades what is *saved* in the notebook; ``check("conv2d")`` in a cell
grades what the *kernel ran* (the same extraction over the kernel's input history, on top of the
module beside the notebook), and prints the same feedback as ``python -m grader check conv2d``.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from grader.specs import MODULES, load

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = "notebooks"
MAX_NOTEBOOK_BYTES = 20 * 2**20      # outputs (plots) make notebooks large; code is small
NOT_OURS = ("grader", "__future__")  # imports never carried into the graded module


def notebook_name(module: str) -> str:
    """``"02_convolution.ipynb"``: the lab number (course order) and the module name."""
    return f"{MODULES.index(module) + 1:02d}_{module}.ipynb"


def find_notebook(folder: Path, module: str) -> Path | None:
    """The notebook of ``module`` in a submission folder: ``notebooks/NN_<lab>.ipynb`` or
    ``NN_<lab>.ipynb`` beside the modules (as uploaded)."""
    for path in (folder / NOTEBOOK_DIR / notebook_name(module), folder / notebook_name(module)):
        if path.is_file() and not path.is_symlink():
            return path
    return None


def read_code_cells(path: Path) -> list[tuple[str, str]]:
    """``("cell N", source)`` of a notebook's code cells (nbformat 4 JSON), in order; N counts
    every cell from 1, markdown ones too."""
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES >> 20} MB")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path.name} is not a notebook ({exc})") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list):
        raise ValueError(f"{path.name} is not a notebook (no cells)")
    out = []
    for i, cell in enumerate(cells):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            src = cell.get("source", "")
            if isinstance(src, list):
                src = "".join(line for line in src if isinstance(line, str))
            out.append((f"cell {i + 1}", src if isinstance(src, str) else ""))
    return out


# --- what a notebook contributes ------------------------------------------------------------------

@dataclasses.dataclass
class Piece:
    """One top-level statement taken from a notebook: its source and where it came from."""

    name: str          # the name it binds ("" for an import)
    source: str
    origin: str        # "cell 7" or "In [7]"
    kind: str          # "import", "def" or "assign"


@dataclasses.dataclass
class NotebookCode:
    """The code a notebook (or a kernel) contributes, last definition of each name winning."""

    imports: list[Piece] = dataclasses.field(default_factory=list)
    definitions: dict[str, Piece] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)   # origins not valid Python


def _python_only(source: str) -> str | None:
    """The cell without IPython-only lines; None for a cell magic (``%%bash`` ...)."""
    if source.lstrip().startswith("%%"):
        return None
    return "".join(line if not line.lstrip().startswith(("%", "!")) else "\n"
                   for line in source.splitlines(keepends=True))


def _segment(lines: list[str], node: ast.stmt) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "".join(lines[first - 1:node.end_lineno]).rstrip() + "\n"


def _bound(node: ast.stmt) -> list[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def extract(sources: Sequence[tuple[str, str]]) -> NotebookCode:
    """The imports, definitions and (in defining cells) assignments of ``(origin, source)``
    cells."""
    code = NotebookCode()
    for origin, raw in sources:
        text = _python_only(raw)
        if text is None or not text.strip():
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            code.skipped.append(origin)
            continue
        lines = text.splitlines(keepends=True)
        defines = any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                      for n in tree.body)
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                if all(m.split(".")[0] not in NOT_OURS for m in mods):
                    code.imports.append(Piece("", _segment(lines, node), origin, "import"))
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                code.definitions.pop(node.name, None)     # re-insert: keep definition order
                code.definitions[node.name] = Piece(node.name, _segment(lines, node), origin, "def")
            elif defines and isinstance(node, ast.Assign | ast.AnnAssign):
                for name in _bound(node)[:1]:
                    code.definitions.pop(name, None)
                    code.definitions[name] = Piece(name, _segment(lines, node), origin, "assign")
    return code


def is_blank(source: str) -> bool:
    """Whether a definition still holds the generated ``raise NotImplementedError(...)``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return True
    return False


def _top_level_sources(text: str) -> dict[str, str]:
    """name -> source of each top-level definition or assignment of a module's text."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return {}
    lines = text.splitlines(keepends=True)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out[node.name] = _segment(lines, node)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for name in _bound(node)[:1]:
                out[name] = _segment(lines, node)
    return out


def merge(base: str, code: NotebookCode, exercises: Sequence[str], *,
          label: str) -> tuple[str | None, list[str]]:
    """The module to grade: ``base`` plus what ``code`` adds (see the module docstring).

    Returns ``(text, notes)``; ``text`` is None when the notebook adds nothing (grade ``base``).
    ``label`` names the notebook in comments and notes.
    """
    have = _top_level_sources(base)
    base_lines = {ln.strip() for ln in base.splitlines()}
    notes = [f"{label}: {o} is not valid Python; it was skipped" for o in code.skipped]
    pieces: list[Piece] = [p for p in code.imports
                           if not all(ln.strip() in base_lines for ln in p.source.splitlines())]
    for name, piece in code.definitions.items():
        if name in exercises:
            if is_blank(piece.source) or piece.source == have.get(name):
                continue
            if name in have and not is_blank(have[name]):
                notes.append(f"{name} is written in the module and in {label}: the notebook's "
                             "is graded")
        elif piece.source == have.get(name):
            continue
        pieces.append(piece)
    if not pieces:
        return None, notes
    parts = [base.rstrip() + "\n\n\n",
             f"# ---- from {label} (what the grader takes: see grader/notebook.py) ----\n"]
    for piece in pieces:
        parts.append(f"\n# {piece.origin}\n{piece.source}")
    return "".join(parts), notes


# --- a submission folder with notebooks -----------------------------------------------------------

def blank_module(module: str) -> Path | None:
    """The course's own module file (the base for a submission of notebooks only)."""
    path = ROOT / "exercises" / f"{module}.py"
    return path if path.is_file() else None


@contextlib.contextmanager
def with_notebooks(submission: Path, modules: Sequence[str]) -> Iterator[tuple[Path, list[str]]]:
    """``(folder to grade, notes)``: ``submission`` itself when no notebook adds anything, else a
    temporary copy of its top-level ``.py`` files with the notebooks' code merged into the lab
    modules (removed on exit)."""
    merged: dict[str, str] = {}
    notes: list[str] = []
    for module in modules:
        nb = find_notebook(submission, module)
        if nb is None:
            continue
        label = str(nb.relative_to(submission))
        module_file = submission / f"{module}.py"
        base_file = module_file if module_file.is_file() else blank_module(module)
        try:
            cells = read_code_cells(nb)
        except (OSError, ValueError) as exc:
            notes.append(f"{label} could not be read: {exc}")
            continue
        if base_file is None:
            notes.append(f"{label}: no {module}.py to grade it with")
            continue
        text, why = merge(base_file.read_text(encoding="utf-8", errors="replace"),
                          extract(cells),
                          [e.name for e in load(module)], label=label)
        notes += why
        if text is not None:
            merged[module] = text
    if not merged:
        yield submission, notes
        return
    stage = Path(tempfile.mkdtemp(prefix="cnnlab-notebooks-"))
    try:
        for path in sorted(submission.glob("*.py"))[:50]:
            if path.is_file() and not path.is_symlink():
                shutil.copyfile(path, stage / path.name)
        for module, text in merged.items():
            (stage / f"{module}.py").write_text(text, encoding="utf-8")
        yield stage, notes
    finally:
        shutil.rmtree(stage, ignore_errors=True)


# --- check() in a notebook cell ------------------------------------------------------------------

def kernel_cells() -> list[tuple[str, str]]:
    """``(origin, source)`` of every cell this IPython kernel ran, in order (empty elsewhere)."""
    try:
        from IPython import get_ipython  # noqa: PLC0415 - optional: only in a kernel
    except ImportError:
        return []
    shell = get_ipython()
    history = shell.user_ns.get("In", []) if shell is not None else []
    return [(f"In [{i}]", src) for i, src in enumerate(history) if i and isinstance(src, str)]


def module_folder(module: str) -> Path | None:
    """The folder holding ``<module>.py`` for a notebook running here: the working directory,
    its parent (a notebook in ``exercises/notebooks/``) or this checkout's ``exercises/``."""
    cwd = Path.cwd()
    for folder in (cwd, cwd.parent, ROOT / "exercises"):
        if (folder / f"{module}.py").is_file():
            return folder
    return None


def sample_images(n: int = 1):
    """The first ``n`` Fashion-MNIST test images shipped with cnnlab, for the notebooks' pictures:
    ``(n, 28, 28)`` float32 in [0, 1] (no download, no dataset preparation)."""
    import cnnlab.data  # noqa: PLC0415 - imports JAX (~1 s): never in the grading process
    from cnnlab.data.idx import read_idx  # noqa: PLC0415 - same

    path = Path(cnnlab.data.__file__).parent / "subset" / "t10k-images-idx3-ubyte.gz"
    return np.asarray(read_idx(path)[:n], np.float32) / 255.0
