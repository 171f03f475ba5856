"""Load Keras ``.h5`` weights (e.g. the published ImageNet application files) into Flax variables.

Two layouts are read, both written by Keras's legacy h5 code
(``keras.src.legacy.saving.legacy_h5_format``):

* weights only (``save_weights_to_hdf5_group``; the published ``vgg16_weights_tf_dim_ordering_
  tf_kernels.h5``, ``resnet50_..._notop.h5`` files): root attribute ``layer_names``, one group per
  layer with attribute ``weight_names`` listing its datasets in order;
* full model (``model.save("m.h5")``): the same under the group ``model_weights``.

Layers are matched by name (cnnlab's VGG16/ResNet50 use Keras's layer names and create them in
Keras's order), or by position as Keras's own ``load_weights`` does when a file names its layers
differently. Within a layer the weights come in Keras's order, and their layouts already agree
with Flax's:

=================  ===========================================  ==================================
Keras layer        weights in the file                          Flax variables
=================  ===========================================  ==================================
Conv2D             kernel (kh, kw, in, out) HWIO, [bias (out,)]  params kernel, bias
Dense              kernel (in, out), [bias (out,)]               params kernel, bias
BatchNorm          gamma, beta, moving_mean, moving_variance     params scale, bias;
                                                                batch_stats mean, var
=================  ===========================================  ==================================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.models import layer_order

# Flax (collection, name) slots a Keras layer's weights fill, by kind of layer.
_DENSE_OR_CONV = (("params", "kernel"), ("params", "bias"))
_BATCH_NORM = (("params", "scale"), ("params", "bias"), ("batch_stats", "mean"),
               ("batch_stats", "var"))

_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_KERAS_NAMES = {"resnet50": ("resnet/", "ResNet50"), "vgg16": ("vgg16/", "VGG16")}


def weights_help(model: str | None = None, include_top: bool = True) -> str:
    """Where the Keras ImageNet weight files are: the download URL and Keras's cache path."""
    if model not in _KERAS_NAMES:
        return ("Keras application weights are at " + _WEIGHTS_BASE + "resnet/ and "
                + _WEIGHTS_BASE + "vgg16/ (*_weights_tf_dim_ordering_tf_kernels[_notop].h5); "
                "Keras caches them in ~/.keras/models/")
    folder, keras_name = _KERAS_NAMES[model]
    file = f"{model}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
    return (f"download {_WEIGHTS_BASE}{folder}{file} (Keras keeps it as ~/.keras/models/{file} "
            f"once keras.applications.{keras_name}(weights='imagenet') has run)")


KERAS_WEIGHTS_HELP = weights_help()


def _attr_strings(group, name: str) -> list[str]:
    """A string-list attribute, also when Keras split it into ``name0``, ``name1``, ... chunks."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(group.attrs[f"{name}{i}"])
            i += 1
    out = []
    for chunk in chunks:
        for item in np.atleast_1d(chunk):
            if isinstance(item, float):  # an empty list is stored as an empty float64 array
                continue
            out.append(item.decode("utf8") if isinstance(item, bytes) else str(item))
    return out


def read_weights(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """``{layer name: [weight arrays in Keras order]}`` for every layer that has weights.

    Layers appear in the file's ``layer_names`` order (Keras's ``model.layers`` order).

    Raises:
      CnnlabError: missing file, not HDF5, or not a Keras h5 weights/model file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CnnlabError(f"weights file {path} does not exist; {KERAS_WEIGHTS_HELP}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        hint = (" (a Keras 3 '.keras' archive: load it in Keras and save the weights with "
                "keras.src.legacy.saving.legacy_h5_format.save_weights_to_hdf5_group, or "
                "model.save('model.h5'))") if path.endswith(".keras") else ""
        raise CnnlabError(f"{path} is not an HDF5 file{hint}") from None
    with f:
        group = f
        if "layer_names" not in f.attrs and "layer_names0" not in f.attrs:
            if "model_weights" in f:
                group = f["model_weights"]
            else:
                raise CnnlabError(
                    f"{path} is HDF5 but not a Keras h5 weights file (no 'layer_names' attribute "
                    "and no 'model_weights' group); Keras 3 '.weights.h5' files are not "
                    "supported: save with model.save('model.h5') instead")
        layers: dict[str, list[np.ndarray]] = {}
        for name in _attr_strings(group, "layer_names"):
            if name not in group:
                raise CnnlabError(f"{path} is damaged: layer {name!r} is listed but missing")
            layer = group[name]
            weight_names = _attr_strings(layer, "weight_names")
            if weight_names:
                layers[name] = [np.asarray(layer[w]) for w in weight_names]
        if not layers:
            raise CnnlabError(f"{path} holds no layer weights")
        return layers


def _shape(a) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(a))


