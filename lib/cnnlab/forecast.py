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

Workdir: ``config.json``, ``forecast.json`` (the error table), ``forecast.png`` (the series
and the test forecasts), ``forecast.md`` (the table).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnlab import fileio
from cnnlab.errors import CnnlabError

SERIES = ("sunspots", "co2")


@dataclasses.dataclass(frozen=True)
class ForecastConfig:
    series: str = "sunspots"
    models: tuple[str, ...] = ("mlp", "lstm")
    lookback: int = 12
    train_fraction: float = 0.67
    hidden: int = 32
    epochs: int = 200
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from cnnlab.models.sequence import FORECASTERS

        if self.series not in SERIES:
            raise CnnlabError(f"unknown series {self.series!r}; choose one of: {', '.join(SERIES)}")
        bad = [m for m in self.models if m not in FORECASTERS]
        if bad or not self.models:
            raise CnnlabError(f"unknown forecaster {bad[0] if bad else ''!r}; choose from: "
                              f"{', '.join(FORECASTERS)}")
        if self.lookback < 1 or self.hidden < 1 or self.epochs < 1 or self.batch_size < 1:
            raise CnnlabError("lookback, hidden, epochs and batch size must be >= 1")
        if not 0.1 <= self.train_fraction <= 0.95:
            raise CnnlabError(f"train fraction must be in [0.1, 0.95], got {self.train_fraction}")


def load_series(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """``(values float64 (T,), time in years (T,), description)`` of a series bundled with
    statsmodels."""
    try:
        import statsmodels.api as sm
    except ImportError:  # pragma: no cover - a dependency; a clear line if it is missing
        raise CnnlabError("cnnlab forecast needs statsmodels: pip install statsmodels") from None
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
    from cnnlab.data import batch_indices

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


def run_forecast(config: ForecastConfig, workdir: str,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Train every model of ``config.models`` on the series, forecast its test part one step
    ahead, and write the workdir of the module docstring. Returns the ``forecast.json`` dict:
    ``{"series", "description", "train", "test", "errors": {name: {"rmse", "mae"}}, ...}``
    with the naive last-value baseline under ``"naive"``."""
    from cnnlab import plots
    from cnnlab.models.sequence import FORECASTERS

    config.validate()
    values, years, description = load_series(config.series)
    split = int(len(values) * config.train_fraction)
    if split <= config.lookback + 1 or len(values) - split < 2:
        raise CnnlabError(f"lookback {config.lookback} leaves no training windows in the "
                          f"{split} training values of {config.series}")
    lo, hi = values[:split].min(), values[:split].max()
    scaled = (values - lo) / (hi - lo)
    x_tr, y_tr = windows(scaled, config.lookback, 0, split)
    x_te, y_te = windows(scaled, config.lookback, split, len(values))
    unscale = lambda v: np.asarray(v, np.float64) * (hi - lo) + lo
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
    from cnnlab.train import prepare_workdir, write_json

    prepare_workdir(workdir, resume=False, overwrite=False)
    write_json(os.path.join(workdir, "config.json"), config.to_dict())
    write_json(os.path.join(workdir, "forecast.json"), result)
    fileio.write_text(os.path.join(workdir, "forecast.md"), format_table(result) + "\n")
    plots.forecast(values, split, predictions, os.path.join(workdir, "forecast.png"), x=years,
                   title=f"{description}: one-step-ahead test forecasts")
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


def add_cli(subparsers) -> None:
    """``cnnlab forecast`` (the hook of :mod:`cnnlab.cli`)."""
    d = ForecastConfig()
    f = subparsers.add_parser("forecast", help="MLP vs LSTM forecasts of a real series "
                              "(sunspots, co2) against the last-value baseline")
    f.add_argument("--series", default=d.series, help="sunspots (default) or co2")
    f.add_argument("--models", default=",".join(d.models), help="comma-separated: mlp,lstm")
    f.add_argument("--lookback", type=int, default=d.lookback)
    f.add_argument("--hidden", type=int, default=d.hidden)
    f.add_argument("--epochs", type=int, default=d.epochs)
    f.add_argument("--batch-size", type=int, default=d.batch_size)
    f.add_argument("--lr", type=float, default=d.learning_rate)
    f.add_argument("--train-fraction", type=float, default=d.train_fraction)
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--workdir", help="default runs/forecast_<series>")
    f.set_defaults(func=_cmd_forecast)


def _cmd_forecast(args) -> int:
    config = ForecastConfig(series=args.series, models=_names(args.models),
                            lookback=args.lookback, hidden=args.hidden, epochs=args.epochs,
                            batch_size=args.batch_size, learning_rate=args.lr,
                            train_fraction=args.train_fraction, seed=args.seed)
    workdir = args.workdir or os.path.join("runs", f"forecast_{args.series}")
    result = run_forecast(config, workdir, progress=print)
    print(format_table(result))
    print(f"workdir: {workdir} (forecast.png, forecast.json, forecast.md)")
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())
