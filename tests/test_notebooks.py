"""Every lab is also a notebook (``exercises/notebooks/NN_<lab>.ipynb``), generated from the lab's
solution file with its module, and graded the same way as the module.

Real notebooks executed by a real kernel: ``nbclient`` starts a fresh ``python3`` kernel of the
Python running the tests (the project's ``.venv``) and runs every cell, as "Run all" would. The
blank notebook runs end to end and reports every exercise as not attempted; the notebook with the
reference filled in reports full marks. ``make test`` executes one lab blank and one solved;
every lab both ways is ``exhaustive``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader.assign import assign, render_notebook
from grader.notebook import extract, merge, notebook_name, read_code_cells
from grader.runner import grade_submission
from grader.specs import MODULES, load

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
FAST_BLANK, FAST_SOLVED = "augmentation", "pooling"   # make test: a short lab, a lab with a plot


def notebook(module: str) -> dict:
    return json.loads((ROOT / "exercises" / "notebooks" / notebook_name(module)).read_text())


def code_cells(nb: dict) -> list[tuple[list[str], str]]:
    return [(c["metadata"].get("tags", []), "".join(c["source"])) for c in nb["cells"]
            if c["cell_type"] == "code"]


# --- generated from the one source --------------------------------------------------------------

def test_every_lab_has_its_notebook_and_a_hand_edit_is_stale(tmp_path):
    assert assign(check=True) == []          # modules and notebooks agree with solutions/
    copy = tmp_path / "exercises"
    shutil.copytree(ROOT / "exercises", copy)
    path = copy / "notebooks" / notebook_name("convolution")
    nb = json.loads(path.read_text())
    nb["cells"][-1]["source"] = "print('edited by hand')"
    path.write_text(json.dumps(nb))
    assert assign(check=True, exercises_dir=copy) == [f"notebooks/{path.name}"]
    r = subprocess.run([sys.executable, "-m", "grader", "assign", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("module", MODULES)
def test_a_notebook_holds_the_lab_cell_by_cell(module):
    nb = notebook(module)
    nbformat.validate(nbformat.from_dict(nb))
    first = "".join(nb["cells"][0]["source"])
    doc = (ROOT / "solutions" / f"{module}.py").read_text().split('"""')[1]
    assert first.startswith("# ") and doc.split("\n")[0].rstrip(".") in first  # the lecture prose
    cells = code_cells(nb)
    assert cells[0] == (["setup"], "from grader import check")
    for ex in load(module):
        at = [i for i, (tags, src) in enumerate(cells)
              if "exercise" in tags and re.search(rf"^(def|class) {ex.name}\b", src, re.M)]
        assert len(at) == 1, ex.name
        tags, src = cells[at[0]]
        assert "raise NotImplementedError" in src and "BEGIN SOLUTION" not in src
        assert cells[at[0] + 1] == (["check"], f'check("{ex.name}")')
    assert cells[-1] == (["check"], f'check("{module}")')
    solved = json.loads(render_notebook(ROOT / "solutions" / f"{module}.py", solved=True))
    assert not any("raise NotImplementedError" in s and "exercise" in t
                   for t, s in code_cells(solved))
    assert [t for t, _ in code_cells(solved)] == [t for t, _ in cells]


def test_pictures_are_plotted_where_the_lectures_show_them():
    for module, drawn in (("convolution", "filter_image"), ("pooling", "max_pool"),
                          ("cnn_models", "WorkshopCNN")):
        demos = [s for t, s in code_cells(notebook(module)) if "demo" in t]
        assert any(drawn in s and "plt." in s for s in demos), module
        assert "BEGIN NOTEBOOK" not in (ROOT / "exercises" / f"{module}.py").read_text()


# --- what the grader takes from a notebook -------------------------------------------------------

SIGMOID = ("import math\n\nSCALE = 1.0\n\n"
           "def sigmoid(x):\n    e = jnp.exp(-jnp.abs(x) * SCALE)\n"
           "    return jnp.where(x >= 0, 1 / (1 + e), e / (1 + e))\n")


def student_notebook(module: str, edits: dict[str, str], extra: list[str] = ()) -> str:
    """The blank notebook of ``module`` with the exercise cells of ``edits`` replaced."""
    nb = notebook(module)
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        for name, new in edits.items():
            if "exercise" in cell["metadata"].get("tags", []) and \
                    re.search(rf"^def {name}\b", src, re.M):
                cell["source"] = new
    for src in extra:
        nb["cells"].append({"cell_type": "code", "id": f"x{len(nb['cells'])}", "metadata": {},
                            "execution_count": None, "outputs": [], "source": src})
    return json.dumps(nb)


def test_the_grader_takes_definitions_imports_and_their_constants_only():
    cells = [("cell 1", "%matplotlib inline\nfrom grader import check\nimport numpy as np"),
             ("cell 2", SIGMOID),
             ("cell 3", "y = sigmoid(2.0)\nprint(y)\ncheck('sigmoid')"),
             ("cell 4", "def broken(:\n"),
             ("cell 5", "def relu(x):\n    raise NotImplementedError('blank')\n")]
    code = extract(cells)
    assert [p.source.strip() for p in code.imports] == ["import numpy as np", "import math"]
    assert list(code.definitions) == ["SCALE", "sigmoid", "relu"]     # not y, not the check
    assert code.skipped == ["cell 4"]
    base = (ROOT / "exercises" / "neurons.py").read_text()
    text, notes = merge(base, code, [e.name for e in load("neurons")], label="nb.ipynb")
    assert "def sigmoid(x):\n    e = jnp.exp" in text and "y = sigmoid" not in text
    assert text.count("def relu(") == 1          # still blank in the notebook: the module's
    assert notes == ["nb.ipynb: cell 4 is not valid Python; it was skipped"]
    solved = base.replace("raise NotImplementedError('exp(-|x|) never overflows: use it for both "
                          "signs of x')", "return x")
    _, notes = merge(solved, code, ["sigmoid"], label="nb.ipynb")
    assert notes[-1] == "sigmoid is written in the module and in nb.ipynb: the notebook's is graded"


