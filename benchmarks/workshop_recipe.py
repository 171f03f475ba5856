"""The Fashion-MNIST workshop's own recipe end to end: process start to printed test accuracy.

The recipe: the 3-conv 16/32/64 stride-2 CNN (3x3, ReLU, SAME), flatten, Dense(10); Adam 1e-3,
batch 128, 8 epochs, the full 60,000 training images, test accuracy on the 10,000 test images.

- ``cnnlab``: ``cnnlab train --model workshop_cnn --optimizer adam --lr 0.001 --schedule constant
  --epochs 8`` (its own data pipeline, evaluation and output);
- ``keras-jax`` / ``keras-torch`` (when the peers' Python has Keras, and torch for the latter):
  the IDX files read with numpy, ``model.fit(..., batch_size=128, epochs=8)``,
  ``model.evaluate``, in the peers' Python (``--peers-python``, default ``.venv-peers/bin/python``
  when it exists).

Each run is its own process, timed from its start to the printed test accuracy (imports, data,
compilation, training, evaluation) and to its exit (cnnlab then still draws its plots and finishes
writing the last checkpoint; Keras's recipe ends with the accuracy), the runs alternating over
``--repeats`` rounds. cnnlab runs with a cold JAX compilation cache (a fresh
``CNNLAB_CACHE_DIR``) and again with the cache that run left (``cnnlab (warm cache)``), so the
table says what a warm cache changes. cnnlab's prepared Fashion-MNIST is whatever the machine
already has (prepared once, about 9 s, on first use).

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


def timed(cmd: list[str], env: dict) -> tuple[float | None, float, float | None, str]:
    """Seconds from start to the printed test accuracy and to exit, the accuracy (%), and the
    last output line. Output is read as it comes (the child must not buffer it)."""
    start = time.monotonic()
    to_accuracy = accuracy = None
    last = ""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                cwd=ROOT)
        for line in proc.stdout:
            last = line.strip() or last
            found = re.search(r"test accuracy ([\d.]+)%", line)
            if found and to_accuracy is None:
                to_accuracy, accuracy = time.monotonic() - start, float(found[1])
        code = proc.wait()
        seconds = time.monotonic() - start
        err.seek(0)
        errors = err.read().strip().splitlines()
    if code != 0:
        return None, seconds, None, (errors or [last])[-1][:200]
    return to_accuracy, seconds, accuracy, last[:200]


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
    results: dict[str, list[tuple[float | None, float, float | None]]] = {n: [] for n in runs}
    with tempfile.TemporaryDirectory(prefix="cnnlab-recipe-") as tmp:
        for r in range(args.repeats):
            cache = os.path.join(tmp, f"jax-cache-{r}")
            cold_dirs.append(cache)
            for name, (cmd, env) in runs.items():
                if name.startswith("cnnlab"):
                    env = dict(env, CNNLAB_CACHE_DIR=cache)  # cold: a fresh dir; warm: the same
                    cmd = [*cmd, "--workdir", os.path.join(tmp, f"run-{r}-{name.split()[1][1:]}")]
                to_acc, seconds, acc, last = timed(cmd, env)
                results[name].append((to_acc, seconds, acc))
                shown = (f"{to_acc:6.1f} s to the accuracy, {seconds:6.1f} s to exit  {acc:.2f} %"
                         if acc is not None else f"FAILED: {last}")
                print(f"  round {r + 1}: {name:<20} {shown}", flush=True)
            shutil.rmtree(cache, ignore_errors=True)

    print(f"\n{'framework':<20} {'to accuracy s':>13} {'(min-max)':>13} {'to exit s':>9} "
          f"{'test accuracy':>13}")
    medians = {}
    for name, rs in results.items():
        ok = [r for r in rs if r[2] is not None]
        if not ok:
            print(f"{name:<20} {'failed':>13}")
            continue
        to_acc = [t for t, _, _ in ok]
        medians[name] = statistics.median(to_acc)
        print(f"{name:<20} {medians[name]:>13.1f} {f'({min(to_acc):.1f}-{max(to_acc):.1f})':>13} "
              f"{statistics.median(s for _, s, _ in ok):>9.1f} "
              f"{statistics.median(a for _, _, a in ok):>12.2f}%")
    keras = {k: v for k, v in medians.items() if k.startswith("keras")}
    if keras and "cnnlab (cold cache)" in medians:
        fastest = min(keras, key=keras.get)
        ratio = medians["cnnlab (cold cache)"] / keras[fastest]
        print(f"\ncnnlab (cold cache) / fastest Keras ({fastest}), process start to printed "
              f"test accuracy: {ratio:.2f} of its time (target <= 0.50)")
    print(f"load average now {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
