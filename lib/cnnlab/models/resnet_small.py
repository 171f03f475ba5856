"""The stronger small model for Fashion-MNIST: conv stages with batch norm, optional residual
blocks, max pooling, a dense layer with dropout.

Chosen for time-to-accuracy on a 2-core CPU (``benchmarks/time_to_accuracy.py``): every
convolution costs the same per multiply-add, so the network spends its multiply-adds where they
buy accuracy (wide channels at 14x14 and 7x7) and keeps the 28x28 stage narrow.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.layers import Conv, max_pool


def _batch_norm(train: bool, name: str | None = None, zero_scale: bool = False) -> nn.BatchNorm:
    # momentum 0.9 (not Flax's 0.99): the running averages must be usable after a few hundred steps.
    scale_init = nn.initializers.zeros_init() if zero_scale else nn.initializers.ones_init()
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        scale_init=scale_init, name=name)


class ConvBN(nn.Module):
    """conv 3x3 (no bias) -> batch norm -> ReLU. (N, H, W, C) -> (N, H, W, features)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv(self.features, (3, 3), use_bias=False)(x)
        return nn.relu(_batch_norm(train)(x))


class ResidualBlock(nn.Module):
    """x + BN(conv3x3(ReLU(BN(conv3x3(x))))), then ReLU (He et al. 2016, "basic" block, identity
    shortcut). The last BN scale starts at zero, so each block starts as the identity
    (Goyal et al. 2017). (N, H, W, C) -> (N, H, W, C)."""

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c = x.shape[-1]
        y = ConvBN(c)(x, train=train)
        y = _batch_norm(train, zero_scale=True)(Conv(c, (3, 3), use_bias=False)(y))
        return nn.relu(x + y)


class ResNetSmall(nn.Module):
    """Stages of ConvBN(width) + ``blocks[i]`` residual blocks, a 2x2 max pool between stages,
    then flatten, Dense(hidden) + ReLU + dropout, Dense(N).

    Defaults for 28x28x1: 28x28x24 -> 14x14x24 -> 14x14x48 -> 7x7x48 -> 7x7x96 -> 4,704
    features -> 128 -> N. (Widths 24/48/96 for 10 epochs reached 93.4% on Fashion-MNIST where
    32/64/128 reached 93.1% in 8 epochs, in less time; ``benchmarks/time_to_accuracy.py``.)
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (24, 48, 96)
    blocks: tuple[int, ...] = (0, 0, 0)
    hidden: int = 128
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        blocks = tuple(self.blocks) + (0,) * (len(self.widths) - len(self.blocks))
        for i, (width, n_blocks) in enumerate(zip(self.widths, blocks)):
            if i > 0:
                x = max_pool(x, (2, 2), strides=(2, 2))
            x = ConvBN(width, name=f"stage{i + 1}")(x, train=train)
            for j in range(n_blocks):
                x = ResidualBlock(name=f"stage{i + 1}_block{j + 1}")(x, train=train)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(x)
        return nn.Dense(self.num_classes, name="head")(x)
