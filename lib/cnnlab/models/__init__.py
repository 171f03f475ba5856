"""Models by name: a registry of Flax linen CNNs, parameter counts and a Keras-like summary.

Every model is a pure :class:`flax.linen.Module` called as ``model.apply(variables, x, train=...)``
with ``x`` float32 (N, H, W, C) and returns logits (N, num_classes). Dropout draws from the rng
stream ``"dropout"``; batch norm keeps its running statistics in the collection ``"batch_stats"``
(``use_running_average=not train``).

>>> model = get("workshop_cnn", num_classes=10)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
>>> param_count(variables["params"])
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.models.small import MLP, FlaxCNN, KerasCNN, LeNet5, WorkshopCNN
from cnnlab.models.resnet_small import ResNetSmall
from cnnlab.models.dcgan import Discriminator as DCGANDiscriminator
from cnnlab.models.dcgan import Generator as DCGANGenerator
from cnnlab.models.sequence import LSTMForecaster, MLPForecaster, TextClassifier

__all__ = [
    "MLP", "WorkshopCNN", "KerasCNN", "LeNet5", "FlaxCNN", "ResNetSmall",
    "MLPForecaster", "LSTMForecaster", "TextClassifier", "DCGANGenerator", "DCGANDiscriminator",
    "names", "get", "register", "param_count", "summary",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

# Modules owned by other parts of the project that register themselves when imported
# (each ends with one line: ``register("vgg16", VGG16)``). Imported lazily: they may be heavy.
_SELF_REGISTERING = ("cnnlab.models.vgg16", "cnnlab.models.resnet50")
_loaded_optional = False


def register(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``get(name, num_classes=..., **kwargs)`` return ``factory(num_classes=..., **kwargs)``.

    ``factory`` is usually the module class itself. Registering a name again replaces it.
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"model names are lower_snake_case, got {name!r}")
    _REGISTRY[name] = factory


def _load_optional() -> None:
    global _loaded_optional
    if _loaded_optional:
        return
    _loaded_optional = True
    for module in _SELF_REGISTERING:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def names() -> list[str]:
    """Registered model names, in registration order."""
    _load_optional()
    return list(_REGISTRY)


def get(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """The model registered as ``name`` with ``num_classes`` outputs (and extra attributes).

    Raises:
      CnnlabError: unknown name (the message lists the valid ones), a bad ``num_classes``, or an
        attribute the model does not have.
    """
    _load_optional()
    if name not in _REGISTRY:
        raise CnnlabError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) \
            or num_classes < 1:
        raise CnnlabError(f"num_classes must be a positive integer, got {num_classes!r}")
    factory = _REGISTRY[name]
    try:
        return factory(num_classes=int(num_classes), **kwargs)
    except TypeError as e:
        valid = _attribute_names(factory)
        raise CnnlabError(
            f"model {name!r} does not accept {sorted(kwargs)}: {e}"
            + (f"; its options are: {', '.join(valid)}" if valid else "")) from None


def _attribute_names(factory) -> list[str]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return []
    return [p for p in params if p not in ("parent", "name", "num_classes")]


def param_count(params) -> int:
    """Total number of scalars in a pytree of arrays (e.g. ``variables["params"]``)."""
    return int(sum(np.prod(np.shape(leaf), dtype=np.int64) for leaf in jax.tree.leaves(params)))


def _shape_str(shape: Sequence[int], batch_is_none: bool) -> str:
    dims = ["None" if (i == 0 and batch_is_none) else str(d) for i, d in enumerate(shape)]
    return "(" + ", ".join(dims) + ")"


def summary(model: nn.Module, input_shape: Sequence[int]) -> str:
    """A table like Keras ``model.summary()``: one row per top-level layer.

    Args:
      model: a Flax module taking ``(x, *, train)``.
      input_shape: (H, W, C) (the batch dimension is shown as ``None``) or (N, H, W, C).

    Returns:
      The table as text: layer name (type), output shape, number of parameters, then the totals
      (trainable ``params`` and non-trainable ``batch_stats``). Nothing is computed: shapes come
      from :func:`jax.eval_shape`.
    """
    input_shape = tuple(int(d) for d in input_shape)
    batch_is_none = len(input_shape) == 3
    full_shape = (1, *input_shape) if batch_is_none else input_shape
    x = jax.ShapeDtypeStruct(full_shape, jnp.float32)

    kinds: dict[str, str] = {}  # top-level child name -> class name, recorded while tracing

    def capture(module: nn.Module, method_name: str) -> bool:
        path = module.scope.path if module.scope is not None else ()
        if len(path) == 1 and path[0] not in kinds:
            kinds[path[0]] = type(module).__name__
        return method_name == "__call__"

    def run(x):
        variables = model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                               x, train=False)
        out, state = model.apply(variables, x, train=False, capture_intermediates=capture,
                                 mutable=["intermediates"])
        return variables, out, state["intermediates"]

    variables, out, inter = jax.eval_shape(run, x)
    params = variables.get("params", {})
    stats = variables.get("batch_stats", {})

    rows = [("Layer (type)", "Output Shape", "Param #")]
    # Top-level children in call order: ``kinds`` was filled while tracing (pytrees returned by
    # eval_shape have their dict keys sorted, so ``inter`` has lost the order).
    for child in kinds:
        outs = inter.get(child, {}).get("__call__", ())
        y = outs[-1] if outs else None
        shape = _shape_str(y.shape, batch_is_none) if hasattr(y, "shape") else "?"
        kind = kinds.get(child, "?")
        n = param_count(params.get(child, {})) + param_count(stats.get(child, {}))
        rows.append((f"{child} ({kind})", shape, f"{n:,}"))
    trainable = param_count(params)
    non_trainable = param_count(stats)

    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    widths = [max(widths[0], 28), max(widths[1], 20), max(widths[2], 10)]
    line_len = sum(widths) + 4

    def fmt(r):
        return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"

    lines = [f'Model: "{type(model).__name__}"', "=" * line_len, fmt(rows[0]), "=" * line_len]
    lines += [fmt(r) for r in rows[1:]]
    lines += [
        "=" * line_len,
        f"Input shape: {_shape_str(full_shape, batch_is_none)}   "
        f"Output shape: {_shape_str(out.shape, batch_is_none)}",
        f"Total params: {trainable + non_trainable:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {non_trainable:,}",
        "=" * line_len,
    ]
    return "\n".join(lines)


register("mlp", MLP)
register("workshop_cnn", WorkshopCNN)
register("keras_cnn", KerasCNN)
register("lenet5", LeNet5)
register("flax_cnn", FlaxCNN)
register("resnet_small", ResNetSmall)
