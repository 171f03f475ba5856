"""No delegation: an exercise is not passed by calling the course's own code or its answers.

A submission must implement each exercise itself. The course library (``cnnlab``: its layers
and data pipeline implement several exercises), the grader and the reference (``solutions``)
are out of bounds, and so are the expected outputs (``grader/expected``). Two layers enforce it:

- the sandbox's view (:mod:`grader.sandbox`): none of those files exists for the worker, whatever
  the submission tries at run time (the worker's own few files aside, which hold no answer);
- this module, in the grader's process: it reads the submission's source (``ast``, never
  executed) and finds the exercises that reach one of those names -- an import, a module name in
  a string (``importlib.import_module("cnnlab.layers")``, ``sys.modules["grader.worker"]``) or a
  path to the expected outputs -- directly, through module-level names and helper functions, or
  through the submission's own other modules. Those exercises score 0 with the reason, whatever
  they would have returned; the others are graded normally.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

FORBIDDEN = ("cnnlab", "grader", "solutions")
_MODULE_NAME = re.compile(rf"^(?:{'|'.join(FORBIDDEN)})(?:\.\w+)*$")
_EXPECTED = re.compile(r"(?:^|[/\\])(?:grader[/\\]+expected|solutions)(?:[/\\]|$)")
MAX_SOURCE_BYTES = 2 * 2**20


def _offence(node: ast.AST, siblings: dict[str, set[str]]) -> str | None:
    """Why ``node`` itself reaches forbidden code, or None. ``siblings``: the tainted names of
    the submission's other modules ("*" when importing the module at all reaches it)."""
    line = getattr(node, "lineno", "?")
    if isinstance(node, ast.Import):
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in FORBIDDEN or "*" in siblings.get(top, ()):
                return f"imports {alias.name} (line {line})"
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        top = node.module.split(".")[0]
        tainted = siblings.get(top, set())
        if top in FORBIDDEN or any(a.name in tainted or a.name == "*" and tainted
                                   for a in node.names):
            return f"imports {node.module} (line {line})"
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        if _MODULE_NAME.match(node.value):
            return f"names the module {node.value!r} (line {line})"
        if _EXPECTED.search(node.value):
            return f"reads {node.value!r} (line {line})"
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (text, never code)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant):
            out.add(id(node.body[0].value))
    return out


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    targets = node.targets if isinstance(node, ast.Assign) else \
        [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    """Module-level statements, looking inside if/try/with/loop blocks (not into defs)."""
    for stmt in body:
        if isinstance(stmt, ast.If | ast.Try | ast.With | ast.For | ast.While):
            blocks = [stmt.body, getattr(stmt, "orelse", []), getattr(stmt, "finalbody", [])]
            for block in blocks + [h.body for h in getattr(stmt, "handlers", [])]:
                yield from _top_level(block)
        else:
            yield stmt


def tainted_names(tree: ast.Module, siblings: dict[str, set[str]],
                  offence: Callable[[ast.AST], str | None] | None = None) -> dict[str, str]:
    """Module-level names that reach forbidden code, each with the first reason found; "*" too
    when a module-level statement that binds no name does (code run at import). ``offence``:
    why a node itself is forbidden (default: it reaches the course's code, :func:`_offence`)."""
    offence = offence or (lambda node: _offence(node, siblings))
    docs = _docstrings(tree)
    stmts = list(_top_level(tree.body))
    direct: dict[int, str] = {}
    for stmt in stmts:
        why = next((w for n in ast.walk(stmt) if id(n) not in docs
                    for w in [offence(n)] if w), None)
        if why:
            direct[id(stmt)] = why
    tainted: dict[str, str] = {}
    changed = True
    while changed:  # a name is tainted by its own code or by the tainted names it uses
        changed = False
        for stmt in stmts:
            names = _bound_names(stmt) or ["*"]
            if all(n in tainted for n in names):
                continue
            why = direct.get(id(stmt))
            if why is None:
                used = next((n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
                             and n.id in tainted and n.id not in names), None)
                why = f"uses {used}, which {tainted[used]}" if used else None
            for n in names if why else ():
                if n not in tainted:
                    tainted[n], changed = why, True
    return tainted


def _parse(path: Path) -> ast.Module | None:
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return None
        return ast.parse(path.read_bytes(), filename=path.name)
    except (OSError, SyntaxError, ValueError):
        return None


def delegations(folder: str | Path, module: str, exercises: Iterable[str]) -> dict[str, str]:
    """``{exercise: why}`` for the ``exercises`` of ``folder/<module>.py`` that reach the course's
    library, the grader, the reference or the expected outputs (see the module docstring)."""
    trees = {p.stem: t for p in sorted(Path(folder).glob("*.py")) if (t := _parse(p))}
    siblings: dict[str, set[str]] = {}
    changed = True
    while changed:  # the submission's own modules' tainted names, through each other
        changed = False
        for name, tree in trees.items():
            found = set(tainted_names(tree, {k: v for k, v in siblings.items() if k != name}))
            if found:
                found.add("*")  # importing a module that reaches forbidden code reaches it
            if found != siblings.get(name, set()):
                siblings[name], changed = found, True
    if module not in trees:
        return {}
    tainted = tainted_names(trees[module], {k: v for k, v in siblings.items() if k != module})
    return {name: f"{name} {tainted[name]}: an exercise must be implemented by the submission "
                  "itself, not by the course's library, the grader, the reference or the "
                  "expected outputs" for name in exercises if name in tainted}


# --- library routines a "from scratch" exercise must not call ------------------------------------

def _imported_as(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (``jnp`` -> ``jax.numpy``, ``sm`` ->
    ``jax.nn.softmax`` after ``from jax.nn import softmax as sm``), from every import in
    ``tree``."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:  # `import jax.nn` binds `jax`
                top = a.name.split(".")[0]
                names[a.asname or top] = a.name if a.asname else top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, imported: dict[str, str]) -> str | None:
    """``jax.nn.softmax`` for the expression ``nn.softmax`` after ``from jax import nn``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in imported:
        return ".".join([imported[node.id], *reversed(parts)])
    return None


def library_calls(folder: str | Path, module: str,
                  not_allowed: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """``{exercise: why}`` for the exercises of ``folder/<module>.py`` that reach a library
    routine their spec does not allow (``{"softmax": ["jax.nn.softmax"]}``): in the function
    itself or in the module-level helpers and names it uses. Read from the source (``ast``),
    like :func:`delegations`: what the routine compiles to may be the very formula asked for
    (``jax.nn.softmax``), and a derivative taken by ``jax.grad`` leaves no mark in the program."""
    tree = _parse(Path(folder) / f"{module}.py")
    if tree is None:
        return {}
    imported = _imported_as(tree)
    found = {}
    for name, routines in not_allowed.items():
        if not routines:
            continue

        def offence(node, routines=tuple(routines)) -> str | None:
            if not isinstance(node, ast.Attribute | ast.Name):
                return None
            dotted = _dotted(node, imported)
            hit = next((r for r in routines if dotted and (dotted == r or
                                                           dotted.startswith(r + "."))), None)
            return f"calls {hit} (line {node.lineno})" if hit else None

        why = tainted_names(tree, {}, offence).get(name)
        if why:
            found[name] = (f"{name} {why}: this exercise is to write it yourself, without the "
                           "library routine that does it (see its docstring)")
    return found
