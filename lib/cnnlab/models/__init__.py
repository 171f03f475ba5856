"""Models by name: a registry of Flax linen CNNs, parameter counts and a Keras-like summary.

Every model is a pure :class:`flax.linen.Module` called as ``model.apply(variables, x, train=...)``
with ``x`` float32 (N, H, W, C) and returns logits (N, num_classes). Dropout draws from the rng
stream ``"dropout"``; batch norm keeps its running statistics in the collection ``"batch_stats"``
(``use_running_average=not train``).

>>> model = get("workshop_cnn", num_classes=10)
>>> variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
>>> param_count(variables["params"])
33546
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import FrozenDict
from flax.nnx import bridge

from cnnlab.errors import CnnlabError
from cnnlab.models.dcgan import Discriminator as DCGANDiscriminator
from cnnlab.models.dcgan import Generator as DCGANGenerator
from cnnlab.models.resnet50 import ResNet50
from cnnlab.models.resnet_small import ResNetSmall
from cnnlab.models.sequence import LSTMForecaster, MLPForecaster, TextClassifier
from cnnlab.models.small import MLP, FlaxCNN, KerasCNN, LeNet5, WorkshopCNN
from cnnlab.models.vgg16 import VGG16

__all__ = [
    "MLP", "WorkshopCNN", "KerasCNN", "LeNet5", "FlaxCNN", "ResNetSmall", "VGG16", "ResNet50",
    "MLPForecaster", "LSTMForecaster", "TextClassifier", "DCGANGenerator", "DCGANDiscriminator",
    "names", "check_name", "get", "register", "param_count", "summary", "layer_order",
    "NNXModel", "import_models", "source_of", "ENTRY_POINT_GROUP",
]

#: Installed packages offer models through this entry-point group: ``name = "module:Factory"``
#: (``[project.entry-points."cnnlab.models"]`` in their pyproject.toml).
ENTRY_POINT_GROUP = "cnnlab.models"

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_SOURCES: dict[str, dict[str, str]] = {}     # model name -> where its registration came from
_importing: list[dict[str, str]] = []        # the --import being imported right now
_entry_points_loaded = False


def register(name: str, factory: Callable[..., Any]) -> None:
    """Make ``get(name, num_classes=..., **kwargs)`` return ``factory(num_classes=..., **kwargs)``.

    The one way a model gets a name: the built-in models are registered by this module with
    this function (at its end), yours the same way from your code (a module given to
    ``cnnlab ... --import MODULE``, or an entry point of the group :data:`ENTRY_POINT_GROUP`).
    ``factory`` is usually the module class itself: a linen module, or a Flax NNX module class
    (``__init__(self, num_classes, ..., *, rngs)``), which is wrapped in :class:`NNXModel` so
    it trains, checkpoints and evaluates like any linen model. Registering a name again
    replaces it.
    """
    if not name or not name.replace("_", "").isalnum() or name != name.lower():
        raise ValueError(f"model names are lower_snake_case, got {name!r}")
    source = dict(_importing[-1]) if _importing else _module_source(factory)
    if source:
        _SOURCES[name] = source
    # else: a registration from a script (``__main__``) or a config file keeps the source an
    # earlier --import of the same name recorded
    if isinstance(factory, type) and issubclass(factory, nnx.Module):
        nnx_class = factory

        def factory(**kwargs):
            return NNXModel(nnx_class, FrozenDict(kwargs))
        factory.__signature__ = inspect.signature(nnx_class)
    _REGISTRY[name] = factory


def names() -> list[str]:
    """Registered model names, in registration order (installed packages' entry points
    included)."""
    _load_entry_points()
    return list(_REGISTRY)


def check_name(name: str) -> None:
    """Raises CnnlabError naming the registered models unless ``name`` is one of them."""
    if name not in _REGISTRY:
        _load_entry_points()
    if name not in _REGISTRY:
        raise CnnlabError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)} "
                          "(a model of your own: --import MODULE, the module that registers it)")


def source_of(name: str) -> dict[str, str] | None:
    """Where the registration of ``name`` came from, as :func:`import_models` takes it back:
    ``{"file": PATH}`` or ``{"module": NAME, "path": DIR}``; None for the built-in models and
    installed packages' entry points (found again without help)."""
    return _SOURCES.get(name)


def import_models(specs: Sequence[str | Mapping[str, str]]) -> list[dict[str, str]]:
    """Import the modules that register your models (what ``--import`` does).

    Args:
      specs: each a module name importable from the current directory or ``sys.path``
        (``my_models``, ``lab.models``), the path of a ``.py`` file, or a record
        :func:`source_of` returned (a run's ``run.json`` keeps them).

    Returns:
      The records of what was imported: ``{"file": absolute path}`` or ``{"module": name,
      "path": the directory it was found under}``.

    Raises:
      CnnlabError: a module that cannot be found, or that fails while importing (the error is
        named, in one line).
    """
    return [_import_one(spec) for spec in specs]


