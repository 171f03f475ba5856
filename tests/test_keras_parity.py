"""cnnlab's VGG16 and ResNet50 compute what Keras computes, from Keras-written ``.h5`` files.

A subprocess (Keras 3 on its JAX backend, its own global state) builds ``keras.applications``
VGG16 and ResNet50 with ``weights=None``, sets seeded random weights (including non-trivial batch
norm moving statistics), saves them as the published application files are laid out (weights-only
legacy h5, full and ``_notop``) and as full-model h5, and records its outputs for one input. This
process loads the files with :func:`cnnlab.keras_h5.load_weights` and compares logits and
intermediate activations. Small inputs keep it cheap: the top of ResNet50 is global pooling (any
size works); VGG16's top runs at 64x64 (fc1 then takes 2*2*512 inputs, which still checks the
flatten order).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnlab import keras_h5, models, transfer
from cnnlab.errors import CnnlabError

KERAS_SCRIPT = textwrap.dedent(r'''
    import os, sys
    os.environ["KERAS_BACKEND"] = "jax"
    import numpy as np
    import keras
    from keras.src.legacy.saving import legacy_h5_format
    import h5py
    from keras.src.initializers import random_initializers

    # Every weight is overwritten below; Keras's own random init would cost ~20 s of compiles.
    random_initializers.VarianceScaling.__call__ = (
        lambda self, shape, dtype=None: np.zeros(shape, "float32"))

    out = sys.argv[1]
    rng = np.random.default_rng(0)

    def randomize(model):
        for layer in model.layers:
            kind = type(layer).__name__
            ws = layer.get_weights()
            if not ws:
                continue
            if kind == "BatchNormalization":
                c = ws[0].shape
                ws = [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.2, c),
                      rng.uniform(0.5, 2.0, c)]
            else:  # Conv2D, Dense: He-scaled kernel, small bias
                fan_in = int(np.prod(ws[0].shape[:-1]))
                ws = [rng.normal(0, np.sqrt(2.0 / fan_in), ws[0].shape),
                      rng.normal(0, 0.05, ws[1].shape)]
            layer.set_weights([w.astype("float32") for w in ws])

    def save_weights_only(model, path):
        with h5py.File(path, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, model)

    def record(model, names, x, path):
        probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
        outs = probe.predict(x, verbose=0)
        np.savez(path, x=x, **dict(zip(names, outs)))

    # ResNet50 at 32x32: its top (avg pool + dense) does not depend on the input size.
    m = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3),
                                    classifier_activation=None)
    randomize(m)
    x = rng.uniform(-120, 130, (2, 32, 32, 3)).astype("float32")
    stages = ["pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
              "conv5_block3_out"]
    record(m, stages + ["predictions"], x, f"{out}/resnet50.npz")
    save_weights_only(m, f"{out}/resnet50.h5")
    notop = keras.Model(m.input, m.get_layer("conv5_block3_out").output)
    save_weights_only(notop, f"{out}/resnet50_notop.h5")
    legacy_h5_format.save_model_to_hdf5(m, f"{out}/resnet50_model.h5", include_optimizer=False)

    # What `cnnlab predict --model resnet50` must print for a photo: Keras's own recipe
    # (load_img at 224x224, preprocess_input, softmax) with the same weights at 224x224.
    from PIL import Image
    yy, xx = np.mgrid[:180, :260]
    photo = np.stack([128 + 100 * np.sin(xx / 9.0), 128 + 100 * np.cos(yy / 13.0),
                      128 + 60 * np.sin((xx + yy) / 21.0)], axis=-1)
    Image.fromarray(photo.clip(0, 255).astype("uint8")).save(f"{out}/photo.png")
    m224 = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3),
                                       classifier_activation=None)
    m224.set_weights(m.get_weights())
    img = keras.utils.img_to_array(keras.utils.load_img(f"{out}/photo.png",
                                                        target_size=(224, 224)))
    x224 = keras.applications.resnet50.preprocess_input(img[None])
    # Random weights give huge logits (a saturated softmax, ties at 0.0%): scale the head so
    # the logits spread over a few units, and save that model for cnnlab.
    head = m224.get_layer("predictions")
    scale = 3.0 / float(np.std(m224.predict(x224, verbose=0)))
    head.set_weights([w * scale for w in head.get_weights()])
    e = np.exp(m224.predict(x224, verbose=0)[0].astype("float64"))
    np.save(f"{out}/photo_probs.npy", e / e.sum())
    save_weights_only(m224, f"{out}/resnet50_photo.h5")

    # VGG16 with its fc top at 64x64 (block5_pool is 2x2x512).
    m = keras.applications.VGG16(weights=None, input_shape=(64, 64, 3), classes=10,
                                 classifier_activation=None)
    randomize(m)
    x = rng.uniform(-120, 130, (2, 64, 64, 3)).astype("float32")
    stages = [f"block{b}_pool" for b in range(1, 6)]
    record(m, stages + ["fc1", "predictions"], x, f"{out}/vgg16.npz")
    save_weights_only(m, f"{out}/vgg16.h5")
    notop = keras.Model(m.input, m.get_layer("block5_pool").output)
    save_weights_only(notop, f"{out}/vgg16_notop.h5")
    legacy_h5_format.save_model_to_hdf5(notop, f"{out}/vgg16_notop_model.h5",
                                        include_optimizer=False)
    print("ok")
''')


@pytest.fixture(scope="session")
def keras_files(tmp_path_factory):
    """Keras-written h5 files + reference outputs, made once per session (~100 MB)."""
    out = tmp_path_factory.mktemp("keras")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", KERAS_SCRIPT, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _template(model, shape):
    """Variables of the right shapes, without running an init (the file fills every value)."""
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))


def _run(model, variables, x):
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))
    out, state = apply(variables, jnp.asarray(x))
    inter = {k: v[0] for k, v in state["intermediates"].items()}
    return np.asarray(out), inter


def assert_close(got, want, what):
    """Within 1e-4 relative to the activation scale (|want| max, at least 1)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(np.max(np.abs(want))))
    err = float(np.max(np.abs(got - want)))
    assert err <= 1e-4 * scale, f"{what}: max |cnnlab - keras| = {err:.3g} (scale {scale:.3g})"


