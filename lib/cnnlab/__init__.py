"""cnnlab: convolutional neural networks in JAX.

Pure-functional Flax linen models (:mod:`cnnlab.models`), Fashion-MNIST and friends through
tensorflow-datasets (:mod:`cnnlab.data`), and jit-compiled Optax training (:mod:`cnnlab.train`).
"""

__version__ = "0.1.0"
