"""cnnlab.train, cnnlab.metrics, cnnlab.checkpoints, cnnlab.plots: real data (the embedded
Fashion-MNIST subset), real orbax checkpoints, real PNG files."""

from __future__ import annotations

import json
import math
import os
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import data, metrics, models, train
from cnnlab.errors import CnnlabError
from cnnlab.loop import Reporter
from cnnlab.train import TrainConfig

SUBSET = "fashion_mnist_subset"


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def tiny(**changes) -> TrainConfig:
    """The workshop CNN on the embedded subset, short epochs. Same programs as tests/test_cli.py's
    TINY flags, so the persistent compilation cache compiles them once per test session."""
    base = TrainConfig(model="workshop_cnn", dataset=SUBSET, epochs=1, batch_size=64,
                       max_steps_per_epoch=15, eval_batch_size=300, optimizer="adam",
                       learning_rate=3e-3, schedule="constant", plots=False, seed=0)
    return base.replace(**changes)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    # Runs of the same shapes recompile the same programs; the persistent cache (what the CLI
    # uses by default) makes every run after the first cheap, in this process and in the CLI's.
    path = tmp_path_factory.getbasetemp() / "jax-cache"
    path.mkdir(exist_ok=True)
    train.enable_compilation_cache(str(path))


@pytest.fixture(scope="module")
def subset():
    return data.load(SUBSET)


# ------------------------------------------------------------------------------- metrics

def test_cross_entropy_with_label_smoothing_matches_the_formula():
    logits = jnp.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    labels = jnp.array([0, 2])
    a = 0.1
    logp = jax.nn.log_softmax(logits)
    target = (1 - a) * jax.nn.one_hot(labels, 3) + a / 3
    expected = -(target * logp).sum(-1)
    np.testing.assert_allclose(metrics.cross_entropy(logits, labels, label_smoothing=a), expected,
                               rtol=1e-6)
    np.testing.assert_allclose(metrics.cross_entropy(logits, labels), -logp[jnp.arange(2), labels],
                               rtol=1e-6)


def test_top_k_and_confusion_matrix_with_mask():
    logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = jnp.array([1, 2, 0, 0])
    mask = jnp.array([1.0, 1.0, 1.0, 0.0])  # the last row is padding
    sums = jax.device_get(metrics.batch_sums(logits, labels, mask, top_k=2))
    assert sums["count"] == 3 and sums["correct"] == 1  # only row 0 is right
    assert sums["top_k_correct"] == 2                   # rows 0 and 2 (label 0 ranks second)
    expected = np.zeros((3, 3))
    expected[1, 1] = expected[2, 0] = expected[0, 2] = 1
    np.testing.assert_array_equal(sums["confusion"], expected)
    final = metrics.finalize(metrics.add_sums(None, sums), top_k=2)
    assert math.isclose(final["accuracy"], 1 / 3) and final["top2_accuracy"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------- optimizers

@pytest.mark.parametrize("name", train.OPTIMIZERS)
def test_every_optimizer_makes_a_finite_update(name):
    tx = train.make_optimizer(name, 0.1, weight_decay=1e-4)
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.ones(2)}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new))
    assert not np.allclose(new["w"], params["w"])


def test_unknown_optimizer_and_schedule_list_the_valid_names():
    with pytest.raises(CnnlabError, match="adamw.*adadelta"):
        train.make_optimizer("rmsprop2", 1e-3)
    with pytest.raises(CnnlabError, match="adamw.*adadelta"):
        TrainConfig(optimizer="rmsprop2")
    with pytest.raises(CnnlabError, match="one_cycle"):
        TrainConfig(schedule="linear")
    with pytest.raises(CnnlabError, match="one_cycle"):
        train.make_schedule("linear", 1.0, 100)


def test_schedules():
    # 2 epochs of 50 steps: 100 steps in all
    cosine = train.make_schedule("cosine", 1.0, 100)
    assert float(cosine(0)) == pytest.approx(1.0) and float(cosine(100)) == pytest.approx(0.0)
    one_cycle = train.make_schedule("one_cycle", 1.0, 100)
    assert float(one_cycle(30)) == pytest.approx(1.0)  # the peak at 30% of 100 steps
    assert float(one_cycle(0)) == pytest.approx(1.0 / 25)
    assert float(train.make_schedule("constant", 1.0, 100)(77)) == 1.0
    # from a TrainConfig: the steps of the whole run, warm-up in epochs
    _, schedule = train.optimizer_from_config(
        TrainConfig(learning_rate=1.0, epochs=2, schedule="cosine", warmup_epochs=1.0), 50)
    assert float(schedule(0)) == 0.0 and float(schedule(50)) == pytest.approx(1.0)


