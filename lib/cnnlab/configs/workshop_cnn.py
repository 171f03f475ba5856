"""`make train`: the Fashion-MNIST workshop CNN (3 stride-2 convs), Adam, 8 epochs.

About a minute on a 2-core CPU on the full 60,000 images: 90.8% test accuracy (seed 0).
"""

from cnnlab.train import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="workshop_cnn", dataset="fashion_mnist", epochs=8, batch_size=128,
                       optimizer="adam", learning_rate=2e-3, schedule="cosine", seed=0)
