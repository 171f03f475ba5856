"""Observability (issue 16, point 4): TensorBoard event files beside metrics.jsonl, read back with
the ``tensorboard`` package's own reader; ``--profile`` writes a jax.profiler trace; ``--help``
shows defaults; ``cnnlab --version``; ``py.typed`` is in the wheel."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import event_file_writer

import cnnlab
from cnnlab import cli, train
from cnnlab.config import TrainConfig


def read_events(workdir) -> EventAccumulator:
    events = EventAccumulator(str(workdir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_every_step_and_epoch_goes_to_event_files_tensorboard_reads(tmp_path):
    config = TrainConfig(model="mlp", model_kwargs={"hidden": 16}, dataset="digits", epochs=2,
                         batch_size=64, schedule="cosine", learning_rate=1e-2,
                         log_every_steps=7, plots=False, profile=3,
                         tfds_dir=str(tmp_path / "tfds"))
    _, final = train.train_and_evaluate(config, str(tmp_path / "run"))
    records = train.read_metrics(str(tmp_path / "run"))[:-1]
    events = read_events(tmp_path / "run")
    spe = records[0]["step"]

    # Every step: loss, accuracy and learning rate, at steps 1..N.
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, 2 * spe + 1))
    schedule = train.make_schedule("cosine", 1e-2, 2 * spe)
    np.testing.assert_allclose([e.value for e in events.Scalars("train/learning_rate")],
                               [float(schedule(s)) for s in range(2 * spe)], rtol=1e-5)
    for epoch, record in enumerate(records):  # the epoch's train_loss is the mean of its steps
        steps = losses[epoch * spe:(epoch + 1) * spe]
        assert np.mean([e.value for e in steps]) == pytest.approx(record["train_loss"], rel=1e-5)
        acc = events.Scalars("train/accuracy")[epoch * spe:(epoch + 1) * spe]
        assert np.mean([e.value for e in acc]) == pytest.approx(record["train_accuracy"],
                                                                rel=1e-5)
    # Every epoch: the validation metrics (and the rest of the record) at the epoch's step.
    for tag, key in (("val/loss", "val_loss"), ("val/accuracy", "val_accuracy"),
                     ("epoch/train_loss", "train_loss")):
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars(tag)] == \
            [(r["step"], r[key]) for r in records], tag
    # The test split once, at the end.
    [test] = events.Scalars("test/accuracy")
    assert test.step == final["step"] and test.value == pytest.approx(final["test_accuracy"])

    # --profile 3: a jax.profiler trace beside the event files, with the steps in it.
    [trace] = (tmp_path / "run" / "tensorboard" / "plugins" / "profile").glob("*/*.trace.json.gz")
    names = {e.get("name", "") for e in json.loads(gzip.decompress(trace.read_bytes()))
             ["traceEvents"]}
    assert any("step" in name for name in names), sorted(names)[:50]


def test_a_resumed_run_continues_its_event_files_without_duplicates(tmp_path, monkeypatch):
    # The hard case: the resumed process opens its event file within the same second as the first
    # (tensorboardX names files by the second), as on a fast machine; the clock is frozen for it.
    monkeypatch.setattr(event_file_writer, "time", types.SimpleNamespace(time=lambda: 1.7e9))
    config = TrainConfig(model="mlp", model_kwargs={"hidden": 8}, dataset="digits", epochs=2,
                         batch_size=128, plots=False, tfds_dir=str(tmp_path / "tfds"))
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    # The run as if its process had died before the last checkpoint: the resumed process replays
    # steps 11..20, whose events the first one had written already.
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "20")
    train.train_and_evaluate(config, workdir, resume=True)
    steps = [e.step for e in read_events(tmp_path / "run").Scalars("train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 2 * (1295 // 128)
    assert [e.step for e in read_events(tmp_path / "run").Scalars("val/loss")] == [10, 20]


def test_version_names_cnnlab_and_its_jax(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"cnnlab {cnnlab.__version__} (jax ") and "flax" in out


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    raise AssertionError("no subcommands")


def test_help_shows_every_default():
    for name, sub in _subparsers(cli.build_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            default = action.default
            if action.help == argparse.SUPPRESS or default in (None, False, [], True) \
                    or isinstance(action, argparse._HelpAction):
                continue
            assert f"default {default}" in " ".join(text.split()), (name, action.dest)
    # The generated flags show the config's defaults: `cnnlab train --help`.
    text = " ".join(_subparsers(cli.build_parser())["train"].format_help().split())
    assert "default 0.001" in text and "default 'adam'" in text and "--profile PROFILE" in text


@pytest.mark.slow
def test_the_wheel_ships_py_typed_and_the_version(tmp_path):
    root = cli.__file__.rsplit("/lib/cnnlab/", 1)[0]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(tmp_path), root], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    [wheel] = tmp_path.glob("cnnlab-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert "cnnlab/py.typed" in z.namelist()
        metadata = z.read(f"cnnlab-{cnnlab.__version__}.dist-info/METADATA").decode()
    assert f"Version: {cnnlab.__version__}" in metadata and "tensorboardX" in metadata
