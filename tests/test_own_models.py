"""Your model everywhere (issue 16, point 2): ``--import MODULE`` registers a model of yours for
every subcommand and the run's ``run.json`` records it, so later processes in other directories
find it again; installed packages offer models through the ``cnnlab.models`` entry-point group;
a Flax NNX module class trains like a linen one (through Flax's bridge)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnlab import cli, models, train
from cnnlab.config import TrainConfig
from test_image_folder import make_folder

CNNLAB = [sys.executable, "-m", "cnnlab"]

MY_MODELS = textwrap.dedent('''
    import flax.linen as nn
    from cnnlab import models

    class TinyUserCNN(nn.Module):
        num_classes: int
        width: int = 8

        @nn.compact
        def __call__(self, x, *, train=False):
            x = nn.relu(nn.Conv(self.width, (3, 3), strides=2, name="conv")(x))
            return nn.Dense(self.num_classes, name="head")(x.reshape(len(x), -1))

    models.register("tiny_user", TinyUserCNN)
''')


def run(argv, cwd, env, timeout=600):
    r = subprocess.run(CNNLAB + argv, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{argv}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


@pytest.mark.slow
def test_a_model_of_yours_goes_through_every_subcommand_from_anywhere(tmp_path, env):
    lab, elsewhere = tmp_path / "lab", tmp_path / "elsewhere"
    lab.mkdir()
    elsewhere.mkdir()
    (lab / "my_models.py").write_text(MY_MODELS)
    env = dict(env, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    workdir = str(tmp_path / "run")
    out = run(["train", "--import", "my_models", "--model", "tiny_user", "--dataset", "digits",
               "--epochs", "1", "--batch-size", "64", "--no-plots", "--workdir", workdir,
               "--tfds-dir", "tfds"], cwd=lab, env=env)
    # Paths given relative to where the run started are recorded absolute.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["tfds_dir"] == \
        str(lab / "tfds")
    assert "training tiny_user" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["imports"] == [{"module": "my_models", "path": str(lab)}]

    # Other processes, another directory, no --import: run.json says where the model is.
    out = run(["evaluate", "--workdir", workdir], cwd=elsewhere, env=env)
    assert "test accuracy" in out and "on 360 test images" in out
    from PIL import Image
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(elsewhere / "eight.png")
    out = run(["predict", "--workdir", workdir, "eight.png"], cwd=elsewhere, env=env)
    assert out.startswith("eight.png: ") and out.count("%") == 3
    out = run(["visualize", "--workdir", workdir, "--out", "vis"], cwd=elsewhere, env=env)
    assert (elsewhere / "vis").is_dir() and "first-layer filters" in out
    folder = make_folder(tmp_path / "stripes", per_class=6, broken=False, kind="stripes")
    ft = str(tmp_path / "ft")
    out = run(["finetune", "--backbone", workdir, "--data-dir", str(folder), "--freeze-epochs",
               "1", "--epochs", "1", "--batch-size", "4", "--no-plots", "--no-tta",
               "--workdir", ft], cwd=elsewhere, env=env)
    assert "validation accuracy" in out
    # ... and the fine-tuned run (a tiny_user too) reads back the same way.
    assert json.loads((tmp_path / "ft" / "run.json").read_text())["imports"] == info["imports"]
    run(["evaluate", "--workdir", ft], cwd=tmp_path, env=env)


def test_import_mistakes_are_one_line_errors(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_models.py").write_text("import flax.linen as nn\nraise ValueError('oops')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for spec, message in [("no_such_module", "--import no_such_module: no module named"),
                          ("missing.py", "--import " + str(tmp_path / "missing.py") + ": no such"),
                          ("broken_models", "--import broken_models failed: ValueError: oops")]:
        assert cli.main(["evaluate", "--import", spec, "--workdir", "x"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error: " + message) and err.count("\n") == 1, err


def test_installed_packages_offer_models_through_the_entry_point_group(tmp_path, env):
    site = tmp_path / "site"
    (site / "labmodels-1.0.dist-info").mkdir(parents=True)
    (site / "labmodels.py").write_text(MY_MODELS.replace('models.register("tiny_user", '
                                                         'TinyUserCNN)', ""))
    (site / "labmodels-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: labmodels\nVersion: 1.0\n")
    (site / "labmodels-1.0.dist-info" / "entry_points.txt").write_text(
        "[cnnlab.models]\nlab_cnn = labmodels:TinyUserCNN\n")
    env = dict(env, PYTHONPATH=str(site), TFDS_DATA_DIR=str(tmp_path / "tfds"))
    out = run(["train", "--model", "lab_cnn", "--dataset", "digits", "--epochs", "1",
               "--max-steps-per-epoch", "3", "--batch-size", "32", "--no-plots",
               "--workdir", str(tmp_path / "run")], cwd=tmp_path, env=env)
    assert "training lab_cnn" in out and "test accuracy" in out


class NNXCNN(nnx.Module):
    """A small CNN written the NNX way: modes by ``train()``/``eval()``, no ``train`` argument."""

    def __init__(self, num_classes: int, *, width: int = 16, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, width, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs)
        self.dropout = nnx.Dropout(0.3, rngs=rngs)
        self.out = nnx.Linear(width * 4 * 4, num_classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
        return self.out(self.dropout(x.reshape(x.shape[0], -1)))


def test_an_nnx_cnn_trains_checkpoints_and_reads_back(tmp_path, monkeypatch):
    # registered for this test only: later tests in this process see the built-in models
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    models.register("nnx_cnn", NNXCNN)
    config = TrainConfig(model="nnx_cnn", model_kwargs={"width": 16}, dataset="digits",
                         epochs=4, batch_size=64, learning_rate=3e-3, plots=False,
                         tfds_dir=str(tmp_path / "tfds"))
    state, final = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert final["test_accuracy"] > 0.8, final  # 4 short epochs; chance is 10%
    assert set(state.batch_stats["nnx"]["bn"]) == {"mean", "var"}
    assert float(jnp.abs(state.batch_stats["nnx"]["bn"]["mean"]).sum()) > 0  # BN updated

    model = models.get("nnx_cnn", num_classes=10, width=16)
    x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    # Inference mode is deterministic; training mode applies dropout (by the dropout key).
    np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
    a, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)},
                       mutable=["batch_stats"])
    b, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                       mutable=["batch_stats"])
    assert not np.allclose(a, b)

    run_ = train.load_run(str(tmp_path / "run"))
    assert run_.step == final["checkpoint_step"]
    np.testing.assert_allclose(run_.logits(np.zeros((2, 8, 8, 1), np.uint8)),
                               model.apply(variables, jnp.zeros((2, 8, 8, 1))), atol=1e-5)
    # run.json records where the class came from (this test module), for other processes.
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["imports"] == [{"module": NNXCNN.__module__,
                                "path": os.path.dirname(os.path.abspath(__file__))}]
