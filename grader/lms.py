"""Gradebook import files for learning management systems: ``grade-class --lms FORMAT ROSTER``.

The roster is the LMS's own export of the course, which holds the ids the import needs; the
submission ids (the names of the entries of SUBMISSIONS) are matched with any identity column of
it, compared without case, accents aside (NFC), also as the local part of an e-mail address and
as "First Last" for a "Last, First" name. The import file holds one row per matched student with
a graded submission; everyone else is reported (console and ``lms-<format>-report.txt``):
submissions not in the roster, roster students without a submission, and submissions matched but
not exported (rejected, not graded yet). Nothing unmatched is exported as a silent zero.

Formats:

``canvas``
    ROSTER: the Canvas gradebook export (Grades > Export). Written: its identity columns
    (``Student, ID, SIS User ID, SIS Login ID[, Integration ID], Section``), the assignment
    column, and Canvas's ``Points Possible`` row under the header; import with Grades > Import.
    An assignment column of the roster named ``NAME (id)`` is reused (its grades are updated);
    any other name makes Canvas create a new assignment. Canvas's test student is skipped.
``moodle``
    ROSTER: a Moodle grade export as a plain text file (Grades > Export > Plain text file), or
    any CSV with Moodle's user columns. Written: ``First name, Last name`` (or ``Surname``),
    ``ID number, Institution, Department, Email address`` as present, and the grade column;
    import with Grades > Import > CSV file, mapping ``Email address`` to ``useremail`` (or
    ``ID number`` to ``useridnumber``) and the grade column to a grade item (or a new one).
``csv``
    ROSTER: any CSV with a header. Written: the roster's columns and the grade column.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_text

FORMATS = ("canvas", "moodle", "csv")
CANVAS_IDENTITY = ("Student", "ID", "SIS User ID", "SIS Login ID", "Integration ID", "Section")
CANVAS_KEYS = ("SIS Login ID", "SIS User ID", "ID", "Integration ID", "Student")
CANVAS_TEST_STUDENT = "Student, Test"
CANVAS_ASSIGNMENT = re.compile(r"(?P<name>.+) \((?P<id>\d+)\)")  # a gradebook column "NAME (id)"
MOODLE_IDENTITY = ("First name", "Last name", "Surname", "ID number", "Institution",
                   "Department", "Email address")
MOODLE_KEYS = ("Email address", "ID number", "Username")


def check_format(fmt: str, roster: Path) -> None:
    """CnnlabError (one line) for an unknown format or a roster that cannot be read."""
    if fmt not in FORMATS:
        raise CnnlabError(f"--lms {fmt!r}: choose one of {', '.join(FORMATS)}")
    read_roster(roster)


def read_roster(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The header and the rows of a CSV roster (UTF-8, with or without a byte-order mark)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"cannot read the roster {path}: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(h.strip() for h in rows[0]):
        raise CnnlabError(f"the roster {path} has no header row")
    header = [h.strip() for h in rows[0]]
    out = [dict(zip(header, (c.strip() for c in row), strict=False)) for row in rows[1:]
           if any(c.strip() for c in row)]  # a short row leaves its last columns out
    return header, out


def normalize(text: str) -> str:
    """How ids are compared: Unicode NFC, no case, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def _keys(row: Mapping[str, str], columns: Sequence[str]) -> set[str]:
    """The normalized values a submission id may equal to name this roster row."""
    keys = set()
    for col in columns:
        value = row.get(col, "")
        if not value:
            continue
        keys.add(normalize(value))
        if "@" in value:
            keys.add(normalize(value.split("@", 1)[0]))
        if "," in value:  # "Last, First" -> "First Last"
            last, first = value.split(",", 1)
            keys.add(normalize(f"{first} {last}"))
    first = row.get("First name", "")
    last = row.get("Last name", "") or row.get("Surname", "")
    if first and last:
        keys |= {normalize(f"{first} {last}"), normalize(f"{last} {first}")}
    return keys


