"""Reports of graded submissions: Gradescope ``results.json``, JUnit XML, and the class reports
``grades.csv``, ``summary.json``/``summary.txt`` and ``histogram.png``. Every file is written
atomically (:mod:`cnnlab.fileio`), so an interrupted batch never leaves a half-written report.

The common currency is the Gradescope autograder results dict
(https://gradescope-autograders.readthedocs.io/en/latest/specs/), restricted to its documented
fields (:data:`GRADESCOPE_FIELDS`, :data:`GRADESCOPE_TEST_FIELDS`)::

    {"score": 7.5, "execution_time": 12.3, "output": "...", "visibility": "visible",
     "tests": [{"name": "convolution.conv_output_size", "score": 2.0, "max_score": 2.0,
                "status": "passed", "output": "...", "visibility": "visible"}, ...],
     "extra_data": {"cnnlab": {...}}}

one test per exercise, named ``module.function`` as in the student grader's ``--json`` (hidden
cases as ``module.function (hidden)``). Class grading keeps what it needs to re-grade exactly in
the documented free-form ``extra_data`` (see :func:`meta`): the student id as given, whether the
submission was graded or rejected (and why), the submission's content hash, and per exercise its
grader status, the hash of the spec it was graded with and of the submission it was graded on.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cnnlab.fileio import write_bytes, write_text

TEST_OUTPUT_CAP = 8 * 1024      # characters per test's "output"
SUBMISSION_OUTPUT_CAP = 16 * 1024  # characters of the top-level "output"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
# Gradescope's documented results.json fields (top level, and per test).
GRADESCOPE_FIELDS = ("score", "execution_time", "output", "output_format", "test_output_format",
                     "test_name_format", "visibility", "stdout_visibility", "extra_data", "tests",
                     "leaderboard")
GRADESCOPE_TEST_FIELDS = ("score", "max_score", "status", "name", "name_format", "number",
                          "output", "output_format", "tags", "visibility", "extra_data")
OUTPUT_FORMATS = ("text", "html", "simple_format", "md", "ansi")
# Grader statuses (grader.results.STATUSES) that are errors, not failures, in JUnit terms.
ERROR_STATUSES = ("error", "timeout")
# A lab counts as attempted unless every one of its exercises has one of these statuses.
NOT_ATTEMPTED = ("not attempted", "missing")
HIDDEN_SUFFIX = " (hidden)"
MAX_ROW = "(max points)"


def cap_text(text: str, limit: int) -> str:
    """``text`` if short enough, else its head and tail with a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit:,} characters cut ...]\n"
    half = max((limit - len(note)) // 2, 0)
    return text[:half] + note + text[len(text) - half:]


def _finite(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


# -- one submission -----------------------------------------------------------------------------


def normalize_results(results: Mapping) -> dict:
    """A clean copy of a Gradescope results dict: numbers are finite floats, statuses and
    visibilities valid, outputs strings capped in size, ``score`` the sum of the tests', plus
    ``max_score`` (the sum of the tests' maxima; not a Gradescope field, never written)."""
    tests = []
    for test in results.get("tests", []):
        score = _finite(test.get("score", 0.0))
        max_score = _finite(test.get("max_score", 0.0))
        status = test.get("status") or ("passed" if max_score and score >= max_score else "failed")
        visibility = test.get("visibility", "visible")
        tests.append({
            "name": str(test["name"]),
            "score": score,
            "max_score": max_score,
            "status": status if status in ("passed", "failed") else "failed",
            "output": cap_text(str(test.get("output", "") or ""), TEST_OUTPUT_CAP),
            "visibility": visibility if visibility in VISIBILITIES else "visible",
        })
    out = {
        "score": (round(sum(t["score"] for t in tests), 6) if tests
                  else _finite(results.get("score", 0))),
        "max_score": round(sum(t["max_score"] for t in tests), 6),
        "execution_time": round(_finite(results.get("execution_time", 0.0)), 3),
        "output": cap_text(str(results.get("output", "") or ""), SUBMISSION_OUTPUT_CAP),
        "tests": tests,
    }
    for key in ("visibility", "stdout_visibility", "extra_data"):
        if key in results:
            out[key] = results[key]
    return out


def gradescope_problems(data: Mapping) -> list[str]:
    """What in ``data`` departs from Gradescope's documented results.json (empty: it keeps to it):
    unknown fields, wrong types, unknown visibilities, statuses or output formats."""
    problems = [f"unknown field {k!r}" for k in data if k not in GRADESCOPE_FIELDS]
    for key, kind in (("score", (int, float)), ("execution_time", (int, float)),
                      ("output", str), ("extra_data", dict), ("tests", list),
                      ("leaderboard", list)):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            problems.append(f"{key!r} is a {type(data[key]).__name__}")
    problems += [f"{key!r} is {data[key]!r}" for key in ("visibility", "stdout_visibility")
                 if key in data and data[key] not in VISIBILITIES]
    problems += [f"{key!r} is {data[key]!r}"
                 for key in ("output_format", "test_output_format", "test_name_format")
                 if key in data and data[key] not in OUTPUT_FORMATS]
    if "score" not in data and not data.get("tests"):
        problems.append("neither a top-level score nor tests")
    for i, test in enumerate(data.get("tests") or []):
        problems += [f"tests[{i}]: {p}" for p in _test_problems(test, "score" in data)]
    return problems


def _test_problems(test, top_score: bool) -> list[str]:
    """:func:`gradescope_problems` of one test."""
    if not isinstance(test, dict):
        return ["not an object"]
    problems = [f"unknown field {k!r}" for k in test if k not in GRADESCOPE_TEST_FIELDS]
    for key in ("score", "max_score"):
        value = test.get(key, 0.0)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            problems.append(f"{key!r} is {value!r}")
    if not top_score and "score" not in test:
        problems.append("no score (and no top-level score)")
    if test.get("status", "passed") not in ("passed", "failed"):
        problems.append(f"status {test['status']!r}")
    if test.get("visibility", "visible") not in VISIBILITIES:
        problems.append(f"visibility {test['visibility']!r}")
    if not isinstance(test.get("name", ""), str) or not isinstance(test.get("output", ""), str):
        problems.append("name and output must be strings")
    return problems


def results_json_text(results: Mapping) -> str:
    """The results.json text of ``results`` (normalized, documented fields only)."""
    data = normalize_results(results)
    return json.dumps({k: data[k] for k in GRADESCOPE_FIELDS if k in data}, indent=2,
                      ensure_ascii=False) + "\n"


def write_results_json(path, results: Mapping) -> dict:
    """Write the normalized Gradescope ``results.json``; returns the normalized dict."""
    write_text(path, results_json_text(results))
    return normalize_results(results)


def load_results(path) -> dict | None:
    """A results.json as written by :func:`write_results_json`, or None when it is missing,
    unreadable or not such a file (a torn or foreign file is never trusted)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tests = data.get("tests") if isinstance(data, dict) else None
    if not isinstance(tests, list) or \
            not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tests):
        return None
    return data


def meta(results: Mapping) -> dict:
    """Class grading's record in ``extra_data["cnnlab"]``::

        {"student": "José Müller-李", "status": "graded" | "rejected", "reason": str,
         "submission": sha256 of the graded files, "exercises": {"pooling.max_pool":
            {"status": grader status, "spec": hash, "grader": version, "submission": sha256}}}
    """
    extra = results.get("extra_data")
    found = extra.get("cnnlab") if isinstance(extra, dict) else None
    return found if isinstance(found, dict) else {}


def junit_xml(results: Mapping, *, suite: str) -> str:
    """JUnit XML of one submission, valid against Jenkins xunit-plugin's ``junit-10.xsd``: a
    testsuite named ``suite`` (the student id) with the points as suite properties, one testcase
    per Gradescope test (classname = module, name = function), a ``<failure>`` (or ``<error>`` when
    the exercise crashed or timed out) with a ``type`` (the grader's status) and the points as
    ``message`` when not passed, and the test's output as ``system-out``."""
    data = normalize_results(results)
    record = meta(results)
    statuses = {name: e.get("status") for name, e in (record.get("exercises") or {}).items()
                if isinstance(e, dict)}
    kinds = []
    for test in data["tests"]:
        status = statuses.get(exercise_key(test["name"])) or test["status"]
        if test["status"] == "passed":
            kinds.append((None, status))
        else:
            kinds.append(("error" if status in ERROR_STATUSES else "failure",
                          status if status != "passed" else "failed"))
    if record.get("status") == "rejected":
        kinds.append(("error", "rejected"))
    n_errors = sum(k == "error" for k, _ in kinds)
    n_failures = sum(k == "failure" for k, _ in kinds)
    seconds = f"{data['execution_time']:.3f}"
    root = ET.Element("testsuites", name="cnnlab", tests=str(len(kinds)),
                      failures=str(n_failures), errors=str(n_errors), time=seconds)
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(kinds)),
                       failures=str(n_failures), errors=str(n_errors), skipped="0", time=seconds)
    props = ET.SubElement(ts, "properties")
    for key, value in (("student", suite), ("score", f"{data['score']:g}"),
                       ("max_score", f"{data['max_score']:g}")):
        ET.SubElement(props, "property", name=key, value=_xml_safe(value))
    if record.get("status") == "rejected":  # nothing was graded: say so where CI viewers look
        case = ET.SubElement(ts, "testcase", classname="submission", name="rejected",
                             status="rejected")
        ET.SubElement(case, "error", type="rejected",
                      message=_xml_safe(record.get("reason", ""))).text = _xml_safe(data["output"])
    for test, (kind, status) in zip(data["tests"], kinds, strict=False):  # kinds may end in one
        # more: the "rejected" testcase, written above
        module, _, function = exercise_key(test["name"]).rpartition(".")
        name = function + (HIDDEN_SUFFIX if test["name"].endswith(HIDDEN_SUFFIX) else "")
        case = ET.SubElement(ts, "testcase", classname=module or suite, name=name or test["name"],
                             status=status)
        if kind:
            ET.SubElement(case, kind, type=status,
                          message=f"{test['score']:g}/{test['max_score']:g} points").text = \
                _xml_safe(test["output"])
        elif test["output"]:
            ET.SubElement(case, "system-out").text = _xml_safe(test["output"])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (student output may contain any byte)."""
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff")
                   or ("\ue000" <= c <= "\ufffd") or c > "\uffff")


def write_junit(path, results: Mapping, *, suite: str) -> None:
    write_text(path, junit_xml(results, suite=suite))


# -- the class --------------------------------------------------------------------------------


def exercise_key(test_name: str) -> str:
    """The exercise of a test: ``module.function (hidden)`` counts for ``module.function``."""
    return test_name[: -len(HIDDEN_SUFFIX)] if test_name.endswith(HIDDEN_SUFFIX) else test_name


def per_exercise(results: Mapping) -> dict[str, dict]:
    """``{exercise: {"score", "max_score", "passed", "status"}}`` with hidden-case tests merged
    in; ``status`` is the grader's (from :func:`meta`), else "passed"/"failed"."""
    out: dict[str, dict] = {}
    for test in normalize_results(results)["tests"]:
        e = out.setdefault(exercise_key(test["name"]),
                           {"score": 0.0, "max_score": 0.0, "passed": True})
        e["score"] = round(e["score"] + test["score"], 6)
        e["max_score"] = round(e["max_score"] + test["max_score"], 6)
        e["passed"] = e["passed"] and test["status"] == "passed"
    recorded = meta(results).get("exercises") or {}
    for name, e in out.items():
        info = recorded.get(name) if isinstance(recorded.get(name), dict) else {}
        e["status"] = info.get("status") or ("passed" if e["passed"] else "failed")
    return out


def order_exercises(names: Iterable[str], course_order: Sequence[str] = ()) -> list[str]:
    """``names`` once each, in ``course_order`` first, then the others sorted."""
    rank = {n: i for i, n in enumerate(course_order)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), n))