# ------------------------------------------------------------------------------- training

def test_train_step_makes_the_loss_fall(subset):
    model = models.get("mlp", num_classes=10, hidden=32, activation="relu")
    tx = train.make_optimizer("adam", 3e-3)
    state = train.create_train_state(model, tx, jax.random.key(0), subset.image_shape)
    key = jax.random.key(1)
    batches = data.batch_indices(len(subset.train), 64, seed=0, epoch=0)
    losses = []
    for idx in batches[:40]:
        state, m = train.train_step(state, subset.train.images[idx], subset.train.labels[idx], key)
        losses.append(float(m["loss"]))
    assert losses[0] > 2.0  # about log(10) at the start
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert int(state.step) == 40


def test_loss_falls_and_one_epoch_is_well_above_chance_on_the_subset(tmp_path, subset):
    # full epochs of the subset; the test split also after every epoch (to compare with the end)
    config = tiny(max_steps_per_epoch=None, epochs=2, plots=True, test_every_epoch=True)
    train.TRACE_COUNTS.clear()
    reported = []

    class Final(Reporter):  # the answer is reported before the plots are drawn
        def run_end(self, record):
            reported.append((record, sorted(p.name for p in (tmp_path / "plots").glob("*"))))

    state, final = train.train_and_evaluate(config, str(tmp_path), reporter=Final())
    assert reported == [(final, [])]
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["val_accuracy"] > 0.7, lines[0]  # after one epoch; chance is 0.1
    assert lines[1]["train_loss"] < 0.9 * lines[0]["train_loss"], lines
    assert lines[1]["val_loss"] < lines[0]["val_loss"], lines
    # The final test metrics are those of the selected (lowest validation loss) checkpoint.
    assert final["checkpoint_step"] == lines[1]["step"] and int(state.step) == lines[1]["step"]
    assert final["test_accuracy"] == lines[1]["test_accuracy"]
    assert final["val_loss"] == lines[1]["val_loss"]
    assert final["test_examples"] == len(subset.test) == 1000
    assert "test_accuracy_tta" not in final  # TrainConfig.tta is off by default
    assert np.sum(final["confusion_matrix"]) == 1000
    assert "subset" in final["source"]
    # Each shape compiled exactly once: one train step shape, one eval shape for validation and
    # test (the last of the 600 / 1000 rows' 300-batches is padded, not smaller), one gather
    # per (split, batch shape): training and validation batches of the training split, test
    # batches of the test split.
    assert train.TRACE_COUNTS["train_step"] == 1
    assert train.TRACE_COUNTS["eval_step"] == 1
    assert train.TRACE_COUNTS["gather"] == 3

    assert [r.get("epoch") for r in lines] == [1, 2, 2] and lines[-1]["final"]
    # 10% of the training split (stratified: 60 of each class) is held out for validation
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["val_examples"] == 600 and info["train_examples"] == 5400
    assert lines[0]["step"] == 5400 // 64
    assert json.loads((tmp_path / "config.json").read_text())["model"] == "workshop_cnn"
    assert json.loads((tmp_path / "run.json").read_text())["class_names"][9] == "Ankle boot"
    for name, min_size in (("curves", 300), ("confusion_matrix", 300), ("predictions", 300)):
        w, h = png_size(tmp_path / "plots" / f"{name}.png")
        assert w >= min_size and h >= min_size, (name, w, h)
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == [
        str(lines[0]["step"]), str(lines[1]["step"])]


def test_flip_tta_is_reported_for_the_final_test_split_only_when_asked(tmp_path, subset):
    state, final = train.train_and_evaluate(tiny(tta=True), str(tmp_path))
    model = models.get("workshop_cnn", num_classes=10)
    host = jax.device_get(state.arrays())

    def probs(images):
        logits = train.predict_logits(model.apply, host["params"], host["batch_stats"], images)
        return np.asarray(jax.nn.softmax(logits, axis=-1))

    plain = probs(subset.test.images)
    mirrored = probs(subset.test.images[:, :, ::-1])    # left-right: the width axis of NHWC
    averaged = ((plain + mirrored) / 2).argmax(-1)
    assert np.any(averaged != plain.argmax(-1))         # the mirror changes some predictions
    assert final["test_accuracy_tta"] == pytest.approx(np.mean(averaged == subset.test.labels))
    assert final["test_accuracy"] == pytest.approx(np.mean(plain.argmax(-1) == subset.test.labels))