def test_make_grade_grades_work_saved_in_a_notebook(tmp_path):
    """The command ``make grade`` runs (``python -m grader``) on a folder holding the module and
    its notebook: the notebook's sigmoid passes, relu (blank in both) is not attempted."""
    sub = tmp_path / "exercises"
    (sub / "notebooks").mkdir(parents=True)
    shutil.copyfile(ROOT / "exercises" / "neurons.py", sub / "neurons.py")
    (sub / "notebooks" / notebook_name("neurons")).write_text(
        student_notebook("neurons", {"sigmoid": SIGMOID}, ["print(sigmoid(0.0))"]))
    r = subprocess.run([sys.executable, "-m", "grader", "--submission", str(sub), "check",
                        "neurons.sigmoid", "neurons.relu"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    out = ANSI.sub("", r.stdout)
    assert r.returncode == 0, out + r.stderr
    assert re.search(r"sigmoid +│ +\d+/\d+ │ passed", out), out
    assert re.search(r"relu +│ +0/\d+ │ not attempted", out), out
    # a notebook that is not one: a one-line warning, the module graded as it is
    for bad in ("{not json", "[" * 100_000, json.dumps({"cells": [
            {"cell_type": "code", "source": [1, None, "def sigmoid(x):\n", "    return x\n"]}]})):
        (sub / "notebooks" / notebook_name("neurons")).write_text(bad)
        result = grade_submission(sub, exercises=["neurons.sigmoid"])
        if bad.startswith("{\"cells"):   # odd lines skipped: the rest is graded
            assert result.exercises[0].status == "failed", result.exercises[0].status
        else:
            assert result.exercises[0].status == "not attempted"
            assert any("01_neurons.ipynb could not be read" in w for w in result.warnings)


# --- executed by a real kernel --------------------------------------------------------------------

def run_notebook(module: str, folder: Path, *,
                 solved: bool) -> list[tuple[list[str], str, str]]:
    """Execute the lab's notebook (blank as shipped, or with the reference) in a fresh kernel in
    ``folder/notebooks`` beside the blank module; ``(tags, source, text output)`` of every code
    cell."""
    from nbclient import NotebookClient

    (folder / "notebooks").mkdir(parents=True)
    shutil.copyfile(ROOT / "exercises" / f"{module}.py", folder / f"{module}.py")
    text = render_notebook(ROOT / "solutions" / f"{module}.py", solved=True) if solved else \
        (ROOT / "exercises" / "notebooks" / notebook_name(module)).read_text()
    nb = nbformat.reads(text, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(folder / "notebooks")}}).execute()
    (folder / "notebooks" / notebook_name(module)).write_text(nbformat.writes(nb))
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        texts = [(o.get("text") or o.get("data", {}).get("text/plain", ""))
                 + (" <image/png>" if "image/png" in o.get("data", {}) else "")
                 for o in cell.outputs]
        assert not any(o.output_type == "error" for o in cell.outputs), cell.source
        out.append((cell.metadata.get("tags", []), cell.source, ANSI.sub("", "".join(texts))))
    return out


def assert_runs(module: str, folder: Path, *, solved: bool) -> None:
    cells = run_notebook(module, folder, solved=solved)
    checks = [(re.fullmatch(r'check\("(\w+)"\)', src).group(1), text)
              for tags, src, text in cells if "check" in tags]
    assert sorted(name for name, _ in checks[:-1]) == sorted(e.name for e in load(module))
    assert checks[-1][0] == module
    for name, text in checks[:-1]:   # every exercise's check cell reports it
        status = "passed" if solved else "not attempted"
        assert re.search(rf"{name} +│ +[\d.]+/[\d.]+ │ {status}", text), text
    checks = [text for _, text in checks]
    total = re.search(r"total +│ +([\d.]+)/([\d.]+) │ +(\d+)%", checks[-1])
    assert total, checks[-1]
    assert total.group(3) == ("100" if solved else "0"), checks[-1]
    if solved:   # and `make grade` grades the notebook as saved: full marks too
        result = grade_submission(folder, exercises=[module])
        assert result.score == result.max_score > 0, [e.status for e in result.exercises]
        if module in ("convolution", "pooling", "cnn_models"):
            assert any("demo" in tags and "<image/png>" in text for tags, _, text in cells)


def test_a_blank_notebook_runs_end_to_end_not_attempted(tmp_path):
    assert_runs(FAST_BLANK, tmp_path, solved=False)


def test_a_solved_notebook_runs_with_full_marks_and_its_plot(tmp_path):
    assert_runs(FAST_SOLVED, tmp_path, solved=True)


@pytest.mark.exhaustive
@pytest.mark.parametrize("solved", [False, True], ids=["blank", "solved"])
@pytest.mark.parametrize("module", MODULES)
def test_every_notebook_runs_blank_and_solved(tmp_path, module, solved):
    assert_runs(module, tmp_path, solved=solved)


def test_notebooks_have_no_outputs_and_read_as_cells():
    for module in MODULES:
        path = ROOT / "exercises" / "notebooks" / notebook_name(module)
        nb = json.loads(path.read_text())
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb["cells"] if c["cell_type"] == "code")
        assert read_code_cells(path)[0][1] == "from grader import check"
