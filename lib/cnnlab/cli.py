"""The ``cnnlab`` command line (also ``python -m cnnlab``).

Subcommands::

    cnnlab train      [--config NAME|FILE.py] [--model M] [--epochs N] [--lr LR] ... [--set F=V]
                      [--workdir W] [--resume | --overwrite]     (``cnnlab train --help``)
    cnnlab evaluate   --workdir W              test metrics of a run's selected checkpoint
    cnnlab predict    --workdir W IMAGE...     top-k classes of PNG/JPEG files of any size
    cnnlab predict    --model resnet50|vgg16 --weights FILE.h5 IMAGE...   ImageNet classes
    cnnlab visualize  --workdir W [IMAGE]      first-layer filters and feature maps as PNGs
    cnnlab finetune   --backbone B --data-dir ROOT ...           (``cnnlab finetune --help``)
    cnnlab gan        [--dataset D] [--epochs N] ... [--quality]  DCGAN, sample grids per epoch
    cnnlab forecast   [--series sunspots|co2] [--models mlp,lstm]   forecasts vs last value
    cnnlab text       [--data imdb.npz|tfds] ...                  IMDB review sentiment

``cnnlab train`` with no arguments is ``make train``: the workshop CNN on Fashion-MNIST (the full
data when found, otherwise the embedded subset), into ``runs/workshop_cnn``.

The flags of ``train``, ``finetune``, ``gan``, ``forecast`` and ``text`` are generated from the
fields of their configs in :mod:`cnnlab.config` (every field can be set; ``--set FIELD=VALUE``
also reaches into mapping fields: ``--set model_kwargs.widths=[8,16]``).

User mistakes (:class:`cnnlab.errors.CnnlabError`) print one line ``cnnlab: error: ...`` and exit
with status 2; a run stopped by SIGTERM/SIGINT prints one line saying how to resume and exits with
128 + the signal number; anything else is a bug and keeps its traceback.

JAX, Flax and the data libraries are imported inside the subcommand handlers, not at the top of
this module: ``--help`` and usage errors then answer at once instead of after seconds of imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings

from cnnlab import config as config_lib
from cnnlab import configs, xla_cpu
from cnnlab.config import FinetuneConfig, ForecastConfig, GanConfig, TextConfig, TrainConfig
from cnnlab.errors import CnnlabError, Interrupted

DEFAULT_CONFIG = "workshop_cnn"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other cnnlab error."""

    def error(self, message):
        sys.stderr.write(f"cnnlab: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


# ---------------------------------------------------------------------------------- train

def _train_config(args) -> TrainConfig:
    """The run's TrainConfig: a preset (or the workdir's config.json when resuming) with the
    explicitly given flags and ``--set`` assignments on top."""
    return _command_config(args, TrainConfig, lambda: configs.get(args.config or DEFAULT_CONFIG))


def _command_config(args, config_cls, fresh):
    """A command's config: ``fresh()`` (or the workdir's config.json with ``--resume`` and no
    ``--config``), the flags given and ``--set`` assignments on top; ``data_dir`` and
    ``tfds_dir`` made absolute (so a run's config works from any directory)."""
    saved = os.path.join(args.workdir, "config.json")
    if getattr(args, "resume", False) and os.path.exists(saved) \
            and getattr(args, "config", None) is None:
        with open(saved) as f:
            config = config_cls.from_dict(json.load(f))
    else:
        config = fresh()
    config = config.replace(**config_lib.given_arguments(args, config_cls))
    config = config_lib.apply_overrides(config, args.set)
    return config.replace(**{name: os.path.abspath(path) for name in ("data_dir", "tfds_dir")
                             if (path := getattr(config, name, None))})


class RichReporter:
    """Progress bar (steps, loss, accuracy, images/s) per epoch and one line per epoch."""

    def __init__(self):
        from rich.console import Console  # noqa: PLC0415 - rich only when training
        self.err = Console(stderr=True, highlight=False)
        self.progress = None
        self.task = None

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)

    def run_start(self, info: dict) -> None:
        mesh = " x ".join(f"{k}={v}" for k, v in info["mesh"].items())
        val = (f"; {info['val_examples']:,} images held out for validation"
               if info.get("val_examples") else "")
        print(f"training {info['model']} ({info['param_count']:,} parameters) on "
              f"{info['source']}{val}; {info['devices']} device(s) (mesh {mesh}), "
              f"{info['epochs']} epoch(s) of {info['steps_per_epoch']} steps", flush=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if not self.err.is_terminal:  # logs and pipes get the per-epoch lines only
            return
        from rich.progress import (BarColumn, MofNCompleteColumn,  # noqa: PLC0415 - as above
                                   Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} acc {task.fields[acc]} {task.fields[ips]} img/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.err, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, completed=done, loss="-",
                                           acc="-", ips="-")

    def step(self, done: int, values: dict) -> None:
        if self.progress is None:
            return
        self.progress.update(self.task, completed=done, loss=f"{values['loss']:.4f}",
                             acc=f"{values['accuracy']:.3f}" if "accuracy" in values else "-",
                             ips=f"{values['images_per_second']:,.0f}")

    def epoch_end(self, r: dict) -> None:
        self.close()
        evaluated = "".join(f"{name} loss {r[f'{split}_loss']:.4f} acc {r[f'{split}_accuracy']:.4f}  "
                            for split, name in (("val", "val"), ("test", "test"))
                            if f"{split}_loss" in r)
        phase = f"[{r['phase']}] " if r.get("phase") else ""
        print(f"epoch {r['epoch']:>3}  step {r['step']:>6}  {phase}train loss {r['train_loss']:.4f} "
              f"acc {r['train_accuracy']:.4f}  {evaluated}lr {r['learning_rate']:.2e}  "
              f"{r['epoch_seconds']:.1f} s  {r['images_per_second']:,.0f} img/s", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def cmd_train(args) -> int:
    from cnnlab import distributed  # noqa: PLC0415 - JAX only for subcommands (see top)
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from cnnlab.train import train_and_evaluate  # noqa: PLC0415 - after initialize, as JAX asks
    default_workdir = args.workdir is None
    if default_workdir:
        args.workdir = os.path.join("runs", os.path.splitext(os.path.basename(
            args.config or (args.model or DEFAULT_CONFIG)))[0])
    config = _train_config(args)
    overwrite = args.overwrite
    earlier = os.path.isdir(os.path.join(args.workdir, "checkpoints"))
    if default_workdir and not args.resume and earlier:
        overwrite = True  # the default workdir is scratch space; explicit ones are protected
        print(f"note: replacing the earlier run in {args.workdir} (pass --workdir to keep runs)")
    reporter = TrainReporter(config.top_k, args.workdir)  # process 0 only gets its calls
    try:
        train_and_evaluate(config, args.workdir, resume=args.resume, overwrite=overwrite,
                           reporter=reporter)
    except Interrupted as e:
        e.hint = (f"continue with: cnnlab train --workdir {args.workdir} --resume" if e.saved
                  else "nothing was saved yet; run the same command again")
        raise
    finally:
        reporter.close()
    return 0


class TrainReporter(RichReporter):
    """:class:`RichReporter` that prints the test results as soon as they are known."""

    def __init__(self, top_k: int, workdir: str):
        super().__init__()
        self.top_k, self.workdir = top_k, workdir

    def run_end(self, final: dict) -> None:
        self.close()
        _print_final(final, self.top_k, self.workdir)
        sys.stdout.flush()  # a pipe would hold the lines until the plots are done


def _print_final(final: dict, k: int, workdir: str) -> None:
    print(f"test accuracy {final['test_accuracy']:.2%} "
          f"(top-{k} {final[f'test_top{k}_accuracy']:.2%}, loss {final['test_loss']:.4f}) "
          f"on {final['test_examples']:,} test images after "
          f"{final['epoch']} epoch(s), {final['step']:,} steps, {final['seconds']:.1f} s")
    if "test_accuracy_tta" in final:
        print(f"test accuracy with flip test-time augmentation {final['test_accuracy_tta']:.2%}")
    if "val_accuracy" in final:
        stopped = "; early stopping ended the run" if final.get("stopped_early") else ""
        print(f"checkpoint: step {final['checkpoint_step']:,}, the lowest validation loss "
              f"({final['val_loss']:.4f}, validation accuracy {final['val_accuracy']:.2%}){stopped}")
    print(f"data: {final['source']}")
    print(f"workdir: {workdir} (metrics.jsonl, checkpoints/, plots/, tensorboard/)")


# ---------------------------------------------------------------------- evaluate / predict

def _require_workdir(args) -> str:
    if not args.workdir:
        raise CnnlabError(f"{args.command} needs --workdir W (the workdir of a `cnnlab train` run)")
    return args.workdir


def cmd_evaluate(args) -> int:
    import jax  # noqa: PLC0415 - JAX only for subcommands (see top)

    from cnnlab import data, distributed, train  # noqa: PLC0415 - as above
    run = train.load_run(_require_workdir(args))
    c = run.config
    ds = data.load(c.dataset, data_dir=args.data_dir or c.data_dir,
                   tfds_dir=args.tfds_dir or c.tfds_dir)
    mesh = distributed.make_mesh()
    n = distributed.data_size(mesh)
    bs = -(-min(args.batch_size, len(ds.test.labels)) // n) * n
    shardings = distributed.state_shardings(run.state, mesh)
    state = jax.device_put(run.state, shardings)
    eval_fn = train.make_eval_step(options=train.StepOptions.from_config(c), mesh=mesh,
                                   state_sharding=shardings)
    test = train.evaluate(state, data.BatchFeeder(ds.test, mesh), eval_fn, bs, top_k=c.top_k)
    print(f"test accuracy {test['accuracy']:.2%} "
          f"(top-{c.top_k} {test[f'top{c.top_k}_accuracy']:.2%}, loss {test['loss']:.4f}) "
          f"on {test['count']:,} test images; checkpoint step {run.step}")
    cm = test["confusion_matrix"]
    for name, row in zip(ds.class_names, cm):
        total = sum(row)
        acc = row[ds.class_names.index(name)] / total if total else float("nan")
        print(f"  {name:<20} {acc:7.2%}  ({total} images)")
    print(f"data: {ds.source}")
    return 0


def cmd_predict(args) -> int:
    if args.model:
        return _predict_imagenet(args)
    import numpy as np  # noqa: PLC0415 - as above

    from cnnlab.train import load_run  # noqa: PLC0415 - as above
    from cnnlab.visualize import read_image  # noqa: PLC0415 - as above
    workdir = _require_workdir(args)
    if not args.images:
        raise CnnlabError("predict needs at least one IMAGE file")
    run = load_run(workdir)
    images = np.stack([read_image(p, run.input_shape, invert=args.invert) for p in args.images])
    logits = run.logits(images)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    k = max(1, min(args.top_k, len(run.class_names)))
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:k]
        print(f"{path}: " + ", ".join(f"{run.class_names[i]} {p[i]:.1%}" for i in top))
    return 0


def _predict_imagenet(args) -> int:
    from cnnlab.transfer import imagenet_predict  # noqa: PLC0415 - as above
    results = imagenet_predict(args.model, args.weights, args.images, top=args.top_k)
    for path, top in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for _, name, p in top))
    return 0