def _import_one(spec: str | Mapping[str, str]) -> dict[str, str]:
    if isinstance(spec, Mapping):
        record = dict(spec)
    elif spec.endswith(".py") or os.sep in spec:
        record = {"file": os.path.abspath(spec)}
    else:
        record = {"module": spec, "path": os.getcwd()}
    if "file" in record:
        path = record["file"]
        if not os.path.isfile(path):
            raise CnnlabError(f"--import {path}: no such file")
        module_name = "cnnlab_user_" + os.path.splitext(os.path.basename(path))[0]
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec_)
        with _registering(record):
            _run_user_code(f"--import {path}", lambda: spec_.loader.exec_module(module))
        sys.modules[module_name] = module  # pickling and jax.tree_util need it importable
        return record
    name, path = record["module"], record.get("path")
    if path and path not in sys.path:
        sys.path.insert(0, path)  # the console script, unlike `python`, has no cwd on sys.path
    if importlib.util.find_spec(name.partition(".")[0]) is None:
        raise CnnlabError(f"--import {name}: no module named {name!r} in {path or os.getcwd()} "
                          "or on sys.path; give the module's name from its directory, or its "
                          ".py file")
    with _registering(record):
        if name in sys.modules:
            _run_user_code(f"--import {name}", lambda: importlib.reload(sys.modules[name]))
        else:
            _run_user_code(f"--import {name}", lambda: importlib.import_module(name))
    origin = getattr(sys.modules[name], "__file__", None)
    if origin:
        record["path"] = _module_root(name, origin)
    return record


def _module_root(name: str, file: str) -> str:
    """The ``sys.path`` directory module ``name`` (defined in ``file``) is imported from."""
    root = os.path.dirname(os.path.abspath(file))
    for _ in range(name.count(".") + (os.path.basename(file) == "__init__.py")):
        root = os.path.dirname(root)
    return root


def _module_source(factory) -> dict[str, str] | None:
    """``{"module", "path"}`` of an importable module that defines ``factory`` (not a script,
    a config file or cnnlab itself), else None."""
    name = getattr(factory, "__module__", None) or ""
    if name in ("", "__main__") or name.split(".")[0] == "cnnlab" or name.startswith(
            "cnnlab_user"):
        return None
    file = getattr(sys.modules.get(name), "__file__", None)
    return {"module": name, "path": _module_root(name, file)} if file else None


@contextlib.contextmanager
def _registering(record: dict[str, str]) -> Iterator[None]:
    _importing.append(record)
    try:
        yield
    finally:
        _importing.pop()


def _run_user_code(what: str, run: Callable[[], Any]) -> None:
    """Run an import of the user's code; its failure is one CnnlabError line naming it."""
    try:
        run()
    except CnnlabError:
        raise
    except Exception as e:  # any error in the user's module is theirs to fix
        raise CnnlabError(f"{what} failed: {type(e).__name__}: {e}") from e


def _load_entry_points() -> None:
    """Register the models installed packages offer under :data:`ENTRY_POINT_GROUP` (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        holder: list[Any] = []
        _run_user_code(f"the {ENTRY_POINT_GROUP} entry point {ep.name} = {ep.value}",
                       lambda ep=ep: holder.append(ep.load()))
        if ep.attr:  # name = "module:Factory" registers Factory as name
            register(ep.name, holder[0])
        # name = "module": importing it registered its models


class NNXModel(nn.Module):
    """A Flax NNX module class as a linen module, through Flax's bridge
    (:class:`flax.nnx.bridge.ToLinen`), so it trains through the same steps as any model.

    Called as ``apply(variables, x, train=...)``: the NNX module is put in ``train()`` or
    ``eval()`` mode (dropout on or off, batch norm on batch or running statistics), then called
    with ``x`` (and ``train=`` too when its ``__call__`` takes it). Its ``nnx.Param`` variables
    are ``params``, its ``nnx.BatchStat`` variables ``batch_stats`` (under the name ``nnx``);
    dropout draws from the ``"dropout"`` stream.

    Attributes:
      nnx_class: the NNX module class; built as ``nnx_class(**kwargs, rngs=...)``.
      kwargs: its constructor arguments (``num_classes`` and options).
    """

    nnx_class: Callable[..., nnx.Module]
    kwargs: FrozenDict = FrozenDict()

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        takes_train = "train" in inspect.signature(self.nnx_class.__call__).parameters

        def run(module, x):
            if train:
                module.train()
            else:
                module.eval()
            return module(x, train=train) if takes_train else module(x)

        return bridge.ToLinen(self.nnx_class, kwargs=self.kwargs, name="nnx")(x, nnx_method=run)


def get(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """The model registered as ``name`` with ``num_classes`` outputs (and extra attributes).

    Raises:
      CnnlabError: unknown name (the message lists the valid ones), a bad ``num_classes``, or an
        attribute the model does not have.
    """
    check_name(name)
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


def layer_order(model: nn.Module, input_shape: Sequence[int]) -> list[str]:
    """Top-level submodule names in the order the forward pass calls them.

    Traced abstractly (:func:`jax.eval_shape`): nothing is computed.

    Args:
      model: a Flax module taking ``(x, *, train)``.
      input_shape: (N, H, W, C) or (H, W, C).

    Returns:
      The names, first called first (e.g. ``['Conv_0', 'Conv_1', 'Conv_2', 'Dense_0']``).
    """
    shape = tuple(input_shape)
    shape = (1, *shape) if len(shape) == 3 else shape
    order: list[str] = []

    def record(next_fun, args, kwargs, context):
        module = context.module
        path = module.scope.path if module.scope is not None else ()
        if len(path) == 1 and path[0] not in order:
            order.append(path[0])
        return next_fun(*args, **kwargs)

    def init():
        with nn.intercept_methods(record):
            return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)},
                              jnp.zeros(shape, jnp.float32), train=False)

    jax.eval_shape(init)
    return order


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
register("vgg16", VGG16)
register("resnet50", ResNet50)
