"""Similarity of submissions, lab by lab: ``grade-class --similarity`` (and ``merge --similarity``).

Each lab module a student submitted (as graded: ``RESULTS/<student>/source.zip``) is compared
with the same module of every other student by copydetect (PyPI), which implements winnowing,
the fingerprinting algorithm of MOSS (Schleimer, Wilkerson, Aiken, SIGMOD 2003): the code is
tokenized, names become placeholders (so renaming variables changes nothing), k-grams of tokens
are hashed and a subset of them chosen per window, so the matching fingerprints of two files
locate their shared passages wherever they are (so reordering functions changes little). The
starter code of ``exercises/`` is boilerplate: what every student received matches nothing, and
an untouched starter file is not compared at all.

For a pair of files, ``similarity_a`` is the share of A's fingerprinted code found in B, and
``similarity_b`` the other way round (``shared_tokens``: copydetect's count of the shared
filtered code). A pair is *flagged* when both shares reach :data:`FLAG_BOTH`, or one reaches
:data:`FLAG_ONE`, and they share at least :data:`FLAG_MIN_TOKENS`: identical and near-identical
files (renamed, reordered, re-commented). Below that much code there is no telling: two students
who both wrote only ``return x.reshape(x.shape[0], -1)`` have identical files (the CSV says so)
and are not flagged. Honest solutions of a short exercise can look alike; a flag is a reason to
read the two files (the HTML report highlights the shared passages), never a verdict.

Written: ``similarity.csv`` (the most similar pairs of every lab, most similar first, with the
flag) and ``similarity-<lab>.html`` (copydetect's report of the pairs above
:data:`SHOW_THRESHOLD`, shared code highlighted). copydetect hashes k-grams with Python's
``hash``, which is salted per process, so it runs in a child process with ``PYTHONHASHSEED=0``:
the same submissions give the same files on any machine (a merged set of shards and a single
machine agree).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.fileio import write_bytes, write_text
from grader import reports, specs

ROOT = Path(__file__).resolve().parent.parent
STARTER_DIR = ROOT / "exercises"
NOISE_T = 25          # shortest match (filtered characters) that counts
GUARANTEE_T = 30      # every match this long is found (window = GUARANTEE_T - NOISE_T + 1)
SHOW_THRESHOLD = 0.3  # pairs listed in the CSV and the HTML: one side shares at least this much
FLAG_BOTH = 0.6       # flagged: both sides share at least this much ...
FLAG_ONE = 0.9        # ... or one side shares this much ...
FLAG_MIN_TOKENS = 100  # ... and at least this many tokens are shared
TOP_PAIRS = 50        # pairs per lab in the CSV


def collect_sources(out: Path, students: Mapping[str, str]) -> dict[str, dict[str, bytes]]:
    """``{lab module: {student id: source}}`` of the graded submissions of ``out`` (only the
    source.zip that belongs to the graded results: same submission hash)."""
    found: dict[str, dict[str, bytes]] = {}
    for sid, folder in sorted(students.items()):
        results = reports.load_results(out / folder / "results.json")
        record = reports.meta(results) if results else {}
        if record.get("status") != "graded" or record.get("student") != sid:
            continue
        try:
            with zipfile.ZipFile(out / folder / "source.zip") as zf:
                if zf.comment.decode() != record.get("submission"):
                    continue
                for module in specs.MODULES:
                    if f"{module}.py" in zf.namelist():
                        found.setdefault(module, {})[sid] = zf.read(f"{module}.py")
        except (OSError, zipfile.BadZipFile, UnicodeDecodeError, KeyError):
            continue
    return found


def _is_starter(source: bytes, starter: bytes) -> bool:
    return source.split() == starter.split()  # untouched (whitespace aside)


def flagged(sim_a: float, sim_b: float, tokens: int) -> bool:
    return tokens >= FLAG_MIN_TOKENS and (min(sim_a, sim_b) >= FLAG_BOTH
                                          or max(sim_a, sim_b) >= FLAG_ONE)


def similarity_report(out: Path, students: Mapping[str, str], *, starter_dir: Path = STARTER_DIR,
                      stream=None) -> dict:
    """Compare the graded submissions of ``out`` lab by lab; write similarity.csv and
    similarity-<lab>.html; return ``{"flagged": [pair...], "pairs_listed": n, "compared":
    {lab: files}}`` for the summary."""
    sources = collect_sources(out, students)
    with tempfile.TemporaryDirectory(prefix="cnnlab-similarity-") as tmp:
        stage = Path(tmp)
        compared = {}
        for module, by_student in sources.items():
            starter = (starter_dir / f"{module}.py").read_bytes() \
                if (starter_dir / f"{module}.py").is_file() else b""
            files = {sid: src for sid, src in by_student.items() if not _is_starter(src, starter)}
            if len(files) < 2:
                continue
            compared[module] = len(files)
            (stage / module).mkdir()
            for sid, src in files.items():
                (stage / module / f"{sid}.py").write_bytes(src)
            (stage / f"{module}.starter.py").write_bytes(starter)
        pairs = _detect(stage, sorted(compared)) if compared else {}
        for module in compared:
            write_bytes(out / f"similarity-{module}.html", (stage / f"{module}.html").read_bytes())
    rows = []
    for module in sorted(pairs):
        rows += [(module, *p) for p in listed_pairs(pairs[module])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["lab", "student_a", "student_b", "similarity_a", "similarity_b",
                "shared_tokens", "identical", "flagged"])
    flags = []
    for module, a, b, sa, sb, tokens in rows:
        flag = flagged(sa, sb, tokens)
        same = sources[module][a].split() == sources[module][b].split()  # whitespace aside
        w.writerow([module, a, b, f"{sa:.3f}", f"{sb:.3f}", tokens, "yes" if same else "",
                    "yes" if flag else ""])
        if flag:
            flags.append({"module": module, "student_a": a, "student_b": b,
                          "similarity_a": round(sa, 3), "similarity_b": round(sb, 3),
                          "shared_tokens": tokens})
    write_text(out / "similarity.csv", buf.getvalue())
    print(f"similarity: {sum(compared.values())} lab files compared in {len(compared)} lab(s); "
          f"{len(rows)} pair(s) listed in similarity.csv, {len(flags)} flagged", file=stream)
    return {"flagged": flags, "pairs_listed": len(rows), "compared": compared,
            "thresholds": {"both": FLAG_BOTH, "one": FLAG_ONE, "min_tokens": FLAG_MIN_TOKENS}}


def listed_pairs(pairs: list) -> list:
    """The pairs of one lab for the CSV, most similar first: every flagged pair, and the
    :data:`TOP_PAIRS` most similar of the rest at or above :data:`SHOW_THRESHOLD`."""
    ranked = sorted(pairs, key=lambda p: (-max(p[2], p[3]), -min(p[2], p[3]), p[0], p[1]))
    shown = [p for p in ranked if max(p[2], p[3]) >= SHOW_THRESHOLD]
    keep = {id(p) for p in shown[:TOP_PAIRS]} | {id(p) for p in shown if flagged(*p[2:])}
    return [p for p in shown if id(p) in keep]


def _detect(stage: Path, modules: list[str]) -> dict[str, list[tuple]]:
    """Run :func:`_detect_here` in a child process with a fixed hash seed; the pairs by lab."""
    env = {**os.environ, "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "grader.similarity", str(stage), *modules],
                          cwd=stage, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CnnlabError(f"the similarity check failed: {tail}")
    found = json.loads((stage / "pairs.json").read_text())
    return {m: [tuple(p) for p in ps] for m, ps in found.items()}


def _detect_here(stage: Path, modules: list[str]) -> None:
    """In the child: per lab, every pair of files through copydetect; ``pairs.json`` holds
    ``{lab: [[student_a, student_b, similarity_a, similarity_b, shared_tokens], ...]}`` (pairs
    with any shared fingerprint), and ``<lab>.html`` the report."""
    import logging

    from copydetect import CopyDetector

    logging.disable(logging.WARNING)  # copydetect warns about empty folders it was not given
    os.chdir(stage)
    result = {}
    for module in modules:
        files = sorted(p.relative_to(stage).as_posix() for p in (stage / module).glob("*.py"))
        det = CopyDetector(extensions=["py"], noise_t=NOISE_T, guarantee_t=GUARANTEE_T,
                           display_t=SHOW_THRESHOLD, autoopen=False, silent=True,
                           out_file=f"{module}.html")
        for f in files:
            det.add_file(f)
        det.add_file(f"{module}.starter.py", type="boilerplate")
        det.run()
        sims, overlap = det.similarity_matrix, det.token_overlap_matrix
        pairs = []
        for i, fa in enumerate(det.test_files):
            for j, fb in enumerate(det.ref_files):
                if fa < fb and sims[i, j, 0] >= 0 and overlap[i, j] > 0:
                    pairs.append([Path(fa).stem, Path(fb).stem, float(sims[i, j, 0]),
                                  float(sims[i, j, 1]), int(overlap[i, j])])
        result[module] = pairs
        listed = listed_pairs(pairs)  # the HTML shows about the pairs of the CSV, not thousands
        if listed:
            det.conf.display_t = max(SHOW_THRESHOLD, min(max(p[2], p[3]) for p in listed) - 1e-9)
        det.generate_html_report()
    Path("pairs.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _detect_here(Path(sys.argv[1]), sys.argv[2:])
