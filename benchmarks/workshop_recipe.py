"""The Fashion-MNIST workshop's own recipe end to end: process start to printed test accuracy.

The recipe: the 3-conv 16/32/64 stride-2 CNN (3x3, ReLU, SAME), flatten, Dense(10); Adam 1e-3,
batch 128, 8 epochs, the full 60,000 training images, test accuracy on the 10,000 test images.

- ``cnnlab``: ``cnnlab train --model workshop_cnn --optimizer adam --lr 0.001 --schedule constant
  --epochs 8`` (its own data pipeline, evaluation and output);
- ``keras-jax`` / ``keras-torch`` (when the peers' Python has Keras, and torch for the latter):
  the IDX files read with numpy, ``model.fit(..., batch_size=128, epochs=8)``,
  ``model.evaluate``, in the peers' Python (``--peers-python``, default ``.venv-peers/bin/python``
  when it exists).

Each run is its own process, timed from start to exit (imports, data, compilation, training,
evaluation, printing), the runs alternating over ``--repeats`` rounds. cnnlab runs with a cold
JAX compilation cache (a fresh ``CNNLAB_CACHE_DIR``) and again with the cache that run left
(``cnnlab (warm cache)``), so the table says what a warm cache changes. cnnlab's prepared
Fashion-MNIST is whatever the machine already has (prepared once, about 9 s, on first use).

    python benchmarks/workshop_recipe.py                 # 1 round, every framework installed
    python benchmarks/workshop_recipe.py --repeats 3 --epochs 8
    python benchmarks/workshop_recipe.py --only cnnlab --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FASHION = Path("/usr/share/datasets/fashion-mnist")

KERAS_RECIPE = r'''
import gzip, os, sys
import numpy as np
import keras
from keras import layers

def idx(name):
    with gzip.open(os.path.join(sys.argv[1], name)) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

x_train = idx("train-images-idx3-ubyte.gz")[..., None].astype("float32") / 255.0
y_train = idx("train-labels-idx1-ubyte.gz").astype("int32")
x_test = idx("t10k-images-idx3-ubyte.gz")[..., None].astype("float32") / 255.0
y_test = idx("t10k-labels-idx1-ubyte.gz").astype("int32")
keras.utils.set_random_seed(int(sys.argv[3]))
model = keras.Sequential([keras.Input((28, 28, 1))]
                         + [layers.Conv2D(f, 3, strides=2, padding="same", activation="relu")
                            for f in (16, 32, 64)]
                         + [layers.Flatten(), layers.Dense(10)])
model.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=128, epochs=int(sys.argv[2]), verbose=0)
_, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
print(f"test accuracy {accuracy:.2%}")
'''


def peers_python(given: str | None) -> str:
    if given:
        return given
    venv = ROOT / ".venv-peers" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def has(python: str, backend: str) -> bool:
    """Whether Keras runs on ``backend`` in ``python`` (Keras needs KERAS_BACKEND set, or it
    looks for TensorFlow)."""
    return subprocess.run([python, "-c", f"import keras, {backend}"], capture_output=True,
                          env=dict(os.environ, KERAS_BACKEND=backend)).returncode == 0


def timed(cmd: list[str], env: dict) -> tuple[float, float | None, str]:
    """Seconds from start to exit, the printed test accuracy (%), and the last output line."""
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.monotonic() - start
    found = re.findall(r"test accuracy ([\d.]+)%", proc.stdout)
    last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        return seconds, None, last[:200]
    return seconds, float(found[-1]) if found else None, last[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="rounds (each framework once per round)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=None,
                   help="frameworks to run: cnnlab, keras-jax, keras-torch (default: all present)")
    p.add_argument("--peers-python", default=None)
    args = p.parse_args(argv)

    python = peers_python(args.peers_python)
    cnnlab_bin = Path(sys.executable).with_name("cnnlab")
    runs: dict[str, tuple[list[str], dict]] = {}
    cold_dirs: list[str] = []
    base_env = dict(os.environ, PYTHONUNBUFFERED="1")
    cnnlab_cmd = [str(cnnlab_bin), "train", "--model", "workshop_cnn", "--optimizer", "adam",
                  "--lr", "0.001", "--schedule", "constant", "--epochs", str(args.epochs),
                  "--seed", str(args.seed)]
    wanted = args.only or ["cnnlab", "keras-jax", "keras-torch"]
    if "cnnlab" in wanted:
        runs["cnnlab (cold cache)"] = (cnnlab_cmd, base_env)
        runs["cnnlab (warm cache)"] = (cnnlab_cmd, base_env)
    keras_cmd = [python, "-c", KERAS_RECIPE, str(FASHION), str(args.epochs), str(args.seed)]
    for backend in ("jax", "torch"):
        fw = f"keras-{backend}"
        if fw not in wanted:
            continue
        if has(python, backend):
            runs[fw] = (keras_cmd, dict(base_env, KERAS_BACKEND=backend))
        else:
            print(f"{fw}: not installed in {python} (pip install keras {backend})")

    print(f"the workshop recipe, {args.epochs} epochs, {args.repeats} round(s); load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    results: dict[str, list[tuple[float, float | None]]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="cnnlab-recipe-") as tmp:
        for r in range(args.repeats):
            cache = os.path.join(tmp, f"jax-cache-{r}")
            cold_dirs.append(cache)
            for name, (cmd, env) in runs.items():
                if name.startswith("cnnlab"):
                    env = dict(env, CNNLAB_CACHE_DIR=cache)  # cold: a fresh dir; warm: the same
                    cmd = [*cmd, "--workdir", os.path.join(tmp, f"run-{r}-{name.split()[1][1:]}")]
                seconds, acc, last = timed(cmd, env)
                results[name].append((seconds, acc))
                shown = f"{acc:.2f} %" if acc is not None else f"FAILED: {last}"
                print(f"  round {r + 1}: {name:<20} {seconds:6.1f} s  {shown}", flush=True)
            shutil.rmtree(cache, ignore_errors=True)

    print(f"\n{'framework':<20} {'seconds (median)':>16} {'(min-max)':>15} {'test accuracy':>13}")
    medians = {}
    for name, rs in results.items():
        ok = [(s, a) for s, a in rs if a is not None]
        if not ok:
            print(f"{name:<20} {'failed':>16}")
            continue
        secs = [s for s, _ in ok]
        medians[name] = statistics.median(secs)
        print(f"{name:<20} {medians[name]:>16.1f} {f'({min(secs):.1f}-{max(secs):.1f})':>15} "
              f"{statistics.median(a for _, a in ok):>12.2f}%")
    keras = {k: v for k, v in medians.items() if k.startswith("keras")}
    if keras and "cnnlab (cold cache)" in medians:
        fastest = min(keras, key=keras.get)
        ratio = medians["cnnlab (cold cache)"] / keras[fastest]
        print(f"\ncnnlab (cold cache) / fastest Keras ({fastest}): {ratio:.2f} of its time "
              f"(target <= 0.50)")
    print(f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
