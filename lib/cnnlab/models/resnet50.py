"""ResNet50 v1 (He et al. 2015) exactly as ``keras.applications.ResNet50`` builds it.

The Keras variant differs from torchvision's "v1.5" in ways that change the numbers:

* the stride of a downsampling bottleneck sits on its *first* 1x1 conv (and on the 1x1 shortcut);
* every conv has a bias (even before batch norm);
* batch norm uses epsilon 1.001e-5 (momentum 0.99);
* the stem pads explicitly with zeros (3 before the 7x7/2 conv, 1 before the 3x3/2 max pool) and
  then uses VALID windows, so the max pool sees zeros, not -inf, at the border.

Layer names and their creation order are Keras's (``conv1_conv``, ``conv2_block1_1_conv``, ...,
``predictions``), so :func:`cnnlab.keras_h5.load_weights` maps ``.h5`` files by name, or by
position exactly as Keras's ``load_weights`` does. Stage outputs are sown into the
``"intermediates"`` collection under their Keras names (``pool1_pool``, ``conv2_block3_out``, ...).

Inputs are caffe-preprocessed images (:func:`cnnlab.imagenet.preprocess_input`), or with
``preprocess="caffe"`` RGB/grayscale in [0, 1] (see :func:`cnnlab.models.vgg16.imagenet_input`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.layers import Conv
from cnnlab.models.vgg16 import global_pool, imagenet_input

#: (stage name, bottleneck width, number of blocks, stride of the first block)
STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))
BN_EPSILON = 1.001e-5


class ResNet50(nn.Module):
    """ResNet50 v1, Keras-applications layout.

    Attributes:
      num_classes: outputs of ``predictions`` (1000 for the ImageNet weights).
      include_top: global average pool + ``predictions`` dense (logits). Works at any input size
        >= 32x32, so ``num_classes != 1000`` is a ready transfer-learning model.
      pooling: None, "avg" or "max" for the features when ``include_top=False``; without pooling
        the output is the ``conv5_block3_out`` map (N, ceil(H/32), ceil(W/32), 2048).
      preprocess: None (caffe-preprocessed inputs, as in Keras) or "caffe" (RGB or grayscale in
        [0, 1], preprocessed inside the model).

    ``x`` float32 (N, H, W, 3) -> logits (N, num_classes), or features as above.
    """

    num_classes: int = 1000
    include_top: bool = True
    pooling: str | None = None
    preprocess: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = imagenet_input(x, self.preprocess)

        def bn(name):
            return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=BN_EPSILON,
                                name=name)

        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))                      # conv1_pad
        x = Conv(64, (7, 7), strides=2, padding="VALID", name="conv1_conv")(x)
        x = nn.relu(bn("conv1_bn")(x))
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                      # pool1_pad
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")           # pool1_pool
        self.sow("intermediates", "pool1_pool", x)
        for stage, width, blocks, stride in STAGES:
            for b in range(1, blocks + 1):
                x = self._bottleneck(x, bn, f"{stage}_block{b}", width,
                                     stride if b == 1 else 1, shortcut_conv=b == 1)
        if not self.include_top:
            return global_pool(x, self.pooling)
        x = jnp.mean(x, axis=(1, 2))                                         # avg_pool
        return nn.Dense(self.num_classes, name="predictions")(x)

    def _bottleneck(self, x, bn, name, width, stride, shortcut_conv):
        """1x1/stride (width) -> 3x3 (width) -> 1x1 (4 width), plus shortcut, then ReLU.

        Operations run in the order Keras lists the layers (1, 2, then 0 = shortcut, 3), which
        is also the order of the parameters, so positional loading lines up with Keras.
        """
        y = Conv(width, (1, 1), strides=stride, padding="VALID", name=f"{name}_1_conv")(x)
        y = nn.relu(bn(f"{name}_1_bn")(y))
        y = Conv(width, (3, 3), padding="SAME", name=f"{name}_2_conv")(y)
        y = nn.relu(bn(f"{name}_2_bn")(y))
        if shortcut_conv:
            shortcut = Conv(4 * width, (1, 1), strides=stride, padding="VALID",
                            name=f"{name}_0_conv")(x)
        y = Conv(4 * width, (1, 1), padding="VALID", name=f"{name}_3_conv")(y)
        if shortcut_conv:
            shortcut = bn(f"{name}_0_bn")(shortcut)
        else:
            shortcut = x
        y = bn(f"{name}_3_bn")(y)
        out = nn.relu(shortcut + y)
        self.sow("intermediates", f"{name}_out", out)
        return out
