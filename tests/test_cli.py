"""The ``cnnlab`` command, run for real in subprocesses: train / evaluate / predict / visualize, and
every bad-input case ending in one line ``cnnlab: error: ...`` with exit status 2."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CNNLAB = [sys.executable, "-m", "cnnlab"]
SUBSET_DIR = Path(__file__).resolve().parents[1] / "lib" / "cnnlab" / "data" / "subset"
# Small and quick: 15 steps of 64 on the embedded subset; the same programs as tiny() in
# tests/test_train.py, so the shared compilation cache compiles them once per session.
TINY = ["--dataset", "fashion_mnist_subset", "--model", "workshop_cnn", "--epochs", "1",
        "--batch-size", "64", "--max-steps-per-epoch", "15", "--eval-batch-size", "300",
        "--optimizer", "adam", "--lr", "3e-3", "--schedule", "constant", "--seed", "0"]


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    cache = tmp_path_factory.getbasetemp() / "jax-cache"  # shared with tests/test_train.py
    cache.mkdir(exist_ok=True)
    e["CNNLAB_CACHE_DIR"] = str(cache)
    e.pop("XLA_FLAGS", None)
    return e


def run(args, env, timeout=300):
    return subprocess.run(CNNLAB + [str(a) for a in args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, env):
    workdir = tmp_path_factory.mktemp("run")
    t0 = time.time()
    # A checkpoint inside the epoch (step 10), saved without validation metrics: orbax warns
    # about it through absl, which the CLI keeps off the terminal.
    r = run(["train", *TINY, "--checkpoint-every-steps", "10", "--workdir", workdir], env)
    assert r.returncode == 0, r.stderr
    return workdir, r, time.time() - t0


def test_train_prints_accuracy_and_source_and_writes_the_workdir(trained):
    workdir, r, _ = trained
    out = r.stdout
    assert "epoch   1  step     15" in out
    assert "test accuracy" in out and "data: embedded Fashion-MNIST subset" in out
    accuracy = float(out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 30  # 15 small steps; chance is 10%
    assert "Traceback" not in r.stderr
    # Library log lines stay off the terminal (restoring TFDS's quiet data load used to undo
    # the CLI's setting, and orbax's "Requested `tracked_metric`" warning came through).
    assert "WARNING" not in r.stderr + out, r.stderr
    for name in ("curves", "confusion_matrix", "predictions"):
        w, h = png_size(workdir / "plots" / f"{name}.png")
        assert w > 300 and h > 300
    assert (workdir / "checkpoints" / "15").is_dir()


def test_evaluate_matches_the_training_run(trained, env):
    workdir, train_run, _ = trained
    r = run(["evaluate", "--workdir", workdir], env)
    assert r.returncode == 0, r.stderr
    line = [x for x in train_run.stdout.splitlines() if x.startswith("test accuracy")][0]
    assert r.stdout.split(" (")[0] == line.split(" (")[0]  # same "test accuracy NN.NN%"
    assert "Ankle boot" in r.stdout and "on 1,000 test images" in r.stdout


def test_predict_takes_png_and_jpeg_of_any_size(trained, env, tmp_path):
    workdir = trained[0]
    rng = np.random.default_rng(0)
    big = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(big)
    small = tmp_path / "small.jpg"
    Image.fromarray(rng.integers(0, 255, (13, 17), dtype=np.uint8)).save(small)
    r = run(["predict", "--workdir", workdir, "--top-k", "2", big, small], env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(big)) and lines[1].startswith(str(small))
    names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
             "Bag", "Ankle boot")
    for line in lines:
        probs = line.split(": ", 1)[1].split(", ")
        assert len(probs) == 2 and all(p.rsplit(" ", 1)[0] in names for p in probs)


def test_visualize_writes_filters_and_feature_maps(trained, env, tmp_path):
    workdir = trained[0]
    image = tmp_path / "shoe.png"
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(image)
    r = run(["visualize", "--workdir", workdir, "--out", tmp_path / "vis", image], env)
    assert r.returncode == 0, r.stderr
    w, h = png_size(tmp_path / "vis" / "filters.png")
    assert w > 200 and h > 100
    w, h = png_size(tmp_path / "vis" / "feature_maps_shoe.png")
    assert w > 500 and h > 200  # input row + one row per conv layer (3)


# ---------------------------------------------------------------------------------- bad input

def _corrupt_data_dir(root: Path) -> Path:
    d = root / "corrupt"
    d.mkdir()
    for f in SUBSET_DIR.glob("*.gz"):
        shutil.copy(f, d / f.name)
    images = d / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[: len(raw) // 3]))  # truncated: fewer images than labels
    return d


def _bad_cases(tmp: Path, trained_dir: Path) -> dict[str, tuple[list, str]]:
    """name -> (arguments, a piece of the expected message)."""
    blocker = tmp / "a_file"
    blocker.write_text("not a directory")
    not_image = tmp / "notes.png"
    not_image.write_text("this is text, not a PNG")
    nan_dir = tmp / "nan_run"
    shutil.copytree(trained_dir, nan_dir)
    w = tmp / "w"
    return {
        "unknown model": (["train", *TINY, "--model", "resnet9000", "--workdir", w],
                          "unknown model 'resnet9000'; choose one of: "),
        "unknown dataset": (["train", *TINY, "--dataset", "fashion_mnust", "--workdir", w],
                            "fashion_mnust"),
        "unknown optimizer": (["train", *TINY, "--optimizer", "adamm", "--workdir", w],
                              "sgd, momentum, adam, adamw, adadelta"),
        "missing data": (["train", *TINY, "--dataset", "fashion_mnist",
                          "--data-dir", tmp / "nowhere", "--workdir", w], "nowhere"),
        "corrupt idx": (["train", *TINY, "--dataset", "fashion_mnist",
                         "--data-dir", _corrupt_data_dir(tmp), "--workdir", w], "train-images"),
        "not an image": (["predict", "--workdir", trained_dir, not_image], "not an image"),
        "batch too large": (["train", *TINY, "--batch-size", "100000", "--workdir", w],
                            "100000 is larger than"),
        "unwritable workdir": (["train", *TINY, "--workdir", blocker / "run"],
                               "cannot write to workdir"),
        "nan loss": (["train", "--workdir", nan_dir, "--resume", "--epochs", "3", "--lr", "1e12"],
                     "kept in"),
        "earlier run": (["train", *TINY, "--workdir", trained_dir], "--resume"),
        "bad flag value": (["train", "--epochs", "three"], "invalid int value"),
    }


@pytest.fixture(scope="module")
def bad_results(trained, env, tmp_path_factory):
    """All bad-input runs, started together (each is mostly Python start-up)."""
    cases = _bad_cases(tmp_path_factory.mktemp("bad"), trained[0])
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, args, env) for name, (args, _) in cases.items()}
        return {name: (f.result(), cases[name][1]) for name, f in futures.items()}


@pytest.mark.parametrize("case", ["unknown model", "unknown dataset", "unknown optimizer",
                                  "missing data", "corrupt idx", "not an image", "batch too large",
                                  "unwritable workdir", "nan loss", "earlier run",
                                  "bad flag value"])
def test_bad_input_is_one_line_and_exit_2(bad_results, case):
    r, expected = bad_results[case]
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    # (notes such as "preparing the data set once" may come before it)
    errors = [x for x in r.stderr.splitlines() if "error" in x.lower()]
    assert len(errors) == 1, r.stderr
    assert errors[0].startswith("cnnlab: error: ") and expected in errors[0], errors[0]
    assert r.stderr.strip().splitlines()[-1] == errors[0]


def test_nan_loss_keeps_the_last_good_checkpoint(bad_results, env, tmp_path_factory):
    r, _ = bad_results["nan loss"]
    assert "loss became nan at step" in r.stderr and "(step 15)" in r.stderr
    nan_dir = [p for p in tmp_path_factory.getbasetemp().glob("bad*/nan_run")][0]
    # the trained run's (10 inside its epoch, 15 at its end), none after the loss went bad
    assert sorted(os.listdir(nan_dir / "checkpoints"), key=int) == ["10", "15"]
    ev = run(["evaluate", "--workdir", nan_dir], env)
    assert ev.returncode == 0 and "checkpoint step 15" in ev.stdout, ev.stderr
