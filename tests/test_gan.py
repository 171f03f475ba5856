"""``cnnlab gan``: the DCGAN step, the workdir (sample grids per epoch, loss curves, orbax
checkpoints), exact resume, the sample-quality figures, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import shutil

import jax
import numpy as np
import pytest
from cnnlab import gan_quality, train
from cnnlab.config import GanConfig
from cnnlab.errors import CnnlabError
from cnnlab.gan import load_gan, measure_quality, train_gan
from PIL import Image

# the digits (scikit-learn, offline; upsampled from 8x8 to 28x28), a small pair: seconds per run
TINY = GanConfig(dataset="digits", epochs=2, batch_size=32, latent_dim=8, g_features=8,
                 d_features=8, samples=9, max_steps_per_epoch=4)


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


TIMES = ("epoch_seconds", "images_per_second")


def records(workdir):
    """metrics.jsonl without its timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("gan")
    return workdir, train_gan(TINY, str(workdir))


def test_workdir_has_sample_grids_curves_and_checkpoints(straight):
    workdir, final = straight
    assert final["epoch"] == 2 and final["step"] == 8 and "digits" in final["source"]
    # the 8x8 digits are upsampled to the 28x28 the workshop's DCGAN is made for (at 8x8 it
    # collapses to one image), and the run says so
    assert "resized bilinearly from 8x8 to 28x28" in final["source"]
    assert json.loads((workdir / "run.json").read_text())["input_shape"] == [28, 28, 1]
    lines = records(workdir)
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert all(np.isfinite(r[f"train_{k}"]) for k in ("d_loss", "g_loss", "d_real", "d_fake"))
        assert r["train_loss"] == pytest.approx(r["train_d_loss"] + r["train_g_loss"])
        assert 0 <= r["train_accuracy"] <= 1 and 0 < r["train_d_real"] < 1
    assert os.listdir(workdir / "tensorboard")  # event files, as every run has
    for name in ("samples_epoch_001.png", "samples_epoch_002.png", "losses.png"):
        with Image.open(workdir / "plots" / name) as im:
            assert im.format == "PNG" and min(im.size) > 100
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    run = load_gan(str(workdir))
    samples = run.sample(5)
    assert samples.shape == (5, 28, 28, 1) and 0 <= samples.min() and samples.max() <= 1


