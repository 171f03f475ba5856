"""Many machines, measured on one: N generated submissions graded by one ``grade-class`` process
and by 4 shards (``--shard I/4``) run one after the other, then ``merge``; the merged reports
must equal the single run's.

    nice -n 10 python benchmarks/class_shards.py                       # 300 submissions, pooling lab
    python benchmarks/class_shards.py --count 40 --exercises pooling.flatten

The submissions are the pooling lab written in several honest ways (the reference, two
independent solutions of ``tests/term``), with planted mistakes, blank starters, and copies.
Both runs use ``--jobs 2``; the shards run sequentially, so their summed wall time measures the
overhead of sharding (each shard starts the grader, computes the spec hashes and re-reads the
reference once), not a speed-up: on N machines the wall time would be about the longest shard.
The machine's load average is printed before and after: figures from a loaded machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import term  # noqa: E402

CLASS_FILES = ("grades.csv", "summary.json", "summary.txt", "histogram.png", "run.json")


def sources() -> list[str]:
    ref, ana, ben = term.reference(), term.honest("ana"), term.honest("ben")
    return [ref, ana, ben, ben + "\n\n" + term.BEN_BUG, term.starter(),
            term.disguise(ana, reorder=True), term.disguise(ref, reorder=False),
            ref.replace("x.reshape(x.shape[0], -1)", "x.reshape(-1)")]  # a planted mistake


def make_class(subs: Path, count: int) -> None:
    kinds = sources()
    for i in range(count):
        folder = subs / f"s{i:04d}"
        folder.mkdir(parents=True)
        # every submission differs (a comment), as real ones do
        (folder / "pooling.py").write_text(kinds[i % len(kinds)] + f"\n# student {i}\n")


def run(cmd: list[str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}\n"
                 f"{proc.stderr[-3000:]}")
    return wall


def timeless(data: bytes) -> bytes:
    return re.sub(rb'("execution_time": |time=")[0-9.]+', rb"\1T", data)


def same(single: Path, merged: Path) -> list[str]:
    """The files that differ (wall-clock times aside)."""
    diff = [n for n in CLASS_FILES if (single / n).read_bytes() != (merged / n).read_bytes()]
    for folder in sorted(p for p in single.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.iterdir()):
            other = merged / folder.name / path.name
            if not other.is_file() or timeless(path.read_bytes()) != timeless(other.read_bytes()):
                diff.append(f"{folder.name}/{path.name}")
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--exercises", default="pooling")
    parser.add_argument("--keep", type=Path, default=None, help="write everything here")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="cnnlab-shards-"))
    subs = base / "submissions"
    make_class(subs, args.count)
    grade = [sys.executable, "-m", "grader", "grade-class", str(subs), "--jobs", "2",
             "--exercises", args.exercises]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    print(f"{args.count} submissions of the pooling lab, --exercises {args.exercises}, --jobs 2; "
          f"{os.cpu_count()} CPUs ({cpu}); load average {os.getloadavg()[0]:.1f}", flush=True)
    single = base / "single"
    t_single = run([*grade, "--out", str(single)])
    print(f"1 process: {t_single:.0f} s; load average {os.getloadavg()[0]:.1f}", flush=True)
    shard_dirs, t_shards = [], []
    for i in range(1, args.shards + 1):
        shard_dirs.append(base / f"shard-{i}")
        t_shards.append(run([*grade, "--out", str(shard_dirs[-1]), "--shard",
                             f"{i}/{args.shards}"]))
        print(f"shard {i}/{args.shards}: {t_shards[-1]:.0f} s; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    merged = base / "merged"
    t_merge = run([sys.executable, "-m", "grader", "merge", *map(str, shard_dirs), "--out",
                   str(merged)])
    diff = same(single, merged)
    print(f"{args.shards} shards one after the other: {sum(t_shards):.0f} s "
          f"({' + '.join(f'{t:.0f}' for t in t_shards)}), merge {t_merge:.0f} s; "
          f"longest shard {max(t_shards):.0f} s (the wall time on {args.shards} machines)")
    print("merged reports identical to the single run's" if not diff else
          f"DIFFERENT: {', '.join(diff[:20])}")
    print(f"everything in {base}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
