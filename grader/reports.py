"""Reports of graded submissions: Gradescope ``results.json``, JUnit XML, ``grades.csv`` and a class
summary (per-exercise pass rate, mean and median total, a histogram PNG). Every file is written
atomically (a temporary file in the same folder, then ``os.replace``), so an interrupted batch never
leaves a half-written report behind.

The common currency is the Gradescope autograder results dict
(https://gradescope-autograders.readthedocs.io/en/latest/specs/)::

    {"score": 7.5, "execution_time": 12.3, "output": "...",
     "tests": [{"name": "convolution.conv_output_size", "score": 2.0, "max_score": 2.0,
                "status": "passed", "output": "...", "visibility": "visible"}, ...]}

one test per exercise, named ``module.function`` as in the student grader's ``--json``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path

TEST_OUTPUT_CAP = 8 * 1024      # characters per test's "output"
SUBMISSION_OUTPUT_CAP = 16 * 1024  # characters of the top-level "output"
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


# -- atomic files -----------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def cap_text(text: str, limit: int) -> str:
    """``text`` if short enough, else its head and tail with a note of what was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[... {len(text) - limit:,} characters cut ...]\n"
    half = max((limit - len(note)) // 2, 0)
    return text[:half] + note + text[len(text) - half:]


# -- one submission -----------------------------------------------------------------------------


def normalize_results(results: Mapping) -> dict:
    """A clean copy of a Gradescope results dict: numbers are finite floats, statuses and
    visibilities valid, outputs strings capped in size, and ``score`` the sum of the tests'."""
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
        "score": round(sum(t["score"] for t in tests), 6) if tests else _finite(results.get("score", 0)),
        "max_score": round(sum(t["max_score"] for t in tests), 6),
        "execution_time": round(_finite(results.get("execution_time", 0.0)), 3),
        "output": cap_text(str(results.get("output", "") or ""), SUBMISSION_OUTPUT_CAP),
        "tests": tests,
    }
    for key in ("visibility", "stdout_visibility", "extra_data"):
        if key in results:
            out[key] = results[key]
    return out


def _finite(x) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def write_results_json(path: str | os.PathLike, results: Mapping) -> dict:
    """Write the normalized Gradescope ``results.json``; returns what was written."""
    data = normalize_results(results)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return data


def junit_xml(results: Mapping, *, suite: str) -> str:
    """JUnit XML of one submission: a testsuite named ``suite`` (the student id), one testcase per
    exercise (classname = module, name = function), a <failure> with the output when not passed."""
    data = normalize_results(results)
    failures = sum(t["status"] != "passed" for t in data["tests"])
    root = ET.Element("testsuites", tests=str(len(data["tests"])), failures=str(failures),
                      time=f"{data['execution_time']:.3f}")
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(data["tests"])),
                       failures=str(failures), errors="0", skipped="0",
                       time=f"{data['execution_time']:.3f}")
    for test in data["tests"]:
        module, _, function = test["name"].rpartition(".")
        case = ET.SubElement(ts, "testcase", classname=module or suite, name=function or test["name"])
        props = ET.SubElement(case, "properties")
        for key in ("score", "max_score"):
            ET.SubElement(props, "property", name=key, value=f"{test[key]:g}")
        ET.SubElement(props, "property", name="visibility", value=test["visibility"])
        if test["status"] != "passed":
            fail = ET.SubElement(case, "failure",
                                 message=f"{test['score']:g}/{test['max_score']:g} points")
            fail.text = _xml_safe(test["output"])
        elif test["output"]:
            ET.SubElement(case, "system-out").text = _xml_safe(test["output"])
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _xml_safe(text: str) -> str:
    """Drop characters XML 1.0 cannot hold (student output may contain any byte)."""
    return "".join(c for c in text if c in "\t\n\r" or (" " <= c <= "\ud7ff")
                   or ("\ue000" <= c <= "\ufffd") or c > "\uffff")


def write_junit(path: str | os.PathLike, results: Mapping, *, suite: str) -> None:
    atomic_write_text(path, junit_xml(results, suite=suite))


# -- the class --------------------------------------------------------------------------------


HIDDEN_SUFFIX = " (hidden)"


def exercise_key(test_name: str) -> str:
    """The exercise a test belongs to: ``module.function (hidden)`` counts for ``module.function``."""
    return test_name[: -len(HIDDEN_SUFFIX)] if test_name.endswith(HIDDEN_SUFFIX) else test_name