def _students(fmt: str, header: list[str], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The roster rows that are students (Canvas: not the Points Possible / posting rows, nor
    the test student)."""
    if fmt != "canvas":
        return rows
    if "Student" not in header:
        raise CnnlabError("a Canvas roster is the gradebook export: its header starts with "
                          "Student, ID, SIS User ID, SIS Login ID, Section")
    return [r for r in rows if r.get("Student") and r["Student"] != "Points Possible"
            and r["Student"] != CANVAS_TEST_STUDENT and r.get("ID", "x") != ""]


def match(ids: Sequence[str], rows: Sequence[Mapping[str, str]], columns: Sequence[str]):
    """``(matched {id: row index}, unmatched ids {id: why}, unmatched row indices)``. An id that
    names several rows, or a row named by several ids, is left unmatched with the reason."""
    keys = [_keys(r, columns) for r in rows]
    hits = {sid: [i for i, k in enumerate(keys) if normalize(sid) in k] for sid in ids}
    claims: dict[int, list[str]] = {}
    for sid, found in hits.items():
        if len(found) == 1:
            claims.setdefault(found[0], []).append(sid)
    matched, unmatched = {}, {}
    for sid, found in hits.items():
        if not found:
            unmatched[sid] = "not in the roster"
        elif len(found) > 1:
            unmatched[sid] = f"matches {len(found)} roster rows"
        elif len(claims[found[0]]) > 1:
            unmatched[sid] = "shares its roster row with " + ", ".join(
                s for s in claims[found[0]] if s != sid)
        else:
            matched[sid] = found[0]
    taken = set(matched.values()) | {i for i, c in claims.items() if len(c) > 1}
    return matched, unmatched, [i for i in range(len(rows)) if i not in taken]


def _num(x: float) -> str:
    return f"{round(x, 4):g}"


def _assignment_column(fmt: str, header: Sequence[str], assignment: str) -> str:
    """The grade column's header: for Canvas an existing ``NAME (id)`` column when the roster
    has one (its grades get updated), else the name as given."""
    if fmt == "canvas":
        for h in header:
            column = CANVAS_ASSIGNMENT.fullmatch(h)
            if h == assignment or (column and column["name"] == assignment):
                return h
    return assignment


def gradebook_csv(fmt: str, header: list[str], rows: list[dict[str, str]],
                  matched: Mapping[str, int], grades: Mapping[str, float], *, assignment: str,
                  points_possible: float) -> str:
    """The import file's text (see the module docstring for each format)."""
    column = _assignment_column(fmt, header, assignment)
    if fmt == "canvas":
        identity = [h for h in CANVAS_IDENTITY if h in header]
    elif fmt == "moodle":
        identity = [h for h in MOODLE_IDENTITY if h in header] or list(header)
    else:
        identity = [h for h in header if h != column]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*identity, column])
    if fmt == "canvas":
        w.writerow(["Points Possible", *[""] * (len(identity) - 1), _num(points_possible)])
    by_row = {i: sid for sid, i in matched.items() if sid in grades}
    for i in sorted(by_row):
        w.writerow([rows[i].get(h, "") for h in identity] + [_num(grades[by_row[i]])])
    return buf.getvalue()


def export(fmt: str, roster: Path, out_dir: Path, *, grades: Mapping[str, float],
           others: Mapping[str, str], points_possible: float, assignment: str,
           stream=None) -> dict:
    """Write ``out_dir/lms-<fmt>.csv`` for the graded submissions ``grades`` (id -> points) and
    ``lms-<fmt>-report.txt``; ``others`` (id -> why) are submissions not to export. Returns the
    report as a dict."""
    if fmt not in FORMATS:
        raise CnnlabError(f"--lms {fmt!r}: choose one of {', '.join(FORMATS)}")
    header, rows = read_roster(roster)
    students = _students(fmt, header, rows)
    columns = {"canvas": CANVAS_KEYS, "moodle": MOODLE_KEYS, "csv": header}[fmt]
    ids = sorted({*grades, *others})
    matched, unmatched, missing = match(ids, students, columns)
    text = gradebook_csv(fmt, header, students, matched, grades, assignment=assignment,
                         points_possible=points_possible)
    path = Path(out_dir) / f"lms-{fmt}.csv"
    write_text(path, text)
    label = "Student" if fmt == "canvas" else None
    report = {
        "file": path.name, "assignment": _assignment_column(fmt, header, assignment),
        "exported": sorted(s for s in matched if s in grades),
        "not_exported": {s: others[s] for s in sorted(others) if s in matched},
        "submissions_not_in_roster": unmatched,
        "roster_without_submission": [_describe(students[i], label or header[0]) for i in missing],
    }
    lines = [f"{path.name}: {len(report['exported'])} grade(s) in column "
             f"{report['assignment']!r} (of {points_possible:g} points) from roster {roster}"]
    existing = {h: m["name"] for h in header if (m := CANVAS_ASSIGNMENT.fullmatch(h))} \
        if fmt == "canvas" else {}
    if existing and report["assignment"] not in existing:
        report["new_column"] = True
        lines.append(f"  note: Canvas will create a new assignment {report['assignment']!r}; to "
                     f"fill one of the roster's, pass --assignment with its name: "
                     + ", ".join(map(repr, existing.values())))
    lines += [f"  not exported: {s} ({why})" for s, why in report["not_exported"].items()]
    lines += [f"  submission not matched: {s} ({why})" for s, why in unmatched.items()]
    lines += [f"  roster student without a submission: {who}"
              for who in report["roster_without_submission"]]
    write_text(Path(out_dir) / f"lms-{fmt}-report.txt", "\n".join(lines) + "\n")
    for line in lines:
        print(line, file=stream)
    return report


def _describe(row: Mapping[str, str], label: str) -> str:
    ids = [f"{k} {row[k]}" for k in ("SIS Login ID", "Email address", "ID number") if row.get(k)]
    return row.get(label, "") + (f" ({', '.join(ids)})" if ids else "")