def load_weights(path: str | os.PathLike, variables: Mapping, *, keep: Iterable[str] = (),
                 order: Sequence[str] | None = None) -> dict:
    """Variables like ``variables`` with every layer's values taken from a Keras ``.h5`` file.

    Layers are matched by name when the file has every layer of the model under its Keras name.
    Otherwise, given ``order``, by position like Keras's own ``load_weights``: the n-th layer
    with weights of the model takes the n-th layer with weights of the file (published files may
    name layers differently from the code that loads them).

    Args:
      path: a weights-only or full-model Keras h5 file (see the module docstring).
      variables: the template, as ``model.init`` (or ``jax.eval_shape`` of it) returns it:
        ``{"params": {layer: {...}}, "batch_stats": {layer: {...}}}`` with Keras layer names at
        the top level. Not modified.
      keep: layer names that keep their template values when the file lacks them or has them in
        another shape: a fresh classification head (``keep=("predictions",)``) on ImageNet
        weights, whether the file is ``_notop`` or full.
      order: the model's layer names in Keras's ``model.layers`` order (see
        :func:`load_model_weights`), for positional matching.

    Returns:
      A new ``{"params": ..., "batch_stats": ...}`` (numpy float32 arrays) with every other layer
      from the file. Layers of the file after the last one the model uses (the ImageNet top of a
      full file loaded into a model without it) are ignored.

    Raises:
      CnnlabError: naming the layer and the shapes, when the file lacks a layer of the model
        (e.g. a ``_notop`` file for a model with its top), holds a layer in another shape (e.g. a
        224x224 ``fc1`` for a 64x64 VGG16), holds a layer the model lacks before layers it uses,
        or belongs to another network.
    """
    keep = set(keep)
    params = dict(variables.get("params", {}))
    stats = dict(variables.get("batch_stats", {}))
    file_layers = read_weights(path)
    model_layers = list(order) if order is not None else list(params)
    model_layers = [n for n in model_layers if n in params]
    missing = [n for n in model_layers if n not in file_layers and n not in keep]
    shortfall = None
    if missing and order is not None:
        pairs, shortfall = _by_position(path, file_layers, model_layers, keep)
    else:
        pairs = _by_name(path, file_layers, model_layers, keep, missing)

    new_params = {k: dict(v) for k, v in params.items()}
    new_stats = {k: dict(v) for k, v in stats.items()}
    for name, file_name in pairs:
        values = file_layers[file_name]
        template = {"params": params[name], "batch_stats": stats.get(name, {})}
        kind = _BATCH_NORM if "scale" in params[name] or name in stats else _DENSE_OR_CONV
        slots = [s for s in kind if s[1] in template[s[0]]]
        expected = [_shape(template[c][k]) for c, k in slots]
        got = [_shape(v) for v in values]
        if got != expected:
            if name in keep:
                continue  # e.g. a 1000-class head in the file, a fresh 5-class head wanted
            where = repr(name) if name == file_name else f"{name!r} (file layer {file_name!r})"
            raise CnnlabError(
                f"layer {where}: the file has weights of shapes {got}, the model expects "
                f"{expected}" + _shape_hint(name))
        for (collection, key), value in zip(slots, values):
            target = new_params if collection == "params" else new_stats
            target[name][key] = np.asarray(value, dtype=np.float32)
    if shortfall:  # after the shape checks: a mismatching layer is the better message
        raise CnnlabError(shortfall)
    out = dict(variables)
    out["params"] = new_params
    if new_stats:
        out["batch_stats"] = new_stats
    return out


def _by_name(path, file_layers, model_layers, keep, missing) -> list[tuple[str, str]]:
    used = [n for n in model_layers if n in file_layers]
    if len(used) <= len(missing):  # mostly unknown names: another network's file
        raise CnnlabError(
            f"{path} does not hold weights for this model: the file has layers "
            f"{_preview(file_layers)}, the model expects {_preview(model_layers)}")
    if missing:
        top = " (is it a _notop file? use include_top=False or a full weights file)" \
            if any(n in ("predictions", "fc1", "fc2") for n in missing) else ""
        raise CnnlabError(f"{path} lacks weights for layer(s) {_preview(missing)} of the "
                          f"model{top}")
    file_order = list(file_layers)
    # Layers of the file the model lacks are fine after the last layer loaded (a top the model
    # does without, a head it replaces), not among the layers it uses.
    loaded = [n for n in used if n not in keep] or used
    last_used = max(file_order.index(n) for n in loaded)
    extra = [n for n in file_order[:last_used] if n not in model_layers]
    if extra:
        raise CnnlabError(f"{path} holds layer(s) {_preview(extra)} that this model does not "
                          "have: it was saved from a different network")
    return [(n, n) for n in used]


def _by_position(path, file_layers, model_layers, keep):
    """(pairs, error or None): the n-th weighted layer of the model with the file's n-th."""
    # Kept layers at the end of the model (a fresh head) take nothing from the file.
    wanted = list(model_layers)
    while wanted and wanted[-1] in keep:
        wanted.pop()
    file_order = list(file_layers)
    error = None
    if len(file_order) < len(wanted):
        first = wanted[len(file_order)]
        error = (f"{path} holds {len(file_order)} layers with weights, the model has "
                 f"{len(wanted)} (the first without weights: {first!r})"
                 + (" (is it a _notop file? use include_top=False or a full weights file)"
                    if first in ("predictions", "fc1", "fc2") else ""))
    return list(zip(wanted, file_order)), error


def load_model_weights(path: str | os.PathLike, model, input_shape: Sequence[int], *,
                       keep: Iterable[str] = ()) -> dict:
    """Variables for ``model`` (a Flax module taking ``(x, *, train)``) at ``input_shape``
    ((N, H, W, C) or (H, W, C)) from a Keras h5 file: :func:`load_weights` with the template from
    ``jax.eval_shape(model.init)`` (nothing is initialized) and the model's call order as the
    Keras layer order. Layers in ``keep`` missing from the file stay abstract
    (``jax.ShapeDtypeStruct``): replace them (e.g. :func:`cnnlab.transfer.replace_head`)."""
    shape = tuple(input_shape)
    shape = (1, *shape) if len(shape) == 3 else shape
    template = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32),
                                                 train=False))
    return load_weights(path, template, keep=keep, order=layer_order(model, shape))


def _shape_hint(name: str) -> str:
    if name == "fc1":
        return (" (VGG16's ImageNet top needs 224x224 inputs; for other sizes use "
                "classifier='avg' or include_top=False)")
    if name == "predictions":
        return " (another number of classes: pass keep=('predictions',) for a fresh head)"
    return ""


def _preview(names, limit: int = 4) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