def per_exercise(results: Mapping) -> dict[str, dict]:
    """``{exercise: {"score", "max_score", "passed"}}`` with hidden-case tests merged in."""
    out: dict[str, dict] = {}
    for test in normalize_results(results)["tests"]:
        e = out.setdefault(exercise_key(test["name"]),
                           {"score": 0.0, "max_score": 0.0, "passed": True})
        e["score"] = round(e["score"] + test["score"], 6)
        e["max_score"] = round(e["max_score"] + test["max_score"], 6)
        e["passed"] = e["passed"] and test["status"] == "passed"
    return out


def exercise_names(all_results: Iterable[Mapping]) -> list[str]:
    """Exercise names across submissions, in first-seen order."""
    seen: dict[str, None] = {}
    for results in all_results:
        for test in results.get("tests", []):
            seen.setdefault(exercise_key(str(test["name"])), None)
    return list(seen)


def grades_csv(table: Mapping[str, Mapping], exercises: list[str] | None = None) -> str:
    """CSV text: ``student``, points per exercise (hidden cases included), ``total`` -- one row
    per student, sorted by id. An exercise missing from a submission's results counts 0."""
    exercises = exercises or exercise_names(table.values())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["student", *exercises, "total"])
    for student in sorted(table):
        scores = per_exercise(table[student])
        row = [scores[name]["score"] if name in scores else 0.0 for name in exercises]
        writer.writerow([student, *(f"{x:g}" for x in row), f"{round(sum(row), 6):g}"])
    return buf.getvalue()


def write_grades_csv(path: str | os.PathLike, table: Mapping[str, Mapping],
                     exercises: list[str] | None = None) -> None:
    atomic_write_text(path, grades_csv(table, exercises))


def class_summary(table: Mapping[str, Mapping], exercises: list[str] | None = None) -> dict:
    """Per-exercise pass rate (all cases passed) and mean points, mean and median total."""
    exercises = exercises or exercise_names(table.values())
    merged = {s: per_exercise(r) for s, r in table.items()}
    per_ex = {}
    for name in exercises:
        got = [m.get(name) for m in merged.values()]
        per_ex[name] = {
            "pass_rate": sum(bool(e and e["passed"]) for e in got) / max(len(got), 1),
            "mean_points": statistics.fmean([e["score"] if e else 0.0 for e in got] or [0.0]),
            "max_score": max((e["max_score"] for e in got if e), default=0.0),
        }
    totals = {s: round(sum(m[n]["score"] for n in exercises if n in m), 6)
              for s, m in merged.items()}
    values = list(totals.values())
    return {
        "students": len(values),
        "max_total": round(sum(e["max_score"] for e in per_ex.values()), 6),
        "mean_total": statistics.fmean(values) if values else 0.0,
        "median_total": statistics.median(values) if values else 0.0,
        "exercises": per_ex,
        "totals": dict(sorted(totals.items())),
    }


def format_summary(summary: Mapping) -> str:
    """The summary as plain text: one line per exercise, then the totals."""
    width = max([len(n) for n in summary["exercises"]] + [8])
    lines = [f"{'exercise':<{width}}  pass rate  mean points"]
    for name, e in summary["exercises"].items():
        lines.append(f"{name:<{width}}  {e['pass_rate']:>8.0%}  "
                     f"{e['mean_points']:>6.2f} / {e['max_score']:g}")
    lines.append(f"{summary['students']} submissions; total mean {summary['mean_total']:.2f}, "
                 f"median {summary['median_total']:.2f} of {summary['max_total']:g}")
    return "\n".join(lines) + "\n"


def write_histogram(path: str | os.PathLike, summary: Mapping) -> None:
    """Histogram PNG of the totals (matplotlib, Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals = list(summary["totals"].values())
    max_total = summary["max_total"] or max(totals + [1.0])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.hist(totals, bins=min(20, max(5, len(totals))), range=(0, max_total),
            color="#4c72b0", edgecolor="white")
    ax.axvline(summary["median_total"], color="#c44e52", linestyle="--",
               label=f"median {summary['median_total']:.1f}")
    ax.set_xlabel(f"total points (of {max_total:g})")
    ax.set_ylabel("submissions")
    ax.set_title(f"Class totals ({summary['students']} submissions)")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_class_reports(out_dir: str | os.PathLike, table: Mapping[str, Mapping],
                        exercises: list[str] | None = None) -> dict:
    """``grades.csv``, ``summary.json``, ``summary.txt`` and ``histogram.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    exercises = exercises or exercise_names(table.values())
    write_grades_csv(out_dir / "grades.csv", table, exercises)
    summary = class_summary(table, exercises)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out_dir / "summary.txt", format_summary(summary))
    write_histogram(out_dir / "histogram.png", summary)
    return summary
