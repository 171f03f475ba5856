"""A class for the instructor's term (``tests/test_class_term.py``): honest solutions written
independently (``ana_pooling.py``, ``ben_pooling.py``, and the reference), planted copies made by
:func:`disguise` (locals and helpers renamed, functions reordered, comments and layout gone), and
LMS rosters as Canvas and Moodle export them (``canvas_roster.csv``, ``moodle_roster.csv``).
"""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
UNICODE_ID = "José Müller-李"


class _Renamer(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]):
        self.mapping = mapping

    def visit_Name(self, node):
        node.id = self.mapping.get(node.id, node.id)
        return node

    def visit_FunctionDef(self, node):
        node.name = self.mapping.get(node.name, node.name)
        self.generic_visit(node)
        return node


def disguise(source: str, *, reorder: bool) -> str:
    """What a student hiding a copy does: every local variable and private helper renamed,
    the docstrings and comments dropped, the layout rewritten (``ast.unparse``) and, with
    ``reorder``, the functions in reverse order. Parameters keep their names (callers pass
    them by keyword), so the copy still works."""
    tree = ast.parse(source)
    params = {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
              for a in node.args + node.kwonlyargs + node.posonlyargs}
    local = sorted({n.id for f in tree.body if isinstance(f, ast.FunctionDef)
                    for n in ast.walk(f) if isinstance(n, ast.Name)
                    and isinstance(n.ctx, ast.Store)} - params)
    helpers = [f.name for f in tree.body if isinstance(f, ast.FunctionDef)
               and f.name.startswith("_")]
    mapping = {name: f"tmp_{i}" for i, name in enumerate(local)}
    mapping.update({name: f"_util{i}" for i, name in enumerate(helpers)})
    tree = _Renamer(mapping).visit(tree)
    for node in ast.walk(tree):  # drop docstrings
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and \
                isinstance(getattr(body[0], "value", None), ast.Constant) and \
                isinstance(body[0].value.value, str) and len(body) > 1:
            body.pop(0)
    if reorder:
        imports = [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        tree.body = imports + functions[::-1]
    return "# my own work\n" + ast.unparse(tree) + "\n"


def reference(module: str = "pooling") -> str:
    return (ROOT / "solutions" / f"{module}.py").read_text()


def starter(module: str = "pooling") -> str:
    return (ROOT / "exercises" / f"{module}.py").read_text()


def honest(name: str) -> str:
    return (HERE / f"{name}_pooling.py").read_text()


def fill_starter(functions: dict[str, str]) -> str:
    """The starter pooling.py with the bodies of ``functions`` (name -> body lines) filled in."""
    lines = starter().splitlines()
    tree = ast.parse(starter())
    for node in sorted((n for n in tree.body if isinstance(n, ast.FunctionDef)
                        and n.name in functions), key=lambda n: -n.lineno):
        raise_line = node.body[-1].lineno - 1  # the `raise NotImplementedError(...)`
        lines[raise_line:node.body[-1].end_lineno] = [
            "    " + line for line in functions[node.name].splitlines()]
    return "\n".join(lines) + "\n"


def write_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


BEN_BUG = ("def global_avg_pool(x):\n"
           "    return jnp.sum(x, axis=(-3, -2)) / x.shape[-2] ** 2  # square images only\n")


def build_class(subs: Path) -> dict[str, str]:
    """The eight submissions of the term; returns ``{student id: what it is}``."""
    subs.mkdir(parents=True)
    kinds = {}

    def folder(sid: str, source: str, kind: str) -> None:
        (subs / sid).mkdir()
        (subs / sid / "pooling.py").write_text(source)
        kinds[sid] = kind

    folder("ana", honest("ana"), "honest")
    folder("ben", honest("ben") + "\n\n" + BEN_BUG, "honest, a bug in global_avg_pool")
    folder(UNICODE_ID, reference(), "honest (the reference), a Unicode id")
    folder("dan", disguise(honest("ana"), reorder=False), "copy of ana, renamed")
    write_zip(subs / "eve.zip", {"lab3/pooling.py": disguise(reference(), reorder=True)})
    kinds["eve"] = "copy of the reference, renamed and reordered, zipped"
    (subs / "fay.py").write_text(fill_starter({
        "global_avg_pool": "return jnp.mean(x, axis=(x.ndim - 3, x.ndim - 2))",
        "flatten": "return x.reshape(len(x), -1)"}))
    kinds["fay"] = "single file, two exercises done"
    write_zip(subs / "gus.zip", {"pooling.py": reference(), "../../evil.py": "x = 1\n"})
    kinds["gus"] = "rejected: unsafe zip"
    write_zip(subs / "hal.zip", {"hal/pooling.py": starter()})
    kinds["hal"] = "blank starter, zipped"
    return kinds