def exercise_names(all_results: Iterable[Mapping]) -> list[str]:
    """Exercise names across submissions, in first-seen order."""
    seen: dict[str, None] = {}
    for results in all_results:
        for test in results.get("tests", []):
            seen.setdefault(exercise_key(str(test["name"])), None)
    return list(seen)


def attempted_labs(exercises: Mapping[str, Mapping]) -> set[str]:
    """The lab modules a submission attempted: it holds the module and not every one of the
    module's exercises is "not attempted" (a blank starter file) or "missing"."""
    labs: dict[str, bool] = {}
    for name, e in exercises.items():
        module = name.rpartition(".")[0]
        labs[module] = labs.get(module, False) or e.get("status") not in NOT_ATTEMPTED
    return {m for m, tried in labs.items() if tried}


def student_rows(table: Mapping[str, Mapping],
                 pending: Mapping[str, str] | None = None) -> dict[str, dict]:
    """Per student id: ``{"status", "reason", "exercises": per_exercise, "stale": [names]}``.
    ``status`` is "graded", "rejected" or, for the ids of ``pending`` (id -> why), "pending": not
    graded (yet) in its current state; their earlier results, if any, are shown but not counted.
    A stale exercise was graded on an earlier version of the submission (kept by a run restricted
    with ``--exercises``)."""
    pending = pending or {}
    rows = {}
    for sid in sorted({*table, *pending}):
        results = table.get(sid, {"tests": []})
        m = meta(results)
        current = m.get("submission")
        recorded = m.get("exercises") or {}
        stale = sorted(n for n, e in recorded.items()
                       if isinstance(e, dict) and current and e.get("submission") != current)
        status = "pending" if sid in pending else m.get("status", "graded")
        reason = pending[sid] if sid in pending else m.get("reason", "")
        rows[sid] = {"status": status, "reason": reason, "exercises": per_exercise(results),
                     "stale": stale}
    return rows


