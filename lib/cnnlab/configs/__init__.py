"""Named training presets, big_vision / Flax-examples style: each module here has a small
``get_config() -> TrainConfig`` (:class:`cnnlab.config.TrainConfig`; reading a preset imports no
JAX). ``cnnlab train --config NAME`` starts from one of them (command line flags override single
fields); ``--config path/to/file.py`` takes your own file with the same ``get_config()``.

>>> from cnnlab import configs
>>> configs.names()
['resnet_small', 'resnet_small_pod', 'smoke', 'workshop_cnn']
>>> configs.get("workshop_cnn").epochs
8
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil

from cnnlab.errors import CnnlabError


def names() -> list[str]:
    """The presets shipped in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def get(name_or_path: str):
    """The config of a preset name or of a ``.py`` file defining ``get_config()``.

    Args:
      name_or_path: a name of :func:`names`, or the path of a ``.py`` file.

    Returns:
      What ``get_config()`` returns (a :class:`cnnlab.config.TrainConfig`).

    Raises:
      CnnlabError: unknown name, missing file, no ``get_config()``, or a ``get_config()`` that
        passes a field the config does not have or a value it does not accept.
    """
    if name_or_path.endswith(".py") or os.sep in name_or_path:
        if not os.path.isfile(name_or_path):
            raise CnnlabError(f"config file {name_or_path} does not exist")
        spec = importlib.util.spec_from_file_location("cnnlab_user_config", name_or_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name_or_path in names():
        module = importlib.import_module(f"{__name__}.{name_or_path}")
    else:
        raise CnnlabError(f"unknown config {name_or_path!r}; choose one of: {', '.join(names())} "
                          "or give the path of a .py file with get_config()")
    if not hasattr(module, "get_config"):
        raise CnnlabError(f"config {name_or_path} has no get_config() function")
    try:
        return module.get_config()
    except TypeError as e:  # e.g. TrainConfig(learnin_rate=...): a mistake in the user's file
        raise CnnlabError(f"config {name_or_path}: {e}") from None