def cmd_visualize(args) -> int:
    from cnnlab.train import load_run  # noqa: PLC0415 - as above
    from cnnlab.visualize import read_image, visualize  # noqa: PLC0415 - as above
    run = load_run(_require_workdir(args))
    if args.image:
        image = read_image(args.image, run.input_shape, invert=args.invert)
        stem = os.path.splitext(os.path.basename(args.image))[0]
    else:
        from cnnlab import data  # noqa: PLC0415 - as above
        ds = data.load(run.config.dataset, data_dir=run.config.data_dir,
                       tfds_dir=run.config.tfds_dir)
        image, stem = ds.test.images[0], "test0"
    out = args.out or os.path.join(run.workdir, "plots")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise CnnlabError(f"cannot write to {out}: {e.strerror or e}") from None
    paths = visualize(run, image, out, stem=stem)
    print(f"first-layer filters: {paths['filters']}")
    print(f"feature maps: {paths['feature_maps']}")
    return 0


# ---------------------------------------------------------------------------------- finetune

def cmd_finetune(args) -> int:
    from cnnlab.transfer import finetune  # noqa: PLC0415 - as above
    config = config_lib.apply_overrides(
        FinetuneConfig(**config_lib.given_arguments(args, FinetuneConfig)), args.set)
    workdir = args.workdir or os.path.join("runs", "finetune")
    with warnings.catch_warnings():
        # Our own warnings (bad images skipped) as plain "warning: ..." lines, not
        # "file.py:123: UserWarning:" with a source line.
        warnings.simplefilter("default")
        warnings.showwarning = _warning_printer(warnings.showwarning)
        try:
            final = finetune(config, workdir, overwrite=args.overwrite, resume=args.resume)
        except Interrupted as e:
            e.hint = ("continue with the same command and --resume" if e.saved else
                      "nothing was saved yet; run the command again with --overwrite")
            raise
    tta = (f", with flip TTA {final['val_accuracy_tta']:.2%}"
           if "val_accuracy_tta" in final else "")
    print(f"validation accuracy {final['val_accuracy']:.2%}{tta} (loss "
          f"{final['val_loss']:.4f}) on {final['val_examples']:,} images after "
          f"{final['epoch']} epoch(s), {final['seconds']:.1f} s")
    if final["most_confused"]:
        print("most confused: " + "; ".join(f"{t} -> {p} ({c}x)"
                                            for t, p, c in final["most_confused"][:3]))
    print(f"workdir: {workdir} (metrics.jsonl, checkpoints/, plots/, interpretation.json)")
    return 0


