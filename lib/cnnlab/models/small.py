"""The small networks of the lectures and workshops, as Flax linen modules.

All take ``x`` float32 (N, H, W, C) and return logits (N, num_classes); none has dropout or batch
norm, so ``train`` changes nothing (it is accepted for a uniform interface). Parameter counts for
28x28x1 inputs and 10 classes are worked out in ``tests/test_models.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.errors import CnnlabError
from cnnlab.layers import Conv, avg_pool, max_pool

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function called ``name`` (relu, sigmoid, tanh, gelu, elu, leaky_relu)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise CnnlabError(
            f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}") from None


def flatten(x: jax.Array) -> jax.Array:
    """(N, ...) -> (N, prod(...)), row-major (H, W, C order for NHWC, as Keras' Flatten)."""
    return x.reshape((x.shape[0], -1))


class MLP(nn.Module):
    """The 784-16-10 network of the MNIST lecture: flatten, Dense(hidden), activation, Dense(N).

    Parameters for 28x28x1 and 10 classes: 784*16 + 16 + 16*10 + 10 = 12,730.
    """

    num_classes: int = 10
    hidden: int = 16
    activation: str = "sigmoid"

    def __post_init__(self):
        activation(self.activation)  # fail at construction on a bad name
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = activation(self.activation)
        x = flatten(x)
        x = act(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


class WorkshopCNN(nn.Module):
    """The Fashion-MNIST workshop CNN: 3 convs (16, 32, 64 filters, 3x3, stride 2, ReLU), dense
    to N.

    With "SAME" padding a 28x28 image becomes 14x14x16, 7x7x32, 4x4x64 = 1,024 features.
    """

    num_classes: int = 10
    features: tuple[int, ...] = (16, 32, 64)
    padding: str = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for f in self.features:
            x = nn.relu(Conv(f, (3, 3), strides=2, padding=self.padding)(x))
        return nn.Dense(self.num_classes)(flatten(x))


class KerasCNN(nn.Module):
    """The Keras seminar CNN (Keras defaults: "valid" padding, 2x2 max pools).

    Conv 4@5x5 ReLU, maxpool 2, Conv 12@5x5 ReLU, maxpool 2, flatten, Dense 512 ReLU, Dense N.
    28x28 -> 24x24x4 -> 12x12x4 -> 8x8x12 -> 4x4x12 = 192 features.
    """

    num_classes: int = 10
    hidden: int = 512

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nn.relu(Conv(4, (5, 5), padding="VALID")(x))
        x = max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(Conv(12, (5, 5), padding="VALID")(x))
        x = max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(self.hidden)(flatten(x)))
        return nn.Dense(self.num_classes)(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28x28 inputs.

    Conv 6@5x5 ("SAME", standing in for the original 32x32 input), 2x2 average pool, Conv 16@5x5
    ("VALID"), 2x2 average pool, Dense 120, Dense 84, Dense N; tanh as in the paper (selectable).
    28x28 -> 28x28x6 -> 14x14x6 -> 10x10x16 -> 5x5x16 = 400 features.
    """

    num_classes: int = 10
    activation: str = "tanh"

    def __post_init__(self):
        activation(self.activation)  # fail at construction on a bad name
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        act = activation(self.activation)
        x = act(Conv(6, (5, 5), padding="SAME")(x))
        x = avg_pool(x, (2, 2), strides=(2, 2))
        x = act(Conv(16, (5, 5), padding="VALID")(x))
        x = avg_pool(x, (2, 2), strides=(2, 2))
        x = flatten(x)
        x = act(nn.Dense(120)(x))
        x = act(nn.Dense(84)(x))
        return nn.Dense(self.num_classes)(x)


class FlaxCNN(nn.Module):
    """The CNN of Flax's ``examples/mnist``.

    Conv 32@3x3 ReLU, 2x2 average pool, Conv 64@3x3 ReLU, 2x2 average pool, Dense 256 ReLU, Dense N.
    28x28 -> 14x14x32 -> 7x7x64 = 3,136 features.
    """

    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nn.relu(Conv(32, (3, 3))(x))
        x = avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(Conv(64, (3, 3))(x))
        x = avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Dense(256)(flatten(x)))
        return nn.Dense(self.num_classes)(x)
