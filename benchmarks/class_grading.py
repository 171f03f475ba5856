"""Class grading throughput: 30 generated submissions graded by ``grade-class --jobs 2``.

    python benchmarks/class_grading.py                    # 30 submissions, every exercise
    python benchmarks/class_grading.py --count 8 --exercises neurons,convolution

The submissions are a mix of correct (the reference), wrong (planted mistakes), blank (the
exercise files) and hostile ones (``tests/hostile/payloads``: a loop, a hang that ignores the
alarm, a memory hog, a fork storm, a print flood, an exit at import, a reference reader and a
comparison monkeypatcher), each holding every lab module. It prints the seconds of every
submission, the batch's wall-clock and CPU time, and whether the batch met the target of
5 minutes on a 2-core CPU. Then it grades ``--correct`` correct submissions alone (``--jobs 1``)
and prints the CPU-seconds per correct submission (target: 5, so that 300 submissions take
15 minutes on 2 cores), split into what a class run costs once (the same command again, with
every result up to date) and what each submission adds, and one more correct submission by
phase (the sandboxed worker, the from-scratch verifier, the grader's own work). The machine's
load average is printed too: wall-clock figures mean little on a machine shared with other work;
CPU-seconds hold better.

CPU time is counted with a cgroup (v1 ``cpuacct`` or v2, as root): the sandbox's processes live
in a PID namespace of their own whose CPU time never reaches ``getrusage(RUSAGE_CHILDREN)``.
Without a writable cgroup the benchmark says so and prints what ``getrusage`` sees.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "hostile")]  # this checkout's grader and kit
import submissions as kit  # noqa: E402

from grader import specs  # noqa: E402

MODULES = tuple(specs.MODULES)  # every lab module: a full submission
HOSTILE = ("infinite_loop", "hang_ignoring_alarm", "memory_hog", "fork_storm", "print_flood",
           "exit_at_import", "read_reference", "monkeypatch_comparison")
TARGET_S = 300.0
TARGET_CPU_S = 5.0  # per correct submission: 300 of them in 15 minutes on 2 cores


def one_base(cmd: list[str]) -> list[str]:
    """The part of a grade-class command before its optional flags (--exercises, --timeout)."""
    return cmd[:cmd.index("--force") + 1]


def kinds(count: int) -> list[str]:
    """About 1/3 correct, 1/5 wrong, 1/5 blank, the rest hostile (each attack at most once)."""
    n_correct, n_wrong, n_blank = round(count / 3), round(count / 5), round(count / 5)
    hostile = list(HOSTILE)[: max(count - n_correct - n_wrong - n_blank, 0)]
    n_correct = count - n_wrong - n_blank - len(hostile)
    return ["correct"] * n_correct + ["wrong"] * n_wrong + ["blank"] * n_blank + hostile


class CpuMeter:
    """CPU-seconds of a process and everything it starts (sandboxed descendants included).

    A fresh cgroup that the child joins before it execs (``preexec``); ``seconds()`` reads its
    usage. ``None`` as the cgroup when none is writable: then ``getrusage`` of the waited-for
    children is the fallback (it misses the sandbox's PID namespace; ``exact`` says which).
    """

    ROOTS = (("/sys/fs/cgroup/cpuacct", "cpuacct.usage"),  # v1: nanoseconds
             ("/sys/fs/cgroup/unified", "cpu.stat"),        # v2: "usage_usec N" lines
             ("/sys/fs/cgroup", "cpu.stat"))

    def __init__(self):
        self.group, self.usage = None, None
        for root, usage in self.ROOTS:
            group = Path(root) / f"cnnlab-bench-{os.getpid()}-{time.monotonic_ns()}"
            try:
                group.mkdir()
            except OSError:
                continue
            if (group / usage).exists() and os.access(group / "cgroup.procs", os.W_OK):
                self.group, self.usage = group, group / usage
                break
            group.rmdir()
        self.exact = self.group is not None
        self._rusage = resource.getrusage(resource.RUSAGE_CHILDREN)

    def preexec(self) -> None:
        if self.group is not None:
            (self.group / "cgroup.procs").write_text(str(os.getpid()))

    @staticmethod
    def usage_seconds(usage: Path) -> float:
        """The CPU-seconds a cgroup's usage file (v1 ``cpuacct.usage`` or v2 ``cpu.stat``) says."""
        if usage.name == "cpuacct.usage":
            return int(usage.read_text()) * 1e-9
        stat = dict(line.split() for line in usage.read_text().splitlines())
        return int(stat["usage_usec"]) * 1e-6

    def seconds(self) -> float:
        if self.usage is not None:
            return self.usage_seconds(self.usage)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (now.ru_utime - self._rusage.ru_utime) + (now.ru_stime - self._rusage.ru_stime)

    def close(self) -> None:
        if self.group is not None:
            with contextlib.suppress(OSError):
                self.group.rmdir()


USAGE_ENV = "CNNLAB_BENCH_CPU_USAGE"  # the usage file of the cgroup a command runs in


def grade(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float, bool]:
    """Run ``cmd``; its result, wall-clock seconds, CPU-seconds and whether those are exact."""
    meter = CpuMeter()
    try:
        start = time.monotonic()
        env = {**os.environ, USAGE_ENV: str(meter.usage)} if meter.exact else None
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                              preexec_fn=meter.preexec)
        wall = time.monotonic() - start
        return proc, wall, meter.seconds(), meter.exact
    finally:
        meter.close()


