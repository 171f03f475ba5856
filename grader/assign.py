"""Generate ``exercises/`` from ``solutions/``: the one source of truth is the solution file.

Each lab's solution file gives two things, never edited by hand:

- the module ``exercises/<lab>.py``: every block between ``# BEGIN SOLUTION`` and
  ``# END SOLUTION`` becomes ``raise NotImplementedError("<hint>")`` at the block's indentation;
  the hint is the block's ``# HINT: ...`` line (or "write the body of <function>"). A block whose
  first line is ``# STUB: <text>`` is replaced by ``<text>`` instead (e.g. a comment where a
  decorator was). Everything else — imports, signatures, docstrings, helpers — is kept.
- the notebook ``exercises/notebooks/NN_<lab>.ipynb`` (built with jupytext from a percent-format
  script): the module docstring as the lecture's prose, a setup cell, the module's code cell by
  cell (each exercise in its own cell, blank as in the module) with a cell after it that checks it
  on the spot (``check("conv2d")``), and the notebook-only cells of the solution file: top-level
  comment blocks between ``# BEGIN NOTEBOOK`` and ``# END NOTEBOOK``, written in jupytext's percent
  format behind one ``# `` (``# %% [markdown]`` then ``# text``; ``# %%`` then ``# code``), which
  land after the definition they follow (plots of kernels, feature maps, pooling). The module
  never contains them.

``render_notebook(..., solved=True)`` gives the same notebook with the reference filled in (tests
run it); the student release never contains it.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from grader.notebook import NOTEBOOK_DIR, notebook_name
from grader.specs import LAB_TITLES, MODULES, load

ROOT = Path(__file__).resolve().parent.parent
BEGIN = re.compile(r"^(\s*)# BEGIN SOLUTION\s*$")
END = re.compile(r"^\s*# END SOLUTION\s*$")
HINT = re.compile(r"^\s*# HINT:\s*(.*)$")
STUB = re.compile(r"^\s*# STUB:\s*(.*)$")
DEF = re.compile(r"^\s*(?:def|class)\s+(\w+)")
HEADER = ("# Lab {number} ({module}), generated from the reference solution. Fill in every\n"
          "# `raise NotImplementedError(...)`, then grade one function with "
          "`make check EX={first}`\n"
          "# (any function's name; EX={module} for the whole lab), here or in the folder above.\n")
# exercises/Makefile: `make check EX=...` and `make grade` work in exercises/ as in the repository.
FORWARDING_MAKEFILE = """\
# Every target runs in the repository (one folder up), so that `make check EX=sigmoid` and
# `make grade` work here too; CNNLAB_CWD tells the grader the folder the command was typed in
# (the shell's $PWD, which `make -C exercises` keeps) to print paths and commands for it.
# Written with the lab files.
CNNLAB_CWD ?= $(if $(wildcard $(PWD)/.),$(PWD),$(CURDIR))
.PHONY: grade forward
grade:
\t@CNNLAB_CWD="$(CNNLAB_CWD)" $(MAKE) --no-print-directory -C .. grade
Makefile: ;
%: forward
\t@CNNLAB_CWD="$(CNNLAB_CWD)" $(MAKE) --no-print-directory -C .. $@
forward: ;
"""


def strip_solutions(source: str, name: str = "<module>") -> str:
    """The exercise text for a solution module's source."""
    out: list[str] = []
    lines = source.splitlines(keepends=True)
    i, current = 0, None
    while i < len(lines):
        line = lines[i]
        m = DEF.match(line)
        if m:
            current = m.group(1)
        b = BEGIN.match(line)
        if not b:
            out.append(line)
            i += 1
            continue
        indent = b.group(1)
        j = i + 1
        hint = stub = None
        while j < len(lines) and not END.match(lines[j]):
            if hint is None and HINT.match(lines[j]):
                hint = HINT.match(lines[j]).group(1).strip()
            if stub is None and STUB.match(lines[j]):
                stub = STUB.match(lines[j]).group(1)
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: '# BEGIN SOLUTION' without '# END SOLUTION'")
        if stub is not None:
            out.append(f"{indent}{stub}\n")
        else:
            text = hint or f"write the body of {current or 'this function'}"
            out.append(f"{indent}raise NotImplementedError({text!r})\n")
        i = j + 1
    return "".join(out)


def render(solution_file: Path) -> str:
    """The text of ``exercises/<lab>.py`` (without the notebook-only blocks)."""
    source, _ = split_notebook_blocks(solution_file.read_text(), solution_file.name)
    text = strip_solutions(source, solution_file.name)
    module = solution_file.stem
    number = MODULES.index(module) + 1 if module in MODULES else "?"
    first = next((b[0].split("@")[0] for b in solution_blocks(source)), module)
    return HEADER.format(number=number, module=module, first=first) + text


