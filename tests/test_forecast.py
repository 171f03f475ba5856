"""``cnnlab forecast``: windows, the naive baseline, MLP and LSTM trained on a real series
shipped by statsmodels (offline), the error table and the plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_mlp_and_lstm_beat_the_naive_forecast_on_sunspots(tmp_path):
    result = run_forecast(ForecastConfig(epochs=80, hidden=16), str(tmp_path))
    e = result["errors"]
    assert set(e) == {"naive", "mlp", "lstm"} and result["test"] == 309 - 207
    assert e["mlp"]["rmse"] < 0.8 * e["naive"]["rmse"], e
    assert e["lstm"]["rmse"] < 0.8 * e["naive"]["rmse"], e
    assert json.loads((tmp_path / "forecast.json").read_text())["errors"] == e
    assert json.loads((tmp_path / "config.json").read_text())["models"] == ["mlp", "lstm"]
    assert "| naive |" in (tmp_path / "forecast.md").read_text()
    with Image.open(tmp_path / "plots" / "forecast.png") as im:
        assert im.format == "PNG" and im.size[0] > 500
    # a finished forecast is not replaced unless asked to (the files are left as they were)
    before = (tmp_path / "forecast.json").read_bytes()
    with pytest.raises(CnnlabError, match="already holds the results.*--overwrite"):
        run_forecast(ForecastConfig(epochs=1, models=("mlp",)), str(tmp_path))
    assert (tmp_path / "forecast.json").read_bytes() == before
    again = run_forecast(ForecastConfig(epochs=1, models=("mlp",)), str(tmp_path),
                         overwrite=True)
    assert set(again["errors"]) == {"naive", "mlp"}


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
