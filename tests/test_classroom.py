"""Class grading end to end: hostile submissions, resume after a kill, the student release and
the Gradescope bundle.

One real batch (``python -m grader grade-class`` in a subprocess, sandboxed, ``--jobs 2``) over
every hostile submission of ``tests/hostile`` plus honest ones is shared by the assertions below
(module-scoped fixture). Grading is restricted to a few cheap exercises: three of the attacked
module ``neurons`` and one of ``convolution``, which only the honest submissions and the
import-time attacks ship (an absent module costs no worker).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import submissions as kit  # noqa: E402
from report_checks import check_folder, check_results_json  # noqa: E402

from cnnlab.errors import CnnlabError  # noqa: E402
from grader import classroom, reports  # noqa: E402
from grader.specs import MODULES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ["neurons.sigmoid", "neurons.relu", "neurons.leaky_relu",
             "convolution.conv_output_size"]
TIMEOUT_S = "5"  # per exercise; a worker ends at 30 s + 5 s per exercise, or 5 + 15 s without progress
ATTACKS = kit.attacks()
IMPORT_ATTACKS = {name for name, target in ATTACKS.items() if target == "<import>"}
HONEST = ["correct", "wrong", "blank"]
RESUME_KINDS = ["blank", "lying_eq", "deep_recursion", "syntax_error", "ndarray_subclass"]


def grade_class(subs: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``grade-class`` in a subprocess; every process it starts carries ``CNNLAB_TEST_RUN=out``
    in its environment (the sandbox keeps CNNLAB_* variables), so leftovers can be found. Its
    temporary folders go beside ``out`` (a killed run cannot remove them itself)."""
    tmp = out.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "grader", "grade-class", str(subs), "--out", str(out), "--jobs",
         "2", "--exercises", ",".join(EXERCISES), "--timeout", TIMEOUT_S, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CNNLAB_TEST_RUN": str(out), "TMPDIR": str(tmp)})


