"""An instructor's term, with the real command (``python -m grader grade-class`` / ``merge`` in
subprocesses, sandboxed, real zips and files): an eight-student class (``tests/term``) with a
resubmission, a Unicode id, a rejected zip, two planted copies and honest independent solutions
goes through grade -> change -> re-grade -> export -> similarity, then through three shards and a
merge that must reproduce the single machine's reports; and a batch stopped by real SIGINT and
SIGTERM signals that resumes to the same grades.

Grading is restricted to three quick exercises of the pooling lab (similarity still compares the
whole lab files as submitted). Each exercise is worth its points twice: once on the public cases
and once on the hidden ones (``grader.runner._points``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import term
from grader import classroom, reports
from grader.memcg import memory_parent
from report_checks import check_folder

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ["pooling.global_avg_pool", "pooling.flatten", "pooling.dropout"]
MAX = {"pooling.global_avg_pool": 2.0, "pooling.flatten": 2.0, "pooling.dropout": 4.0}
JOSE = term.UNICODE_ID
GRADED = ["ana", "ben", JOSE, "dan", "eve", "fay", "hal"]  # all but the rejected gus


def grader(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def grade(subs: Path, out: Path, *extra: str, exercises=EXERCISES) -> subprocess.CompletedProcess:
    return grader("grade-class", subs, "--out", out, "--jobs", "2", "--timeout", "20",
                  "--exercises", ",".join(exercises), *extra)


def read_grades(out: Path) -> dict[str, dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text(encoding="utf-8"))))
    return {r.pop("student"): r for r in rows}


def points(out: Path) -> dict[str, dict[str, float | None]]:
    """Per student (and the max row): exercise -> points (None: empty cell), and the total."""
    return {sid: {k: (float(v) if v else None) for k, v in row.items()
                  if k not in ("status", "reason")} for sid, row in read_grades(out).items()}


def regraded(stdout: str) -> dict[str, str]:
    """Student -> the console line of each submission graded in a run."""
    return dict(re.findall(r"^\[\d+/\d+\] (.+?): (.*)$", stdout, re.M))


def full(total: float = 8.0) -> dict:
    return {**MAX, "total": total}


def test_a_term_grade_change_regrade_export_similarity(tmp_path):
    subs, out = tmp_path / "submissions", tmp_path / "results"
    term.build_class(subs)
    first_grading(subs, out)
    resubmission(subs, out)
    spec_change(subs, out)
    selective_regrading(subs, out)
    # -- export to Canvas and similarity, without grading anything again -----------------------
    r = grade(subs, out, "--similarity", "--lms", "canvas", term.HERE / "canvas_roster.csv",
              "--assignment", "Lab 3")
    assert r.returncode == 0 and "grading 0 of 8" in r.stdout, r.stdout + r.stderr
    check_canvas_export(out, r.stdout)
    check_similarity(out, r.stdout)
    # -- three machines, then merge: the single machine's reports, byte for byte ---------------
    shards = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    for i, shard in enumerate(shards, 1):
        r = grade(subs, shard, "--shard", f"{i}/3")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"shard {i}/3: " in r.stdout
    got = sorted(sid for shard in shards for sid in classroom.read_manifest(shard)["students"])
    assert got == sorted([*GRADED, "gus"])  # each submission in exactly one shard
    merged = tmp_path / "merged"
    r = grader("merge", *shards, "--out", merged, "--similarity", "--lms", "canvas",
               term.HERE / "canvas_roster.csv", "--assignment", "Lab 3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same_reports(out, merged)
    r = grader("merge", *shards[:2], "--out", tmp_path / "partial")
    assert r.returncode == 2 and "missing 3/3" in r.stderr
    # -- the same grades for Moodle --------------------------------------------------------------
    r = grader("merge", *shards, "--out", merged, "--lms", "moodle",
               term.HERE / "moodle_roster.csv", "--assignment", "Lab 3")
    assert r.returncode == 0, r.stdout + r.stderr
    check_moodle_export(merged)


def first_grading(subs: Path, out: Path) -> None:
    """Every submission accounted for, every figure right."""
    r = grade(subs, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "grading 8 of 8 submissions" in r.stdout
    assert f"{JOSE}: 8/8 points" in r.stdout  # the id as given, in the console
    assert re.search(r"gus: REJECTED: the zip holds an unsafe path '\.\./\.\./evil\.py'", r.stdout)
    ben_v1 = {**MAX, "pooling.global_avg_pool": 1.75, "total": 7.75}  # 3 of 4 public cases
    assert points(out) == {
        reports.MAX_ROW: full(), "ana": full(), "ben": ben_v1, JOSE: full(), "dan": full(),
        "eve": full(), "fay": {**MAX, "pooling.dropout": 0.0, "total": 4.0},
        "gus": {**{n: None for n in MAX}, "total": 0.0},
        "hal": {**{n: 0.0 for n in MAX}, "total": 0.0}}
    rows = read_grades(out)
    assert rows["gus"]["status"] == "rejected" and "unsafe path" in rows["gus"]["reason"]
    assert {rows[s]["status"] for s in GRADED} == {"graded"}
    folder = classroom.folder_name(JOSE)
    assert folder.isascii() and folder != JOSE and (out / folder / "results.json").is_file()
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    # hal's blank starter did not attempt the lab, gus was rejected: 6 attempted it
    assert {n: e["attempted"] for n, e in s["exercises"].items()} == {n: 6 for n in EXERCISES}
    assert s["exercises"]["pooling.global_avg_pool"]["pass_rate"] == pytest.approx(5 / 6)
    assert s["exercises"]["pooling.global_avg_pool"]["mean_points"] == pytest.approx(11.75 / 6)
    assert s["exercises"]["pooling.dropout"]["pass_rate"] == pytest.approx(5 / 6)  # fay
    assert s["exercises"]["pooling.flatten"]["pass_rate"] == 1.0
    assert s["graded"] == 7 and s["max_total"] == 8.0
    assert s["mean_total"] == pytest.approx(43.75 / 7) and s["median_total"] == 8.0
    assert list(s["rejected"]) == ["gus"] and s["remaining"] == {}
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert "REJECTED gus: the zip holds an unsafe path" in text
    assert check_folder(out) == 8  # junit.xml valid (junit-10.xsd), results.json documented


def resubmission(subs: Path, out: Path) -> None:
    """A re-run grades nothing; a resubmission is re-graded, alone, and the run says why."""
    r = grade(subs, out)
    assert r.returncode == 0 and "grading 0 of 8 submissions with 2 jobs (8 up to date)" \
        in r.stdout, r.stdout
    before = (out / "ana" / "results.json").read_bytes()
    (subs / "ben" / "pooling.py").write_text(term.honest("ben"))  # the bug fixed
    r = grade(subs, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "grading 1 of 8 submissions" in r.stdout and re.search(
        r"submission changed \(pooling\.global_avg_pool, pooling\.flatten, pooling\.dropout\): "
        r"ben$", r.stdout, re.M), r.stdout
    assert list(regraded(r.stdout)) == ["ben"]
    assert points(out)["ben"] == full()
    assert (out / "ana" / "results.json").read_bytes() == before
    previous = json.loads((out / "ben" / classroom.PREVIOUS_RESULTS).read_text())
    assert previous["score"] == 7.75  # the earlier submission's results are kept
    s = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert s["exercises"]["pooling.global_avg_pool"]["pass_rate"] == 1.0
    assert s["mean_total"] == pytest.approx(44 / 7)


def spec_change(subs: Path, out: Path) -> None:
    """Results graded under another spec of one exercise: exactly that one is re-graded."""
    for sid in GRADED:
        path = out / classroom.folder_name(sid) / "results.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        data["extra_data"]["cnnlab"]["exercises"]["pooling.flatten"]["spec"] = "0" * 16
        path.write_text(json.dumps(data, ensure_ascii=False))
    before = {sid: _tests_of(out, sid) for sid in GRADED}
    r = grade(subs, out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "grading 7 of 8 submissions" in r.stdout
    assert re.search(r"^  spec changed \(pooling\.flatten\): " + re.escape(", ".join(
        sorted(GRADED))) + "$", r.stdout, re.M), r.stdout
    assert set(regraded(r.stdout)) == set(GRADED)
    assert all("re-graded: spec changed: 1 exercise(s)" in line
               for line in regraded(r.stdout).values()), r.stdout
    for sid in GRADED:  # every other exercise's test is untouched
        after = _tests_of(out, sid)
        assert {k: v for k, v in after.items() if "flatten" not in k} == \
               {k: v for k, v in before[sid].items() if "flatten" not in k}


def selective_regrading(subs: Path, out: Path) -> None:
    """``--exercises X --force`` merges into the other exercises' results; ``--students``
    re-grades the named ones; an unknown one is a one-line error."""
    table = (out / "grades.csv").read_text(encoding="utf-8")
    r = grade(subs, out, "--force", exercises=["pooling.dropout"])
    assert r.returncode == 0 and "grading 8 of 8 submissions" in r.stdout, r.stdout + r.stderr
    assert "  forced: " + ", ".join(sorted(GRADED)) + "\n" in r.stdout, r.stdout
    assert (out / "grades.csv").read_text(encoding="utf-8") == table  # nothing else lost
    r = grade(subs, out, "--students", f"ben,{JOSE}", "--force")  # --force: still only those
    assert r.returncode == 0 and sorted(regraded(r.stdout)) == sorted(["ben", JOSE]), r.stdout
    r = grade(subs, out, "--students", "nobody")
    assert r.returncode == 2 and r.stderr.startswith("grader: error: --students: no submission")
    assert "Traceback" not in r.stderr


def _tests_of(out: Path, sid: str) -> dict[str, dict]:
    data = json.loads((out / classroom.folder_name(sid) / "results.json").read_text("utf-8"))
    return {t["name"]: t for t in data["tests"]}


def check_canvas_export(out: Path, stdout: str) -> None:
    """Canvas's gradebook CSV: its identity columns and the existing assignment column, the
    Points Possible row, a row per matched graded student; the unmatched on both sides reported."""
    rows = list(csv.reader(io.StringIO((out / "lms-canvas.csv").read_text(encoding="utf-8"))))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 3 (2045)"]
    assert rows[1] == ["Points Possible", "", "", "", "", "8"]
    assert {r[0]: r[5] for r in rows[2:]} == {
        "Andersson, Ana": "8", "Berg, Ben": "8", "Müller-李, José": "8", "Dahl, Dan": "8",
        "Ek, Eve": "8", "Falk, Fay": "4"}  # gus rejected: not exported; hal: not in the roster
    assert all(len(r) == len(rows[0]) for r in rows)
    report = (out / "lms-canvas-report.txt").read_text(encoding="utf-8")
    for needle in ("6 grade(s) in column 'Lab 3 (2045)' (of 8 points)",
                   "not exported: gus (rejected: the zip holds an unsafe path",
                   "submission not matched: hal (not in the roster)",
                   "roster student without a submission: Ito, Ivy (SIS Login ID ivy)"):
        assert needle in report and needle in stdout, report
    assert "Student, Test" not in report  # Canvas's test student is no student


def check_moodle_export(out: Path) -> None:
    """Moodle's CSV grade import: the user columns of its export and the grade column, every row
    as long as the header (Moodle refuses the file otherwise)."""
    rows = list(csv.reader(io.StringIO((out / "lms-moodle.csv").read_text(encoding="utf-8"))))
    assert rows[0] == ["First name", "Last name", "ID number", "Institution", "Department",
                       "Email address", "Lab 3"]
    assert all(len(r) == len(rows[0]) for r in rows)
    assert {r[5]: r[6] for r in rows[1:]} == {
        "ana@uni.example": "8", "ben@uni.example": "8", "jmuller@uni.example": "8",
        "dan@uni.example": "8", "eve@uni.example": "8", "fay@uni.example": "4",
        "hal@uni.example": "0"}  # gus rejected: not exported
    report = (out / "lms-moodle-report.txt").read_text(encoding="utf-8")
    assert "roster student without a submission: Ivy (Email address ivy@uni.example" in report
    assert "not exported: gus (rejected" in report


def check_similarity(out: Path, stdout: str) -> None:
    """The two planted copies, and only they, are flagged; the honest solutions are not."""
    rows = list(csv.DictReader(io.StringIO((out / "similarity.csv").read_text(encoding="utf-8"))))
    flagged = {frozenset((r["student_a"], r["student_b"])) for r in rows if r["flagged"] == "yes"}
    assert flagged == {frozenset(("ana", "dan")), frozenset((JOSE, "eve"))}, rows
    honest = ["ana", "ben", JOSE, "fay"]
    for r in rows:
        if r["student_a"] in honest and r["student_b"] in honest:
            assert float(r["similarity_a"]) < 0.5 or float(r["similarity_b"]) < 0.5, r
    assert not any("hal" in (r["student_a"], r["student_b"]) for r in rows)  # blank: not compared
    html = (out / "similarity-pooling.html").read_text(encoding="utf-8")
    assert "highlight-red" in html and "dan.py" in html
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert len(summary["similarity"]["flagged"]) == 2
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert re.search(r"^SIMILAR pooling: ana ~ dan \(\d+% / \d+%", text, re.M), text
    assert "~ eve" in text and "SIMILAR" in stdout


CLASS_REPORTS = ("grades.csv", "summary.json", "summary.txt", "histogram.png", "run.json",
                 "similarity.csv", "similarity-pooling.html", "lms-canvas.csv",
                 "lms-canvas-report.txt")


def assert_same_reports(single: Path, merged: Path) -> None:
    """The merged shards hold the files of the single machine, equal byte for byte but for
    wall-clock times (and ben's earlier submission, which the shards never saw)."""
    for name in CLASS_REPORTS:
        a, b = (single / name).read_bytes(), (merged / name).read_bytes()
        if name == "lms-canvas-report.txt":  # it names the results folder's roster path only
            a, b = a.splitlines()[1:], b.splitlines()[1:]
        assert a == b, name
    students = classroom.read_manifest(single)["students"]
    for sid, folder in students.items():
        names = {p.name for p in (merged / folder).iterdir()}
        assert names == {p.name for p in (single / folder).iterdir()} - {classroom.PREVIOUS_RESULTS}
        for name in names:
            a, b = (single / folder / name).read_bytes(), (merged / folder / name).read_bytes()
            assert _timeless(a) == _timeless(b), (sid, name)


def _timeless(data: bytes) -> bytes:
    return re.sub(rb'("execution_time": |time=")[0-9.]+', rb"\1T", data)


# -- interrupts: real signals ---------------------------------------------------------------------


SLOW_FLATTEN = ("\n\nimport time as _t\n\n\ndef flatten(x):\n    _t.sleep(4)\n"
                "    return x.reshape(x.shape[0], -1)\n")


def leftovers(out: Path) -> list[str]:
    """Processes still running for this results folder (the grader, its sandboxes)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in cmd or "cnnlab-worker" in cmd and str(out.parent) in cmd:
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_batch_cleanly_and_it_resumes(tmp_path, sig):
    subs, out = tmp_path / "submissions", tmp_path / "results"
    subs.mkdir()
    (subs / "a_fast").mkdir()
    (subs / "a_fast" / "pooling.py").write_text(term.reference())
    for sid in ("b_slow", "c_slow", "d_slow", "e_slow"):  # each ~20 s in its worker
        (subs / sid).mkdir()
        (subs / sid / "pooling.py").write_text(term.reference() + SLOW_FLATTEN)
    cmd = [sys.executable, "-m", "grader", "grade-class", str(subs), "--out", str(out), "--jobs",
           "2", "--timeout", "30", "--exercises", "pooling.global_avg_pool,pooling.flatten"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 300
    while not (out / "a_fast" / "results.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # the slow ones are in their workers now
    assert len(leftovers(out)) >= 2  # the grader and its sandboxed workers, found by the check
    sent = time.monotonic()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    stopped_in = time.monotonic() - sent
    assert proc.returncode == 128 + sig, stdout + stderr
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop: the workers were not ended"
    name = signal.Signals(sig).name
    assert f"grader: {name} received: stopping" in stdout
    assert re.search(rf"interrupted by {name}: 1 submission\(s\) graded in this run, 4 remain: "
                     "run the same command again to resume", stdout), stdout
    time.sleep(0.5)
    assert leftovers(out) == [], "processes outlived the grader"
    memory = memory_parent()
    if memory:  # the workers ran in memory cgroups of their own, all removed on the way out
        assert f"memory in all (cgroup v{memory[1]})" in stdout
        assert not list(memory[0].glob(f"cnnlab-worker-{proc.pid}-*"))
    # what is graded is reported; nothing of an unfinished submission was written
    rows = read_grades(out)
    assert rows["a_fast"]["status"] == "graded" and rows["a_fast"]["total"] == "4"
    assert {rows[s]["status"] for s in ("b_slow", "c_slow", "d_slow", "e_slow")} == {"pending"}
    assert sorted(p.parent.name for p in out.glob("*/results.json")) == ["a_fast"]
    assert not list(out.rglob("*.tmp")) and not (out / classroom.WORK_DIR).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["remaining"]) == 4 and summary["graded"] == 1
    if sig == signal.SIGTERM:
        return
    # a torn results.json (a power cut in another tool) is never read back as graded
    (out / "a_fast" / "results.json").write_text('{"score": 4, "tests": [')
    for sid in ("b_slow", "c_slow", "d_slow", "e_slow"):
        (subs / sid / "pooling.py").write_text(term.reference())  # fast this time
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "grading 5 of 5 submissions" in r.stdout
    assert {k: v["total"] for k, v in read_grades(out).items()} == {
        reports.MAX_ROW: "4", "a_fast": "4", "b_slow": "4", "c_slow": "4", "d_slow": "4",
        "e_slow": "4"}


# -- the pieces, without grading -------------------------------------------------------------------


def test_unicode_ids_map_to_distinct_safe_folders(tmp_path):
    ids = [JOSE, "José Müller-李 ", "Zoë", "Zoe", "grades.csv", "a b", "已经", "..."]
    names = {sid: classroom.folder_name(sid) for sid in ids}
    assert len(set(names.values())) == len(ids)
    assert names["Zoe"] == "Zoe" and names["Zoë"] != "Zoe"
    for name in names.values():
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@+-]*", name), name
        assert not classroom._reserved(name)
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / JOSE).mkdir()
    (subs / "bad\x07name").mkdir()
    with pytest.raises(classroom.CnnlabError, match="control characters"):
        classroom.discover(subs)


def test_shards_are_deterministic_and_cover_the_class():
    entries = [classroom.Entry(f"s{i:03d}", Path("x"), f"s{i:03d}") for i in range(10)]
    parts = [classroom.shard_entries(entries, (i, 3)) for i in (1, 2, 3)]
    assert sorted(e.sid for p in parts for e in p) == [e.sid for e in entries]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert parts[1] == classroom.shard_entries(list(entries), (2, 3))
    for bad in ("0/3", "4/3", "2", "a/b", ""):
        with pytest.raises(classroom.CnnlabError, match="--shard"):
            classroom.parse_shard(bad)


def test_spec_digest_changes_with_what_grading_depends_on():
    import dataclasses

    from grader import runner, specs

    ref = runner.open_reference()
    ex = specs.load("pooling")[3]  # flatten
    base = classroom.spec_digests([ex], ref)[ex.qualname]
    case = ex.cases[0]
    bigger = dataclasses.replace(case, args=(case.args[0] + 1,))
    assert classroom.spec_digests([dataclasses.replace(ex, points=5.0)], ref)[ex.qualname] != base
    assert classroom.spec_digests([dataclasses.replace(ex, cases=(bigger, *ex.cases[1:]))],
                                  ref)[ex.qualname] != base
    tol = dataclasses.replace(case, rtol=0.5)
    assert classroom.spec_digests([dataclasses.replace(ex, cases=(tol, *ex.cases[1:]))],
                                  ref)[ex.qualname] != base
    assert classroom.spec_digests([dataclasses.replace(ex, not_allowed=("jax.numpy.ravel",))],
                                  ref)[ex.qualname] != base
    hint = dataclasses.replace(case, hint="another hint")
    assert classroom.spec_digests([dataclasses.replace(ex, cases=(hint, *ex.cases[1:]))],
                                  ref)[ex.qualname] == base  # wording is not grading
    other = runner.ReferenceStore(Path("/nonexistent"))  # another reference solution
    assert classroom.spec_digests([ex], other)[ex.qualname] != base


def test_roster_matching_reports_both_sides_and_ambiguity(tmp_path):
    from grader import lms

    rows = [{"Student": "Berg, Ben", "SIS Login ID": "ben@uni.example", "ID": "1"},
            {"Student": "Müller-李, José", "SIS Login ID": "jm", "ID": "2"},
            {"Student": "Lee, Kim", "SIS Login ID": "kim", "ID": "3"},
            {"Student": "Lee, Kim", "SIS Login ID": "kim2", "ID": "4"},
            {"Student": "Ito, Ivy", "SIS Login ID": "ivy", "ID": "5"}]
    ids = ["BEN", "josé müller-李", "Kim Lee", "kim", "2", "zed"]
    matched, unmatched, missing = lms.match(ids, rows, lms.CANVAS_KEYS)
    assert matched == {"BEN": 0, "kim": 2}  # an e-mail's local part; a login
    assert unmatched == {
        "josé müller-李": "shares its roster row with 2",  # "2" is José's Canvas ID too
        "2": "shares its roster row with josé müller-李",
        "Kim Lee": "matches 2 roster rows", "zed": "not in the roster"}
    assert missing == [3, 4]  # José's row is claimed twice: neither gets it, nor is it "missing"


def test_merge_refuses_mixed_or_duplicated_shards(tmp_path):
    def shard(name, i, n, students, cls="c1", version="v1"):
        d = tmp_path / name
        d.mkdir()
        (d / classroom.RUN_FILE).write_text(json.dumps({
            "version": 1, "shard": [i, n], "class_size": 4, "class_sha256": cls,
            "grader": version, "students": students}))
        return d

    a = shard("a", 1, 2, {"x": "x"})
    b = shard("b", 2, 2, {"y": "y"})
    c = shard("c", 1, 2, {"z": "z"})
    d = shard("d", 2, 2, {"y": "y"}, cls="other")
    e = shard("e", 2, 2, {"w": "w"}, version="v2")
    f = shard("f", 2, 2, {"x": "x"})
    for dirs, message in (([a, c], "given twice: 1/2"), ([a, d], "not shards of one grading"),
                          ([a, e], "different grader versions"), ([a, f], "is in two shards"),
                          ([a, b, tmp_path / "nope"], "no readable run.json")):
        with pytest.raises(classroom.CnnlabError, match=message):
            classroom.merge(dirs, tmp_path / "out")
    with pytest.raises(classroom.CnnlabError, match="new folder"):
        classroom.merge([a, b], a / "inside")


def _graded_folder(out: Path, sid: str, source: str) -> None:
    """A results folder entry as grade-class writes it (results.json and source.zip)."""
    folder = out / classroom.folder_name(sid)
    folder.mkdir(parents=True)
    sha = f"sha-{sid}"
    data = {"score": 0.0, "tests": [], "extra_data": {"cnnlab": {
        "student": sid, "status": "graded", "submission": sha, "exercises": {}}}}
    reports.write_results_json(folder / "results.json", data)
    with zipfile.ZipFile(folder / classroom.SOURCE_ZIP, "w") as zf:
        zf.writestr("pooling.py", source)
        zf.comment = sha.encode()


def test_similarity_flags_identical_files_not_starters_or_one_liners(tmp_path):
    from grader import similarity

    one_liner = term.fill_starter({"flatten": "return x.reshape(x.shape[0], -1)"})
    files = {"p1": term.honest("ben"), "p2": term.honest("ben"), "p3": term.honest("ben"),
             "b1": term.starter(), "b2": term.starter() + "\n\n",
             "o1": one_liner, "o2": one_liner, "h1": term.honest("ana")}
    for sid, source in files.items():
        _graded_folder(tmp_path, sid, source)
    found = similarity.similarity_report(tmp_path, {s: s for s in files})
    pairs = {frozenset((p["student_a"], p["student_b"])): p for p in found["flagged"]}
    assert set(pairs) == {frozenset(("p1", "p2")), frozenset(("p1", "p3")),
                          frozenset(("p2", "p3"))}  # byte-identical copies, all three pairs
    assert all(p["similarity_a"] == p["similarity_b"] == 1.0 for p in pairs.values())
    assert found["compared"] == {"pooling": 6}  # the untouched starters are not compared
    rows = list(csv.DictReader(io.StringIO((tmp_path / "similarity.csv").read_text())))
    tiny = [r for r in rows if {"o1", "o2"} == {r["student_a"], r["student_b"]}]
    assert [(r["identical"], r["flagged"]) for r in tiny] == [("yes", "")]  # too little to tell
    assert (tmp_path / "similarity-pooling.html").stat().st_size > 1000


def test_canvas_export_without_assignment_names_the_roster_columns_it_could_fill(tmp_path):
    """Canvas creates an assignment for a column name it does not know: the report says so and
    lists the roster's assignments (the default name "cnnlab" matches none of them)."""
    from grader import lms

    roster = term.HERE / "canvas_roster.csv"
    report = lms.export("canvas", roster, tmp_path, grades={"ana": 7.0}, others={},
                        points_possible=8, assignment="cnnlab")
    text = (tmp_path / "lms-canvas-report.txt").read_text(encoding="utf-8")
    assert report["new_column"] and "Canvas will create a new assignment 'cnnlab'" in text
    assert "--assignment with its name: 'Lab 3', 'Lab 2'" in text
    report = lms.export("canvas", roster, tmp_path, grades={"ana": 7.0}, others={},
                        points_possible=8, assignment="Lab 3")
    assert report["assignment"] == "Lab 3 (2045)" and "new_column" not in report
    assert "create a new assignment" not in (tmp_path / "lms-canvas-report.txt").read_text(
        encoding="utf-8")


def test_generic_csv_export_keeps_the_roster_columns(tmp_path):
    from grader import lms

    roster = tmp_path / "roster.csv"
    roster.write_text("github,name,section\nana-gh,Ana Andersson,A\nben-gh,Ben Berg,B\n")
    report = lms.export("csv", roster, tmp_path, grades={"ana-gh": 7.5}, others={"ben-gh":
                        "not graded yet"}, points_possible=8, assignment="Lab 3")
    rows = list(csv.reader(io.StringIO((tmp_path / "lms-csv.csv").read_text())))
    assert rows == [["github", "name", "section", "Lab 3"], ["ana-gh", "Ana Andersson", "A", "7.5"]]
    assert report["not_exported"] == {"ben-gh": "not graded yet"}
    assert report["roster_without_submission"] == []
