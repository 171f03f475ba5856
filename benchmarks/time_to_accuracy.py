"""Time to accuracy on the full Fashion-MNIST, end to end, median of several seeds.

Each run is a fresh Python process (``cnnlab.train.train_and_evaluate`` on
``cnnlab.data.load("fashion_mnist")``), timed from just before the process starts: imports, data
loading, compilation (persistent compilation cache off: ``CNNLAB_CACHE_DIR=off``), training and
the test-set evaluation after every epoch are all inside the clock. It prints the test accuracy
of every epoch with its timestamp, then per model the median (and spread) over seeds of the
final accuracy, the total time and the time to reach each target.

    python benchmarks/time_to_accuracy.py                          # both presets, seeds 0 1 2
    python benchmarks/time_to_accuracy.py --models resnet_small --seeds 0
    python benchmarks/time_to_accuracy.py --models resnet_small --epochs 4   # shorter

The presets (``PRESETS``) are the configurations chosen for time to accuracy on a 2-core CPU.
JAX uses one CPU device with all cores (and, as ``cnnlab train``, XLA's multi-threaded
convolutions: ``cnnlab.xla_cpu``). ``--devices N`` splits the CPU into N JAX devices instead
(data parallelism): on 2 cores with ``--devices 2`` an epoch of ``resnet_small`` took 34 s against 29 s on one device
(an earlier, wider ``resnet_small`` once stalled in an all-reduce that way; not seen since).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# The configurations measured in the README (TrainConfig fields).
PRESETS = {
    "workshop_cnn": dict(model="workshop_cnn", epochs=10, batch_size=128, optimizer="adam",
                         learning_rate=3e-3, schedule="one_cycle"),
    "resnet_small": dict(model="resnet_small", epochs=10, batch_size=128, optimizer="adamw",
                         learning_rate=3e-3, schedule="one_cycle", weight_decay=5e-4,
                         label_smoothing=0.1, augment=True, augment_pad=0),
}
TARGETS = {"workshop_cnn": (0.90, 0.91), "resnet_small": (0.91, 0.93)}


def child(config_json: str, workdir: str) -> None:
    """Run one training; print one JSON line per epoch (time since the parent's clock start)."""
    start = float(os.environ["CNNLAB_BENCH_T0"])
    from cnnlab import xla_cpu
    xla_cpu.use_multithreaded_convolutions()  # as cnnlab train does
    from cnnlab import train

    config = train.TrainConfig(**json.loads(config_json))

    class Lines(train.Reporter):
        def epoch_end(self, record):
            print(json.dumps({"t": time.time() - start, "epoch": record.get("epoch"),
                              "test_accuracy": record.get("test_accuracy"),
                              "train_loss": record.get("train_loss")}), flush=True)

    result = train.train_and_evaluate(config, workdir, reporter=Lines(), overwrite=True)
    print(json.dumps({"t": time.time() - start, "done": True,
                      "test_accuracy": result.get("test_accuracy")}), flush=True)


def run_one(config: dict, devices: int, seed: int) -> list[dict]:
    """Train in a fresh process; print each epoch as it ends; return the JSON lines."""
    env = dict(os.environ, CNNLAB_CACHE_DIR="off")
    if devices > 1 and "xla_force_host_platform_device_count" not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    lines = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-tta-") as workdir, \
            tempfile.TemporaryFile("w+") as errors:
        env["CNNLAB_BENCH_T0"] = repr(time.time())
        proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config), workdir],
                                env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            lines.append(record)
            if "epoch" in record:
                print(f"  seed {seed} epoch {record['epoch']:>2}  {record['t']:7.1f} s  "
                      f"test accuracy {100 * record['test_accuracy']:.2f}%", flush=True)
        if proc.wait() != 0:
            errors.seek(0)
            sys.exit(f"training failed:\n{errors.read()[-3000:]}")
    return lines


def spread(values: list[float], fmt: str) -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{format(med, fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a TrainConfig field, e.g. --set 'model_kwargs={\"widths\": "
                        "[24, 48, 96]}' (repeatable)")
    p.add_argument("--devices", type=int, default=1,
                   help="CPU devices for JAX (--xla_force_host_platform_device_count)")
    args = p.parse_args(argv)

    print(f"full Fashion-MNIST, seeds {args.seeds}, {args.devices} CPU device(s), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    summary = []
    for name in args.models:
        config = dict(PRESETS[name])
        if args.epochs:
            config["epochs"] = args.epochs
        for item in args.set:
            field, _, value = item.partition("=")
            config[field] = json.loads(value)
        print(f"\n{name}: {json.dumps(config)}", flush=True)
        finals, totals, reach = [], [], {t: [] for t in TARGETS[name]}
        for seed in args.seeds:
            lines = run_one(dict(config, seed=seed), args.devices, seed)
            epochs = [r for r in lines if "epoch" in r]
            done = lines[-1]
            finals.append(100 * epochs[-1]["test_accuracy"])
            totals.append(done["t"])
            for target in reach:
                hit = next((r["t"] for r in epochs if r["test_accuracy"] >= target), None)
                reach[target].append(hit)
        line = (f"{name:<13} final {spread(finals, '.2f')}%  total {spread(totals, '.0f')} s")
        for target, times in reach.items():
            ok = [t for t in times if t is not None]
            med = (f"{spread(ok, '.0f')} s" if len(ok) == len(times) else
                   f"reached by {len(ok)}/{len(times)} seeds")
            line += f"  to {100 * target:.0f}%: {med}"
        summary.append(line)
        print(line, flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(["summary (median (min-max) over seeds):", *summary]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
