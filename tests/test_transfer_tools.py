"""Transfer tools that do not mislead (issue 16, point 6): lr_find leaves out the start-up of its
moving average, warns when its minimum sits at the end of the sweep, and its suggestion trains a
small CNN without diverging; finetune runs on N devices, resumes exactly, and takes
``--weights none`` for the ImageNet backbones."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import cli, data, models, train, transfer
from cnnlab.config import FinetuneConfig, TrainConfig
from cnnlab.errors import Interrupted
from test_image_folder import make_folder


def _quadratic(p, batch):
    return batch * jnp.sum((p["w"] - 3.0) ** 2)


def test_lr_find_leaves_out_the_moving_averages_start_up():
    """The first losses are huge (a first batch unlike the rest): the smoothed curve falls
    steeply over the first points because the average fills up, not because anything learns.
    Neither the steepest point nor the minimum may come from there."""
    batches = [jnp.float32(50.0)] * 3 + [jnp.float32(1.0)] * 97
    params = {"w": jnp.zeros(4)}
    result = transfer.lr_find(_quadratic, params, batches, start_lr=1e-6, end_lr=1.0,
                              num_steps=100, skip_start=10)
    assert result.steepest >= result.lrs[10] and result.minimum >= result.lrs[10]
    # Without leaving them out (the old behaviour) the steepest point sits in the start-up.
    early = transfer.lr_find(_quadratic, params, batches, start_lr=1e-6, end_lr=1.0,
                             num_steps=100, skip_start=0)
    assert early.steepest < result.lrs[10]


def test_lr_find_warns_when_the_minimum_sits_at_the_end_of_the_sweep():
    params = {"w": jnp.zeros(4)}
    with pytest.warns(UserWarning, match="still falling at the end of the sweep"):
        short = transfer.lr_find(_quadratic, params, [jnp.float32(1.0)], start_lr=1e-7,
                                 end_lr=1e-4, num_steps=60)
    assert short.warning and short.minimum == pytest.approx(short.lrs[-1])
    assert short.suggestion == min(short.minimum / 10, short.steepest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sweep that reaches the blow-up: no warning
        full = transfer.lr_find(_quadratic, params, [jnp.float32(1.0)], start_lr=1e-7,
                                end_lr=1e3, num_steps=100)
    assert full.warning is None and full.minimum < full.lrs[-1]


def test_lr_finds_suggestion_trains_a_small_cnn_without_diverging():
    ds = data.load("fashion_mnist_subset")
    model = models.get("workshop_cnn", num_classes=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
    order = data.batch_indices(len(ds.train), 64, seed=0, epoch=0)
    batches = [(data.to_float(ds.train.images[i]), ds.train.labels[i]) for i in order]

    def loss_fn(p, batch):
        logits = model.apply({"params": p}, batch[0], train=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    found = transfer.lr_find(loss_fn, params, batches)
    assert found.warning is None
    assert 1e-5 < found.suggestion < 0.1, found  # the run was told lr = 1

    # A full epoch of Adam at the suggestion (constant rate, no warm-up): the loss falls and
    # stays finite, and the model learns (chance is 10%).
    state = train.create_train_state(model, optax.adam(found.suggestion), jax.random.key(0),
                                     (28, 28, 1))
    losses = []
    for idx in order:
        state, m = train.train_step(state, ds.train.images[idx], ds.train.labels[idx],
                                    jax.random.key(1))
        losses.append(float(m["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10]), losses
    assert max(losses[10:]) < 2 * losses[0]  # no blow-up along the way


# ------------------------------------------------------------------------------- finetune

@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A short real run: the workshop CNN on scikit-learn's 8x8 digits."""
    workdir = str(tmp_path_factory.mktemp("digits_run"))
    config = TrainConfig(model="workshop_cnn", dataset="digits", epochs=1, batch_size=64,
                         plots=False, tfds_dir=str(tmp_path_factory.mktemp("tfds")))
    train.train_and_evaluate(config, workdir)
    return workdir


def _finetune_argv(backbone, folder, workdir, tfds):
    return ["finetune", "--backbone", backbone, "--data-dir", str(folder), "--freeze-epochs",
            "2", "--epochs", "2", "--batch-size", "8", "--no-plots", "--no-tta", "--workdir",
            str(workdir), "--tfds-dir", str(tfds)]


