"""The ``cnnlab`` command line (also ``python -m cnnlab``).

Subcommands::

    cnnlab train      [--config NAME|FILE.py] [--model M] [--dataset D] [--epochs N]
                      [--batch-size B] [--optimizer O] [--lr LR] [--seed S] [--workdir W]
                      [--resume | --overwrite] [--data-dir DIR] ...   (``cnnlab train --help``)
    cnnlab evaluate   --workdir W              test metrics of the newest checkpoint
    cnnlab predict    --workdir W IMAGE...     top-k classes of PNG/JPEG files of any size
    cnnlab visualize  --workdir W [IMAGE]      first-layer filters and feature maps as PNGs

``cnnlab train`` with no arguments is ``make train``: the workshop CNN on Fashion-MNIST (the full
data when found, otherwise the embedded subset), into ``runs/workshop_cnn``.

User mistakes (:class:`cnnlab.errors.CnnlabError`) print one line ``cnnlab: error: ...`` and exit
with status 2; anything else is a bug and keeps its traceback.

Extension hook
--------------
Other modules add subcommands without editing this file. For each module name in
:data:`EXTENSIONS` that can be imported and has a function ``add_cli(subparsers)``, that
function is called with the ``argparse`` subparsers object after the built-in subcommands exist.
It may

- add a subcommand: ``p = subparsers.add_parser("finetune", help=...)``, add its arguments, and
  ``p.set_defaults(func=handler)``, where ``handler(args) -> int | None`` (the exit status) may
  raise CnnlabError for user mistakes;
- extend a built-in one: ``p = subparsers.choices["predict"]``, ``p.add_argument("--weights")``,
  then wrap the built-in handler, which stays available as ``p.get_default("func")``::

      builtin = p.get_default("func")
      p.set_defaults(func=lambda args: my_predict(args) if args.weights else builtin(args))

  (``predict`` has no ``--model`` option of its own, and its ``--workdir`` is only required by
  the built-in handler, so an extension may add ``--model resnet50 --weights FILE.h5``.)
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from cnnlab.errors import CnnlabError

EXTENSIONS = ("cnnlab.transfer", "cnnlab.gan", "cnnlab.forecast", "cnnlab.text")
DEFAULT_CONFIG = "workshop_cnn"

# flag -> TrainConfig field, for the flags that override single config fields
TRAIN_FLAGS = {
    "model": "model", "dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size",
    "eval_batch_size": "eval_batch_size", "optimizer": "optimizer", "lr": "learning_rate",
    "momentum": "momentum", "schedule": "schedule", "warmup_epochs": "warmup_epochs",
    "weight_decay": "weight_decay", "label_smoothing": "label_smoothing", "augment": "augment",
    "seed": "seed", "precision": "precision", "max_steps_per_epoch": "max_steps_per_epoch",
    "keep_checkpoints": "keep_checkpoints", "checkpoint_every_steps": "checkpoint_every_steps",
    "model_parallelism": "model_parallelism", "sharding": "sharding", "data_dir": "data_dir",
    "tfds_dir": "tfds_dir", "plots": "plots", "data_on_device": "data_on_device",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other cnnlab error."""

    def error(self, message):
        sys.stderr.write(f"cnnlab: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


# ---------------------------------------------------------------------------------- train

def _train_config(args):
    """The run's TrainConfig: a preset (or the workdir's config.json when resuming) with the
    explicitly given flags on top."""
    import json
    from cnnlab import configs
    from cnnlab.train import TrainConfig
    saved = os.path.join(args.workdir, "config.json")
    if args.resume and os.path.exists(saved) and args.config is None:
        with open(saved) as f:
            config = TrainConfig.from_dict(json.load(f))
    else:
        config = configs.get(args.config or DEFAULT_CONFIG)
    changes = {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items()
               if getattr(args, flag, None) is not None}
    return config.replace(**changes)


class RichReporter:
    """Progress bar (steps, loss, accuracy, images/s) per epoch and one line per epoch."""

    def __init__(self):
        from rich.console import Console
        self.err = Console(stderr=True, highlight=False)
        self.progress = None
        self.task = None

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)

    def run_start(self, info: dict) -> None:
        mesh = " x ".join(f"{k}={v}" for k, v in info["mesh"].items())
        print(f"training {info['model']} ({info['param_count']:,} parameters) on "
                       f"{info['source']}; {info['devices']} device(s) (mesh {mesh}), "
                       f"{info['epochs']} epoch(s) of {info['steps_per_epoch']} steps", flush=True)

    def epoch_start(self, epoch: int, epochs: int, steps: int, done: int) -> None:
        if not self.err.is_terminal:  # logs and pipes get the per-epoch lines only
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
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
                             acc=f"{values['accuracy']:.3f}",
                             ips=f"{values['images_per_second']:,.0f}")

    def epoch_end(self, r: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        print(
            f"epoch {r['epoch']:>3}  step {r['step']:>6}  train loss {r['train_loss']:.4f} "
            f"acc {r['train_accuracy']:.4f}  test loss {r['test_loss']:.4f} "
            f"acc {r['test_accuracy']:.4f}  lr {r['learning_rate']:.2e}  "
            f"{r['epoch_seconds']:.1f} s  {r['images_per_second']:,.0f} img/s", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def cmd_train(args) -> int:
    from cnnlab import distributed
    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    from cnnlab.train import train_and_evaluate
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
    reporter = RichReporter()
    try:
        final = train_and_evaluate(config, args.workdir, resume=args.resume, overwrite=overwrite,
                                   reporter=reporter)
    finally:
        reporter.close()
    if distributed.is_main_process():
        k = config.top_k
        print(f"test accuracy {final['test_accuracy']:.2%} "
              f"(top-{k} {final[f'test_top{k}_accuracy']:.2%}, loss {final['test_loss']:.4f}) "
              f"on {final['test_examples']:,} test images after "
              f"{final['epoch']} epoch(s), {final['step']:,} steps, {final['seconds']:.1f} s")
        print(f"data: {final['source']}")
        print(f"workdir: {args.workdir} (metrics.jsonl, checkpoints/, plots/)")
    return 0


# ---------------------------------------------------------------------- evaluate / predict

def _require_workdir(args) -> str:
    if not args.workdir:
        raise CnnlabError(f"{args.command} needs --workdir W (the workdir of a `cnnlab train` run)")
    return args.workdir


def cmd_evaluate(args) -> int:
    import jax
    from cnnlab import data, distributed
    from cnnlab.train import BatchFeeder, StepOptions, evaluate, load_run, make_step_fns
    run = load_run(_require_workdir(args))
    c = run.config
    ds = data.load(c.dataset, data_dir=args.data_dir or c.data_dir,
                   tfds_dir=args.tfds_dir or c.tfds_dir)
    mesh = distributed.make_mesh()
    n = distributed.data_size(mesh)
    bs = -(-min(args.batch_size, len(ds.test.labels)) // n) * n
    shardings = distributed.state_shardings(run.state, mesh)
    state = jax.device_put(run.state, shardings)
    _, eval_fn = make_step_fns(StepOptions.from_config(c), mesh, shardings)
    test = evaluate(state, BatchFeeder(ds.test, mesh), eval_fn, bs, top_k=c.top_k)
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
    import numpy as np
    from cnnlab.train import load_run
    from cnnlab.visualize import read_image
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


def cmd_visualize(args) -> int:
    from cnnlab.train import load_run
    from cnnlab.visualize import read_image, visualize
    run = load_run(_require_workdir(args))
    if args.image:
        image = read_image(args.image, run.input_shape, invert=args.invert)
        stem = os.path.splitext(os.path.basename(args.image))[0]
    else:
        from cnnlab import data
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


# ---------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Train, evaluate and look inside CNNs (JAX/Flax).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model, evaluating after every epoch")
    t.add_argument("--config", help="preset name (see cnnlab.configs) or FILE.py with "
                   f"get_config(); default {DEFAULT_CONFIG}")
    t.add_argument("--model", help="model name (cnnlab.models.names())")
    t.add_argument("--dataset", help="fashion_mnist, fashion_mnist_subset, digits or a TFDS name")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int, help="global batch size (split over devices)")
    t.add_argument("--eval-batch-size", type=int)
    t.add_argument("--optimizer", help="sgd, momentum, adam, adamw or adadelta")
    t.add_argument("--lr", type=float, help="(peak) learning rate")
    t.add_argument("--momentum", type=float)
    t.add_argument("--schedule", help="constant, cosine or one_cycle")
    t.add_argument("--warmup-epochs", type=float)
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--label-smoothing", type=float)
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random flip and pad-and-crop on device")
    t.add_argument("--seed", type=int)
    t.add_argument("--precision", help="f32 (default) or bf16 (bfloat16 compute, f32 parameters)")
    t.add_argument("--max-steps-per-epoch", type=int)
    t.add_argument("--keep-checkpoints", type=int)
    t.add_argument("--checkpoint-every-steps", type=int, help="extra mid-epoch checkpoints")
    t.add_argument("--model-parallelism", type=int, help="size of the mesh's model axis")
    t.add_argument("--sharding", help="state sharding rule: replicate or fsdp")
    t.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--data-dir", help="directory with the Fashion-MNIST IDX .gz files")
    t.add_argument("--tfds-dir",
                   help="TFDS data dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    t.add_argument("--workdir", help="where metrics, checkpoints and plots go "
                   "(default runs/<config>)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    g.add_argument("--overwrite", action="store_true", help="delete an earlier run in --workdir")
    t.add_argument("--coordinator", help="multi-process: HOST:PORT of process 0")
    t.add_argument("--num-processes", type=int)
    t.add_argument("--process-id", type=int)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="test metrics of a run's newest checkpoint")
    e.add_argument("--workdir")
    e.add_argument("--batch-size", type=int, default=2000)
    e.add_argument("--data-dir")
    e.add_argument("--tfds-dir")
    e.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files (PNG, JPEG, any size)")
    p.add_argument("--workdir")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--invert", default="auto",
                   help="auto (invert light-background grayscale images), yes or no")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("visualize", help="first-layer filters and feature maps as PNG files")
    v.add_argument("--workdir")
    v.add_argument("--out", help="output directory (default WORKDIR/plots)")
    v.add_argument("--invert", default="auto")
    v.add_argument("image", nargs="?", metavar="IMAGE",
                   help="image file (default: the first test image)")
    v.set_defaults(func=cmd_visualize)

    for name in EXTENSIONS:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            if hasattr(module, "add_cli"):
                module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging
    # orbax and TFDS log routine notes through absl at WARNING; keep the terminal for our lines.
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from cnnlab import xla_cpu
        xla_cpu.use_multithreaded_convolutions()  # before JAX starts; CNNLAB_XLA_FLAGS=off: not
        from cnnlab.train import enable_compilation_cache
        enable_compilation_cache()
        parser = build_parser()
        args = parser.parse_args(argv)
        status = args.func(args)
        return int(status or 0)
    except CnnlabError as e:
        message = " ".join(str(e).split())  # always one line
        print(f"cnnlab: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted; continue with the same command and --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
