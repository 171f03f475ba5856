"""cnnlab.transfer: heads, freezing, lr_find, TTA, interpretation, and `cnnlab finetune` end to end
on an image folder of generated PNG/JPEG files (broken ones included) with a real cnnlab run as the
backbone."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnnlab import cli, imagenet, models, train, transfer
from cnnlab.errors import CnnlabError
from cnnlab.train import TrainConfig

from test_image_folder import make_folder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def _abstract(model, shape):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def _params(model, shape, seed=0):
    """Random parameters of the right shapes from numpy: a jitted Flax init compiles its random
    initializers, which costs seconds on a busy CPU."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(0, 0.1, s.shape).astype(np.float32),
                        _abstract(model, shape)["params"])


# ------------------------------------------------------------------------------ heads, blocks

def test_replace_head_removes_old_classes():
    old_model = models.get("workshop_cnn", num_classes=10)
    params = _params(old_model, (1, 28, 28, 1))
    assert transfer.head_name(params) == "Dense_0"
    new = transfer.replace_head(params, 3, jax.random.key(1))
    assert new["Dense_0"]["kernel"].shape == (1024, 3) and new["Dense_0"]["bias"].shape == (3,)
    assert not np.any(np.asarray(new["Dense_0"]["bias"]))
    assert 0.02 < float(np.std(new["Dense_0"]["kernel"])) < 0.04      # LeCun normal: 1/sqrt(1024)
    assert params["Dense_0"]["kernel"].shape == (1024, 10)            # input untouched
    for name in ("Conv_0", "Conv_1", "Conv_2"):
        assert new[name] is params[name]
    logits = jax.jit(lambda p, x: models.get("workshop_cnn", num_classes=3).apply(
        {"params": p}, x, train=False))(new, jnp.zeros((2, 28, 28, 1)))
    assert logits.shape == (2, 3)
    # Output-layer names: Keras's "predictions", cnnlab's "head", else the last Dense by number.
    assert transfer.head_name({"Dense_2": {"kernel": np.zeros((4, 4))},
                               "Dense_10": {"kernel": np.zeros((4, 2))}}) == "Dense_10"
    assert transfer.head_name(_abstract(models.get("resnet50", num_classes=5),
                                        (1, 32, 32, 3))["params"]) == "predictions"
    with pytest.raises(CnnlabError, match="no dense output layer"):
        transfer.head_name({"Conv_0": {"kernel": np.zeros((3, 3, 1, 4))}})


def test_blocks_freeze_labels_and_discriminative_lrs():
    model = models.get("resnet50", num_classes=5)
    params = _abstract(model, (1, 32, 32, 3))["params"]
    groups = transfer.blocks(transfer.layer_order(model, (1, 32, 32, 3)), params)
    assert [g for g, _ in groups] == ["conv1", "conv2", "conv3", "conv4", "conv5", "predictions"]
    assert groups[0][1] == ["conv1_conv", "conv1_bn"] and len(groups[4][1]) == 8 + 6 + 6
    labels = transfer.freeze_labels(params, groups, unfreeze=2)
    assert labels["predictions"] == {"kernel": "head", "bias": "head"}
    assert labels["conv5_block3_3_bn"]["scale"] == "block-1"
    assert labels["conv4_block1_0_conv"]["kernel"] == "block-2"
    assert labels["conv3_block4_3_conv"]["kernel"] == "frozen"
    assert transfer.trainable_layers(labels)[0].startswith("conv4")
    lrs = transfer.discriminative_lrs(labels, 1e-3, ratio=100)
    assert lrs == pytest.approx({"head": 1e-3, "block-1": 1e-4, "block-2": 1e-5})
    everything = transfer.freeze_labels(params, groups, unfreeze=-1)
    assert "frozen" not in jax.tree.leaves(everything)
    # cnnlab's own ResNet: each conv-BN stage (its batch norm inside) is a block, the head is "head".
    small = models.get("resnet_small", num_classes=3)
    p = _abstract(small, (1, 28, 28, 1))["params"]
    g = transfer.blocks(transfer.layer_order(small, (1, 28, 28, 1)), p)
    assert [name for name, _ in g] == ["stage1", "stage2", "stage3", "hidden", "head"]
    assert g[0] == ("stage1", ["stage1"]) and g[-1] == ("head", ["head"])


def test_finetune_optimizer_leaves_frozen_parameters_bit_identical():
    model = models.get("lenet5", num_classes=3)
    params = _params(model, (1, 28, 28, 1))
    groups = transfer.blocks(transfer.layer_order(model, (1, 28, 28, 1)), params)
    labels = transfer.freeze_labels(params, groups, unfreeze=1)
    frozen = [n for n in params if n not in transfer.trainable_layers(labels)]
    trainable = transfer.trainable_layers(labels)
    assert len(frozen) >= 2 and len(trainable) == 2
    tx = transfer.finetune_optimizer(labels, transfer.discriminative_lrs(labels, 1e-2), 10)
    x = np.random.default_rng(1).normal(size=(8, 28, 28, 1)).astype(np.float32)
    y = np.arange(8) % 3

    @jax.jit
    def step(p, state):
        def loss(p):
            logits = model.apply({"params": p}, x, train=False)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    p, state = params, tx.init(params)
    for _ in range(3):
        p, state = step(p, state)
    for name in frozen:
        jax.tree.map(np.testing.assert_array_equal, p[name], params[name])
    for name in trainable:
        assert not np.array_equal(p[name]["kernel"], params[name]["kernel"])