def _assert_layers_loaded(variables, path):
    """Every loaded array equals the file's (nothing left from the template)."""
    file_layers = keras_h5.read_weights(path)
    for name, layer in variables["params"].items():
        values = file_layers[name]
        if "scale" in layer:
            mine = [layer["scale"], layer["bias"], variables["batch_stats"][name]["mean"],
                    variables["batch_stats"][name]["var"]]
        else:
            mine = [layer["kernel"], layer["bias"]]
        for a, b in zip(mine, values):
            np.testing.assert_array_equal(a, b)


def test_resnet50_with_top_matches_keras(keras_files):
    ref = np.load(keras_files / "resnet50.npz")
    model = models.get("resnet50", num_classes=1000)
    template = _template(model, (1, 32, 32, 3))
    variables = keras_h5.load_weights(keras_files / "resnet50.h5", template)
    _assert_layers_loaded(variables, keras_files / "resnet50.h5")
    # The full-model layout (weights under "model_weights") gives the same variables.
    from_model_file = keras_h5.load_weights(keras_files / "resnet50_model.h5", template)
    jax.tree.map(np.testing.assert_array_equal, from_model_file, variables)
    logits, inter = _run(model, variables, ref["x"])
    assert_close(logits, ref["predictions"], "predictions")
    for name in ("pool1_pool", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                 "conv5_block3_out"):
        assert_close(inter[name], ref[name], name)
    # Logits vary between images and classes: a dead network would pass the comparisons.
    assert np.std(ref["predictions"]) > 0.1


def test_resnet50_notop_matches_keras(keras_files):
    ref = np.load(keras_files / "resnet50.npz")
    model = models.get("resnet50", num_classes=1000, include_top=False, pooling="avg")
    variables = keras_h5.load_weights(keras_files / "resnet50_notop.h5",
                                      _template(model, (1, 32, 32, 3)))
    features, _ = _run(model, variables, ref["x"])
    assert_close(features, ref["conv5_block3_out"].mean(axis=(1, 2)), "avg-pooled features")


