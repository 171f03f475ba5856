"""Class grading throughput: 30 generated submissions graded by ``grade-class --jobs 2``.

    python benchmarks/class_grading.py                    # 30 submissions, every exercise
    python benchmarks/class_grading.py --count 8 --exercises neurons,convolution

The submissions are a mix of correct (the reference), wrong (planted mistakes), blank (the
exercise files) and hostile ones (``tests/hostile/payloads``: a loop, a hang that ignores the
alarm, a memory hog, a fork storm, a print flood, an exit at import, a reference reader and a
comparison monkeypatcher), each holding every lab module. It prints the seconds of every
submission, the batch's wall-clock and CPU time, and whether the batch met the target of
5 minutes on a 2-core CPU. The machine's load average is printed too: the figure means little
on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "hostile"))
import submissions as kit  # noqa: E402

MODULES = ("neurons", "convolution", "pooling", "training", "cnn_models", "transfer",
           "augmentation")
HOSTILE = ("infinite_loop", "hang_ignoring_alarm", "memory_hog", "fork_storm", "print_flood",
           "exit_at_import", "read_reference", "monkeypatch_comparison")
TARGET_S = 300.0


def kinds(count: int) -> list[str]:
    """About 1/3 correct, 1/5 wrong, 1/5 blank, the rest hostile (each attack at most once)."""
    n_correct, n_wrong, n_blank = round(count / 3), round(count / 5), round(count / 5)
    hostile = list(HOSTILE)[: max(count - n_correct - n_wrong - n_blank, 0)]
    n_correct = count - n_wrong - n_blank - len(hostile)
    return ["correct"] * n_correct + ["wrong"] * n_wrong + ["blank"] * n_blank + hostile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--exercises", default=None, help="passed to grade-class")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per exercise")
    parser.add_argument("--keep", type=Path, default=None, help="write submissions/results here")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="cnnlab-class-bench-"))
    subs, out = base / "submissions", base / "results"
    chosen = kinds(args.count)
    for i, kind in enumerate(chosen):
        sid = f"s{i:02d}-{kind}"
        kit.make_submission(kind, subs / sid, student=sid, submissions=subs, results=out,
                            modules=MODULES)
    cmd = [sys.executable, "-m", "grader", "grade-class", str(subs), "--out", str(out),
           "--jobs", str(args.jobs), "--force"]
    if args.exercises:
        cmd += ["--exercises", args.exercises]
    if args.timeout:
        cmd += ["--timeout", str(args.timeout)]
    print(f"{len(chosen)} submissions ({', '.join(f'{chosen.count(k)} {k}' for k in dict.fromkeys(chosen))})"
          f" on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return 1
    seconds = {m.group(1): (m.group(2), float(m.group(3))) for m in re.finditer(
        r"^\[\d+/\d+\] (\S+): (\S+) points in ([\d.]+) s$", proc.stdout, re.M)}
    print(f"\n{'submission':<32} {'points':>12} {'seconds':>8}")
    for sid in sorted(seconds):
        points, secs = seconds[sid]
        print(f"{sid:<32} {points:>12} {secs:>8.1f}")
    per = [s for _, s in seconds.values()]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"\nper submission: mean {sum(per) / len(per):.1f} s, max {max(per):.1f} s")
    print(f"batch: {wall:.0f} s wall clock ({wall / 60:.1f} min), {cpu:.0f} CPU seconds, "
          f"--jobs {args.jobs}; load average now {os.getloadavg()[0]:.1f}")
    verdict = "met" if wall <= TARGET_S else "MISSED"
    print(f"target {TARGET_S / 60:.0f} min: {verdict}")
    print(f"results in {out}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