def phases(submission: Path) -> int:
    """Grade ``submission`` as ``grade-class`` does (sandbox, hidden cases, one worker) and print
    the CPU-seconds of each sandboxed launch (the worker, the from-scratch verifier; their
    supervision included) and of the grader's own work, read from the cgroup this process runs
    in (``grade`` passes its usage file)."""
    import dataclasses  # noqa: PLC0415 - this mode only

    from grader import runner  # noqa: PLC0415 - same
    from grader.classroom import worker_heartbeat  # noqa: PLC0415 - same
    from grader.commands import cache_dir  # noqa: PLC0415 - same
    from grader.sandbox import Limits, Sandbox  # noqa: PLC0415 - same

    usage = Path(os.environ[USAGE_ENV])

    def cpu() -> float:
        return CpuMeter.usage_seconds(usage)

    sandbox = Sandbox(dataclasses.replace(
        Limits(), hide=(str(submission.parent), str(cache_dir())),
        compiled_cache=str(runner.compiled_cache_dir()),
        **worker_heartbeat(runner.DEFAULT_EXERCISE_TIMEOUT_S)))
    launches: list[tuple[str, float]] = []

    def launcher(argv, *, cwd, timeout_s):
        start = cpu()
        try:
            return sandbox(argv, cwd=cwd, timeout_s=timeout_s)
        finally:
            launches.append((argv[2].removeprefix("grader."), cpu() - start))

    start = cpu()
    store = runner.open_reference()
    for module in MODULES:  # read once per class run: not the submission's
        store.plan(module, include_hidden=specs.hidden_available())
    ready = cpu()
    result = runner.grade_submission(submission, include_hidden=specs.hidden_available(),
                                     launcher=launcher, reference=store, jobs=1)
    graded = cpu() - ready
    inside = sum(seconds for _, seconds in launches)
    passed = sum(e.status == "passed" for e in result.exercises)
    print(f"  by phase, one more correct submission ({passed}/{len(result.exercises)} exercises "
          f"passed): " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in launches)
          + f", the grader's own work {graded - inside:.1f} CPU-s (the reference read once "
          f"per run: {ready - start:.1f} CPU-s)")
    return 0


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--exercises", default=None, help="passed to grade-class")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per exercise")
    parser.add_argument("--keep", type=Path, default=None, help="write submissions/results here")
    parser.add_argument("--correct", type=int, default=2,
                        help="correct submissions graded alone for the CPU-seconds per submission")
    parser.add_argument("--phases-of", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phases_of is not None:  # run by the benchmark itself, in a cgroup of its own
        return phases(args.phases_of)

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
          f" on {os.cpu_count()} CPUs, {load()}", flush=True)
    proc, wall, cpu, exact = grade(cmd)
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
    how = "" if exact else " (getrusage: the sandbox's own CPU time is missing)"
    print(f"\nper submission: mean {sum(per) / len(per):.1f} s, max {max(per):.1f} s wall clock; "
          f"{cpu / len(chosen):.1f} CPU-s on average{how}")
    print(f"batch: {wall:.0f} s wall clock ({wall / 60:.1f} min), {cpu:.0f} CPU seconds, "
          f"--jobs {args.jobs}; {load()}")
    verdict = "met" if wall <= TARGET_S else "MISSED"
    print(f"target {TARGET_S / 60:.0f} min: {verdict}")
    if args.correct > 0:
        alone = base / "correct"
        for i in range(args.correct):
            kit.make_submission("correct", alone / f"c{i:02d}", student=f"c{i:02d}",
                                submissions=alone, results=base / "correct-results",
                                modules=MODULES)
        one = [sys.executable, "-m", "grader", "grade-class", str(alone), "--out",
               str(base / "correct-results"), "--jobs", "1", "--force"] + cmd[len(one_base(cmd)):]
        proc, wall, cpu, exact = grade(one)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 1
        # The same command again without --force grades nothing (every result is up to date)
        # but does all the rest: the grader's start, the reference, the class reports.
        fixed_proc, _, fixed, _ = grade([a for a in one if a != "--force"])
        if fixed_proc.returncode != 0 or "grading 0 of" not in fixed_proc.stdout:
            print(fixed_proc.stdout[-2000:], fixed_proc.stderr[-2000:], file=sys.stderr)
            return 1
        per_cpu = cpu / args.correct
        marginal = (cpu - fixed) / args.correct
        at_300 = marginal + fixed / 300
        how = "" if exact else " (getrusage: the sandbox's own CPU time is missing)"
        print(f"correct submission alone ({args.correct} at --jobs 1, {len(MODULES)} lab modules "
              f"each): {per_cpu:.1f} CPU-s, {wall / args.correct:.1f} s wall clock each, the "
              f"grade-class process included{how}; {load()}")
        print(f"  of which once per run (grader start, reference, class reports): {fixed:.1f} "
              f"CPU-s; per submission: {marginal:.1f} CPU-s")
        print(f"  in a class of 300: {at_300:.1f} CPU-s per correct submission, "
              f"{at_300 * 300 / 2 / 60:.1f} min on 2 cores; target {TARGET_CPU_S:g} CPU-s: "
              f"{'met' if at_300 <= TARGET_CPU_S else 'MISSED'}")
        if exact and not args.exercises:
            by_phase, _, _, _ = grade([sys.executable, str(Path(__file__).resolve()),
                                       "--phases-of", str(alone / "c00")])
            print(by_phase.stdout.rstrip() or by_phase.stderr[-2000:])
    print(f"results in {out}" if args.keep else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
