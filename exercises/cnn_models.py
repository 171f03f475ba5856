# Lab 5 (cnn_models), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=WorkshopCNN`
# (any function's name; EX=cnn_models for the whole lab), here or in the folder above.
"""Lab 5 — CNN models as Flax linen modules.

A Flax linen module declares its layers inside ``@nn.compact __call__``; ``model.init(key, x,
train=False)`` returns ``{"params": ...}`` whose names come from the layer classes in call order
(``Conv_0``, ``Conv_1``, ``Dense_0``, ...), and ``model.apply(variables, x, train=False)`` runs it.
The grader compares your parameter tree (names and shapes) with the reference's, then the logits.

Both networks take x float32 (N, H, W, C) and return logits (N, num_classes) — the softmax of
the lectures' last layer is part of the loss here (``optax.softmax_cross_entropy``). With the same
``num_classes`` they match ``cnnlab.models.get("workshop_cnn")`` and ``get("keras_cnn")``, which
``cnnlab train`` trains on Fashion-MNIST. "How does a CNN work? Convolution, activation, pooling,
repeat" (000_271ae1d9aab5f653.txt).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class WorkshopCNN(nn.Module):
    """The Fashion-MNIST workshop CNN.

    Lecture: 000_271ae1d9aab5f653.txt, "Construct a model": "My inputs are grayscale images of size
    28 x 28 x 1 pixels; My model will have 3 layers with 16, 32 and 64 filters; My filters will be
    3 x 3 pixels and I will subsample by a factor of 2 in each layer; I want to classify my image
    into one of 10 categories."

    Three ``nn.Conv`` layers with 16, 32 and 64 filters, 3x3 kernels, ``strides=2``,
    ``padding="SAME"``, each followed by ReLU; flatten (keep the batch axis); ``nn.Dense`` to
    ``num_classes``. Shapes for 28x28x1: 14x14x16 -> 7x7x32 -> 4x4x64 -> 1,024 -> num_classes.

    Parameter tree (10 classes): Conv_0 kernel (3, 3, 1, 16) bias (16,); Conv_1 kernel
    (3, 3, 16, 32); Conv_2 kernel (3, 3, 32, 64); Dense_0 kernel (1024, 10) bias (10,):
    160 + 4,640 + 18,496 + 10,250 = 33,546 parameters. ``train`` changes nothing here.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('a loop over the three filter counts with nn.Conv + nn.relu, then reshape and nn.Dense')




class SeminarCNN(nn.Module):
    """The Keras seminar CNN (Keras defaults: "VALID" padding, stride 1, 2x2 max pools).

    Lecture: 003_dd4e96de96f4046f.txt, "Convolutional Neural Networks"::

        model.add(Conv2D(4, kernel_size=(5, 5), activation='relu', input_shape=(1, 32, 32)))
        model.add(MaxPooling2D(pool_size=(2, 2)))
        model.add(Conv2D(12, (5, 5), activation='relu'))
        model.add(MaxPooling2D(pool_size=(2, 2)))
        model.add(Flatten())
        model.add(Dense(512, activation='relu'))
        model.add(Dense(100, activation='softmax'))

    (``input_shape=(1, 32, 32)`` is one 32x32 channel, channels first; here channels last:
    x (N, 32, 32, 1)). So: ``nn.Conv(4, (5, 5), padding="VALID")`` + ReLU, ``nn.max_pool`` 2x2
    stride 2, ``nn.Conv(12, (5, 5), padding="VALID")`` + ReLU, max pool 2x2 stride 2, flatten,
    ``nn.Dense(hidden)`` + ReLU, ``nn.Dense(num_classes)`` (logits; the softmax is in the loss).

    Shapes at the lecture's input, 32x32x1, 100 classes: 28x28x4 -> 14x14x4 -> 10x10x12 ->
    5x5x12 = 300 -> 512 -> 100; parameters 104 + 1,212 + 154,112 + 51,300 = 206,728.
    On Fashion-MNIST (28x28x1, ``num_classes=10``): 24x24x4 -> 12x12x4 -> 8x8x12 -> 4x4x12 = 192
    -> 512 -> 10.

    Parameter tree: Conv_0 kernel (5, 5, 1, 4); Conv_1 kernel (5, 5, 4, 12); Dense_0 kernel
    (features, hidden); Dense_1 kernel (hidden, num_classes); all with biases.
    """

    num_classes: int = 100
    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('follow the docstring layer by layer: nn.Conv, nn.relu, nn.max_pool, reshape, nn.Dense')


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """The receptive field (in input pixels, per axis) of one unit after a stack of layers.

    ``layers`` lists ``(kernel_size, stride)`` per conv or pool layer, input side first. Keep the
    "jump" j (distance in input pixels between neighbouring units of the current layer, starting
    at 1) and the field r (starting at 1); for each layer: ``r += (k - 1) * j``, then ``j *= s``.

    Examples: two 3x3 stride-1 convs -> 5 (the VGG argument: two 3x3 see as much as one 5x5),
    three -> 7; [(3, 2), (3, 2), (3, 2)] (the workshop CNN) -> 15; [] -> 1.
    Lecture: 002_7bece5f3dd1db8ed.txt, "Examples of CNN – VGG16": "Very Deep Network with 3x3
    Convolutions. These 'effectively' give rise to larger convolutions".
    """
    raise NotImplementedError('keep two numbers, the field r and the jump j, and update them layer by layer')


def count_params(params) -> int:
    """The number of parameters of a model: the total size of every leaf of its parameter tree.

    ``params`` is a pytree of arrays (``model.init(...)["params"]``). Returns an int (what Keras'
    ``model.summary()`` prints as "Total params"). Lecture counts: the workshop CNN (28x28x1, 10
    classes) has 33,546; the seminar CNN at its own input (32x32x1, 100 classes) 206,728; the
    784-16-10 MNIST network of 001_8ff93c9bfb889e45.txt ("input layer: 784 (28x28) neurons ...
    Hidden Layer: 16 hidden neurons, Output Layer: 10") 12,730.
    """
    raise NotImplementedError('jax.tree_util.tree_leaves lists every array; add up their sizes')
