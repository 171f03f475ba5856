"""Time-series forecasting (``cnnlab forecast``): an MLP and an LSTM against the naive baseline.

The workshop's activities 1 and 2 on a real series that ships with ``statsmodels`` (no
download): yearly sunspot numbers 1700-2008 (309 values) or the Mauna Loa CO2 concentration,
weekly 1958-2001, averaged per month (526 values; missing weeks skipped).

Recipe (one-step-ahead, as in the workshop): the first ``train_fraction`` of the series trains,
the rest tests; values are scaled to [0, 1] with the *training* part's min and max; each example
is a window of the last ``lookback`` values and its target the next value
(:func:`windows`). Every model trains with Adam on the mean squared error (float targets:
:func:`cnnlab.train.mean_squared_error`), full windows in shuffled minibatches, through the one
training loop of cnnlab (:func:`cnnlab.loop.fit`, :func:`train_model`). The test error (RMSE and
MAE, in the series' units) is compared with the naive forecast "next = last value", which a
model must beat to have learned anything.

Workdir (:class:`cnnlab.workdir.Workdir`, every file written atomically)::

    config.json          the ForecastConfig
    forecast.json        the error table (last: its presence marks a finished forecast)
    forecast.md          the table in Markdown
    plots/forecast.png   the series and the test forecasts
    mlp/, lstm/          one run per model, as ``cnnlab train``'s: run.json, metrics.jsonl (per
                         epoch train_loss, test_loss (scaled MSE) and test_rmse), checkpoints/
                         (every ``checkpoint_every_epochs`` and the last epoch), tensorboard/

A model's noise and shuffling come from ``(seed, the model's index in FORECASTERS)`` and
``(seed, epoch)``, whatever else ``--models`` lists, so ``--resume`` (after SIGTERM, or with
more ``--epochs``) ends bit-identical to a run that never stopped; a workdir that holds a
forecast is replaced only with ``overwrite``.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
import optax

from cnnlab import data, distributed, models, plots, train
from cnnlab.config import SERIES, ForecastConfig
from cnnlab.data.feeding import BatchFeeder
from cnnlab.errors import CnnlabError
from cnnlab.loop import Loop, LoopSpec, Reporter, fit
from cnnlab.models.sequence import FORECASTERS
from cnnlab.workdir import RunInfo, Workdir

__all__ = ["ForecastConfig", "load_series", "windows", "errors", "train_model", "run_forecast",
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


@functools.cache
def _predict_fn(model: nn.Module) -> Callable:
    return jax.jit(lambda params, x: model.apply({"params": params}, x))


def train_model(model: nn.Module, train_split: data.Split, test_split: data.Split,
                config: ForecastConfig, wd: Workdir, *, index: int, resume: bool,
                reporter: Reporter, unit_scale: float = 1.0) -> train.TrainState:
    """Train one forecaster through :func:`cnnlab.loop.fit` into its run directory ``wd``.

    Args:
      model: a forecaster, (N, lookback) -> (N, 1).
      train_split, test_split: windows (N, lookback) float32 and targets (N, 1) float32 (the
        feeder keeps float targets float: :func:`cnnlab.data.feeding.label_array`).
      config: epochs, batch size, learning rate, seed, checkpointing.
      wd: the model's run directory (prepared).
      index: the model's index in :data:`~cnnlab.models.sequence.FORECASTERS` (its keys are
        ``split(key(seed + index))``).
      resume: continue from the newest checkpoint that restores.
      reporter: progress callbacks.
      unit_scale: series units per scaled unit (``test_rmse`` is reported in series units).

    Returns:
      The trained state (every epoch's record in ``wd``'s ``metrics.jsonl``).
    """
    mesh = distributed.make_mesh()
    rep = distributed.replicated(mesh)
    create = functools.partial(train.create_train_state, model,
                               optax.adam(config.learning_rate),
                               input_shape=(1, *train_split.images.shape[1:]))
    abstract = jax.eval_shape(create, jax.random.key(0))
    state_sharding = distributed.state_shardings(abstract, mesh)
    init_key, run_key = (jax.device_put(k, rep) for k in
                         jax.random.split(jax.random.key(config.seed + index)))
    batch = min(config.batch_size, len(train_split))
    spe = len(train_split) // batch
    ckpts = wd.checkpoints(keep=config.keep_checkpoints)
    try:
        state, meta, history = train.restore_or_create(wd, ckpts, create, state_sharding,
                                                       init_key, resume=resume,
                                                       reporter=reporter)
        wd.write_run_info(RunInfo(
            class_names=(), input_shape=tuple(train_split.images.shape[1:]),
            dataset=config.series, source=f"statsmodels {config.series}",
            train_examples=len(train_split), val_examples=0, test_examples=len(test_split),
            param_count=models.param_count(abstract.params), devices=jax.device_count(),
            processes=jax.process_count(), mesh=dict(mesh.shape), steps_per_epoch=spe))
        wd.log_epochs(history)
        predict = _predict_fn(model)

        def evaluate_test(s) -> dict:
            # A measurement every epoch (the curves), never used to choose anything.
            pred = np.asarray(predict(s.params, test_split.images), np.float64)
            mse = float(np.mean((pred - test_split.labels) ** 2))
            return {"test_loss": mse, "test_rmse": float(np.sqrt(mse)) * unit_scale}

        loop = Loop(
            train_step=train.make_train_step(mesh=mesh, state_sharding=state_sharding),
            feeder=BatchFeeder(train_split, mesh), run_key=run_key, evaluate=evaluate_test,
            lr_at=lambda s: config.learning_rate, workdir=wd, checkpoints=ckpts,
            reporter=reporter,
            spec=LoopSpec(epochs=config.epochs, steps_per_epoch=spe, batch_size=batch,
                          seed=config.seed, log_every_steps=config.log_every_steps,
                          checkpoint_every_epochs=config.checkpoint_every_epochs,
                          select_best=False))
        reporter.run_start({"model": type(model).__name__, "dataset": config.series,
                            "source": f"statsmodels {config.series}",
                            "devices": jax.device_count(), "mesh": dict(mesh.shape),
                            "param_count": models.param_count(abstract.params),
                            "steps_per_epoch": spe, "epochs": config.epochs,
                            "val_examples": 0})
        result = fit(state, loop, history=history, meta=meta)
        ckpts.wait()
        return result.state
    finally:
        wd.close_events()
        ckpts.close()


def _prepare(config: ForecastConfig, workdir: str, *, resume: bool, overwrite: bool
             ) -> Workdir:
    """The workdir of the module docstring, checked: a finished forecast is replaced only with
    ``overwrite`` (which also removes every model's run), ``resume`` needs the run's settings."""
    wd = Workdir(workdir)
    wd.prepare(resume=resume, overwrite=overwrite,
               results=() if resume else ("forecast.json",))
    if resume:
        wd.check_resumable(config)
    elif overwrite and wd.main:
        for name in FORECASTERS:  # every model's run, also of models not asked for now
            if os.path.isdir(wd.file(name)):
                shutil.rmtree(wd.file(name))
    return wd


def run_forecast(config: ForecastConfig, workdir: str, *, resume: bool = False,
                 overwrite: bool = False, reporter: Reporter | None = None,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Train every model of ``config.models`` on the series, forecast its test part one step
    ahead, and write the workdir of the module docstring.

    Args:
      config: the forecast's settings.
      workdir: where everything goes.
      resume: continue each model from its newest checkpoint (a model that finished stays as
        it is); the settings must be the run's except :data:`ForecastConfig.RESUMABLE`.
      overwrite: replace an earlier forecast in ``workdir``.
      reporter: progress callbacks of the training loop.
      progress: gets one line per trained model (its test RMSE).

    Returns:
      The ``forecast.json`` dict: ``{"series", "description", "train", "test", "errors": {name:
      {"rmse", "mae"}}, ...}`` with the naive last-value baseline under ``"naive"``.

    Raises:
      CnnlabError: a lookback that leaves no training windows, an unwritable workdir, one that
        holds a forecast already (unless ``overwrite``), or a model run (unless ``resume``), a
        resume with other settings.
      Interrupted: SIGTERM or SIGINT (the current step is saved first).
    """
    reporter = reporter or Reporter()
    wd = _prepare(config, workdir, resume=resume, overwrite=overwrite)
    values, years, description = load_series(config.series)
    split = int(len(values) * config.train_fraction)
    if split <= config.lookback + 1 or len(values) - split < 2:
        raise CnnlabError(f"lookback {config.lookback} leaves no training windows in the "
                          f"{split} training values of {config.series}")
    lo, hi = values[:split].min(), values[:split].max()
    scaled = (values - lo) / (hi - lo)
    train_split = data.Split(*windows(scaled, config.lookback, 0, split))
    test_split = data.Split(*windows(scaled, config.lookback, split, len(values)))
    runs = {name: Workdir(wd.file(name)) for name in config.models}
    for run in runs.values():  # refuse an occupied workdir before anything trains
        run.prepare(resume=resume, overwrite=overwrite)
    wd.write_config(config)

    def unscale(v):
        return np.asarray(v, np.float64) * (hi - lo) + lo

    target = unscale(test_split.labels)[:, 0]
    predictions = {"naive (last value)": unscale(test_split.images[:, -1])}
    table = {"naive": errors(predictions["naive (last value)"], target)}
    for name, run in runs.items():
        model = FORECASTERS[name](hidden=config.hidden, horizon=1)
        state = train_model(model, train_split, test_split, config, run,
                            index=list(FORECASTERS).index(name), resume=resume, reporter=reporter,
                            unit_scale=hi - lo)
        pred = unscale(np.asarray(_predict_fn(model)(state.params, test_split.images)))[:, 0]
        predictions[name] = pred
        table[name] = errors(pred, target)
        if progress:
            progress(f"{name}: test RMSE {table[name]['rmse']:.3f} (naive "
                     f"{table['naive']['rmse']:.3f})")
    result = {"series": config.series, "description": description, "train": split,
              "test": len(target), "lookback": config.lookback, "errors": table,
              "ratio_to_naive": {k: v["rmse"] / table["naive"]["rmse"] for k, v in table.items()}}
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
