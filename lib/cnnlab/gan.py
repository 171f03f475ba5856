"""DCGAN training (``cnnlab gan``): two networks, two optimizers, one jit-compiled step, trained
by the one training loop of cnnlab (:func:`cnnlab.loop.fit`) into a :class:`~cnnlab.workdir.Workdir`.

The step (:func:`make_train_step`) is a pure function ``(state, real uint8, labels, key) ->
(state, metrics)`` over a :class:`GanState` holding both parameter trees and both optimizer
states (the labels are ignored: the GAN is unconditional):

1. discriminator: ``fake = G(z1)``; ``d_loss(d) = mean softplus(-D_d(real)) + mean
   softplus(D_d(fake))`` (binary cross-entropy, real = 1, fake = 0); Adam on ``d`` only;
2. generator, against the updated discriminator, with fresh noise: ``g_loss(g) = mean
   softplus(-D(G_g(z2)))`` (the non-saturating loss); Adam on ``g`` only.

Its metrics: ``loss = d_loss + g_loss`` (what the loop checks for NaN), ``accuracy`` (the
discriminator's: real scored > 0, generated < 0, over both halves), ``d_loss``, ``g_loss``,
``d_real`` and ``d_fake`` (D's mean probability on real and on generated images); an epoch's
record has their means as ``train_loss``, ``train_accuracy``, ``train_d_loss``,
``train_g_loss``, ``train_d_real``, ``train_d_fake``. Noise and dropout keys come from
``fold_in(key(seed), step)`` and the batch order from ``(seed, epoch)``, so a resumed run
(``--resume``, also from a mid-epoch checkpoint or after SIGTERM) ends bit-identical to one that
never stopped.

Workdir (:mod:`cnnlab.workdir`)::

    config.json                   the GanConfig
    run.json                      the data set, its source, image shape, parameter counts
    metrics.jsonl                 one line per epoch (see above)
    checkpoints/N/                orbax checkpoints: params {generator, discriminator}, both
                                  optimizer states, the loop's meta
    plots/samples_epoch_EEE.png   a grid of generated images after every epoch (fixed noise)
    plots/losses.png              both losses and D's outputs per epoch
    tensorboard/                  every step's train/* (d_loss, g_loss, ...), every epoch's record
    quality.json                  with --quality: the sample-quality figures (:mod:`cnnlab.gan_quality`)
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from cnnlab import data, distributed, gan_quality, models, plots, train
from cnnlab.checkpoints import on_one_device
from cnnlab.config import GanConfig, TrainConfig
from cnnlab.data.feeding import BatchFeeder
from cnnlab.errors import CnnlabError
from cnnlab.loop import Loop, LoopSpec, Reporter, fit
from cnnlab.models.dcgan import Discriminator, Generator
from cnnlab.workdir import RunInfo, Workdir


class GanState(struct.PyTreeNode):
    """Both networks' parameters and optimizer states, and the step."""

    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any

    def arrays(self) -> dict[str, Any]:
        """The checkpointed form (:class:`cnnlab.checkpoints.Checkpoints`' items)."""
        return {"step": self.step, "batch_stats": {},
                "params": {"generator": self.g_params, "discriminator": self.d_params},
                "opt_state": {"generator": self.g_opt, "discriminator": self.d_opt}}

    def with_arrays(self, arrays: Mapping[str, Any]) -> GanState:
        """This state with the (restored) arrays of :meth:`arrays` in place (the optimizer
        states kept when ``arrays`` has none: a run read back for sampling)."""
        opt = arrays.get("opt_state") or {"generator": self.g_opt, "discriminator": self.d_opt}
        return GanState(step=arrays["step"], g_params=arrays["params"]["generator"],
                        d_params=arrays["params"]["discriminator"], g_opt=opt["generator"],
                        d_opt=opt["discriminator"])


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
    """The jit-compiled GAN step ``(state, real uint8 (N, H, W, C), labels, key) -> (state,
    metrics)`` (state donated; labels ignored; see the module docstring for the two updates)."""

    def step(state: GanState, real_u8: jax.Array, labels: jax.Array, key: jax.Array):
        del labels  # unconditional
        real = data.to_float(real_u8)
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
        accuracy = ((real_logits > 0).mean() + (fake_logits < 0).mean()) / 2
        metrics = {"loss": d_loss + g_loss, "accuracy": accuracy, "d_loss": d_loss,
                   "g_loss": g_loss, "d_real": jax.nn.sigmoid(real_logits).mean(),
                   "d_fake": jax.nn.sigmoid(fake_logits).mean()}
        return GanState(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt,
                        d_opt=d_opt), metrics

    return jax.jit(step, donate_argnums=0)


#: The side the workshop's DCGAN is made for (a smaller data set is upsampled to it).
DCGAN_SIDE = 28