def assign(solutions_dir: Path = ROOT / "solutions", exercises_dir: Path = ROOT / "exercises",
           *, check: bool = False) -> list[str]:
    """Write (or with ``check=True`` only compare) ``exercises/<module>.py`` and
    ``exercises/notebooks/NN_<module>.ipynb`` for every lab module, and ``exercises/Makefile``,
    which forwards ``make`` targets to the repository's.

    Returns the files (relative to ``exercises_dir``) that differ (check) or were written.
    """
    changed = []
    (exercises_dir / NOTEBOOK_DIR).mkdir(parents=True, exist_ok=True)
    files = [("Makefile", FORWARDING_MAKEFILE)]
    for module in MODULES:
        source = solutions_dir / f"{module}.py"
        files += [(f"{module}.py", render(source)),
                  (f"{NOTEBOOK_DIR}/{notebook_name(module)}", render_notebook(source))]
    for rel, want in files:
        target = exercises_dir / rel
        have = target.read_text(encoding="utf-8") if target.exists() else None
        if have != want:
            changed.append(rel)
            if not check:
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_text(want, encoding="utf-8")
                tmp.replace(target)
    return changed


# --- notebooks -----------------------------------------------------------------------------------

NB_BEGIN = re.compile(r"^# BEGIN NOTEBOOK\s*$")
NB_END = re.compile(r"^# END NOTEBOOK\s*$")
MARKER_LINE = re.compile(r"^\s*# (BEGIN SOLUTION|END SOLUTION|HINT:|STUB:)")

HOW_TO = """\
**How to work here.** Write each function in its cell (replace the `raise NotImplementedError`),
run the cell, then run the `check(...)` cell under it: it grades what this kernel ran and prints
the same feedback as `python -m grader check NAME`. Pictures appear once their functions work.
`make grade` grades what is *saved* here (and in `exercises/{module}.py`): the grader takes your
imports, functions and classes from this notebook — keep helpers and constants in the cell of the
function that uses them. Run the setup cell first (in Colab, see the README: "Notebooks")."""


def split_notebook_blocks(source: str,
                          name: str = "<module>") -> tuple[str, dict[str | None, list]]:
    """``(module text, blocks)``: the source without its ``# BEGIN NOTEBOOK`` blocks, and the
    blocks' cells by the top-level function or class they follow (None: before the first).

    A block's cells are ``(kind, text)`` with kind "markdown" or "code"."""
    lines = source.splitlines(keepends=True)
    kept: list[str] = []
    blocks: dict[str | None, list] = {}
    anchor, i = None, 0
    while i < len(lines):
        m = TOP_DEF.match(lines[i])
        if m:
            anchor = m.group(1)
        if not NB_BEGIN.match(lines[i]):
            kept.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not NB_END.match(lines[j]):
            j += 1
        if j == len(lines):
            raise ValueError(f"{name}:{i + 1}: '# BEGIN NOTEBOOK' without '# END NOTEBOOK'")
        blocks.setdefault(anchor, []).extend(_block_cells(lines[i + 1:j], f"{name}:{i + 2}"))
        i = j + 1
    return "".join(kept), blocks


def _block_cells(lines: list[str], where: str) -> list[tuple[str, str]]:
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        if not line.startswith("#"):
            raise ValueError(f"{where}: every line of a notebook block starts with '#'")
        text = line[2:] if line.startswith("# ") else line[1:].lstrip(" ")
        if text.startswith("%%"):
            cells.append(("markdown" if "[markdown]" in text else "code", []))
        elif not cells:
            raise ValueError(f"{where}: a notebook block starts with '# %%' or '# %% [markdown]'")
        else:
            cells[-1][1].append(text)
    return [(kind, "".join(body).strip("\n") + "\n") for kind, body in cells]


def solution_text(source: str) -> str:
    """The solution source without its marker lines (the reference, for solved notebooks)."""
    return "".join(line for line in source.splitlines(keepends=True) if not MARKER_LINE.match(line))


def _groups(text: str, exercises: set[str]) -> tuple[str, list[tuple[str | None, str]]]:
    """``(module docstring, [(exercise name or None, code)])``: the module's top-level code in
    order, each exercise alone, the other statements between them grouped."""
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    body = tree.body
    doc = ast.get_docstring(tree) or ""
    start = body[0].end_lineno if doc else 0
    groups: list[tuple[str | None, str]] = []
    for node in body[1:] if doc else body:
        name = getattr(node, "name", None)
        chunk = "".join(lines[start:node.end_lineno])
        start = node.end_lineno
        if name in exercises or not groups or groups[-1][0] is not None:
            groups.append((name if name in exercises else None, chunk))
        else:
            groups[-1] = (None, groups[-1][1] + chunk)
    return doc, [(n, c.strip("\n") + "\n") for n, c in groups]


def _percent(kind: str, text: str, tags: tuple[str, ...]) -> str:
    meta = f" tags={json.dumps(list(tags))}" if tags else ""
    if kind == "markdown":
        body = "".join(f"# {ln}".rstrip() + "\n" for ln in text.rstrip("\n").split("\n"))
        return f"# %% [markdown]{meta}\n{body}\n"
    return f"# %%{meta}\n{text.rstrip()}\n\n"


