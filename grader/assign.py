"""Generate ``exercises/`` from ``solutions/``: the one source of truth is the solution file.

Every block between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` becomes
``raise NotImplementedError("<hint>")`` at the block's indentation; the hint is the block's
``# HINT: ...`` line (or "write the body of <function>"). A block whose first line is
``# STUB: <text>`` is replaced by ``<text>`` instead (e.g. a comment where a decorator was).
Everything else — imports, signatures, docstrings, helpers — is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from grader.specs import MODULES

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
# `make grade` work here too; CNNLAB_CWD tells the grader to print paths and commands for this
# folder. Written with the lab files.
.PHONY: grade forward
grade:
\t@CNNLAB_CWD="$(CURDIR)" $(MAKE) --no-print-directory -C .. grade
Makefile: ;
%: forward
\t@CNNLAB_CWD="$(CURDIR)" $(MAKE) --no-print-directory -C .. $@
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
    source = solution_file.read_text()
    text = strip_solutions(source, solution_file.name)
    module = solution_file.stem
    number = MODULES.index(module) + 1 if module in MODULES else "?"
    first = next((b[0].split("@")[0] for b in solution_blocks(source)), module)
    return HEADER.format(number=number, module=module, first=first) + text


def assign(solutions_dir: Path = ROOT / "solutions", exercises_dir: Path = ROOT / "exercises",
           *, check: bool = False) -> list[str]:
    """Write (or with ``check=True`` only compare) ``exercises/<module>.py`` for every lab module,
    and ``exercises/Makefile``, which forwards ``make`` targets to the repository's.

    Returns the modules whose exercise file differs (check) or was written.
    """
    changed = []
    exercises_dir.mkdir(parents=True, exist_ok=True)
    files = [(f"{module}.py", render(solutions_dir / f"{module}.py")) for module in MODULES]
    for name, want in files + [("Makefile", FORWARDING_MAKEFILE)]:
        module = name.removesuffix(".py")
        target = exercises_dir / name
        have = target.read_text() if target.exists() else None
        if have != want:
            changed.append(module)
            if not check:
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_text(want)
                tmp.replace(target)
    return changed


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