def max_points(rows: Mapping[str, Mapping], exercises: Sequence[str]) -> dict[str, float]:
    """The points each exercise is worth (its largest maximum over the class)."""
    return {n: max((r["exercises"][n]["max_score"] for r in rows.values()
                    if n in r["exercises"]), default=0.0) for n in exercises}


def _num(x: float) -> str:
    return f"{round(x, 6):g}"


def grades_csv(table: Mapping[str, Mapping], exercises: Sequence[str] | None = None, *,
               pending: Mapping[str, str] | None = None) -> str:
    """CSV text: ``student`` (the id as given), ``status`` (graded, rejected or pending),
    ``reason``, points per exercise (hidden cases included), ``total``. The first row after the
    header holds the maximum points; then one row per submission, sorted by id. An empty cell is
    an exercise that was not graded for that submission (not its lab, rejected, not graded yet);
    graded exercises of a module the submission lacks count 0."""
    rows = student_rows(table, pending)
    exercises = list(exercises or exercise_names(table.values()))
    maxima = max_points(rows, exercises)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", "status", "reason", *exercises, "total"])
    writer.writerow([MAX_ROW, "max", "", *(_num(maxima[n]) for n in exercises),
                     _num(sum(maxima.values()))])
    for sid in sorted(rows):
        r = rows[sid]
        cells = [r["exercises"][n]["score"] if n in r["exercises"] else None for n in exercises]
        reason = r["reason"] if r["status"] != "graded" else \
            (f"{len(r['stale'])} exercise(s) graded on an earlier submission" if r["stale"] else "")
        graded = [c for c in cells if c is not None]
        total = "" if r["status"] == "pending" and not graded else _num(sum(graded))
        writer.writerow([sid, r["status"], reason, *("" if c is None else _num(c) for c in cells),
                         total])
    return buf.getvalue()