@pytest.mark.slow
def test_finetune_runs_on_8_devices_like_on_one(digits_run, tmp_path, env):
    folder = make_folder(tmp_path / "stripes", per_class=8, broken=False, kind="stripes")
    records = {}
    for devices in (1, 8):
        e = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
        workdir = tmp_path / f"ft{devices}"
        r = subprocess.run([sys.executable, "-m", "cnnlab", *_finetune_argv(
            digits_run, folder, workdir, tmp_path / "tfds")], env=e, capture_output=True,
            text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        info = json.loads((workdir / "run.json").read_text())
        assert info["devices"] == devices and info["mesh"]["data"] == devices
        records[devices] = train.read_metrics(str(workdir))
    one, eight = records[1], records[8]
    assert [r["phase"] for r in eight[:-1]] == ["head", "head", "finetune", "finetune"]
    for a, b in zip(one, eight):  # the same run, summed in another order
        for key in ("train_loss", "val_loss", "val_accuracy"):
            if key not in a:  # the final record: validation only
                continue
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), (key, a, b)


def test_finetune_takes_weights_none_for_the_imagenet_backbones(tmp_path, capsys):
    folder = make_folder(tmp_path / "colours", per_class=6, broken=False)
    argv = ["finetune", "--backbone", "vgg16", "--data-dir", str(folder), "--image-size", "32",
            "--freeze-epochs", "2", "--epochs", "0", "--batch-size", "4", "--no-plots",
            "--no-tta", "--tfds-dir", str(tmp_path / "tfds")]
    assert cli.main(argv + ["--workdir", str(tmp_path / "a")]) == 2
    assert "or --weights none for a random initialisation" in capsys.readouterr().err
    assert cli.main(argv + ["--weights", "none", "--workdir", str(tmp_path / "b")]) == 0
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["backbone"] == "vgg16 with random initialisation (--weights none)"
    assert info["input_shape"] == [32, 32, 3]
    # It is a real, readable run: a VGG16 (random, seeded) with a 3-class head.
    run = train.load_run(str(tmp_path / "b"))
    assert run.state.params["predictions"]["kernel"].shape == (512, 3)
    assert run.logits(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 3)


class _InterruptAfter(transfer._Printer):
    """SIGINT to this process at the end of global epoch ``epoch`` (as Ctrl-C would)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def epoch_end(self, record: dict) -> None:
        super().epoch_end(record)
        if record["epoch"] == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("lose_newest", [False, True], ids=["mid-finetune", "from-head"])
def test_an_interrupted_finetune_resumes_bit_identically(digits_run, tmp_path, lose_newest,
                                                          capsys):
    folder = make_folder(tmp_path / "stripes", per_class=8, broken=False, kind="stripes")
    config = FinetuneConfig(backbone=digits_run, data_dir=str(folder), freeze_epochs=2,
                            epochs=2, batch_size=4, plots=False, tta=False,
                            tfds_dir=str(tmp_path / "tfds"))
    whole = transfer.finetune(config, str(tmp_path / "whole"))
    with pytest.raises(Interrupted) as stopped:
        transfer.finetune(config, str(tmp_path / "cut"), reporter=_InterruptAfter(3))
    assert stopped.value.saved
    if lose_newest:  # as if the process had died before the first fine-tuning checkpoint:
        # the newest is then the head phase's
        ckpts = sorted(int(p.name) for p in (tmp_path / "cut" / "checkpoints").iterdir()
                       if p.name.isdigit())
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / str(ckpts[-1]))
    capsys.readouterr()
    resumed = transfer.finetune(config, str(tmp_path / "cut"), resume=True)
    # 18 training images in batches of 4: 4 steps per epoch; the head phase saved step 8, the
    # first fine-tuning epoch step 12.
    out = capsys.readouterr().out
    assert f"resuming from step {8 if lose_newest else 12} " in out, out
    assert ("[head" in out) is False  # the head phase did not run again

    a, b = (train.load_run(str(tmp_path / w), step="latest") for w in ("whole", "cut"))
    assert a.step == b.step == whole["step"]
    jax.tree.map(np.testing.assert_array_equal, a.state.params, b.state.params)
    records = [train.read_metrics(str(tmp_path / w)) for w in ("whole", "cut")]
    drop = ("epoch_seconds", "images_per_second", "seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in records[0]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in records[1]]
    assert resumed["val_loss"] == whole["val_loss"]


def test_resume_refuses_other_settings(digits_run, tmp_path, capsys):
    folder = make_folder(tmp_path / "stripes", per_class=4, broken=False, kind="stripes")
    argv = _finetune_argv(digits_run, folder, tmp_path / "ft", tmp_path / "tfds")
    argv[argv.index("--epochs") + 1] = "0"
    assert cli.main(argv) == 0
    capsys.readouterr()
    argv[argv.index("--freeze-epochs") + 1] = "3"
    assert cli.main(argv + ["--resume"]) == 2
    assert "these differ: freeze_epochs" in capsys.readouterr().err