def _warning_printer(original):
    """cnnlab's own UserWarnings (images skipped) as "warning: ..." lines; others as usual."""
    def show(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning and "cnnlab" in filename:
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            original(message, category, filename, lineno, file, line)
    return show


# ------------------------------------------------------------------- gan / forecast / text

class GanReporter(RichReporter):
    """:class:`RichReporter` with one line per epoch of both networks' figures."""

    def epoch_end(self, r: dict) -> None:
        self.close()
        print(f"epoch {r['epoch']:>3}  step {r['step']:>6}  d_loss {r['train_d_loss']:.4f}  "
              f"g_loss {r['train_g_loss']:.4f}  D(real) {r['train_d_real']:.3f}  "
              f"D(generated) {r['train_d_fake']:.3f}  {r['epoch_seconds']:.1f} s  "
              f"{r['images_per_second']:,.0f} img/s", flush=True)


def _resume_hint(command: str, workdir: str):
    def hint(e: Interrupted) -> str:
        return (f"continue with: cnnlab {command} --workdir {workdir} --resume" if e.saved
                else "nothing was saved yet; run the command again with --overwrite")
    return hint


def _run_reported(run, reporter: RichReporter, hint):
    """``run(reporter)``, the progress bar closed and an interruption given its hint."""
    try:
        return run(reporter)
    except Interrupted as e:
        e.hint = hint(e)
        raise
    finally:
        reporter.close()


def cmd_gan(args) -> int:
    from cnnlab import gan, gan_quality  # noqa: PLC0415 - JAX only for subcommands (see top)
    args.workdir = args.workdir or os.path.join("runs", "gan")
    config = _command_config(args, GanConfig, GanConfig)
    final = _run_reported(
        lambda reporter: gan.train_gan(config, args.workdir, resume=args.resume,
                                       overwrite=args.overwrite, reporter=reporter),
        GanReporter(), _resume_hint("gan", args.workdir))
    print(f"data: {final['source']}")
    print(f"workdir: {args.workdir} (plots/samples_epoch_*.png, plots/losses.png, "
          "metrics.jsonl, checkpoints/, tensorboard/)")
    if args.quality:
        print(gan_quality.format_table(gan.measure_quality(
            args.workdir, classifier_epochs=args.classifier_epochs)))
    return 0


class ForecastReporter(RichReporter):
    """Notes (resuming, ...) only: a forecaster's epochs take milliseconds; one line per model
    comes from ``cnnlab forecast`` itself."""

    def run_start(self, info: dict) -> None:
        print(f"training {info['model']} ({info['param_count']:,} parameters): "
              f"{info['epochs']} epochs of {info['steps_per_epoch']} steps", flush=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None: ...
    def epoch_end(self, r: dict) -> None: ...


def cmd_forecast(args) -> int:
    from cnnlab import forecast  # noqa: PLC0415 - JAX only for subcommands (see top)
    args.workdir = args.workdir or os.path.join("runs", f"forecast_{args.series or 'sunspots'}")
    config = _command_config(args, ForecastConfig, ForecastConfig)
    result = _run_reported(
        lambda reporter: forecast.run_forecast(config, args.workdir, resume=args.resume,
                                               overwrite=args.overwrite, reporter=reporter,
                                               progress=print),
        ForecastReporter(), _resume_hint("forecast", args.workdir))
    print(forecast.format_table(result))
    print(f"workdir: {args.workdir} (forecast.json, forecast.md, plots/forecast.png; one run "
          f"per model: {', '.join(n + '/' for n in config.models)})")
    return 0


def cmd_text(args) -> int:
    from cnnlab import text  # noqa: PLC0415 - JAX only for subcommands (see top)
    args.workdir = args.workdir or os.path.join("runs", "imdb")
    config = _command_config(args, TextConfig, TextConfig)
    if config.data != "tfds":
        config = config.replace(data=os.path.abspath(os.path.expanduser(config.data)))
    final = _run_reported(
        lambda reporter: text.train_text(config, args.workdir, resume=args.resume,
                                         overwrite=args.overwrite, reporter=reporter),
        RichReporter(), _resume_hint("text", args.workdir))
    print(f"test accuracy {final['test_accuracy']:.2%}; data: {final['source']}")
    print(f"workdir: {args.workdir} (metrics.jsonl, checkpoints/, plots/curves.png)")
    return 0


# ---------------------------------------------------------------------------------- parser

def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="set any config field, JSON value; dotted names reach into mapping "
                        "fields: --set model_kwargs.widths=[32,64,128]")


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE", help="import MODULE (a module name from the current "
                        "directory or sys.path, or a FILE.py) first: it registers your models "
                        "with cnnlab.models.register; repeatable. A run records it in run.json, "
                        "so evaluate/predict/visualize/finetune find the model again")


def _import_models(args) -> None:
    """``--import`` (and a ``--config FILE.py`` that may register models) before anything
    looks a model up."""
    specs = list(getattr(args, "imports", []))
    config = getattr(args, "config", None)
    if args.command == "train" and config and config.endswith(".py") and os.path.isfile(config):
        specs.append(config)
    if specs:
        from cnnlab import models  # noqa: PLC0415 - JAX only for subcommands (see top)
        models.import_models(specs)


def _train_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model, validating after every epoch",
                       description="Flags override single fields of the config (a preset, or "
                       "the workdir's config.json with --resume); defaults shown are "
                       "TrainConfig's, a preset may change them.")
    t.add_argument("--config", help="preset name (see cnnlab.configs) or FILE.py with "
                   f"get_config(); default {DEFAULT_CONFIG}")
    config_lib.add_arguments(t, TrainConfig)
    _add_set(t)
    t.add_argument("--workdir", help="where metrics, checkpoints and plots go "
                   "(default runs/<config>)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint that restores")
    g.add_argument("--overwrite", action="store_true", help="delete an earlier run in --workdir")
    t.add_argument("--coordinator", help="multi-process: HOST:PORT of process 0")
    t.add_argument("--num-processes", type=int)
    t.add_argument("--process-id", type=int)
    _add_import(t)
    t.set_defaults(func=cmd_train)