def class_summary(table: Mapping[str, Mapping], exercises: Sequence[str] | None = None, *,
                  pending: Mapping[str, str] | None = None) -> dict:
    """The class in numbers. Per exercise over the graded submissions that attempted its lab (see
    :func:`attempted_labs`): how many, the pass rate (all cases passed) and the mean points.
    Totals (mean, median) over the graded submissions; rejected ones are listed with their reason
    and pending ones (``pending``: id -> why) with theirs, both left out of every statistic."""
    rows = student_rows(table, pending)
    exercises = list(exercises or exercise_names(table.values()))
    maxima = max_points(rows, exercises)
    graded = {s: r for s, r in rows.items() if r["status"] == "graded"}
    labs = {s: attempted_labs(r["exercises"]) for s, r in graded.items()}
    per_ex = {}
    for name in exercises:
        got = [r["exercises"][name] for s, r in sorted(graded.items())
               if name in r["exercises"] and name.rpartition(".")[0] in labs[s]]
        per_ex[name] = {
            "attempted": len(got),
            "pass_rate": sum(e["passed"] for e in got) / len(got) if got else None,
            "mean_points": statistics.fmean(e["score"] for e in got) if got else None,
            "max_score": maxima[name],
        }
    totals = {s: round(sum(e["score"] for e in r["exercises"].values()), 6)
              for s, r in sorted(graded.items())}
    values = list(totals.values())
    return {
        "submissions": len(rows),
        "graded": len(graded),
        "rejected": {s: r["reason"] for s, r in rows.items() if r["status"] == "rejected"},
        "remaining": {s: r["reason"] for s, r in rows.items() if r["status"] == "pending"},
        "stale": {s: r["stale"] for s, r in sorted(rows.items()) if r["stale"]},
        "max_total": round(sum(maxima.values()), 6),
        "mean_total": statistics.fmean(values) if values else None,
        "median_total": statistics.median(values) if values else None,
        "exercises": per_ex,
        "totals": totals,
    }


