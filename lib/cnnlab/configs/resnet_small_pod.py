"""resnet_small for many devices (8 GPUs, a TPU VM or a pod slice): a large global batch split
along the mesh's "data" axis, learning rate scaled with the batch (square-root rule, warm-up),
bfloat16 compute, optimizer state sharded across devices (fsdp). Copy it to start your own."""

from cnnlab.config import TrainConfig


def get_config() -> TrainConfig:
    batch_size = 1024                         # global: 128 per device on 8 devices
    return TrainConfig(model="resnet_small", dataset="fashion_mnist", epochs=15,
                       batch_size=batch_size, eval_batch_size=4096,
                       optimizer="adamw",
                       learning_rate=3e-3 * (batch_size / 128) ** 0.5,  # square-root rule (Adam)
                       schedule="cosine", warmup_epochs=1.0, weight_decay=5e-4,
                       label_smoothing=0.1, augment=True, precision="bf16", sharding="fsdp",
                       checkpoint_every_steps=200, keep_checkpoints=3, seed=0)
