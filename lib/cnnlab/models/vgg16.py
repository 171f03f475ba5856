"""VGG16 (Simonyan & Zisserman 2014) exactly as ``keras.applications.VGG16`` builds it.

Layer names, order and parameter shapes follow Keras, so :func:`cnnlab.keras_h5.load_weights`
maps a Keras ``.h5`` file onto the parameters one layer name at a time:

========================  ==========================================================
``block{b}_conv{i}``      3x3 conv, SAME padding, bias, ReLU; widths 64, 128, 256, 512, 512
``block{b}_pool``         2x2 max pool, stride 2 (5 times: 224 -> 7)
``flatten, fc1, fc2``     (N, 7*7*512) -> 4096 -> 4096, ReLU        (``include_top``)
``predictions``           dense to ``num_classes`` *logits* (Keras applies softmax here)
========================  ==========================================================

Inputs are caffe-preprocessed images (:func:`cnnlab.imagenet.preprocess_input`: BGR, ImageNet
mean subtracted, no scaling), as in Keras; with ``preprocess="caffe"`` the model takes cnnlab's
usual input instead (RGB or grayscale in [0, 1], what :mod:`cnnlab.train` feeds every model) and
does that preprocessing itself, so ``cnnlab train/evaluate/predict`` work unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cnnlab.imagenet import CAFFE_MEAN_BGR
from cnnlab.layers import Conv

#: (block, number of 3x3 convs, width)
BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def imagenet_input(x: jax.Array, preprocess: str | None) -> jax.Array:
    """None: ``x`` is already caffe-preprocessed. "caffe": ``x`` (N, H, W, 1 or 3) RGB or gray
    in [0, 1] -> ``255 x[..., ::-1] - mean_bgr`` (gray is repeated to 3 channels first)."""
    if preprocess is None:
        return x
    if preprocess != "caffe":
        raise ValueError(f"preprocess must be None or 'caffe', got {preprocess!r}")
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    return x[..., ::-1] * 255.0 - jnp.asarray(CAFFE_MEAN_BGR, x.dtype)


def global_pool(x: jax.Array, pooling: str | None) -> jax.Array:
    """(N, H, W, C) -> (N, C) for "avg" / "max"; unchanged for None (Keras ``pooling=``)."""
    if pooling is None:
        return x
    if pooling == "avg":
        return jnp.mean(x, axis=(1, 2))
    if pooling == "max":
        return jnp.max(x, axis=(1, 2))
    raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")


class VGG16(nn.Module):
    """VGG16, Keras-applications layout.

    Attributes:
      num_classes: outputs of ``predictions`` (1000 for the ImageNet weights).
      include_top: add the classifier. Without it the output is the ``block5_pool`` feature map
        (N, H/32, W/32, 512), or (N, 512) with ``pooling``.
      pooling: None, "avg" or "max": global pooling of the features when ``include_top=False``.
      classifier: the top when ``include_top``: "fc" is Keras's flatten -> fc1 -> fc2 ->
        predictions (the ImageNet top; its ``fc1`` kernel is (7*7*512, 4096) only for 224x224
        inputs); "avg" is global average pooling -> predictions, light and usable at any input
        size (the usual transfer-learning head).
      preprocess: None (inputs are caffe-preprocessed, as in Keras) or "caffe" (inputs are RGB or
        grayscale in [0, 1]; see :func:`imagenet_input`).

    ``x`` float32 (N, H, W, 3) -> logits (N, num_classes), or features as above.
    """

    num_classes: int = 1000
    include_top: bool = True
    pooling: str | None = None
    classifier: str = "fc"
    preprocess: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        del train  # no batch norm, no dropout: train and inference are the same function
        x = imagenet_input(x, self.preprocess)
        for block, n_convs, width in BLOCKS:
            for i in range(1, n_convs + 1):
                x = nn.relu(Conv(width, (3, 3), padding="SAME", name=f"block{block}_conv{i}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            self.sow("intermediates", f"block{block}_pool", x)
        if not self.include_top:
            return global_pool(x, self.pooling)
        if self.classifier == "fc":
            x = x.reshape(x.shape[0], -1)  # NHWC flatten: Keras's Flatten order (channels_last)
            x = nn.relu(nn.Dense(4096, name="fc1")(x))
            x = nn.relu(nn.Dense(4096, name="fc2")(x))
        elif self.classifier == "avg":
            x = global_pool(x, "avg")
        else:
            raise ValueError(f"classifier must be 'fc' or 'avg', got {self.classifier!r}")
        return nn.Dense(self.num_classes, name="predictions")(x)