def notebook_script(solution_file: Path, *, solved: bool = False) -> str:
    """The lab's notebook as a jupytext percent-format script (see the module docstring)."""
    module = solution_file.stem
    code, blocks = split_notebook_blocks(solution_file.read_text(), solution_file.name)
    text = solution_text(code) if solved else strip_solutions(code, solution_file.name)
    doc, groups = _groups(text, {e.name for e in load(module)})
    title, _, rest = doc.partition("\n")
    cells = [("markdown", f"# {title.rstrip('.')}\n{rest}", ()),
             ("markdown", HOW_TO.format(module=module), ()),
             ("code", "from grader import check", ("setup",))]
    for name, chunk in groups:
        if name is None:
            cells.append(("code", chunk, ("module",)))
        else:
            first = _first_sentence(chunk, name)
            cells += [("markdown", f"## `{name}`\n\n{first}", ()),
                      ("code", chunk, ("exercise",)),
                      ("code", f'check("{name}")', ("check",))]
        for kind, body in blocks.get(name, []) if name else []:
            cells.append((kind, body, ("demo",) if kind == "code" else ()))
    for kind, body in blocks.get(None, []):
        cells.insert(4, (kind, body, ("demo",) if kind == "code" else ()))
    cells += [("markdown", f"## The whole lab\n\nEvery exercise of {LAB_TITLES[module]}, "
                           "with the points: the same table as `make grade` for this lab.", ()),
              ("code", f'check("{module}")', ("check",))]
    header = ("# ---\n# jupyter:\n#   kernelspec:\n#     display_name: Python 3\n"
              "#     language: python\n#     name: python3\n# ---\n\n")
    return header + "".join(_percent(k, t, tags) for k, t, tags in cells)


def _first_sentence(chunk: str, name: str) -> str:
    node = next(n for n in ast.parse(chunk).body if getattr(n, "name", None) == name)
    doc = (ast.get_docstring(node) or "").split("\n\n")[0]
    return " ".join(doc.split())


def render_notebook(solution_file: Path, *, solved: bool = False) -> str:
    """The text of ``exercises/notebooks/NN_<lab>.ipynb`` (``solved``: the reference filled in).

    Deterministic: cell ids are the lab and cell number, no other cell metadata than tags."""
    # jupytext (with nbformat) takes 0.2-0.3 s to import; every `python -m grader` imports this
    # module (the CLI's `assign`), and only rendering a notebook needs it.
    import jupytext  # noqa: PLC0415 - see above
    import nbformat  # noqa: PLC0415 - see above

    nb = jupytext.reads(notebook_script(solution_file, solved=solved), fmt="py:percent")
    module = solution_file.stem
    for i, cell in enumerate(nb.cells):
        cell.id = f"{module}-{i:02d}"
        cell.metadata = {"tags": cell.metadata["tags"]} if cell.metadata.get("tags") else {}
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python",
                                  "name": "python3"},
                   "language_info": {"name": "python"},
                   "cnnlab": {"lab": module, "generated_from": f"solutions/{solution_file.name}",
                              "solved": solved}}
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


TOP_DEF = re.compile(r"^(?:def|class)\s+(\w+)")


def solution_blocks(source: str) -> list[tuple[str, int, int, str]]:
    """``(owner, begin, end, indent)`` for every solution block (0-based line indices of the
    BEGIN and END lines). The owner is the enclosing top-level function or class; a block at
    module level (a decorator) is owned by ``"<next function>@decorator"``."""
    lines = source.splitlines()
    blocks, owner, i = [], None, 0
    while i < len(lines):
        m = TOP_DEF.match(lines[i])
        if m:
            owner = m.group(1)
        b = BEGIN.match(lines[i])
        if b:
            j = i + 1
            while j < len(lines) and not END.match(lines[j]):
                j += 1
            name = owner
            if b.group(1) == "":
                nxt = next((TOP_DEF.match(ln).group(1) for ln in lines[j:] if TOP_DEF.match(ln)),
                           None)
                name = f"{nxt}@decorator"
            blocks.append((name, i, j, b.group(1)))
            i = j
        i += 1
    return blocks


def replace_block(source: str, owner: str, new_body: str) -> str:
    """``source`` with the solution block of ``owner`` replaced by ``new_body`` (dedented text,
    re-indented at the block's indentation). For planting mistakes in tests."""
    lines = source.splitlines(keepends=True)
    for name, i, j, indent in solution_blocks(source):
        if name == owner:
            body = "".join(f"{indent}{ln}\n" if ln.strip() else "\n"
                           for ln in new_body.splitlines())
            return "".join(lines[:i]) + body + "".join(lines[j + 1:])
    raise KeyError(f"no solution block owned by {owner!r}")