# ---------------------------------------------------------------------- lr_find, TTA, interpret

def test_lr_find_plot_and_suggestion(tmp_path):
    """Softmax regression on two overlapping Gaussian blobs: the sweep finds a usable rate."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-.5, 1, (256, 8)), rng.normal(.5, 1, (256, 8))]).astype("f4")
    y = np.repeat([0, 1], 256)
    perm = rng.permutation(512)
    batches = [(x[perm[i:i + 32]], y[perm[i:i + 32]]) for i in range(0, 512, 32)]
    params = {"kernel": jnp.zeros((8, 2)), "bias": jnp.zeros((2,))}

    def loss_fn(p, batch):
        logits = batch[0] @ p["kernel"] + p["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    result = transfer.lr_find(loss_fn, params, batches, plot=str(tmp_path / "lr.png"))
    assert is_png(result.plot)
    assert not np.any(np.asarray(params["kernel"]))                 # input untouched
    assert result.suggestion == pytest.approx(result.minimum / 10)
    assert 1e-4 < result.suggestion < 1.0 and 1e-5 < result.steepest < result.minimum
    assert result.lrs[0] == pytest.approx(1e-7) and np.all(np.diff(result.lrs) > 0)
    # Training at the suggestion works: the loss falls from log(2) = 0.69 near the best
    # possible for these blobs (~0.45; the sweep's minimum).
    tx, p = optax.adam(result.suggestion), params
    state = tx.init(p)

    @jax.jit
    def step(p, state, b):
        u, state = tx.update(jax.grad(loss_fn)(p, b), state, p)
        return optax.apply_updates(p, u), state

    for _ in range(3):
        for b in batches:
            p, state = step(p, state, b)
    assert float(loss_fn(p, (x, y))) < 0.5


def test_tta_and_interpretation(tmp_path):
    images = np.zeros((4, 6, 6, 1), np.uint8)
    images[:, :, :3] = 255                      # bright left half; flipped: bright right half

    def logits_fn(imgs):                        # "class 0 if the left half is brighter"
        left = imgs[:, :, :3].mean(axis=(1, 2, 3)) - imgs[:, :, 3:].mean(axis=(1, 2, 3))
        return np.stack([left / 50.0, -left / 50.0], axis=1)

    probs = transfer.tta_probs(logits_fn, images)
    np.testing.assert_allclose(probs, 0.5, atol=1e-6)   # the flip exactly cancels the evidence
    seen = []                                   # plain logits given: only the mirrors run
    again = transfer.tta_probs(lambda imgs: seen.append(imgs) or logits_fn(imgs), images,
                               logits=logits_fn(images))
    np.testing.assert_array_equal(again, probs)
    assert len(seen) == 1 and np.array_equal(seen[0], images[:, :, ::-1])

    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.array([[5, 0, 0], [0, 5, 0], [0, 4, 0], [0, 0, 1], [4, 0, 0], [3, 0, 0]], "f4")
    report = transfer.interpret(np.zeros((6, 8, 8, 3), np.uint8), labels, logits, ["a", "b", "c"],
                                top_losses=3, out_dir=str(tmp_path))
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 1, 1], [2, 0, 0]]
    assert report["most_confused"][0] == ["c", "a", 2]
    assert [r[0] for r in report["top_losses"]] == [1, 4, 5]
    assert is_png(report["files"]["top_losses"])
    with open(report["files"]["interpretation"]) as f:
        assert json.load(f)["most_confused"][0] == ["c", "a", 2]


def test_decode_predictions_and_caffe_preprocessing():
    probs = np.full((1, 1000), 1e-4, np.float32)
    probs[0, 281], probs[0, 282] = 0.474, 0.3
    top = imagenet.decode_predictions(probs, top=3)[0]
    assert top[0] == ("n02123045", "tabby", pytest.approx(0.474))
    assert top[1][1] == "tiger cat"
    rgb = np.array([[[[10, 20, 30]]]], np.uint8)
    np.testing.assert_allclose(imagenet.preprocess_input(rgb)[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    # The in-model variant takes [0, 1] RGB and matches.
    from cnnlab.models.vgg16 import imagenet_input
    np.testing.assert_allclose(imagenet_input(jnp.asarray(rgb / 255.0, jnp.float32), "caffe"),
                               imagenet.preprocess_input(rgb), atol=1e-4)


# ------------------------------------------------------------------------- finetune, CLI

@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory):
    """A real (short) cnnlab training run: the workshop CNN on the embedded Fashion-MNIST subset."""
    workdir = str(tmp_path_factory.mktemp("backbone"))
    config = TrainConfig(model="workshop_cnn", dataset="fashion_mnist_subset", epochs=1,
                         batch_size=64, max_steps_per_epoch=20, eval_batch_size=500,
                         learning_rate=3e-3, plots=False, seed=0,
                         tfds_dir=str(tmp_path_factory.mktemp("tfds")))
    train.train_and_evaluate(config, workdir)
    return workdir


def test_finetune_end_to_end(backbone_run, tmp_path, capsys):
    root = make_folder(tmp_path / "stripes", per_class=16, kind="stripes")
    workdir = tmp_path / "ft"
    status = cli.main([
        "finetune", "--backbone", backbone_run, "--data-dir", str(root), "--freeze-epochs", "10",
        "--epochs", "1", "--unfreeze", "1", "--batch-size", "8", "--lr-find",
        "--workdir", str(workdir), "--tfds-dir", str(tmp_path / "tfds")])
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "validation accuracy" in out and "warning: image folder" in err
    assert "vertical/truncated.jpg (truncated or corrupt, skipped)" in err

    records = train.read_metrics(str(workdir))
    epochs, final = records[:-1], records[-1]
    assert [r["phase"] for r in epochs] == ["head"] * 10 + ["finetune"]
    assert final["final"] and final["val_examples"] == 10
    # Horizontal vs vertical stripes vs plain: the Fashion-MNIST features tell them apart
    # (chance is 1/3; this run gets 10/10).
    assert epochs[9]["val_accuracy"] >= 0.7 and final["val_accuracy"] >= 0.7, final
    assert "val_accuracy_tta" in final
    for name in ("curves", "confusion_matrix", "predictions", "top_losses", "lr_find"):
        assert is_png(workdir / "plots" / f"{name}.png"), name
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"] == "workshop_cnn" and config["dataset"].startswith("folder:")

    # Frozen parameters are bit-identical: everything but the head after the head phase, the
    # first two convs after fine-tuning the last block.
    source = train.load_run(backbone_run).state.params
    head_step = epochs[9]["step"]
    after_head = train.load_run(str(workdir), step=head_step).state.params
    after_all = train.load_run(str(workdir)).state.params
    for name in ("Conv_0", "Conv_1", "Conv_2"):
        jax.tree.map(np.testing.assert_array_equal, after_head[name], source[name])
    for name in ("Conv_0", "Conv_1"):
        jax.tree.map(np.testing.assert_array_equal, after_all[name], source[name])
    assert not np.array_equal(after_all["Conv_2"]["kernel"], source["Conv_2"]["kernel"])
    assert after_head["Dense_0"]["kernel"].shape == (1024, 3)

    # The workdir reads back like any run: `cnnlab predict --workdir`.
    assert cli.main(["predict", "--workdir", str(workdir), str(root / "plain" / "0.png")]) == 0
    out, _ = capsys.readouterr()
    assert out.split(": ")[1].split()[0] in ("horizontal", "plain", "vertical")


def test_finetune_and_predict_mistakes_are_one_line_errors(backbone_run, tmp_path, capsys):
    root = make_folder(tmp_path / "colours", broken=False)
    tfds_dir = ["--tfds-dir", str(tmp_path / "tfds")]
    for argv, message in [
        (["predict", "--model", "resnet50", "cat.jpg"],
         "needs --weights FILE.h5 (the full ImageNet file, not _notop)"),
        (["finetune", "--backbone", "resnet50", "--data-dir", str(root),
          "--workdir", str(tmp_path / "a")], "--backbone resnet50 needs --weights"),
        (["finetune", "--backbone", "vgg16", "--weights", str(tmp_path / "none.h5"),
          "--data-dir", str(root), "--workdir", str(tmp_path / "a")],
         "none.h5 does not exist; download https://storage.googleapis.com/tensorflow/"
         "keras-applications/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        (["finetune", "--backbone", "alexnet", "--data-dir", str(root),
          "--workdir", str(tmp_path / "b")], "must be resnet50 or vgg16 or the workdir"),
        (["finetune", "--backbone", backbone_run, "--data-dir", str(root), "--image-size", "64",
          "--workdir", str(tmp_path / "c")], "takes 28x28 images"),
        (["finetune", "--backbone", backbone_run, "--data-dir", str(root), "--freeze-epochs",
          "0", "--epochs", "0", "--workdir", str(tmp_path / "d")], "nothing to train"),
    ]:
        assert cli.main(argv + (tfds_dir if argv[0] == "finetune" else [])) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error: ") and message in err, err
        assert err.count("\n") == 1, err
    assert "keras-applications/resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5" in \
        str(pytest.raises(CnnlabError, transfer.imagenet_predict, "resnet50", None, ["x"]).value)
