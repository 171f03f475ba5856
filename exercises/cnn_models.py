# Lab 5 (cnn_models), generated from the reference solution. Fill in every
# `raise NotImplementedError(...)`, then grade one function with `make check EX=WorkshopCNN`
# (any function's name; EX=cnn_models for the whole lab), here or in the folder above.
"""Lab 5 — CNN models as Flax linen modules.

A Flax linen module declares its layers inside ``@nn.compact __call__``; ``model.init(key, x,
train=False)`` returns ``{"params": ...}`` whose names come from the layer classes in call order
(``Conv_0``, ``Conv_1``, ``Dense_0``, ...), and ``model.apply(variables, x, train=False)`` runs it.
The grader compares your parameter tree (names and shapes) with the reference's, then the logits.

Both networks take x float32 (N, 28, 28, 1) (any N, H, W, C works) and return logits
(N, num_classes). They match ``cnnlab.models.get("workshop_cnn")`` and ``get("keras_cnn")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax


class WorkshopCNN(nn.Module):
    """The Fashion-MNIST workshop CNN.

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

    ``nn.Conv(4, (5, 5), padding="VALID")`` + ReLU, ``nn.max_pool`` 2x2 stride 2,
    ``nn.Conv(12, (5, 5), padding="VALID")`` + ReLU, max pool 2x2 stride 2, flatten,
    ``nn.Dense(hidden)`` + ReLU, ``nn.Dense(num_classes)``.
    Shapes for 28x28x1: 24x24x4 -> 12x12x4 -> 8x8x12 -> 4x4x12 = 192 -> 512 -> num_classes.

    Parameter tree: Conv_0 kernel (5, 5, 1, 4); Conv_1 kernel (5, 5, 4, 12); Dense_0 kernel
    (192, 512); Dense_1 kernel (512, num_classes); all with biases.
    """

    num_classes: int = 10
    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError('follow the docstring layer by layer: nn.Conv, nn.relu, nn.max_pool, reshape, nn.Dense')


def receptive_field(layers: Sequence[tuple[int, int]]) -> int:
    """The receptive field (in input pixels, per axis) of one unit after a stack of layers.

    ``layers`` lists ``(kernel_size, stride)`` per conv or pool layer, input side first. Keep the
    "jump" j (distance in input pixels between neighbouring units of the current layer, starting
    at 1) and the field r (starting at 1); for each layer: ``r += (k - 1) * j``, then ``j *= s``.

    Examples: two 3x3 stride-1 convs -> 5 (the VGG argument: two 3x3 see as much as one 5x5);
    [(3, 2), (3, 2), (3, 2)] (the workshop CNN) -> 15; [] -> 1.
    """
    raise NotImplementedError('keep two numbers, the field r and the jump j, and update them layer by layer')