def test_vgg16_with_top_matches_keras(keras_files):
    ref = np.load(keras_files / "vgg16.npz")
    model = models.get("vgg16", num_classes=10)
    variables = keras_h5.load_weights(keras_files / "vgg16.h5", _template(model, (1, 64, 64, 3)))
    logits, inter = _run(model, variables, ref["x"])
    assert_close(logits, ref["predictions"], "predictions")
    for b in range(1, 6):
        assert_close(inter[f"block{b}_pool"], ref[f"block{b}_pool"], f"block{b}_pool")
    assert np.std(ref["predictions"]) > 0.1


@pytest.mark.parametrize("layout", ["vgg16_notop.h5", "vgg16_notop_model.h5"])
def test_vgg16_notop_matches_keras(keras_files, layout):
    ref = np.load(keras_files / "vgg16.npz")
    model = models.get("vgg16", num_classes=10, include_top=False)
    variables = keras_h5.load_weights(keras_files / layout, _template(model, (1, 64, 64, 3)))
    _assert_layers_loaded(variables, keras_files / layout)
    features, _ = _run(model, variables, ref["x"])
    assert_close(features, ref["block5_pool"], "block5_pool")


def test_full_file_into_notop_model_and_fresh_head(keras_files):
    """A full file loads into a model without the top (the top is ignored); with
    keep=("predictions",) a 5-class head stays as initialized."""
    notop = models.get("vgg16", num_classes=10, include_top=False)
    v = keras_h5.load_weights(keras_files / "vgg16.h5", _template(notop, (1, 64, 64, 3)))
    assert "fc1" not in v["params"] and "block5_conv3" in v["params"]

    model = models.get("resnet50", num_classes=5)
    template = _template(model, (1, 32, 32, 3))
    fresh = jax.tree.map(lambda s: np.full(s.shape, 7.0, np.float32), template)
    v = keras_h5.load_weights(keras_files / "resnet50.h5", fresh, keep=("predictions",))
    assert v["params"]["predictions"]["kernel"].shape == (2048, 5)
    assert np.all(v["params"]["predictions"]["kernel"] == 7.0)
    assert not np.any(v["params"]["conv1_conv"]["kernel"] == 7.0)


def test_wrong_files_are_clear_errors(keras_files, tmp_path):
    resnet = _template(models.get("resnet50", num_classes=1000), (1, 32, 32, 3))
    vgg_top = _template(models.get("vgg16", num_classes=10), (1, 64, 64, 3))
    with pytest.raises(CnnlabError, match="does not hold weights for this model"):
        keras_h5.load_weights(keras_files / "vgg16.h5", resnet)
    with pytest.raises(CnnlabError, match=r"lacks weights for layer\(s\) predictions.*_notop"):
        keras_h5.load_weights(keras_files / "resnet50_notop.h5", resnet)
    # VGG16's fc top at another input size: fc1 differs; the message names layer and shapes.
    vgg_96 = _template(models.get("vgg16", num_classes=10), (1, 96, 96, 3))
    with pytest.raises(CnnlabError, match=r"'fc1'.*\(2048, 4096\).*\(4608, 4096\).*224x224"):
        keras_h5.load_weights(keras_files / "vgg16.h5", vgg_96)
    # Another number of classes without keep=.
    vgg_5 = _template(models.get("vgg16", num_classes=5), (1, 64, 64, 3))
    with pytest.raises(CnnlabError, match=r"'predictions'.*\(4096, 10\).*\(4096, 5\).*keep"):
        keras_h5.load_weights(keras_files / "vgg16.h5", vgg_5)
    not_h5 = tmp_path / "weights.h5"
    not_h5.write_text("not a weights file")
    with pytest.raises(CnnlabError, match="not an HDF5 file"):
        keras_h5.load_weights(not_h5, vgg_top)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("something")
    with pytest.raises(CnnlabError, match="not a Keras h5 weights file"):
        keras_h5.load_weights(empty, vgg_top)
    with pytest.raises(CnnlabError, match="does not exist.*keras-applications"):
        keras_h5.load_weights(tmp_path / "missing.h5", vgg_top)