def _load_images(config: GanConfig) -> tuple[data.Split, str]:
    """Every image of the data set (train and test: the GAN is unconditional), resized to
    ``config.image_size`` (default :data:`DCGAN_SIDE` for smaller images, e.g. the 8x8 digits,
    on which the workshop's architecture collapses to one image), and its source."""
    ds = data.load(config.dataset, data_dir=config.data_dir, tfds_dir=config.tfds_dir)
    images = np.concatenate([ds.train.images, ds.test.images])
    h, w, _ = images.shape[1:]
    side = config.image_size or (DCGAN_SIDE if max(h, w) < DCGAN_SIDE else None)
    source = ds.source
    if side and (side, side) != (h, w):
        if side % 4:
            raise CnnlabError(f"image size {side} is not a multiple of 4: the DCGAN doubles its "
                              f"side twice (e.g. 28 = 7 x 4)")
        images = data.resize(images, side, side)
        source += f"; resized bilinearly from {h}x{w} to {side}x{side}"
        h = w = side
    if h % 4 or w % 4:
        raise CnnlabError(f"{config.dataset} images are {h}x{w}: the DCGAN needs sides that are "
                          f"multiples of 4; pass --image-size 28 (or another multiple of 4)")
    if config.batch_size > len(images):
        raise CnnlabError(f"batch size {config.batch_size} is larger than the {len(images):,} "
                          f"images of {config.dataset}")
    return data.Split(images, np.zeros(len(images), np.int32)), source


def train_gan(config: GanConfig, workdir: str, *, resume: bool = False, overwrite: bool = False,
              reporter: Reporter | None = None) -> dict:
    """Train the DCGAN pair of :mod:`cnnlab.models.dcgan` on ``config.dataset``.

    Args:
      config: the run's settings.
      workdir: where everything goes (see the module docstring).
      resume: continue from the newest checkpoint that restores, bit-identically (the
        settings must be the run's, except :data:`GanConfig.RESUMABLE`).
      overwrite: replace an earlier run in ``workdir``.
      reporter: progress callbacks (:class:`cnnlab.loop.Reporter`).

    Returns:
      The last epoch's record plus ``source`` (where the images came from).

    Raises:
      CnnlabError: bad data set or batch size, an unwritable or occupied workdir, a resume with
        other settings, non-finite losses (the last good checkpoint is kept).
      Interrupted: SIGTERM or SIGINT (the current step is saved first).
    """
    reporter = reporter or Reporter()
    wd = Workdir(workdir)
    wd.prepare(resume=resume, overwrite=overwrite)
    if resume:
        wd.check_resumable(config)
    split, source = _load_images(config)
    image_shape = split.images.shape[1:]
    gan = Gan.from_config(config, image_shape)
    mesh = distributed.make_mesh()
    rep = distributed.replicated(mesh)

    def create(key):
        return gan.init(key, image_shape)

    abstract = jax.eval_shape(create, jax.random.key(0))
    ckpts = wd.checkpoints(keep=config.keep_checkpoints)
    try:
        state, meta, history = train.restore_or_create(
            wd, ckpts, create, jax.tree.map(lambda _: rep, abstract),
            jax.device_put(jax.random.key(config.seed), rep), resume=resume, reporter=reporter)
        steps = len(split.images) // config.batch_size
        spe = min(steps, config.max_steps_per_epoch or steps)
        wd.write_config(config)
        wd.write_run_info(_run_info(config, split, source, abstract, mesh, spe))
        wd.log_epochs(history)
        sample_z = jax.random.normal(jax.random.key(config.seed + 1),
                                     (config.samples, config.latent_dim))
        generate = jax.jit(gan.generate)

        def after_epoch(s: GanState, record: dict) -> None:
            if config.plots and wd.main:
                samples = np.asarray(generate(distributed.to_host(s.g_params), sample_z))
                plots.image_grid(samples, os.path.join(
                    wd.plots_dir, f"samples_epoch_{record['epoch']:03d}.png"),
                    title=f"epoch {record['epoch']}")
                plots.gan_losses(wd.read_metrics(), os.path.join(wd.plots_dir, "losses.png"))

        loop = Loop(
            train_step=make_train_step(gan), feeder=BatchFeeder(split, mesh),
            run_key=jax.device_put(jax.random.key(config.seed), rep),
            lr_at=lambda s: config.learning_rate, workdir=wd, checkpoints=ckpts,
            to_checkpoint=GanState.arrays, reporter=reporter, after_epoch=after_epoch,
            spec=LoopSpec(epochs=config.epochs, steps_per_epoch=spe, batch_size=config.batch_size,
                          seed=config.seed, log_every_steps=config.log_every_steps,
                          checkpoint_every_steps=config.checkpoint_every_steps,
                          select_best=False, divergence_factor=0.0))
        reporter.run_start({"model": "dcgan", "dataset": config.dataset, "source": source,
                            "devices": jax.device_count(), "mesh": dict(mesh.shape),
                            "param_count": models.param_count(abstract.arrays()["params"]),
                            "steps_per_epoch": spe, "epochs": config.epochs, "val_examples": 0})
        result = fit(state, loop, history=history, meta=meta)
        ckpts.wait()
        last = dict(result.history[-1]) if result.history else {}
        return {**last, "source": source}
    finally:
        wd.close_events()
        ckpts.close()