def test_resume_mid_epoch_and_with_more_epochs_is_bit_identical(straight, tmp_path):
    """One epoch with checkpoints every 2 steps, its last checkpoint (step 4) lost: resumed
    with --epochs 2, the run restarts at step 2 (in the middle of epoch 1), crosses into epoch
    2, and ends with the parameters and the records (the running sums of every GAN metric
    included) of the run that never stopped; each network moved by its own optimizer."""
    workdir, final = straight
    config = TINY.replace(checkpoint_every_steps=2)
    train_gan(config.replace(epochs=1), str(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    first = load_gan(str(tmp_path)).state
    with pytest.raises(CnnlabError, match="--resume needs the settings.*latent_dim differ"):
        train_gan(config.replace(latent_dim=4), str(tmp_path), resume=True)
    with pytest.raises(CnnlabError, match="already holds a training run; pass --resume"):
        train_gan(config, str(tmp_path))
    resumed = train_gan(config, str(tmp_path), resume=True)
    a, b = load_gan(str(workdir)).state, load_gan(str(tmp_path)).state
    for x, y in zip(leaves(a), leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert {k: v for k, v in resumed.items() if k not in TIMES} == \
        {k: v for k, v in final.items() if k not in TIMES}
    assert records(tmp_path) == records(workdir)
    for network in ("g_params", "d_params"):
        assert any(not np.array_equal(x, y) for x, y in
                   zip(leaves(getattr(first, network)), leaves(getattr(b, network)))), network


def test_quality_figures_on_constructed_predictions():
    k = 10
    uniform = gan_quality.class_statistics(np.zeros((50, k)))
    assert uniform["inception_score"] == pytest.approx(1.0)
    assert uniform["confidence"] == pytest.approx(0.1)
    confident = np.eye(k)[np.arange(100) % k] * 30.0          # every class, confidently
    diverse = gan_quality.class_statistics(confident, np.arange(100) % k)
    assert diverse["accuracy"] == 1.0
    assert diverse["class_entropy_bits"] == pytest.approx(np.log2(k))
    assert diverse["inception_score"] == pytest.approx(k, rel=1e-3)
    collapsed = gan_quality.class_statistics(np.eye(k)[np.zeros(100, int)] * 30.0)
    assert collapsed["class_entropy_bits"] == 0.0 and collapsed["inception_score"] == \
        pytest.approx(1.0, rel=1e-3)
    table = gan_quality.format_table({"real": diverse, "generated": collapsed, "noise": uniform})
    assert "| generated (100) | - |" in table and "-0.00" not in table


def cnnlab(*args, cwd):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600, check=False)


def test_cli_refuses_bad_input_in_one_line(straight, tmp_path):
    workdir, _ = straight
    r = cnnlab("gan", "--dataset", "digits", "--workdir", workdir, cwd=tmp_path)  # a run is there
    assert r.returncode == 2 and "already holds a training run; pass --resume" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = cnnlab("gan", "--dataset", "digits", "--epochs", "0", "--workdir", tmp_path / "x",
               cwd=tmp_path)
    assert r.returncode == 2 and "epochs must be an integer >= 1, got 0" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    r = cnnlab("gan", "--dataset", "no_such_data", "--workdir", tmp_path / "y", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("cnnlab: error:")
    assert len(r.stderr.splitlines()) == 1
    r = cnnlab("gan", "--dataset", "digits", "--image-size", "10", "--workdir", tmp_path / "z",
               cwd=tmp_path)
    assert r.returncode == 2 and "image size 10 is not a multiple of 4" in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_native_size_on_request(tmp_path):
    """``--image-size 8`` trains on the digits as they are (8x8), for who wants to see it."""
    final = train_gan(TINY.replace(image_size=8, epochs=1, plots=False), str(tmp_path))
    assert "resized" not in final["source"]
    assert load_gan(str(tmp_path)).sample(2).shape == (2, 8, 8, 1)


@pytest.mark.exhaustive
def test_cli_trains_and_measures_quality(tmp_path):
    """``cnnlab gan --quality`` end to end (a judge classifier trained by ``cnnlab train``:
    half a minute; the figures' arithmetic is tested above on constructed predictions)."""
    args = ["gan", "--dataset", "digits", "--epochs", "1", "--batch-size", "32",
            "--latent-dim", "8", "--g-features", "8", "--d-features", "8",
            "--max-steps-per-epoch", "3", "--workdir", tmp_path / "w"]
    r = cnnlab(*args, "--quality", "--classifier-epochs", 4, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "d_loss" in r.stdout and "D(generated)" in r.stdout and "| generated (360) |" in r.stdout
    quality = json.loads((tmp_path / "w" / "quality.json").read_text())
    assert train.load_run(quality["classifier"]).config.epochs == 4
    # the classifier trained on real digits recognises real test digits, not noise
    assert quality["real"]["accuracy"] > 0.5
    assert quality["real"]["class_entropy_bits"] > quality["noise"]["class_entropy_bits"]


@pytest.mark.exhaustive
def test_the_digits_do_not_collapse(tmp_path):
    """The workshop's DCGAN on the digits, upsampled to 28x28: after 14 epochs of batch 64
    (392 steps) the samples spread over the classes a classifier of the real digits sees
    (measured 2.92 bits of 3.32). On the digits at their own 8x8 every sample became the same
    image from the first epoch on (0.00 bits; README, day two)."""
    config = GanConfig(dataset="digits", epochs=14, batch_size=64, plots=False)
    train_gan(config, str(tmp_path / "gan"))
    quality = measure_quality(str(tmp_path / "gan"), classifier_epochs=20)
    assert quality["real"]["accuracy"] > 0.9
    assert quality["generated"]["class_entropy_bits"] > 2.0, quality
    samples = load_gan(str(tmp_path / "gan")).sample(64)
    assert samples.shape == (64, 28, 28, 1)
    assert np.std(samples, axis=0).mean() > 0.05  # one image 64 times would give 0