def format_summary(summary: Mapping) -> str:
    """The summary as plain text: one line per exercise, the totals, then what needs attention
    (rejected submissions, submissions not graded yet, stale results, flagged similarity)."""
    width = max([len(n) for n in summary["exercises"]] + [8])
    lines = [f"{'exercise':<{width}}  attempted  pass rate  mean points"]
    for name, e in summary["exercises"].items():
        rate = "-" if e["pass_rate"] is None else f"{e['pass_rate']:.0%}"
        mean = "-" if e["mean_points"] is None else f"{e['mean_points']:.2f}"
        lines.append(f"{name:<{width}}  {e['attempted']:>9}  {rate:>9}  {mean:>6} / "
                     f"{e['max_score']:g}")
    if summary["graded"]:
        lines.append(f"{summary['graded']} graded submissions; total mean "
                     f"{summary['mean_total']:.2f}, median {summary['median_total']:.2f} of "
                     f"{summary['max_total']:g}")
    else:
        lines.append(f"no graded submissions (of {summary['max_total']:g} points)")
    lines.append("(an exercise counts only the submissions that attempted its lab)")
    for sid, reason in summary["rejected"].items():
        lines.append(f"REJECTED {sid}: {reason}")
    for sid, reason in summary["remaining"].items():
        lines.append(f"PENDING {sid}: {reason}")
    for sid, names in summary["stale"].items():
        lines.append(f"STALE {sid}: {', '.join(names)} graded on an earlier submission "
                     "(re-run without --exercises)")
    for pair in summary.get("similarity", {}).get("flagged", []):
        lines.append(f"SIMILAR {pair['module']}: {pair['student_a']} ~ {pair['student_b']} "
                     f"({pair['similarity_a']:.0%} / {pair['similarity_b']:.0%} of the code "
                     "shared)")
    return "\n".join(lines) + "\n"


def histogram_png(summary: Mapping) -> bytes:
    """Histogram PNG of the totals (matplotlib, Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = list(summary["totals"].values())
    max_total = summary["max_total"] or max(totals + [1.0])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(totals, bins=min(20, max(5, len(totals))), range=(0, max_total),
            color="#4c72b0", edgecolor="white")
    if summary["median_total"] is not None:
        ax.axvline(summary["median_total"], color="#c44e52", linestyle="--",
                   label=f"median {summary['median_total']:.1f}")
        ax.legend()
    ax.set_xlabel(f"total points (of {max_total:g})")
    ax.set_ylabel("submissions")
    ax.set_title(f"Class totals ({summary['graded']} graded submissions)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version: same bytes anywhere
    plt.close(fig)
    return buf.getvalue()


def write_class_reports(out_dir, table: Mapping[str, Mapping],
                        exercises: Sequence[str] | None = None, *,
                        pending: Mapping[str, str] | None = None,
                        similarity: Mapping | None = None) -> dict:
    """``grades.csv``, ``summary.json``, ``summary.txt`` and ``histogram.png`` in ``out_dir``
    for ``table`` (``{student id: results}``) and ``pending`` (id -> why not graded);
    ``similarity``: the similarity findings to include (see :mod:`grader.similarity`)."""
    out_dir = Path(out_dir)
    exercises = list(exercises or exercise_names(table.values()))
    write_text(out_dir / "grades.csv", grades_csv(table, exercises, pending=pending))
    summary = class_summary(table, exercises, pending=pending)
    if similarity is not None:
        summary["similarity"] = dict(similarity)
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_text(out_dir / "summary.txt", format_summary(summary))
    write_bytes(out_dir / "histogram.png", histogram_png(summary))
    return summary
