# attacks: augmentation.random_crop
"""Delegates to the library under a name no reader of the source can see (built at run time),
so only the sandbox's view stands in the way."""
import importlib as _importlib


def random_crop(key, images, *, pad):
    library = _importlib.import_module("".join(["cnn", "lab", ".data", ".pipeline"]))
    return library.random_crop(key, images, pad=pad)
