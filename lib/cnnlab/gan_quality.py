"""How good are a GAN's samples? A small "inception score" of our own, needing no download.

A classifier trained on the *real* data (a cnnlab run, e.g. the workshop CNN on Fashion-MNIST)
looks at three sets of images: real test images, generated samples, and uniform noise. For each
set, with ``p(y|x)`` the classifier's softmax:

- ``accuracy``: the fraction classified as their label (real images only: generated samples
  and noise have no label);
- ``confidence``: the mean of ``max_y p(y|x)``: does each image look like *some* class? (a
  good sample: high; noise: whatever class the classifier defaults to, usually lower);
- ``class_entropy_bits``: the entropy of the histogram of predicted classes, in bits: do the
  images cover the classes? (``log2 K`` when every class is predicted equally often, 3.32 for
  10 classes; a generator that collapsed to one kind of image: near 0);
- ``inception_score``: ``exp(mean_x KL(p(y|x) || p(y)))`` with ``p(y)`` the mean prediction
  (Salimans et al. 2016, with our classifier in place of Inception): between 1 and K, high
  when each image is confidently one class *and* the classes are diverse.

Real images give the ceiling; noise the floor; the generator's figures should lie close to the
real ones.
"""

from __future__ import annotations

import math

import numpy as np


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def class_statistics(logits: np.ndarray, labels: np.ndarray | None = None) -> dict:
    """The figures of the module docstring for one set of images, from the classifier's logits
    (N, K) (and the labels (N,) when there are any)."""
    probs = _softmax(np.asarray(logits, np.float64))
    n, k = probs.shape
    predicted = probs.argmax(axis=-1)
    hist = np.bincount(predicted, minlength=k) / n
    nz = hist[hist > 0]
    marginal = probs.mean(axis=0)
    kl = (probs * (np.log(probs + 1e-12) - np.log(marginal + 1e-12))).sum(axis=-1)
    out = {"images": int(n),
           "accuracy": float((predicted == np.asarray(labels)).mean()) if labels is not None
           else None,
           "confidence": float(probs.max(axis=-1).mean()),
           "class_entropy_bits": float(-(nz * np.log2(nz)).sum()) + 0.0,  # + 0.0: never -0.0
           "max_entropy_bits": math.log2(k),
           "inception_score": float(np.exp(kl.mean()))}
    return out


def sample_quality(classify, real_images: np.ndarray, real_labels: np.ndarray,
                   generated: np.ndarray, *, seed: int = 0) -> dict:
    """``{"real": ..., "generated": ..., "noise": ...}`` figures (see :func:`class_statistics`).

    ``classify(images float32 [0, 1] (N, H, W, C)) -> logits (N, K)``; ``real_images`` uint8 or
    float in [0, 1]; ``generated`` float in [0, 1]; the noise set is uniform in [0, 1], as many
    images as generated ones.
    """
    real = np.asarray(real_images, np.float32)
    if real_images.dtype == np.uint8:
        real = real / 255.0
    noise = np.random.default_rng(seed).uniform(0, 1, generated.shape).astype(np.float32)
    return {"real": class_statistics(classify(real), real_labels),
            "generated": class_statistics(classify(np.asarray(generated, np.float32))),
            "noise": class_statistics(classify(noise))}


def format_table(quality: dict) -> str:
    """The figures as a small Markdown table."""
    rows = ["| images | accuracy | confidence | class entropy (bits) | inception score |",
            "|---|---|---|---|---|"]
    for name in ("real", "generated", "noise"):
        q = quality[name]
        acc = "-" if q["accuracy"] is None else f"{q['accuracy']:.3f}"
        rows.append(f"| {name} ({q['images']:,}) | {acc} | {q['confidence']:.3f} | "
                    f"{q['class_entropy_bits']:.2f} of {q['max_entropy_bits']:.2f} | "
                    f"{q['inception_score']:.2f} |")
    return "\n".join(rows)