def test_call_order_is_keras_layer_order(keras_files):
    """cnnlab runs the layers in the order Keras lists them (ResNet50's bottleneck: 1, 2, then
    the 0 = shortcut conv, 3, 0_bn, 3_bn), so positional loading lines up."""
    resnet = models.get("resnet50", num_classes=1000)
    assert [n for n in transfer.layer_order(resnet, (1, 32, 32, 3))] == \
        list(keras_h5.read_weights(keras_files / "resnet50.h5"))
    vgg = models.get("vgg16", num_classes=10)
    assert transfer.layer_order(vgg, (1, 64, 64, 3)) == \
        list(keras_h5.read_weights(keras_files / "vgg16.h5"))


def test_renamed_layers_load_by_position(keras_files, tmp_path):
    """A file whose layers are named differently (as some published files are) loads by position,
    like Keras's load_weights, into the same variables as the by-name load."""
    src, dst = keras_files / "resnet50.h5", tmp_path / "renamed.h5"
    with h5py.File(src, "r") as f, h5py.File(dst, "w") as g:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        new_names = [f"layer_{i}" for i in range(len(names))]
        for old, new in zip(names, new_names):
            f.copy(f[old], g, name=new)
        g.attrs["layer_names"] = [n.encode() for n in new_names]
    model = models.get("resnet50", num_classes=1000)
    by_name = keras_h5.load_weights(src, _template(model, (1, 32, 32, 3)))
    by_position = keras_h5.load_model_weights(dst, model, (32, 32, 3))
    jax.tree.map(np.testing.assert_array_equal, by_position, by_name)
    # Without the order there is no way to match: a clear error, not a silent mix-up.
    with pytest.raises(CnnlabError, match="does not hold weights for this model"):
        keras_h5.load_weights(dst, _template(model, (1, 32, 32, 3)))
    # Positional loading still checks shapes: VGG16's layers do not fit ResNet50.
    with pytest.raises(CnnlabError, match=r"layer 'conv1_conv' \(file layer 'block1_conv1'\)"):
        keras_h5.load_model_weights(keras_files / "vgg16.h5", model, (32, 32, 3))


def test_cnnlab_predict_prints_what_keras_predicts(keras_files, capsys):
    """`cnnlab predict --model resnet50 --weights FILE.h5 photo.png`: Keras's top 3 with Keras's
    probabilities (image loading, caffe preprocessing, softmax, class names)."""
    from cnnlab import cli, imagenet
    want = np.load(keras_files / "photo_probs.npy")
    photo = str(keras_files / "photo.png")
    assert cli.main(["predict", "--model", "resnet50", "--weights",
                     str(keras_files / "resnet50_photo.h5"), photo]) == 0
    out = capsys.readouterr().out.strip()
    order = np.argsort(-want)
    assert np.all(-np.diff(want[order[:4]]) > 1e-4)   # a clear order, no near-ties
    assert out == f"{photo}: " + ", ".join(
        f"{imagenet.class_name(i)} {want[i]:.1%}" for i in order[:3]), out


def test_finetune_from_keras_notop_weights(keras_files, tmp_path, capsys):
    """`cnnlab finetune --backbone vgg16 --weights vgg16_notop.h5` on an image folder: the conv
    layers stay exactly the file's, a 3-class head is trained on cached features."""
    from test_image_folder import make_folder

    from cnnlab import cli, train
    root = make_folder(tmp_path / "colours", per_class=5, broken=False)
    workdir = tmp_path / "ft"
    status = cli.main(["finetune", "--backbone", "vgg16", "--weights",
                       str(keras_files / "vgg16_notop.h5"), "--data-dir", str(root),
                       "--image-size", "32", "--freeze-epochs", "2", "--epochs", "0",
                       "--batch-size", "4", "--no-plots", "--workdir", str(workdir),
                       "--tfds-dir", str(tmp_path / "tfds")])
    assert status == 0, capsys.readouterr().err
    run = train.load_run(str(workdir))
    assert run.config.model == "vgg16" and run.config.model_kwargs["preprocess"] == "caffe"
    params = run.state.params
    assert params["predictions"]["kernel"].shape == (512, 3)
    file_layers = keras_h5.read_weights(keras_files / "vgg16_notop.h5")
    for name, (kernel, bias) in file_layers.items():
        np.testing.assert_array_equal(params[name]["kernel"], kernel)
        np.testing.assert_array_equal(params[name]["bias"], bias)
