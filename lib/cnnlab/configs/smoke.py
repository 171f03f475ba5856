"""A few seconds end to end: the workshop CNN on the embedded subset, short epochs (CI, tests)."""

from cnnlab.config import TrainConfig


def get_config() -> TrainConfig:
    return TrainConfig(model="workshop_cnn", dataset="fashion_mnist_subset", epochs=1,
                       batch_size=64, max_steps_per_epoch=40, eval_batch_size=500,
                       optimizer="adam", learning_rate=3e-3, seed=0)
