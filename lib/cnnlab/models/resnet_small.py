"""A small ResNet with batch norm and dropout: the stronger model for Fashion-MNIST.

Chosen for time-to-accuracy on a 2-core CPU (see ``benchmarks/time_to_accuracy.py``): a stem
conv, one residual stage per width (the first at full resolution, each further one halving H and W
with a stride-2 block), global average pooling, dropout and a dense classifier.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.layers import Conv


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    # momentum 0.9 (not Flax's 0.99): the running averages must be usable after a few hundred steps.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU (He et al. 2016, "basic" block).

    The shortcut is the identity, or a 1x1 conv + BN when the stride or the width changes.
    (N, H, W, C) -> (N, ceil(H/s), ceil(W/s), features).
    """

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        y = Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(_batch_norm(train)(y))
        y = Conv(self.features, (3, 3), use_bias=False)(y)
        # Zero-init the last BN scale: each block starts as the identity (Goyal et al. 2017).
        y = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         scale_init=nn.initializers.zeros_init())(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            x = Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
            x = _batch_norm(train)(x)
        return nn.relu(x + y)


class ResNetSmall(nn.Module):
    """Stem conv 3x3 (widths[0]) + BN + ReLU, then for each width a stage of ``blocks`` residual
    blocks (stride 2 at the start of every stage but the first), global average pool, dropout,
    dense to N.

    Defaults for 28x28x1: 28x28x32 -> 28x28x32 -> 14x14x64 -> 7x7x128 -> 128 features.
    """

    num_classes: int = 10
    widths: tuple[int, ...] = (32, 64, 128)
    blocks: int = 1
    dropout: float = 0.2

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = Conv(self.widths[0], (3, 3), use_bias=False, name="stem")(x)
        x = nn.relu(_batch_norm(train, name="stem_bn")(x))
        for i, width in enumerate(self.widths):
            for j in range(self.blocks):
                x = ResidualBlock(width, strides=2 if (i > 0 and j == 0) else 1,
                                  name=f"stage{i + 1}_block{j + 1}")(x, train=train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout, deterministic=not train, name="dropout")(x)
        return nn.Dense(self.num_classes, name="head")(x)
