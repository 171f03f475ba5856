"""DCGAN training (``cnnlab gan``): two networks, two optimizers, one jit-compiled step.

The step (:func:`make_train_step`) is a pure function ``(state, real_uint8, key) -> (state,
metrics)`` over a :class:`GanState` holding both parameter trees and both optimizer states:

1. discriminator: ``fake = G(z1)``; ``d_loss(d) = mean softplus(-D_d(real)) + mean
   softplus(D_d(fake))`` (binary cross-entropy, real = 1, fake = 0); Adam on ``d`` only;
2. generator, against the updated discriminator, with fresh noise: ``g_loss(g) = mean
   softplus(-D(G_g(z2)))`` (the non-saturating loss); Adam on ``g`` only.

Noise and dropout keys come from ``fold_in(PRNGKey(seed), step)`` and the batch order from
``cnnlab.data.batch_indices(seed, epoch)``, so a run resumed from a checkpoint (``--resume``) ends
bit-identical to one that never stopped.

Workdir::

    config.json        the GanConfig
    metrics.jsonl      one line per epoch: d_loss, g_loss, D(real), D(fake), seconds
    checkpoints/N/     orbax checkpoints of the GanState (+ meta: epoch, position)
    plots/samples_epoch_EEE.png   a grid of generated images after every epoch (fixed noise)
    plots/losses.png   both losses per epoch
    quality.json       with --quality: the sample-quality figures (:mod:`cnnlab.gan_quality`)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from cnnlab import fileio
from cnnlab.errors import CnnlabError


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """Every setting of a DCGAN run (the workshop's: Adam 2e-4, beta1 0.5, batch 128, latent
    100, generator 128 / discriminator 64 features, dropout 0.4)."""

    dataset: str = "fashion_mnist"       # any image data set of cnnlab.data.load (sides % 4 == 0)
    epochs: int = 5
    batch_size: int = 128
    latent_dim: int = 100
    learning_rate: float = 2e-4
    beta1: float = 0.5
    g_features: int = 128
    d_features: int = 64
    dropout: float = 0.4
    seed: int = 0
    max_steps_per_epoch: int | None = None   # cut epochs short (tests, smoke runs)
    samples: int = 64                        # images in each epoch's grid (fixed noise)
    keep_checkpoints: int = 2
    data_dir: str | None = None
    tfds_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GanConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise CnnlabError(f"unknown gan config fields {unknown}; "
                              f"valid: {', '.join(sorted(known))}")
        return cls(**d)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "latent_dim", "g_features", "d_features", "samples"):
            if getattr(self, name) < 1:
                raise CnnlabError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1 or not 0 <= self.beta1 < 1 or not 0 <= self.dropout < 1:
            raise CnnlabError("learning_rate must be in (0, 1), beta1 and dropout in [0, 1)")


class GanState(struct.PyTreeNode):
    """Both networks' parameters and optimizer states, and the global step."""

    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any


@dataclasses.dataclass(frozen=True)
class Gan:
    """The two modules and their optimizers (static: what the compiled step closes over)."""

    generator: nn.Module
    discriminator: nn.Module
    g_tx: optax.GradientTransformation
    d_tx: optax.GradientTransformation
    latent_dim: int

    @classmethod
    def from_config(cls, config: GanConfig, image_shape) -> Gan:
        from cnnlab.models.dcgan import Discriminator, Generator

        tx = optax.adam(config.learning_rate, b1=config.beta1)
        return cls(Generator(image_shape=tuple(image_shape), features=config.g_features),
                   Discriminator(features=config.d_features, dropout=config.dropout),
                   tx, tx, config.latent_dim)

    def init(self, key: jax.Array, image_shape) -> GanState:
        kg, kd = jax.random.split(key)
        g_params = self.generator.init(kg, jnp.zeros((1, self.latent_dim)))["params"]
        d_params = self.discriminator.init(kd, jnp.zeros((1, *image_shape)))["params"]
        return GanState(step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
                        g_opt=self.g_tx.init(g_params), d_opt=self.d_tx.init(d_params))

    def generate(self, g_params, z: jax.Array) -> jax.Array:
        """Images (N, H, W, C) in [0, 1] from latent vectors z (N, latent_dim)."""
        return self.generator.apply({"params": g_params}, z)


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """``mean softplus(-real) + mean softplus(fake)``: cross-entropy with real = 1, fake = 0."""
    return jax.nn.softplus(-real_logits).mean() + jax.nn.softplus(fake_logits).mean()