def _arrays(workdir):
    run = train.load_run(str(workdir), step="latest", optimizer=True)
    return jax.device_get(run.state.arrays())


def _same_metrics(a, b):
    drop = ("epoch_seconds", "images_per_second", "seconds")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert strip(a) == strip(b)


def test_resume_is_bit_identical(tmp_path):
    # Dropout, batch norm and augmentation: every source of randomness and state is exercised.
    config = tiny(model="resnet_small", model_kwargs={"widths": (4,), "dropout": 0.3},
                  augment=True, batch_size=32, max_steps_per_epoch=6, eval_batch_size=500,
                  epochs=2)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train.train_and_evaluate(config, str(straight))
    train.train_and_evaluate(config.replace(epochs=1), str(split))
    with pytest.raises(CnnlabError, match="--resume"):  # an earlier run is never clobbered
        train.train_and_evaluate(config, str(split))
    train.train_and_evaluate(config, str(split), resume=True)

    a, b = _arrays(straight), _arrays(split)
    assert int(a["step"]) == int(b["step"]) == 12
    assert a["batch_stats"], "resnet_small has batch statistics"
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
    _same_metrics(train.read_metrics(str(straight)), train.read_metrics(str(split)))


def test_nan_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny(max_steps_per_epoch=5, log_every_steps=2)
    train.train_and_evaluate(config, str(tmp_path))
    good = _arrays(tmp_path)
    with pytest.raises(CnnlabError, match=r"loss became nan at step \d+; .*\(step 5\) is kept"):
        train.train_and_evaluate(config.replace(epochs=3, learning_rate=1e12), str(tmp_path),
                                 resume=True)
    assert train.load_run(str(tmp_path)).step == 5
    after = _arrays(tmp_path)
    for x, y in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
        np.testing.assert_array_equal(x, y)
    # metrics.jsonl still holds the good epoch (and nothing of the failed one)
    assert [r["epoch"] for r in train.read_metrics(str(tmp_path))] == [1]


def test_bad_config_values_are_user_errors(tmp_path):
    with pytest.raises(CnnlabError, match="unknown model 'nope'.*workshop_cnn"):
        train.train_and_evaluate(tiny(model="nope"), str(tmp_path / "nope"))
    with pytest.raises(CnnlabError, match="larger than the 5,400 training images .* holding out 600"):
        train.train_and_evaluate(tiny(batch_size=100_000), str(tmp_path / "big"))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CnnlabError, match="cannot write to workdir"):
        train.train_and_evaluate(tiny(), str(blocker / "run"))
    with pytest.raises(CnnlabError, match="unknown config fields"):
        TrainConfig.from_dict({"model": "mlp", "learning_rat": 0.1})