def read_grades(path: Path) -> dict[str, dict[str, float]]:
    """Points per exercise and the total of every graded student of grades.csv."""
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert rows[0]["student"] == reports.MAX_ROW
    return {r.pop("student"): {k: float(v) if v else None for k, v in r.items()
                               if k not in ("status", "reason")}
            for r in rows[1:] if r["status"] == "graded"}


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def tmp_mounts() -> list[str]:
    """Mount points under /tmp in the grader's own mount namespace."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return sorted(p for p in points if p.startswith("/tmp"))


def leftover_processes(out: Path) -> list[int]:
    """PIDs of processes started by the grade-class run writing to ``out`` (none may outlive it):
    the run itself carries a marker in its environment; sandboxed processes (whose environment
    holds only allowed variables) name its temporary folder beside ``out`` on their command line."""
    marker, tmp = f"CNNLAB_TEST_RUN={out}".encode(), str(out.parent / "tmp").encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") or \
                    tmp in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def processes_outlive(out: Path, grace_s: float = 20.0) -> list[str]:
    """The processes of ``leftover_processes`` still there after ``grace_s`` seconds, described.

    A sandbox killed with its grader is not gone at once: its PID-1 waits until the kernel has
    reaped every process of its namespace, which on a loaded machine takes a second or more. A
    process that really outlived the grader is still there at the deadline."""
    deadline = time.monotonic() + grace_s
    while (pids := leftover_processes(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    described = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text().splitlines()[:3]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200]
            described.append(f"{pid} {status} {cmd.decode(errors='replace')}")
        except OSError:
            continue  # gone between the two looks
    return described


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("class")
    subs, out = base / "submissions", base / "results"
    for kind in HONEST + list(ATTACKS):
        modules = (kit.ATTACKED_MODULE, kit.OTHER_MODULE) \
            if kind in HONEST or kind in IMPORT_ATTACKS else (kit.ATTACKED_MODULE,)
        kit.make_submission(kind, subs / kind, student=kind, submissions=subs, results=out,
                            modules=modules)
    # the same correct code as a zip of a folder, and as one single module file
    with zipfile.ZipFile(subs / "zipped.zip", "w") as zf:
        zf.write(ROOT / "solutions" / "neurons.py", "my-lab/neurons.py")
    shutil.copyfile(ROOT / "solutions" / "neurons.py", subs / "single.py")
    # ... and written in the lab's notebook: a folder of notebooks, and the notebook alone
    from grader.assign import render_notebook

    solved = render_notebook(ROOT / "solutions" / "neurons.py", solved=True)
    (subs / "notebook" / "notebooks").mkdir(parents=True)
    (subs / "notebook" / "notebooks" / "01_neurons.ipynb").write_text(solved)
    (subs / "nb_alone.ipynb").write_text(solved)
    before = {"solutions": sorted(p.name for p in (ROOT / "solutions").iterdir()),
              "submissions": tree_digest(subs), "mounts": tmp_mounts()}
    start = time.monotonic()
    proc = grade_class(subs, out)
    stdout, stderr = proc.communicate(timeout=600)
    seconds = time.monotonic() - start
    print(f"\nclass batch of {len(list(subs.iterdir()))} submissions: {seconds:.1f} s")
    return {"subs": subs, "out": out, "rc": proc.returncode, "stdout": stdout, "stderr": stderr,
            "seconds": seconds, "before": before,
            "grades": read_grades(out / "grades.csv") if (out / "grades.csv").exists() else {},
            "points": {name: 2.0 for name in EXERCISES}}  # 1 public + 1 hidden point each


def results(batch, student: str) -> dict:
    return json.loads((batch["out"] / student / "results.json").read_text())


def test_a_batch_with_every_hostile_submission_completes(batch):
    assert batch["rc"] == 0, batch["stderr"][-3000:]
    students = sorted(p.name.split(".")[0] for p in batch["subs"].iterdir())
    assert sorted(batch["grades"]) == students
    for sid in students:
        data = results(batch, sid)
        assert {"score", "execution_time", "output", "tests"} <= set(data)
        for test in data["tests"]:
            assert {"name", "score", "max_score", "status", "output", "visibility"} <= set(test)
        suite = ET.parse(batch["out"] / sid / "junit.xml").getroot().find("testsuite")
        assert suite.get("name") == sid
        failures = sum(t["status"] != "passed" for t in data["tests"])
        assert int(suite.get("failures")) + int(suite.get("errors")) == failures == \
            len(suite.findall("testcase/failure")) + len(suite.findall("testcase/error"))
    for name in ("summary.txt", "summary.json", "histogram.png"):
        assert (batch["out"] / name).stat().st_size > 0
    assert (batch["out"] / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((batch["out"] / "summary.json").read_text())
    assert summary["graded"] == len(students) and summary["remaining"] == {}
    assert set(summary["exercises"]) == set(EXERCISES)
    assert "pass rate" in batch["stdout"] and "median" in batch["stdout"]
    assert check_folder(batch["out"]) == len(students)  # hostile output included
    assert not (batch["out"] / classroom.WORK_DIR).exists()


def test_honest_submissions_score_as_written(batch):
    g, full = batch["grades"], batch["points"]
    assert g["correct"] == {**full, "total": 8.0}
    assert g["zipped"] == {**full, "convolution.conv_output_size": 0.0, "total": 6.0}
    # one module: only its lab is graded (the other lab's cell is empty, not a silent 0)
    assert g["single"] == {**g["zipped"], "convolution.conv_output_size": None}
    assert g["notebook"] == g["zipped"] and g["nb_alone"] == g["single"]
    assert g["blank"]["total"] == 0.0
    assert "not attempted" in results(batch, "blank")["tests"][0]["output"]
    for planted in ("neurons.sigmoid", "neurons.relu", "convolution.conv_output_size"):
        assert g["wrong"][planted] < 2.0
    assert g["wrong"]["neurons.leaky_relu"] == 2.0


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_hostile_submission_scores_zero_only_where_it_attacks(batch, attack):
    got = {k: v for k, v in batch["grades"][attack].items() if k != "total"}
    want = kit.expected_scores(attack, batch["points"])
    if attack not in IMPORT_ATTACKS:
        want[f"{kit.OTHER_MODULE}.conv_output_size"] = 0.0  # not shipped: "missing"
    assert got == want, results(batch, attack)["tests"]


@pytest.mark.parametrize("attack, exercise, reason", [
    ("infinite_loop", "relu", "timed out after 5 s"),
    ("hang_ignoring_alarm", "relu", "no progress for 20 s"),  # the heartbeat: 5 + 15 s
    ("memory_hog", "relu", "MemoryError"),
    # the C stack overflows: SIGSEGV on Python 3.11; 3.12+ guards it with a RecursionError
    # Python 3.11 overflows the C stack; 3.12+ raises RecursionError, which JAX then takes seconds
    # to unwind through 5,000 frames under jit: past the 5 s limit on a loaded machine.
    ("stack_overflow", "relu", ("SIGSEGV", "RecursionError", "timed out after 5 s")),
    ("deep_recursion", "relu", "RecursionError"),
    ("fork_storm", "relu", "of 300 forks succeeded"),
    ("exit_at_import", "sigmoid", "could not be run"),
    ("sys_exit_at_import", "sigmoid", "sys.exit()"),
    ("syntax_error", "sigmoid", "SyntaxError"),
    ("lying_eq", "relu", "cannot be returned"),
    ("npz_bomb", "relu", "unpacks to more than"),
])
def test_failures_say_why(batch, attack, exercise, reason):
    test = next(t for t in results(batch, attack)["tests"] if t["name"] == f"neurons.{exercise}")
    reasons = reason if isinstance(reason, tuple) else (reason,)  # one interpreter's way or another
    assert test["score"] == 0 and any(r in test["output"] for r in reasons), test


def test_nothing_outside_the_sandbox_changed(batch):
    before = batch["before"]
    # delete_files tried to remove these; (solutions/ may be edited meanwhile, so names only)
    assert sorted(p.name for p in (ROOT / "solutions").iterdir()) == before["solutions"]
    assert tree_digest(batch["subs"]) == before["submissions"]
    assert (ROOT / "grader" / "runner.py").is_file()
    assert tmp_mounts() == before["mounts"]  # the sandboxes' mounts stayed in their namespaces
    assert not Path("/autograder/results/results.json").exists()
    fake = results(batch, "fake_results")
    assert fake["score"] < sum(t["max_score"] for t in fake["tests"])
    assert "1000" not in (batch["out"] / "grades.csv").read_text()
    assert len(json.dumps(results(batch, "print_flood"))) < 64 * 1024
    assert processes_outlive(batch["out"]) == []


def test_rerun_skips_graded_submissions(batch):
    proc = grade_class(batch["subs"], batch["out"])
    stdout, stderr = proc.communicate(timeout=300)
    n = len(batch["grades"])
    assert proc.returncode == 0, stderr
    assert f"grading 0 of {n} submissions" in stdout
    assert read_grades(batch["out"] / "grades.csv") == batch["grades"]


def test_an_interrupted_batch_resumes_to_the_same_grades(batch, tmp_path):
    subs, out = tmp_path / "submissions", tmp_path / "results"
    for kind in RESUME_KINDS:
        shutil.copytree(batch["subs"] / kind, subs / kind)
    proc = grade_class(subs, out)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/results.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(leftover_processes(out)) > 1  # grade-class and its sandboxes, marked
    proc.send_signal(signal.SIGKILL)  # really: no handler, no cleanup
    proc.communicate()
    done = len(list(out.glob("*/results.json")))
    assert 1 <= done < len(RESUME_KINDS)
    assert processes_outlive(out) == []  # the sandboxes died with the grader
    proc = grade_class(subs, out)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"({done} up to date)" in stdout
    resumed = read_grades(out / "grades.csv")
    assert resumed == {k: batch["grades"][k] for k in RESUME_KINDS}


# -- submissions and reports, without grading -------------------------------------------------


def test_unsafe_zips_are_refused(tmp_path):
    def make(name, entries):
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for arcname, data, attr in entries:
                info = zipfile.ZipInfo(arcname)
                if attr:
                    info.external_attr = attr << 16
                zf.writestr(info, data)
        return path

    cases = {
        "traversal": [("../../evil.py", b"x", 0)],
        "absolute": [("/etc/evil.py", b"x", 0)],
        "symlink": [("neurons.py", b"/etc/passwd", 0o120777)],
        "bomb": [("neurons.py", b"\0" * (classroom.ZIP_MAX_FILE_BYTES + 1), 0)],
    }
    for name, entries in cases.items():
        with pytest.raises(classroom.SubmissionProblem):
            classroom.extract_zip(make(name, entries), tmp_path / f"out-{name}")
        assert not (tmp_path / "evil.py").exists()
    ok = make("ok", [("__MACOSX/._x", b"", 0), ("alice/neurons.py", b"x = 1\n", 0)])
    dest = classroom.materialize(ok, tmp_path / "alice", modules=["neurons"],
                                 exercises_by_module={"neurons": {"relu"}})
    assert sorted(p.name for p in dest.iterdir()) == ["neurons.py"]
    assert classroom.guess_module(b"def conv2d(x):\n    pass\ndef zero_pad(): pass\n",
                                  {"neurons": {"relu"}, "convolution": {"conv2d", "zero_pad"}}) \
        == "convolution"


def test_submission_folder_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(CnnlabError, match="does not exist"):
        classroom.discover(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "alice").mkdir()
    (tmp_path / "a" / "alice.zip").write_bytes(b"")
    with pytest.raises(CnnlabError, match="two entries for student 'alice'"):
        classroom.discover(tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bad\x1bname").mkdir()
    with pytest.raises(CnnlabError, match="student id"):
        classroom.discover(tmp_path / "b")
    r = subprocess.run([sys.executable, "-m", "grader", "grade-class", str(tmp_path / "nope"),
                        "--out", str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("grader: error:") and "Traceback" not in r.stderr


def test_reports_cap_merge_hidden_and_stay_valid():
    data = {"execution_time": 1.5, "output": "x" * 100_000, "tests": [
        {"name": "m.f", "score": 1.0, "max_score": 2.0, "status": "failed",
         "output": "bad \x00\x07 bytes " + "y" * 50_000},
        {"name": "m.f (hidden)", "score": 1.0, "max_score": 1.0, "status": "passed",
         "visibility": "after_due_date"},
        {"name": "m.g", "score": float("nan"), "max_score": 1.0}]}
    norm = reports.normalize_results(data)
    assert len(norm["output"]) <= reports.SUBMISSION_OUTPUT_CAP
    assert len(norm["tests"][0]["output"]) <= reports.TEST_OUTPUT_CAP
    assert norm["score"] == 2.0 and norm["max_score"] == 4.0 and norm["tests"][2]["score"] == 0.0
    assert norm["tests"][1]["visibility"] == "after_due_date"
    ET.fromstring(reports.junit_xml(data, suite="alice").encode())  # control bytes removed
    bad = {**norm, "max_score": 4.0, "visibility": "later",
           "tests": [{**norm["tests"][0], "status": "partial", "weight": 1}]}
    assert reports.gradescope_problems(bad) == [
        "unknown field 'max_score'", "'visibility' is 'later'",
        "tests[0]: unknown field 'weight'", "tests[0]: status 'partial'"]
    assert json.loads(reports.results_json_text(norm)).keys() <= set(reports.GRADESCOPE_FIELDS)
    table = {"bob": data, "alice": {"tests": [], "extra_data": {"cnnlab": {
        "student": "alice", "status": "rejected", "reason": "not a zip"}}}}
    text = reports.grades_csv(table, pending={"carol": "not graded yet"})
    assert list(csv.reader(io.StringIO(text))) == [
        ["student", "status", "reason", "m.f", "m.g", "total"],
        [reports.MAX_ROW, "max", "", "3", "1", "4"],
        ["alice", "rejected", "not a zip", "", "", "0"],
        ["bob", "graded", "", "2", "0", "2"],
        ["carol", "pending", "not graded yet", "", "", ""]]
    summary = reports.class_summary(table, pending={"carol": "not graded yet"})
    assert summary["exercises"]["m.f"]["pass_rate"] == 0.0 and summary["median_total"] == 2.0
    assert summary["graded"] == 1 and summary["rejected"] == {"alice": "not a zip"}
    assert summary["remaining"] == {"carol": "not graded yet"}


# -- the student release and the Gradescope bundle --------------------------------------------


def fake_venv(tmp_path: Path) -> Path:
    """A venv that aliases the one running the tests (for `make` in the release without a fresh
    pip install); that is `.venv`, or `.venv-3.12` under `make test VENV=.venv-3.12`."""
    venv, ours = tmp_path / "venv", Path(sys.prefix)
    (venv / "bin").mkdir(parents=True)
    shutil.copyfile(ours / "pyvenv.cfg", venv / "pyvenv.cfg")
    (venv / "bin" / "python").symlink_to(ours / "bin" / "python")
    (venv / "lib").symlink_to(ours / "lib")
    (venv / ".installed-stamp").touch()
    return venv


def test_release_ships_no_reference_and_grades_from_expected_outputs(tmp_path):
    rel = tmp_path / "release"
    r = subprocess.run([sys.executable, "-m", "grader", "release", str(rel), "--modules",
                        "neurons"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    names = {str(p.relative_to(rel)) for p in rel.rglob("*")}
    assert {"exercises/neurons.py", "grader/runner.py", "lib/cnnlab/__init__.py", "Makefile",
            "grader/expected/neurons.json", "grader/expected/neurons.npz"} <= names
    from grader.notebook import notebook_name   # every lab's notebook, blank as its module

    assert {f"exercises/notebooks/{notebook_name(m)}" for m in MODULES} <= names
    assert not any(n.split("/")[0] in ("solutions", ".git", "benchmarks")
                   or n.startswith(("grader/hidden", "tests/test_classroom")) for n in names)
    from grader.release import check_release

    assert check_release(rel) == []
    saved = json.loads((rel / "grader" / "expected" / "neurons.json").read_text())["calls"]
    assert saved and not any("hidden" in cid for cid in saved)
    # `make grade` in the release grades from the shipped expected outputs (no solutions there)
    venv = fake_venv(tmp_path)
    make = ["make", "-s", "-C", str(rel), "grade", f"VENV={venv}"]
    correct = kit.make_submission("correct", tmp_path / "correct", modules=("neurons",))
    r = subprocess.run(make + [f"ARGS=check neurons.sigmoid neurons.relu --submission {correct}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2/2" in r.stdout and "100%" in r.stdout
    r = subprocess.run(make + ["ARGS=check neurons.relu"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0 and "not attempted" in r.stdout, r.stdout + r.stderr


def test_gradescope_bundle_grades_without_solutions(tmp_path):
    bundle = tmp_path / "autograder.zip"
    r = subprocess.run([sys.executable, "-m", "grader", "gradescope-bundle", str(bundle),
                        "--modules", "neurons"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        zf.extractall(tmp_path / "autograder" / "source")
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert "grader/expected/neurons.json" in names
    assert not any(n.startswith(("solutions/", ".git/", "tests/")) for n in names)
    source = tmp_path / "autograder" / "source"
    for p in source.rglob("*"):
        if p.is_file():
            os.chmod(p, 0o755 if p.name in ("setup.sh", "run_autograder") else 0o644)
    submission = tmp_path / "autograder" / "submission"
    submission.mkdir()
    with zipfile.ZipFile(submission / "upload.zip", "w") as zf:  # as a student may upload it
        hostile = kit.make_submission("read_reference", tmp_path / "student", student="x",
                                      submissions=tmp_path, results=tmp_path,
                                      modules=("neurons",))
        zf.write(hostile / "neurons.py", "neurons.py")
    out = tmp_path / "autograder" / "results" / "results.json"
    r = subprocess.run([sys.executable, "-m", "grader", "gradescope-run", str(submission),
                        str(out), "--exercises", "neurons.sigmoid,neurons.relu", "--timeout",
                        TIMEOUT_S], cwd=source, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    data = check_results_json(out)  # Gradescope's documented fields only
    scores = {t["name"]: t["score"] for t in data["tests"]}
    assert scores["neurons.sigmoid"] == 1.0 and scores["neurons.relu"] == 0.0, data
    assert "gradescope-run" in (source / "run_autograder").read_text()
    assert "results.json" in (source / "run_autograder").read_text()


def test_release_check_catches_planted_leaks(tmp_path):
    from grader.release import check_release

    rel = tmp_path / "release"
    (rel / "grader" / "expected").mkdir(parents=True)
    (rel / "exercises").mkdir()
    (rel / "exercises" / "neurons.py").write_text(
        (ROOT / "solutions" / "neurons.py").read_text() + "\n")          # solution code inside
    (rel / "exercises" / "pooling.py").write_bytes((ROOT / "solutions" / "pooling.py").read_bytes())
    (rel / "notes.py").write_text("# BEGIN SOLUTION\n")
    from grader.assign import render_notebook    # a solved notebook is the reference too

    (rel / "exercises" / "notebooks").mkdir()
    (rel / "exercises" / "notebooks" / "03_pooling.ipynb").write_text(
        render_notebook(ROOT / "solutions" / "pooling.py", solved=True))
    (rel / "grader" / "hidden").mkdir()
    problems = " | ".join(check_release(rel))
    for needle in ("grader/hidden/ must not be shipped", "pooling.py is a copy of a solution file",
                   "neurons.py holds a solution marker", "notes.py holds a solution marker",
                   "03_pooling.ipynb holds solution code"):
        assert needle in problems, problems
