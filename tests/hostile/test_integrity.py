"""Integrity: nothing a submission does raises its score (README, "What protects the grader").

Each payload of ``payloads/`` that attacks the grading itself -- another copy of the reference on
the machine, the grader through /proc, the course's library, the shipped expected outputs, a table
of public answers, a forged "from scratch" report -- is graded as the instructor grades: in the
sandbox, with hidden cases, once from the instructor's checkout and once from the Gradescope bundle
(its own grader and saved expected outputs, no solutions). The attacked exercise must score no
more than a plainly wrong answer (0; the table of public answers keeps the public points it copied,
and no hidden point), and the neighbouring exercise of the same module is graded normally.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import submissions as kit
from grader import runner
from grader.runner import export_expected, grade_submission
from grader.sandbox import Limits, Sandbox

ROOT = kit.ROOT
PAYLOADS = ["read_reference_copies", "read_proc", "delegate_to_library", "delegate_unseen",
            "replay_expected", "lookup_table", "fake_jaxpr_report"]
NEIGHBOUR = {"neurons": "leaky_relu", "augmentation": "top_k_accuracy",
             "convolution": "conv_param_count"}
SECRET = "cnnlab-secret-token"
pytestmark = pytest.mark.skipif(Sandbox().mode != "bwrap" and not os.environ.get("CI"),
                                reason="the integrity suite needs the sandbox's view (bwrap)")


def graded(kind: str) -> list[str]:
    module, function = kit.target(kind)
    return [f"{module}.{function}", f"{module}.{NEIGHBOUR[module]}"]


def public_answers(tmp: Path) -> str:
    """The public cases of relu as a student can copy them from a release: a dict literal."""
    export_expected(tmp, modules=["neurons"])
    calls = json.loads((tmp / "neurons.json").read_text())["calls"]
    arrays = np.load(tmp / "neurons.npz", allow_pickle=False)
    table = {}
    for cid, entry in calls.items():
        args = entry["call"]["args"]["items"]
        if cid.startswith("relu/") and args and args[0].get("t") == "array" and \
                entry["expected"]["out"].get("t") == "array":
            x = arrays[args[0]["k"]].astype(np.float32)
            key = hashlib.sha256(x.tobytes() + str(x.shape).encode()).hexdigest()
            table[key] = arrays[entry["expected"]["out"]["k"]].tolist()
    return repr(table)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Copies of solutions/ where a real machine keeps them (a sibling clone, the home folder,
    /tmp, the folder above the checkout), a student release's expected outputs, a secret in the
    grader's environment, and one submission per payload."""
    base = tmp_path_factory.mktemp("integrity")
    pid = os.getpid()
    made = [ROOT.parent / f"cnnlab-clone-{pid}", Path.home() / f"cnnlab-copy-{pid}",
            Path(tempfile.gettempdir()) / f"cnnlab-copy-{pid}", ROOT.parent / f"solutions-{pid}"]
    copies = [made[0] / "solutions", made[1] / "solutions", made[2] / "solutions", made[3]]
    for copy in copies:
        shutil.copytree(ROOT / "solutions", copy)
    release = base / "student-release"
    export_expected(release / "grader" / "expected", modules=["neurons"])
    fill = {"__COPIES__": repr([str(c / "neurons.py")[::-1] for c in copies]),  # reversed
            "__GRADER_PID__": str(pid), "__RELEASE__": str(release),
            "__PUBLIC_ANSWERS__": public_answers(base / "answers")}
    subs = base / "submissions"
    for kind in PAYLOADS + ["correct"]:
        module = kit.target(kind)[0] if kind != "correct" else "neurons"
        kit.make_submission(kind, subs / kind, modules=(module,), fill=fill)
    os.environ["CNNLAB_TEST_SECRET"] = SECRET
    try:
        yield {"base": base, "subs": subs, "copies": copies}
    finally:
        del os.environ["CNNLAB_TEST_SECRET"]
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def check(kind: str, scores: dict[str, tuple[float, float, float]]) -> None:
    """``scores``: per exercise (score, public score, hidden score) and the full points."""
    attacked, neighbour = graded(kind)
    score, public, hidden = scores[attacked]
    if kind == "lookup_table":  # it copied the public answers; the hidden cases it cannot know
        assert hidden == 0.0 and score == public, scores
    else:
        assert score == 0.0, (kind, scores)
    assert scores[neighbour][0] == scores["full"][neighbour], (kind, scores)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_an_attack_scores_no_more_than_a_wrong_answer(planted, kind):
    result = grade_submission(planted["subs"] / kind, exercises=graded(kind), include_hidden=True,
                              launcher=Sandbox(), jobs=1, timeout_s=20)
    scores = {e.qualname: (e.score, e.public[0], e.hidden[0]) for e in result.exercises}
    scores["full"] = {e.qualname: e.points for e in result.exercises}
    check(kind, scores)
    reasons = {"delegate_to_library": "imports cnnlab.data.pipeline",
               "fake_jaxpr_report": "scores 0 until its from-scratch rule holds"}
    if kind in reasons:
        assert reasons[kind] in result.by_name(graded(kind)[0]).reason


