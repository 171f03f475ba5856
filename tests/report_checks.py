"""The report formats as their readers check them: JUnit XML against Jenkins xunit-plugin's
``junit-10.xsd`` (shipped in ``tests/schemas``, MIT licence kept) and through ``junitparser``;
Gradescope results.json against its documented fields (:func:`grader.reports.gradescope_problems`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import junitparser
import xmlschema

from grader import reports

SCHEMA = Path(__file__).resolve().parent / "schemas" / "junit-10.xsd"


@functools.cache
def junit_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(SCHEMA)


def check_junit(path: Path) -> list:
    """Validate ``path``; returns its testcases as junitparser reads them."""
    junit_schema().validate(str(path))
    xml = junitparser.JUnitXml.fromfile(str(path))
    return [case for suite in xml for case in suite]


def check_results_json(path: Path) -> dict:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    assert reports.gradescope_problems(data) == [], (path, reports.gradescope_problems(data))
    return data


def check_folder(out: Path) -> int:
    """Check every results.json and junit.xml of a grade-class results folder; how many."""
    found = 0
    for results in sorted(out.glob("*/results.json")):
        data = check_results_json(results)
        cases = check_junit(results.parent / "junit.xml")
        record = reports.meta(data)
        if record.get("status") == "rejected":
            assert [(c.classname, c.name) for c in cases] == [("submission", "rejected")]
        else:
            assert len(cases) == len(data["tests"])
            for case, test in zip(cases, data["tests"], strict=True):
                passed = test["status"] == "passed"
                assert case.is_passed == passed, (results, test["name"])
                if not passed:
                    assert case.result[0].type and case.result[0].message
        found += 1
    return found