def _run_info(config: GanConfig, split: data.Split, source: str, state: GanState, mesh,
              steps_per_epoch: int) -> RunInfo:
    """``run.json`` of a GAN run: the images' shape and source, both networks' parameters."""
    return RunInfo(class_names=(), input_shape=tuple(int(d) for d in split.images.shape[1:]),
                   dataset=config.dataset, source=source, train_examples=len(split.images),
                   val_examples=0, test_examples=0,
                   param_count=models.param_count(state.arrays()["params"]),
                   devices=jax.device_count(), processes=jax.process_count(),
                   mesh=dict(mesh.shape), steps_per_epoch=steps_per_epoch)


@dataclasses.dataclass
class GanRun:
    """A trained GAN read back from its workdir."""

    config: GanConfig
    gan: Gan
    state: GanState

    def sample(self, n: int, seed: int = 0, batch_size: int = 500) -> np.ndarray:
        """n generated images, float32 (n, H, W, C) in [0, 1]."""
        z = jax.random.normal(jax.random.key(seed), (n, self.config.latent_dim))
        fn = jax.jit(self.gan.generate)
        return np.concatenate([np.asarray(fn(self.state.g_params, z[i:i + batch_size]))
                               for i in range(0, n, batch_size)])


def load_gan(workdir: str) -> GanRun:
    """The newest checkpoint of a ``cnnlab gan`` workdir (parameters only), on one device.

    Raises:
      CnnlabError: not a GAN run, no checkpoint that restores.
    """
    wd = Workdir(workdir)
    if not wd.is_run():
        raise CnnlabError(f"{wd.path} is not a GAN run (no config.json/run.json); train one "
                          f"with `cnnlab gan --workdir {wd.path}`")
    config = wd.read_config(GanConfig)
    image_shape = wd.read_run_info().input_shape
    gan = Gan.from_config(config, image_shape)
    fresh = jax.eval_shape(lambda: gan.init(jax.random.key(0), image_shape))
    arrays = fresh.arrays()
    del arrays["opt_state"]
    ckpts = wd.checkpoints_to_read()
    try:
        restored, _, _ = ckpts.restore_newest(on_one_device(arrays),
                                              note=lambda text: print(f"note: {text}"))
    finally:
        ckpts.close()
    return GanRun(config, gan, fresh.with_arrays(restored))


def measure_quality(workdir: str, *, classifier_workdir: str | None = None,
                    classifier_epochs: int = 3, samples: int = 2000, seed: int = 0) -> dict:
    """The sample-quality figures of :mod:`cnnlab.gan_quality` for the GAN in ``workdir``.

    A workshop CNN trained on the same data set (``cnnlab train`` into ``classifier_workdir``,
    default ``WORKDIR/classifier``; reused when it was trained on the same data set for as many
    epochs) judges ``samples`` generated images, as many real test images, and as many noise
    images (generated ones resized to the data set's own size when the GAN trained on
    resized images, ``--image-size``). Written atomically to ``WORKDIR/quality.json``.

    Returns:
      ``{"real", "generated", "noise"}`` figures (:func:`cnnlab.gan_quality.sample_quality`)
      plus ``dataset``, ``classifier``, ``gan_epochs``, ``gan_step``.
    """
    run = load_gan(workdir)
    wd = Workdir(workdir)
    clf_dir = classifier_workdir or wd.file("classifier")
    cfg = TrainConfig(model="workshop_cnn", dataset=run.config.dataset, epochs=classifier_epochs,
                      data_dir=run.config.data_dir, tfds_dir=run.config.tfds_dir, plots=False,
                      seed=seed)
    judge = Workdir(clf_dir)
    judged = judge.read_config() if judge.is_run() else None
    if judged is None or (judged.dataset, judged.epochs) != (cfg.dataset, cfg.epochs):
        train.train_and_evaluate(cfg, clf_dir, overwrite=True)
    classifier = train.load_run(clf_dir)
    ds = data.load(run.config.dataset, data_dir=run.config.data_dir, tfds_dir=run.config.tfds_dir)
    n = min(samples, len(ds.test.labels))
    generated = run.sample(n, seed=seed)
    h, w = ds.test.images.shape[1:3]
    if generated.shape[1:3] != (h, w):  # the GAN trained on resized images: judge at the data's
        generated = data.resize(generated, h, w)  # own size, as the classifier learnt it
    quality = gan_quality.sample_quality(classifier.logits, ds.test.images[:n],
                                         ds.test.labels[:n], generated, seed=seed)
    quality.update({"dataset": run.config.dataset, "classifier": clf_dir,
                    "gan_epochs": run.config.epochs, "gan_step": int(run.state.step)})
    wd.write_json("quality.json", quality)
    return quality
