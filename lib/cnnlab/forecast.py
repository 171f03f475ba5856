"""Time-series forecasting (``cnnlab forecast``): an MLP and an LSTM against the naive baseline.

The workshop's activities 1 and 2 on a real series that ships with ``statsmodels`` (no
download): yearly sunspot numbers 1700-2008 (309 values) or the Mauna Loa CO2 concentration,
weekly 1958-2001, averaged per month (526 values; missing weeks skipped).

Recipe (one-step-ahead, as in the workshop): the first ``train_fraction`` of the series trains,
the rest tests; values are scaled to [0, 1] with the *training* part's min and max; each example
is a window of the last ``lookback`` values and its target the next value
(:func:`windows`). Every model trains with Adam on mean squared error, full windows in shuffled
minibatches. The test error (RMSE and MAE, in the series' units) is compared with the naive
forecast "next = last value", which a model must beat to have learned anything.

Workdir (:class:`cnnlab.workdir.Workdir`, every file written atomically): ``config.json``,
``forecast.json`` (the error table), ``forecast.md`` (the table), ``plots/forecast.png`` (the
series and the test forecasts). Nothing is checkpointed (the models train in seconds); a workdir
that holds a forecast is replaced only with ``overwrite``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import plots
from cnnlab.config import SERIES, ForecastConfig
from cnnlab.data import batch_indices
from cnnlab.errors import CnnlabError
from cnnlab.models.sequence import FORECASTERS
from cnnlab.workdir import Workdir

__all__ = ["ForecastConfig", "load_series", "windows", "errors", "fit", "run_forecast",
           "format_table"]


def load_series(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(values float64 (T,), time in years (T,), description)`` of a series bundled with
    statsmodels."""
    import statsmodels.api as sm  # noqa: PLC0415 - a second of imports, only for this command
    if name == "sunspots":
        df = sm.datasets.sunspots.load_pandas().data
        return (df["SUNACTIVITY"].to_numpy(np.float64), df["YEAR"].to_numpy(np.float64),
                "yearly sunspot numbers 1700-2008 (statsmodels.datasets.sunspots)")
    if name == "co2":
        monthly = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
        years = monthly.index.year + (monthly.index.month - 1) / 12
        return (monthly.to_numpy(np.float64), np.asarray(years, np.float64),
                ("Mauna Loa CO2 (ppm), weekly 1958-2001 averaged per month "
                 "(statsmodels.datasets.co2)"))
    raise CnnlabError(f"unknown series {name!r}; choose one of: {', '.join(SERIES)}")


def windows(series: np.ndarray, lookback: int, start: int, stop: int) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Examples whose *target* index t runs over ``start..stop-1`` (t >= lookback):
    ``x[i] = series[t - lookback:t]`` (N, lookback), ``y[i] = series[t]`` (N, 1)."""
    targets = np.arange(max(start, lookback), stop)
    x = series[targets[:, None] - lookback + np.arange(lookback)[None, :]]
    return x.astype(np.float32), series[targets][:, None].astype(np.float32)


def errors(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``{"rmse": sqrt(mean (p - y)^2), "mae": mean |p - y|}``."""
    d = np.asarray(pred, np.float64).ravel() - np.asarray(target, np.float64).ravel()
    return {"rmse": float(np.sqrt(np.mean(d ** 2))), "mae": float(np.mean(np.abs(d)))}


def fit(model, x: np.ndarray, y: np.ndarray, config: ForecastConfig, key: jax.Array) -> Any:
    """Parameters of ``model`` trained with Adam on the mean squared error, ``config.epochs``
    shuffled passes over (x, y) in minibatches of ``config.batch_size`` (the last partial one
    dropped)."""
    params = model.init(key, jnp.asarray(x[:1]))["params"]
    tx = optax.adam(config.learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(
            lambda p: jnp.mean((model.apply({"params": p}, xb) - yb) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    batch = min(config.batch_size, len(x))
    for epoch in range(config.epochs):
        for idx in batch_indices(len(x), batch, seed=config.seed, epoch=epoch):
            params, opt_state, _ = step(params, opt_state, x[idx], y[idx])
    return params


def run_forecast(config: ForecastConfig, workdir: str, *, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Train every model of ``config.models`` on the series, forecast its test part one step
    ahead, and write the workdir of the module docstring.

    Returns:
      The ``forecast.json`` dict: ``{"series", "description", "train", "test", "errors": {name:
      {"rmse", "mae"}}, ...}`` with the naive last-value baseline under ``"naive"``.

    Raises:
      CnnlabError: a lookback that leaves no training windows, an unwritable workdir, or one
        that holds a forecast already (unless ``overwrite``).
    """
    wd = Workdir(workdir)
    wd.prepare(resume=False, overwrite=overwrite, results=("forecast.json",))
    values, years, description = load_series(config.series)
    split = int(len(values) * config.train_fraction)
    if split <= config.lookback + 1 or len(values) - split < 2:
        raise CnnlabError(f"lookback {config.lookback} leaves no training windows in the "
                          f"{split} training values of {config.series}")
    lo, hi = values[:split].min(), values[:split].max()
    scaled = (values - lo) / (hi - lo)
    x_tr, y_tr = windows(scaled, config.lookback, 0, split)
    x_te, y_te = windows(scaled, config.lookback, split, len(values))

    def unscale(v):
        return np.asarray(v, np.float64) * (hi - lo) + lo

    target = unscale(y_te)[:, 0]
    predictions = {"naive (last value)": unscale(x_te[:, -1])}
    table = {"naive": errors(predictions["naive (last value)"], target)}
    for i, name in enumerate(config.models):
        model = FORECASTERS[name](hidden=config.hidden, horizon=1)
        params = fit(model, x_tr, y_tr, config, jax.random.PRNGKey(config.seed + i))
        pred = unscale(np.asarray(jax.jit(model.apply)({"params": params}, x_te)))[:, 0]
        predictions[name] = pred
        table[name] = errors(pred, target)
        if progress:
            progress(f"{name}: test RMSE {table[name]['rmse']:.3f} (naive "
                     f"{table['naive']['rmse']:.3f})")
    result = {"series": config.series, "description": description, "train": split,
              "test": len(target), "lookback": config.lookback, "errors": table,
              "ratio_to_naive": {k: v["rmse"] / table["naive"]["rmse"] for k, v in table.items()}}
    wd.write_config(config)
    if config.plots and wd.main:
        plots.forecast(values, split, predictions, os.path.join(wd.plots_dir, "forecast.png"),
                       x=years, title=f"{description}: one-step-ahead test forecasts")
    wd.write_text("forecast.md", format_table(result) + "\n")
    wd.write_json("forecast.json", result)  # last: its presence marks a finished forecast
    return result


def format_table(result: dict) -> str:
    """The error table as Markdown: one row per model, the naive baseline first."""
    rows = [(f"{result['description']}; train {result['train']} values, "
             f"test {result['test']}, lookback {result['lookback']}"), "",
            "| model | test RMSE | test MAE | RMSE / naive |", "|---|---|---|---|"]
    for name, e in result["errors"].items():
        rows.append(f"| {name} | {e['rmse']:.3f} | {e['mae']:.3f} | "
                    f"{result['ratio_to_naive'][name]:.3f} |")
    return "\n".join(rows)