def _finetune_parser(sub) -> None:
    f = sub.add_parser("finetune", help="transfer a pretrained network to your own image folder")
    config_lib.add_arguments(f, FinetuneConfig)
    _add_set(f)
    f.add_argument("--workdir", help="where metrics, checkpoints and plots go "
                   "(default runs/finetune)")
    g = f.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --workdir from its "
                   "newest checkpoint (same settings)")
    g.add_argument("--overwrite", action="store_true", help="delete an earlier run in --workdir")
    _add_import(f)
    f.set_defaults(func=cmd_finetune)


def _add_run_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set``, ``--workdir`` and ``--resume``/``--overwrite`` of a command that writes a run."""
    _add_set(parser)
    parser.add_argument("--workdir", help=f"where the run goes (default {what})")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --workdir "
                   "from its newest checkpoint (same settings; --epochs may grow)")
    g.add_argument("--overwrite", action="store_true", help="delete an earlier run in --workdir")


def _daytwo_parsers(sub) -> None:
    """``cnnlab gan``, ``forecast`` and ``text``: the workshop's second day."""
    g = sub.add_parser("gan", help="train the workshop's DCGAN; a grid of samples per epoch",
                       description="Flags override single fields of GanConfig (with --resume: "
                       "of the run's config.json).")
    config_lib.add_arguments(g, GanConfig)
    _add_run_flags(g, "runs/gan")
    g.add_argument("--quality", action="store_true", help="after training: the sample-quality "
                   "figures of a classifier trained on the real images (quality.json)")
    g.add_argument("--classifier-epochs", type=int, default=3, help="epochs of that classifier "
                   "(default %(default)s; the 1,437 digits need about 20)")
    g.set_defaults(func=cmd_gan)
    f = sub.add_parser("forecast", help="MLP vs LSTM forecasts of a real series (sunspots, co2) "
                       "against the last-value baseline")
    config_lib.add_arguments(f, ForecastConfig)
    _add_run_flags(f, "runs/forecast_SERIES")
    f.set_defaults(func=cmd_forecast)
    t = sub.add_parser("text", help="IMDB review sentiment with an embedding-LSTM classifier "
                       "(Keras imdb.npz or TFDS imdb_reviews)")
    config_lib.add_arguments(t, TextConfig)
    _add_run_flags(t, "runs/imdb")
    t.set_defaults(func=cmd_text)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Train, evaluate and look inside CNNs (JAX/Flax).")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _train_parser(sub)

    e = sub.add_parser("evaluate", help="test metrics of a run's selected checkpoint")
    e.add_argument("--workdir", help="the workdir of a cnnlab train (or finetune) run")
    e.add_argument("--batch-size", type=int, default=2000,
                   help="images per evaluation batch (default %(default)s)")
    e.add_argument("--data-dir", help="where the data set's files are (default: the run's)")
    e.add_argument("--tfds-dir", help="TFDS data dir (default: the run's)")
    _add_import(e)
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files (PNG, JPEG, any size)")
    p.add_argument("--workdir", help="the workdir of a cnnlab train (or finetune) run")
    p.add_argument("--model", help="resnet50 or vgg16: ImageNet predictions (with --weights)")
    p.add_argument("--weights", help="Keras ImageNet .h5 file for --model")
    p.add_argument("--top-k", type=int, default=3,
                   help="classes shown per image (default %(default)s)")
    p.add_argument("--invert", default="auto",
                   help="auto (invert light-background grayscale images), yes or no "
                   "(default %(default)s)")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="PNG or JPEG files, any size")
    _add_import(p)
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("visualize", help="first-layer filters and feature maps as PNG files")
    v.add_argument("--workdir", help="the workdir of a cnnlab train (or finetune) run")
    v.add_argument("--out", help="output directory (default WORKDIR/plots)")
    v.add_argument("--invert", default="auto", help="as for predict (default %(default)s)")
    v.add_argument("image", nargs="?", metavar="IMAGE",
                   help="image file (default: the first test image)")
    _add_import(v)
    v.set_defaults(func=cmd_visualize)

    _finetune_parser(sub)
    _daytwo_parsers(sub)
    return parser


def version_text() -> str:
    """``cnnlab 0.1.0 (jax ..., flax ..., Python ...)``: read from the installed packages'
    metadata, without importing them."""
    from importlib import metadata  # noqa: PLC0415 - only for --version

    import cnnlab  # noqa: PLC0415 - the package's own version, one source of truth

    def v(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return (f"cnnlab {cnnlab.__version__} (jax {v('jax')}, flax {v('flax')}, Python "
            f"{sys.version.split()[0]})")


def main(argv: list[str] | None = None) -> int:
    # orbax and TFDS log routine notes through absl at WARNING; keep the terminal for our lines.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        # After parsing (it imports jax: --help stays instant), before JAX starts its backend.
        xla_cpu.use_multithreaded_convolutions()  # CNNLAB_XLA_FLAGS=off: not
        from cnnlab.compilation import enable_compilation_cache  # noqa: PLC0415 - see top
        enable_compilation_cache()
        _import_models(args)
        status = args.func(args)
        return int(status or 0)
    except CnnlabError as e:
        message = " ".join(str(e).split())  # always one line
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"cnnlab: {e}; {e.hint or 'continue with the same command and --resume'}",
              file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("cnnlab: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