def test_the_planted_copies_are_real(planted):
    """The copies a payload hunts for exist and are readable outside the sandbox."""
    for copy in planted["copies"]:
        assert "def relu" in (copy / "neurons.py").read_text()


def test_the_gradescope_bundle_passes_the_same_suite(planted, tmp_path):
    """The bundle's own grader, from its saved expected outputs (public and hidden), on every
    payload; and its results.json shows nothing hidden before the due date."""
    bundle = tmp_path / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "grader", "gradescope-bundle", str(bundle),
                        "--modules", "neurons,convolution,augmentation"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    source = tmp_path / "autograder" / "source"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(source)
    names = sorted({name for kind in PAYLOADS for name in graded(kind)})
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "grader", "grade-class", str(planted["subs"]),
                        "--out", str(out), "--exercises", ",".join(names), "--timeout", "20"],
                       cwd=source, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = {row.pop("student"): row for row in csv.DictReader(
        (out / "grades.csv").read_text().splitlines())}
    for kind in PAYLOADS:
        data = json.loads((out / kind / "results.json").read_text())
        tests = {t["name"]: t["score"] for t in data["tests"]}
        scores = {n: (float(rows[kind][n]), tests[n], tests.get(f"{n} (hidden)", 0.0))
                  for n in graded(kind)}
        scores["full"] = {t["name"]: 2 * t["max_score"] for t in data["tests"]}  # + hidden
        check(kind, scores)
    visible = [t for t in json.loads((out / "correct" / "results.json").read_text())["tests"]
               if t["visibility"] == "visible"]
    assert visible and all("hidden" not in t["output"] and float(t["max_score"]).is_integer()
                           for t in visible)


@pytest.mark.parametrize("kind", ["read_reference_copies", "read_proc", "replay_expected"])
def test_without_the_sandbox_the_same_payloads_would_score(planted, kind):
    """The control: graded by a plain subprocess (no view), these payloads find what they hunt
    for and pass the attacked exercise -- so the test above fails if the sandbox stops binding."""
    result = grade_submission(planted["subs"] / kind, exercises=graded(kind)[:1],
                              include_hidden=True, jobs=1, timeout_s=20)
    assert result.exercises[0].public[0] > 0, result.exercises[0].output_text()


def test_the_compiled_cache_opens_by_name_only(tmp_path):
    """The reference's compiled programs (``Limits.compiled_cache``): the sandboxed worker opens an
    entry whose exact name it knows, but cannot list the folder nor write into it; graded without
    the sandbox (the control), the same payload lists the folder and scores."""
    store = runner.open_reference()
    store.plan("neurons", include_hidden=True)  # fills the cache (once per request)
    compiled = runner.compiled_cache_dir()
    entries = sorted(p.name for p in compiled.glob("jit_*-cache"))
    assert entries and oct(compiled.stat().st_mode & 0o777) == "0o711"
    sub = kit.make_submission("read_compiled_cache", tmp_path / "sub", modules=("neurons",),
                              fill={"__COMPILED__": repr(str(compiled)),
                                    "__ENTRY__": repr(entries[0])})
    before = sorted(p.name for p in compiled.iterdir())
    result = grade_submission(sub, exercises=["neurons.relu"], include_hidden=True, jobs=1,
                              launcher=Sandbox(Limits(compiled_cache=str(compiled))),
                              reference=store, timeout_s=20)
    relu = result.exercises[0]
    assert relu.score == 0.0, relu.output_text()
    assert "FOUND: []" in relu.output_text() and "OPENED BY NAME: True" in relu.output_text()
    assert sorted(p.name for p in compiled.iterdir()) == before  # nothing written
    try:
        control = grade_submission(sub, exercises=["neurons.relu"], include_hidden=True, jobs=1,
                                   reference=store, timeout_s=20)
    finally:
        (compiled / "jit_relu-poisoned-cache").unlink(missing_ok=True)  # what the control wrote
    assert control.exercises[0].public[0] > 0, control.exercises[0].output_text()
