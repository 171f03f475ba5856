"""`make train`: the Fashion-MNIST workshop CNN (3 stride-2 convs), Adam, a couple of epochs.

About a minute on a 2-core CPU on the full 60,000 images (about 90% test accuracy).
"""

from cnnlab.train import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="workshop_cnn", dataset="fashion_mnist", epochs=5, batch_size=128,
                       optimizer="adam", learning_rate=2e-3, schedule="cosine", seed=0)
