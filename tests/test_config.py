"""cnnlab.config: every field of TrainConfig and FinetuneConfig checked by type and range from
Python, from a --config file and from the command line, one line naming the field; flags generated
for every field; dotted --set; presets readable without importing JAX."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest

from cnnlab import cli, configs
from cnnlab.config import FinetuneConfig, TrainConfig, apply_overrides
from cnnlab.errors import CnnlabError

REQUIRED = {FinetuneConfig: {"backbone": "resnet50", "data_dir": "pets"}}


def bad_values(accepts) -> list:
    """Values the field must refuse: a wrong type, and one out of range where there is a range."""
    wrong_type = {"int": "3", "float": "1e-3", "bool": "yes", "str": 5, "choice": "nope",
                  "mapping": [1, 2]}[accepts.kind]
    out = [wrong_type]
    if accepts.kind in ("int", "float") and accepts.low is not None:
        below = accepts.low - 1 if accepts.kind == "int" or not accepts.low_open else accepts.low
        if accepts.off is None or below != accepts.off:
            out.append(below)
    if accepts.kind == "float" and accepts.high is not None:
        out.append(accepts.high + (0 if accepts.high_open else 1))
    if accepts.kind == "float":
        out.append(float("nan"))
    return out


CASES = [(cls, f.name, value) for cls in (TrainConfig, FinetuneConfig)
         for f in dataclasses.fields(cls) for value in bad_values(f.metadata["accepts"])]


@pytest.mark.parametrize("cls,name,value", CASES,
                         ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in CASES])
def test_every_field_refuses_wrong_types_and_ranges_in_one_line(cls, name, value):
    with pytest.raises(CnnlabError) as info:
        cls(**{**REQUIRED.get(cls, {}), name: value})
    message = str(info.value)
    assert message.startswith(f"{name} must be "), message
    assert "\n" not in message and repr(value) in message


def test_accepted_values_are_normalised_and_round_trip():
    c = TrainConfig(learning_rate=1, model_kwargs={"widths": [8, 16]}, max_steps_per_epoch=None)
    assert c.learning_rate == 1.0 and isinstance(c.learning_rate, float)
    assert c.model_kwargs == {"widths": (8, 16)}  # lists become tuples: the model stays hashable
    assert TrainConfig.from_dict(c.to_dict()) == c
    assert TrainConfig(divergence_factor=0).divergence_factor == 0.0  # 0 = off is accepted
    with pytest.raises(CnnlabError, match="early_stopping needs a validation split"):
        TrainConfig(early_stopping=3, val_fraction=0.0)
    with pytest.raises(CnnlabError, match="nothing to train"):
        FinetuneConfig(backbone="vgg16", data_dir="x", freeze_epochs=0, epochs=0)


def test_one_name_per_concept_across_train_and_finetune():
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    finetune_fields = {f.name for f in dataclasses.fields(FinetuneConfig)}
    shared = {"learning_rate", "batch_size", "epochs", "seed", "val_fraction", "augment_flip",
              "top_k", "keep_checkpoints", "plots", "tfds_dir", "data_dir"}
    assert shared <= train_fields & finetune_fields
    assert not {"lr", "flip"} & (train_fields | finetune_fields)


def test_set_reaches_into_mapping_fields_and_reads_json():
    c = apply_overrides(TrainConfig(), ["model_kwargs.widths=[32,64,128]", "model_kwargs.dropout=0.2",
                                        "epochs=5", "dataset=digits", "augment=true"])
    assert c.model_kwargs == {"widths": (32, 64, 128), "dropout": 0.2}
    assert (c.epochs, c.dataset, c.augment) == (5, "digits", True)
    for bad, message in (("epochs", "FIELD=VALUE"), ("nope=1", "unknown config field 'nope'"),
                         ("epochs.x=1", "epochs is not a mapping"),
                         ("epochs=0", "epochs must be an integer >= 1")):
        with pytest.raises(CnnlabError, match=message):
            apply_overrides(TrainConfig(), [bad])


@pytest.mark.parametrize("command,cls", [("train", TrainConfig), ("finetune", FinetuneConfig)])
def test_every_field_has_a_flag(command, cls):
    sub = cli.build_parser()._subparsers._group_actions[0].choices[command]
    dests = {a.dest for a in sub._actions}
    fields = {f.name for f in dataclasses.fields(cls) if f.metadata["accepts"].kind != "mapping"}
    assert fields <= dests, fields - dests
    assert "set" in dests  # and --set for the mapping fields (model_kwargs)


def test_command_line_values_are_checked_in_one_line(capsys, tmp_path):
    for argv, message in [
        (["train", "--warmup-epochs", "-2"], "warmup_epochs must be a finite number >= 0, got -2.0"),
        (["train", "--checkpoint-every-steps", "-5"], "checkpoint_every_steps must be an integer >= 0"),
        (["train", "--epochs", "0"], "epochs must be an integer >= 1, got 0"),
        (["train", "--lr", "0"], "learning_rate must be a finite number > 0"),
        (["train", "--set", "model_kwargs=[1]"], "model_kwargs must be a mapping"),
        (["finetune", "--backbone", "vgg16", "--data-dir", "x", "--val-fraction", "1.5"],
         "val_fraction must be a finite number in (0, 1)"),
    ]:
        assert cli.main(argv + ["--workdir", str(tmp_path / "w")]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("cnnlab: error: ") and message in err, err
        assert err.count("\n") == 1, err


def test_a_config_file_with_a_string_learning_rate_is_one_line(capsys, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(textwrap.dedent("""
        from cnnlab.config import TrainConfig

        def get_config():
            return TrainConfig(model="lenet5", learning_rate="1e-3")
    """))
    assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err == "cnnlab: error: learning_rate must be a finite number > 0, got '1e-3' (str)\n"
    path.write_text(path.read_text().replace('learning_rate="1e-3"', "learnin_rate=1e-3"))
    with pytest.raises(CnnlabError, match="unexpected keyword argument 'learnin_rate'"):
        configs.get(str(path))


def test_reading_a_preset_imports_no_jax():
    code = ("import sys; from cnnlab import configs\n"
            "[configs.get(n) for n in configs.names()]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax'))\n"
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
