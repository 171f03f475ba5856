"""A researcher's own model, loss and loop (issue 16, point 1): the README's script runs as
written, and its pieces do what it says (the step minimises *the given* loss; the state is Flax's
TrainState)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from cnnlab import models, train

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_script() -> str:
    """The python block of the README's research section."""
    section = README.read_text().split("## Research: your own model, loss and loop", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_script_trains_its_own_model_with_its_own_loss(tmp_path):
    script = readme_script()
    assert len(script.strip().splitlines()) <= 30  # about 20 lines of code
    assert "loss_fn=focal_loss" in script and "class TinyCNN" in script
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [float(x) for x in re.findall(r"focal loss ([\d.]+)", r.stdout)]
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", r.stdout).group(1))
    assert len(losses) == 3 and losses[-1] < losses[0], r.stdout
    assert accuracy > 60, r.stdout  # three short epochs on 6,000 images; chance is 10%


def focal(logits, labels, gamma=2.0):
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    return -jnp.mean((1 - jnp.exp(logp)) ** gamma * logp)


def test_make_train_step_minimises_the_given_loss_on_a_flax_train_state():
    model = models.get("mlp", num_classes=3, hidden=8, activation="relu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
    labels = jnp.asarray(rng.integers(0, 3, 16), jnp.int32)
    state = train.create_train_state(model, optax.sgd(0.5), jax.random.key(0), (6, 6, 1))
    assert isinstance(state, train_state.TrainState) and int(state.step) == 0
    logits = model.apply({"params": state.params}, images / 255.0, train=False)
    want_focal, want_ce = float(focal(logits, labels)), float(
        train.cross_entropy_loss(logits, labels))
    assert abs(want_focal - want_ce) > 0.1  # the two losses differ on this batch

    step = train.make_train_step(loss_fn=focal)
    params_before = jax.tree.map(np.array, state.params)
    new, metrics = step(state, images, labels, jax.random.key(1))
    np.testing.assert_allclose(float(metrics["loss"]), want_focal, rtol=1e-5)
    # The update is SGD on the focal loss: p - 0.5 * grad(focal)(p).
    grads = jax.grad(lambda p: focal(model.apply({"params": p}, images / 255.0, train=False),
                                     labels))(params_before)
    expected = jax.tree.map(lambda p, g: p - 0.5 * g, params_before, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 new.params, expected)
    assert int(new.step) == 1
    # The default step minimises cross-entropy: same state, another loss value.
    state = train.create_train_state(model, optax.sgd(0.5), jax.random.key(0), (6, 6, 1))
    _, metrics = train.train_step(state, images, labels, jax.random.key(1))
    np.testing.assert_allclose(float(metrics["loss"]), want_ce, rtol=1e-5)