def generator_loss(fake_logits: jax.Array) -> jax.Array:
    """The non-saturating generator loss ``mean -log D(G(z)) = mean softplus(-fake)``."""
    return jax.nn.softplus(-fake_logits).mean()


def make_train_step(gan: Gan) -> Callable:
    """The jit-compiled GAN step ``(state, real uint8 (N, H, W, C), key) -> (state, metrics)``
    (state donated; see the module docstring for the two updates)."""

    def step(state: GanState, real_u8: jax.Array, key: jax.Array):
        real = real_u8.astype(jnp.float32) / 255.0
        n = real.shape[0]
        k_z1, k_z2, k_d1, k_d2, k_d3 = jax.random.split(jax.random.fold_in(key, state.step), 5)
        fake = gan.generate(state.g_params, jax.random.normal(k_z1, (n, gan.latent_dim)))

        def d_loss_fn(d_params):
            d = functools.partial(gan.discriminator.apply, {"params": d_params}, train=True)
            real_logits = d(real, rngs={"dropout": k_d1})
            fake_logits = d(fake, rngs={"dropout": k_d2})
            return discriminator_loss(real_logits, fake_logits), (real_logits, fake_logits)

        (d_loss, (real_logits, fake_logits)), d_grads = jax.value_and_grad(
            d_loss_fn, has_aux=True)(state.d_params)
        d_updates, d_opt = gan.d_tx.update(d_grads, state.d_opt, state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        def g_loss_fn(g_params):
            images = gan.generate(g_params, jax.random.normal(k_z2, (n, gan.latent_dim)))
            logits = gan.discriminator.apply({"params": d_params}, images, train=True,
                                             rngs={"dropout": k_d3})
            return generator_loss(logits)

        g_loss, g_grads = jax.value_and_grad(g_loss_fn)(state.g_params)
        g_updates, g_opt = gan.g_tx.update(g_grads, state.g_opt, state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)
        metrics = {"d_loss": d_loss, "g_loss": g_loss,
                   "d_real": jax.nn.sigmoid(real_logits).mean(),
                   "d_fake": jax.nn.sigmoid(fake_logits).mean()}
        return GanState(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt,
                        d_opt=d_opt), metrics

    return jax.jit(step, donate_argnums=0)


METRICS = ("d_loss", "g_loss", "d_real", "d_fake")


def _load_images(config: GanConfig):
    from cnnlab import data

    ds = data.load(config.dataset, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    images = np.concatenate([ds.train.images, ds.test.images])  # unconditional: all images
    h, w, _ = images.shape[1:]
    if h % 4 or w % 4:
        raise CnnlabError(f"{config.dataset} images are {h}x{w}: the DCGAN needs sides that are "
                          f"multiples of 4 (28x28 Fashion-MNIST/MNIST, 8x8 digits)")
    if config.batch_size > len(images):
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {len(images):,} "
                          f"images of {config.dataset}")
    return images, ds.source


def _restore(gan: Gan, ckpts, image_shape, config: GanConfig):
    """The newest checkpoint, or a fresh state; with the epoch to start and the records."""
    from cnnlab.checkpoints import abstract_like

    fresh = gan.init(jax.random.PRNGKey(config.seed), image_shape)
    if ckpts.latest_step() is None:
        return fresh, 0
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = abstract_like(fresh, jax.tree.map(lambda _: sharding, fresh))
    state, meta = ckpts.restore(target)
    return state, int(meta["epochs_done"])


def train_gan(config: GanConfig, workdir: str, *, resume: bool = False, overwrite: bool = False,
              progress: Callable[[dict], None] | None = None) -> dict:
    """Train the DCGAN pair of :mod:`cnnlab.models.dcgan` on ``config.dataset``.

    Writes the workdir of the module docstring; ``resume`` continues from the newest checkpoint
    (epoch boundaries), bit-identically. ``progress`` gets every epoch's record. Returns the
    last record (``epoch``, the mean ``d_loss``, ``g_loss``, ``d_real``, ``d_fake`` of the epoch,
    ``step``, ``seconds``, ``source``).
    """
    from cnnlab import plots
    from cnnlab.checkpoints import Checkpoints
    from cnnlab.data import batch_indices

    # The workdir rules of `cnnlab train` (refuse to clobber a run, --overwrite deletes only run
    # files). TODO(core, issue 17): the shared run layer (Workdir) once it lands.
    from cnnlab.train import _write_metrics, prepare_workdir, read_metrics

    config.validate()
    workdir = os.path.abspath(workdir)
    prepare_workdir(workdir, resume=resume, overwrite=overwrite)
    if overwrite and not resume and os.path.exists(os.path.join(workdir, "quality.json")):
        os.unlink(os.path.join(workdir, "quality.json"))
    images, source = _load_images(config)
    config_path = os.path.join(workdir, "config.json")
    if resume and os.path.exists(config_path):
        with open(config_path) as f:
            saved = GanConfig.from_dict(json.load(f))
        if dataclasses.replace(saved, epochs=config.epochs) != config:
            raise CnnlabError(f"--resume needs the settings of the run in {workdir} (only "
                              "--epochs may change); see its config.json")
    fileio.write_text(config_path, json.dumps(config.to_dict(), indent=2) + "\n")
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    image_shape = images.shape[1:]
    gan = Gan.from_config(config, image_shape)
    step_fn = make_train_step(gan)
    sample_z = jax.random.normal(jax.random.PRNGKey(config.seed + 1),
                                 (config.samples, config.latent_dim))
    generate = jax.jit(gan.generate)
    history = read_metrics(workdir) if resume else []
    record: dict = history[-1] if history else {}
    with Checkpoints(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints) as ckpts:
        state, start = _restore(gan, ckpts, image_shape, config)
        history = [r for r in history if r["epoch"] <= start]
        base_key = jax.random.PRNGKey(config.seed)
        for epoch in range(start, config.epochs):
            t0 = time.time()
            batches = batch_indices(len(images), config.batch_size, seed=config.seed, epoch=epoch)
            batches = batches[:config.max_steps_per_epoch or len(batches)]
            sums = dict.fromkeys(METRICS, 0.0)
            for idx in batches:
                state, metrics = step_fn(state, jnp.asarray(images[idx]), base_key)
                for k in METRICS:  # a host sync per step: cheap next to a DCGAN step
                    sums[k] += float(metrics[k])
            record = {"epoch": epoch + 1, "step": int(state.step), "source": source,
                      **{k: v / len(batches) for k, v in sums.items()},
                      "seconds": round(time.time() - t0, 2)}
            if not all(math.isfinite(record[k]) for k in METRICS):
                raise CnnlabError(f"the losses became non-finite in epoch {epoch + 1}; the last "
                                  f"good checkpoint is kept in {workdir}/checkpoints")
            ckpts.save(int(state.step), state, {"epochs_done": epoch + 1})
            history.append(record)
            _write_metrics(workdir, history)
            samples = np.asarray(generate(state.g_params, sample_z))
            plots.image_grid(samples, os.path.join(workdir, "plots",
                                                   f"samples_epoch_{epoch + 1:03d}.png"),
                             title=f"epoch {epoch + 1}")
            plots.gan_losses(history, os.path.join(workdir, "plots", "losses.png"))
            if progress:
                progress(record)
    return record


@dataclasses.dataclass
class GanRun:
    """A trained GAN read back from its workdir."""

    config: GanConfig
    gan: Gan
    state: GanState

    def sample(self, n: int, seed: int = 0, batch_size: int = 500) -> np.ndarray:
        """n generated images, float32 (n, H, W, C) in [0, 1]."""
        z = jax.random.normal(jax.random.PRNGKey(seed), (n, self.config.latent_dim))
        fn = jax.jit(self.gan.generate)
        return np.concatenate([np.asarray(fn(self.state.g_params, z[i:i + batch_size]))
                               for i in range(0, n, batch_size)])


def load_gan(workdir: str) -> GanRun:
    """The newest checkpoint of a ``cnnlab gan`` workdir."""
    from cnnlab.checkpoints import Checkpoints

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise CnnlabError(f"{workdir} is not a GAN run (no config.json); train one with "
                          f"`cnnlab gan --workdir {workdir}`")
    with open(path) as f:
        config = GanConfig.from_dict(json.load(f))
    images, _ = _load_images(config)
    gan = Gan.from_config(config, images.shape[1:])
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        if ckpts.latest_step() is None:
            raise CnnlabError(f"no complete checkpoint in {workdir}/checkpoints; train first")
        state, _ = _restore(gan, ckpts, images.shape[1:], config)
    finally:
        ckpts.close()
    return GanRun(config, gan, state)


def measure_quality(workdir: str, *, classifier_workdir: str | None = None,
                    classifier_epochs: int = 3, samples: int = 2000, seed: int = 0) -> dict:
    """The sample-quality figures of :mod:`cnnlab.gan_quality` for the GAN in ``workdir``:
    a workshop CNN trained on the same data set (``cnnlab train`` into ``classifier_workdir``,
    default ``WORKDIR/classifier``; reused when it was trained on the same data set for as
    many epochs) judges ``samples`` generated images, as many real test images, and as many
    noise images. Written to ``WORKDIR/quality.json``."""
    from cnnlab import data, gan_quality, train

    run = load_gan(workdir)
    clf_dir = classifier_workdir or os.path.join(workdir, "classifier")
    cfg = train.TrainConfig(model="workshop_cnn", dataset=run.config.dataset,
                            epochs=classifier_epochs, data_dir=run.config.data_dir,
                            tfds_dir=run.config.tfds_dir, plots=False, seed=seed)
    judged = (train.load_run(clf_dir).config
              if os.path.exists(os.path.join(clf_dir, "run.json")) else None)
    if judged is None or (judged.dataset, judged.epochs) != (cfg.dataset, cfg.epochs):
        train.train_and_evaluate(cfg, clf_dir, overwrite=True)
    classifier = train.load_run(clf_dir)
    ds = data.load(run.config.dataset, data_dir=run.config.data_dir, tfds_dir=run.config.tfds_dir)
    n = min(samples, len(ds.test.labels))
    quality = gan_quality.sample_quality(classifier.logits, ds.test.images[:n],
                                         ds.test.labels[:n], run.sample(n, seed=seed), seed=seed)
    quality.update({"dataset": run.config.dataset, "classifier": clf_dir,
                    "gan_epochs": run.config.epochs, "gan_step": int(run.state.step)})
    fileio.write_text(os.path.join(workdir, "quality.json"), json.dumps(quality, indent=2) + "\n")
    return quality


def add_cli(subparsers) -> None:
    """``cnnlab gan`` (the hook of :mod:`cnnlab.cli`)."""
    g = subparsers.add_parser("gan", help="train the workshop's DCGAN; sample grids per epoch")
    defaults = GanConfig()
    g.add_argument("--dataset", default=defaults.dataset,
                   help="fashion_mnist (default), digits (8x8), mnist (when prepared in TFDS)")
    g.add_argument("--epochs", type=int, default=defaults.epochs)
    g.add_argument("--batch-size", type=int, default=defaults.batch_size)
    g.add_argument("--latent-dim", type=int, default=defaults.latent_dim)
    g.add_argument("--lr", type=float, default=defaults.learning_rate)
    g.add_argument("--g-features", type=int, default=defaults.g_features)
    g.add_argument("--d-features", type=int, default=defaults.d_features)
    g.add_argument("--seed", type=int, default=defaults.seed)
    g.add_argument("--max-steps-per-epoch", type=int)
    g.add_argument("--data-dir")
    g.add_argument("--tfds-dir")
    g.add_argument("--workdir", default=os.path.join("runs", "gan"))
    g.add_argument("--quality", action="store_true",
                   help="after training: the sample-quality figures (quality.json)")
    g.add_argument("--classifier-epochs", type=int, default=3,
                   help="epochs of the judge classifier trained for --quality (default 3; the "
                        "1,437 digits need about 20)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true")
    mode.add_argument("--overwrite", action="store_true")
    g.set_defaults(func=_cmd_gan)


def _cmd_gan(args) -> int:
    from cnnlab import gan_quality

    config = GanConfig(dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                       latent_dim=args.latent_dim, learning_rate=args.lr,
                       g_features=args.g_features, d_features=args.d_features, seed=args.seed,
                       max_steps_per_epoch=args.max_steps_per_epoch, data_dir=args.data_dir,
                       tfds_dir=args.tfds_dir)

    def progress(r):
        print(f"epoch {r['epoch']}: d_loss {r['d_loss']:.4f}  g_loss {r['g_loss']:.4f}  "
              f"D(real) {r['d_real']:.3f}  D(generated) {r['d_fake']:.3f}  "
              f"({r['seconds']:.1f} s)", flush=True)

    final = train_gan(config, args.workdir, resume=args.resume, overwrite=args.overwrite,
                      progress=progress)
    print(f"data: {final['source']}")
    print(f"workdir: {args.workdir} (plots/samples_epoch_*.png, plots/losses.png, checkpoints/)")
    if args.quality:
        print(gan_quality.format_table(measure_quality(
            args.workdir, classifier_epochs=args.classifier_epochs)))
    return 0
