"""How long a student waits for the grader, from a cold process (a new `python -m grader`).

Scenarios (each a fresh process; the submission is solutions/, so every case runs to the end):

- all exercises, warm caches: the usual `make grade` after the first one (reference outputs cached
  in ~/.cache/cnnlab/expected — or shipped in grader/expected/ in a student release — and the JAX
  persistent compilation cache in ~/.cache/cnnlab/jax);                      target <= 20 s
- one exercise (`check conv_output_size`, and the heavier `check conv2d`), warm; target <= 3 s
- the same with a cold JAX compilation cache (first `make grade` of a student release);
- all exercises with everything cold, reference outputs included (instructor's first run).

    python benchmarks/grader_latency.py [--repeat 2] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the grader and all its workers)."""
    c0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "grader", *args, "--submission", "solutions"],
                       cwd=ROOT, env=env, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _children_cpu() - c0
    if p.returncode != 0 or "100%" not in p.stdout:
        raise SystemExit(f"grading failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return dt, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-cold", action="store_true", help="skip the fully cold scenario")
    a = ap.parse_args()
    base = dict(os.environ)
    rows = []
    warm_cache = Path(base.get("CNNLAB_CACHE_DIR", Path.home() / ".cache" / "cnnlab"))
    run([], base)  # make sure the warm caches are warm
    for label, args, target in [("all exercises (warm)", [], 20.0),
                                ("check conv_output_size (warm)", ["check", "conv_output_size"], 3.0),
                                ("check conv2d (warm)", ["check", "conv2d"], 3.0)]:
        rows.append((label, [run(args, base) for _ in range(a.repeat)], target))
    # cold JAX compilation cache, reference outputs warm (a student release's first run)
    with tempfile.TemporaryDirectory() as tmp:
        cold_jax = dict(base, CNNLAB_CACHE_DIR=str(warm_cache), CNNLAB_JAX_CACHE_DIR=tmp)
        rows.append(("all exercises (cold JAX cache)", [run([], cold_jax)], None))
    with tempfile.TemporaryDirectory() as tmp:
        cold_jax = dict(base, CNNLAB_CACHE_DIR=str(warm_cache), CNNLAB_JAX_CACHE_DIR=tmp)
        rows.append(("check conv_output_size (cold JAX cache)",
                     [run(["check", "conv_output_size"], cold_jax)], None))
    if not a.skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            cold = {k: v for k, v in base.items() if k != "CNNLAB_JAX_CACHE_DIR"}
            cold["CNNLAB_CACHE_DIR"] = tmp
            rows.append(("all exercises (everything cold, reference included)",
                         [run([], cold)], None))
            shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"grader latency on {os.cpu_count()} CPUs (load average {load:.1f} at the end; wall "
          f"times stretch with the load, CPU seconds do not)")
    print(f"{'scenario':52s} {'wall s':>7s} {'CPU s':>6s} {'runs (wall)':>14s}  target (wall)")
    for label, runs, target in rows:
        walls = [w for w, _ in runs]
        med = statistics.median(walls)
        cpu = statistics.median(c for _, c in runs)
        ok = "" if target is None else (f"<= {target:g} s " + ("ok" if med <= target else "MISSED"))
        print(f"{label:52s} {med:7.2f} {cpu:6.1f} {' '.join(f'{t:.1f}' for t in walls):>14s}  {ok}")


if __name__ == "__main__":
    main()
