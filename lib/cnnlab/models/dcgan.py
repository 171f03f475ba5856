"""The DCGAN pair of the workshop ("Develop a DCGAN for greyscale handwritten digits").

:class:`Generator`: latent z (N, latent_dim) -> Dense(base*base*features) LeakyReLU(0.2) ->
reshape (N, base, base, features) -> 2 x [ConvTranspose(features, 4x4, stride 2, "SAME")
LeakyReLU] (base -> 2 base -> 4 base) -> Conv(C, 7x7, "SAME") -> sigmoid: images (N, H, W, C)
in [0, 1] (``cnnlab.data.normalize``'s range), H = W = 4 base (28x28: base 7; 8x8 digits: base 2).

:class:`Discriminator`: images (N, H, W, C) -> 2 x [Conv(features, 3x3, stride 2, "SAME")
LeakyReLU(0.2) Dropout(0.4)] -> flatten -> Dense(1): one logit per image, (N,).

No batch norm (as in the workshop's Keras model), so a GAN step is a pure function of the two
parameter trees, the batch and the keys. The transposed convolutions are
:class:`cnnlab.conv_transpose.ConvTranspose` (flax's, computed per output phase: fast on CPU).
Parameters for 28x28x1, latent 100, features 128/64: generator 1,164,289, discriminator 40,705.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from cnnlab.conv_transpose import ConvTranspose
from cnnlab.errors import CnnlabError
from cnnlab.layers import Conv


class Generator(nn.Module):
    """z (N, latent_dim) -> images (N, *image_shape) in [0, 1]. ``image_shape`` (H, W, C) with
    H and W divisible by 4."""

    image_shape: Sequence[int] = (28, 28, 1)
    features: int = 128

    def __post_init__(self):
        h, w, _ = self.image_shape
        if h % 4 or w % 4:
            raise CnnlabError(f"the DCGAN generator makes images whose sides are multiples of "
                              f"4, got {tuple(self.image_shape)}")
        super().__post_init__()

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool = False) -> jax.Array:
        h, w, c = self.image_shape
        x = nn.leaky_relu(nn.Dense((h // 4) * (w // 4) * self.features)(z), 0.2)
        x = x.reshape(z.shape[0], h // 4, w // 4, self.features)
        for _ in range(2):
            x = ConvTranspose(self.features, (4, 4), strides=2, padding="SAME")(x)
            x = nn.leaky_relu(x, 0.2)
        return nn.sigmoid(Conv(c, (7, 7), padding="SAME")(x))


class Discriminator(nn.Module):
    """images (N, H, W, C) -> logits (N,) ("real" when large). Dropout draws from the rng
    stream "dropout" when ``train``."""

    features: int = 64
    dropout: float = 0.4

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        for _ in range(2):
            x = Conv(self.features, (3, 3), strides=2, padding="SAME")(x)
            x = nn.Dropout(self.dropout, deterministic=not train)(nn.leaky_relu(x, 0.2))
        return nn.Dense(1)(x.reshape(x.shape[0], -1))[:, 0]