def test_eval_covers_every_example_exactly_once():
    assert [m.sum() for _, m in data.eval_batches(10, 4)] == [4, 4, 2]
    seen = np.concatenate([i[m > 0] for i, m in data.eval_batches(10, 4)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(10))


# ------------------------------------------------- validation, selection, early stopping, divergence

def test_holdout_is_stratified_seeded_and_complete():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    kept, held = data.holdout(labels, 0.1, seed=0)
    assert np.bincount(labels[held]).tolist() == [1, 2, 3]      # 10 % of every class
    np.testing.assert_array_equal(np.sort(np.concatenate([kept, held])), np.arange(60))
    assert np.all(np.diff(kept) > 0) and np.all(np.diff(held) > 0)
    assert not np.array_equal(held, data.holdout(labels, 0.1, seed=1)[1])  # by seed
    np.testing.assert_array_equal(held, data.holdout(labels, 0.1, seed=0)[1])
    assert len(data.holdout(labels, 0.0, seed=0)[1]) == 0


def test_validation_selects_the_checkpoint_and_early_stopping_ends_the_run(tmp_path):
    # Gradient *ascent* on cross-entropy: the validation loss rises every epoch, so epoch 1 is
    # the best and early stopping (patience 2) ends the run after epoch 3.
    def ascent(logits, labels):
        return -train.cross_entropy_loss(logits, labels)

    config = tiny(max_steps_per_epoch=5, epochs=6, early_stopping=2, keep_checkpoints=1)
    state, final = train.train_and_evaluate(config, str(tmp_path), loss_fn=ascent)
    history = [r for r in train.read_metrics(str(tmp_path)) if not r.get("final")]
    val = [r["val_loss"] for r in history]
    assert len(history) == 3 and val[0] < val[1] < val[2], val
    assert all("test_loss" not in r for r in history)   # the test split: once, at the end
    assert final["stopped_early"] and final["checkpoint_step"] == 5 and final["step"] == 15
    assert final["val_loss"] == val[0] and int(state.step) == 5
    # keep_checkpoints=1 keeps the newest, and the selected one is kept too
    assert sorted(os.listdir(tmp_path / "checkpoints"), key=int) == ["5", "15"]
    assert train.load_run(str(tmp_path)).step == 5            # what evaluate/predict use
    # Resuming a run early stopping ended trains no further.
    _, again = train.train_and_evaluate(config, str(tmp_path), resume=True, loss_fn=ascent)
    assert again["step"] == 15 and again["test_accuracy"] == final["test_accuracy"]


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny(max_steps_per_epoch=40, log_every_steps=5)
    train.train_and_evaluate(config, str(tmp_path))                   # a good epoch: step 40
    with pytest.raises(CnnlabError, match=r"the loss diverged: \S+ at step \d+, above 10 x its "
                                          r"starting value .* for 20 steps in a row; stopped; "
                                          r"the last good checkpoint \(step 40\) is kept"):
        # Adam at lr 1e6: the loss explodes to ~1e29 but stays finite (not a NaN)
        train.train_and_evaluate(config.replace(epochs=3, learning_rate=1e6), str(tmp_path),
                                 resume=True)
    assert os.listdir(tmp_path / "checkpoints") == ["40"]
    assert [r["epoch"] for r in train.read_metrics(str(tmp_path))] == [1]


class _Plain(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))


class _NanWhenEvaluated(_Plain):
    """The same parameters as _Plain; its inference-mode logits are NaN."""

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        logits = nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))
        return logits if train else logits * jnp.nan


def test_a_non_finite_validation_loss_stops_the_run(tmp_path):
    config = tiny(model="flaky_test_model", max_steps_per_epoch=5)
    try:
        models.register("flaky_test_model", _Plain)
        train.train_and_evaluate(config, str(tmp_path))                    # checkpoint 5
        models.register("flaky_test_model", _NanWhenEvaluated)
        with pytest.raises(CnnlabError, match=r"the validation loss became nan after epoch 2; "
                                              r"stopped; the last good checkpoint \(step 5\)"):
            train.train_and_evaluate(config.replace(epochs=2), str(tmp_path), resume=True)
        # No validation split: the test split's loss, evaluated at the end, is checked too.
        with pytest.raises(CnnlabError, match=r"the test loss of the checkpoint at step 5 is nan"):
            train.train_and_evaluate(config.replace(val_fraction=0.0), str(tmp_path / "no_val"))
    finally:
        models._REGISTRY.pop("flaky_test_model")
    assert os.listdir(tmp_path / "checkpoints") == ["5"]


def test_random_erasing_is_a_config_field_that_reaches_the_train_step(tmp_path):
    # augment_erase (TrainConfig, --augment-erase) -> StepOptions -> data.augment in the step:
    # the same run with erasing ends with other weights; out of range is refused.
    config = tiny(augment=True, augment_pad=0, max_steps_per_epoch=3, val_fraction=0.0)
    assert train.StepOptions.from_config(config.replace(augment_erase=0.5)).augment_erase == 0.5
    train.train_and_evaluate(config, str(tmp_path / "plain"))
    train.train_and_evaluate(config.replace(augment_erase=1.0), str(tmp_path / "erase"))
    plain, erase = _arrays(tmp_path / "plain"), _arrays(tmp_path / "erase")
    assert not all(np.array_equal(x, y) for x, y in
                   zip(jax.tree.leaves(plain["params"]), jax.tree.leaves(erase["params"])))
    with pytest.raises(CnnlabError, match="augment_erase"):
        config.replace(augment_erase=1.5)
