"""``cnnlab forecast``: windows, the naive baseline, MLP and LSTM trained on a real series
shipped by statsmodels (offline), the error table and the plot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cnnlab.config import ForecastConfig
from cnnlab.errors import CnnlabError
from cnnlab.forecast import errors, load_series, run_forecast, windows
from PIL import Image


def test_windows_and_errors():
    series = np.arange(10.0)
    x, y = windows(series, 3, 0, 6)            # targets 3, 4, 5
    np.testing.assert_array_equal(x, [[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(y[:, 0], [3, 4, 5])
    x, y = windows(series, 3, 6, 10)           # test windows reach back into the training part
    np.testing.assert_array_equal(x[0], [3, 4, 5])
    np.testing.assert_array_equal(y[:, 0], [6, 7, 8, 9])
    assert errors(np.array([1.0, 3.0]), np.array([2.0, 2.0])) == {"rmse": 1.0, "mae": 1.0}


def test_the_series_are_real_and_offline():
    sun, years, text = load_series("sunspots")
    assert len(sun) == 309 and years[0] == 1700 and sun[0] == 5.0 and "sunspot" in text
    co2, years, _ = load_series("co2")
    assert len(co2) == 526 and 310 < co2[0] < 320 and 365 < co2[-1] < 375
    assert np.isfinite(co2).all()


# The real command, as a user runs it (one device, the session's compilation cache).
STRAIGHT = ("--epochs", "80", "--hidden", "16")
TIMES = ("epoch_seconds", "images_per_second")


def cnnlab(env, *args, **kwargs):
    return subprocess.run([sys.executable, "-m", "cnnlab", "forecast", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600, check=False,
                          **kwargs)


def records(workdir):
    """A model run's metrics.jsonl without its timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES}
            for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(env, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("forecast") / "straight"
    r = cnnlab(env, *STRAIGHT, "--workdir", workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir, r.stdout


def test_mlp_and_lstm_beat_the_naive_forecast_on_sunspots(straight):
    workdir, out = straight
    result = json.loads((workdir / "forecast.json").read_text())
    e = result["errors"]
    assert set(e) == {"naive", "mlp", "lstm"} and result["test"] == 309 - 207
    assert e["mlp"]["rmse"] < 0.8 * e["naive"]["rmse"], e
    assert e["lstm"]["rmse"] < 0.8 * e["naive"]["rmse"], e
    assert f"| mlp | {e['mlp']['rmse']:.3f} |" in out  # the table is printed
    assert json.loads((workdir / "config.json").read_text())["models"] == ["mlp", "lstm"]
    assert "| naive |" in (workdir / "forecast.md").read_text()
    with Image.open(workdir / "plots" / "forecast.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    # each model trained through the one loop, into a run of its own
    for name in ("mlp", "lstm"):
        run = workdir / name
        lines = records(run)
        assert [r["epoch"] for r in lines] == list(range(1, 81))
        assert lines[-1]["step"] == 80 * 6  # 195 windows in batches of 32
        # float targets: a regression's records have a loss and no accuracy
        assert "train_accuracy" not in lines[-1] and lines[-1]["train_loss"] < lines[0]["train_loss"]
        # the last epoch's test RMSE (series units) is the table's
        assert lines[-1]["test_rmse"] == pytest.approx(e[name]["rmse"], rel=1e-5)
        assert sorted(os.listdir(run / "checkpoints")) == ["450", "480"]  # every 25 epochs, keep 2
        assert os.listdir(run / "tensorboard")
        assert json.loads((run / "run.json").read_text())["steps_per_epoch"] == 6


def test_sigterm_then_resume_ends_as_the_straight_run(straight, env, tmp_path):
    """The real command stopped by SIGTERM while the LSTM trains (the MLP done) saves the
    current step and says how to continue; ``--resume`` (with the run's settings only) then
    ends with the straight run's error table and per-epoch records, to the last bit."""
    workdir = tmp_path / "stopped"
    # checkpoints every 5 epochs (the straight run's every 25: --resume may change that)
    args = (*STRAIGHT, "--checkpoint-every-epochs", "5", "--workdir", workdir)
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "forecast", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = workdir / "lstm" / "checkpoints" / "30"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not first.is_dir():
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err[-2000:])
    stop = max(int(n) for n in os.listdir(workdir / "lstm" / "checkpoints") if n.isdigit())
    assert 30 <= stop < 480
    assert err.strip().splitlines()[-1] == (
        f"cnnlab: stopped by SIGTERM at step {stop} (checkpoint of step {stop} saved); "
        f"continue with: cnnlab forecast --workdir {workdir} --resume"), err[-2000:]
    assert not (workdir / "forecast.json").exists()

    r = cnnlab(env, *args)
    assert r.returncode == 2 and "already holds a training run; pass --resume" in r.stderr
    r = cnnlab(env, *args, "--hidden", "8", "--resume")
    assert r.returncode == 2 and "--resume needs the settings" in r.stderr \
        and "hidden differs" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cnnlab(env, "--workdir", workdir, "--resume")  # the settings come from config.json
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming from step {stop} " in r.stdout and "resuming from step 480 " in r.stdout
    straight_dir, _ = straight
    assert json.loads((workdir / "forecast.json").read_text()) == \
        json.loads((straight_dir / "forecast.json").read_text())
    for name in ("mlp", "lstm"):
        assert records(workdir / name) == records(straight_dir / name), name

    # a finished forecast is not replaced unless asked to (the files are left as they were)
    before = (workdir / "forecast.json").read_bytes()
    with pytest.raises(CnnlabError, match="already holds the results.*--overwrite"):
        run_forecast(ForecastConfig(epochs=1, models=("mlp",)), str(workdir))
    assert (workdir / "forecast.json").read_bytes() == before
    again = run_forecast(ForecastConfig(epochs=1, models=("mlp",)), str(workdir),
                         overwrite=True)
    assert set(again["errors"]) == {"naive", "mlp"}
    assert not (workdir / "lstm").exists() and len(records(workdir / "mlp")) == 1


def test_the_feeder_keeps_float_targets():
    """Regression targets stay float on both feeding paths (class labels become int32)."""
    from cnnlab import data, distributed  # noqa: PLC0415 - JAX for this test only
    split = data.Split(np.zeros((4, 3), np.float32), np.array([[0.25], [1.5], [-2.0], [3.0]]))
    for on_device in (True, False):
        feeder = data.BatchFeeder(split, distributed.make_mesh(), on_device=on_device)
        _, y = feeder.batch(np.array([1, 2]))
        assert y.dtype == np.float32 and np.asarray(y).tolist() == [[1.5], [-2.0]]
    feeder = data.BatchFeeder(data.Split(split.images, np.array([3, 1], np.uint8)[[0, 1, 0, 1]]),
                              distributed.make_mesh())
    assert feeder.batch(np.array([0, 1]))[1].dtype == np.int32


@pytest.mark.parametrize("args, message", [
    (["--series", "bitcoin"], "series must be one of: sunspots, co2, got 'bitcoin'"),
    (["--models", "mlp,gru"], "models must be a non-empty list of: mlp, lstm, got ('mlp', 'gru')"),
    (["--lookback", "300"], "no training windows"),
    (["--train-fraction", "1.5"], "train_fraction must be a finite number in [0.1, 0.95]"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    r = subprocess.run([sys.executable, "-m", "cnnlab", "forecast", *args, "--epochs", "1",
                        "--workdir", str(tmp_path)], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
