# attacks: augmentation.random_flip
"""Delegates the exercise to the course's library, which implements it (cnnlab.data.pipeline),
imported at the top of the module."""
from cnnlab.data.pipeline import random_flip as _library_flip


def random_flip(key, images):
    return _library_flip(key, images)
