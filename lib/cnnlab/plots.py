"""PNG figures of a run, drawn with matplotlib's object API (Agg canvas, no pyplot state, no
display needed). Every function writes its file atomically (temp file in the same directory, then
``os.replace``) and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnlab import fileio


def figure(width: float, height: float):
    """A matplotlib Figure on an Agg canvas (no pyplot state), ``width`` x ``height`` inches."""
    # matplotlib takes a few hundred ms to import: only runs that draw pay for it.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - see above
    from matplotlib.figure import Figure  # noqa: PLC0415 - see above
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str) -> str:
    """Write ``fig`` as a PNG at ``path``, atomically; returns ``path``."""
    with fileio.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    return path


def training_curves(history: Sequence[dict], path: str) -> str:
    """Loss and accuracy per epoch, side by side, for every split the records have: ``train``,
    ``val`` (validation) and ``test`` (``history``: metrics.jsonl records with ``epoch`` and
    ``<split>_loss`` / ``<split>_accuracy``)."""
    fig = figure(10, 4)
    epochs = [r["epoch"] for r in history]
    splits = [s for s in ("train", "val", "test") if any(f"{s}_loss" in r for r in history)]
    styles = {"train": "o-", "val": "s--", "test": "^:"}
    for ax, what in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for split in splits:
            ax.plot(epochs, [r.get(f"{split}_{what}", math.nan) for r in history], styles[split],
                    label={"val": "validation"}.get(split, split))
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_title(what)
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str) -> str:
    """Counts ``matrix[true, predicted]`` as a heat map with the numbers written in."""
    matrix = np.asarray(matrix)
    c = len(class_names)
    size = max(5.0, 0.6 * c + 2)
    fig = figure(size, size)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(c), class_names, rotation=45, ha="right")
    ax.set_yticks(range(c), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = matrix.sum()
    acc = np.trace(matrix) / total if total else float("nan")
    ax.set_title(f"confusion matrix (accuracy {acc:.2%})")
    if c <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(c):
            for j in range(c):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if matrix[i, j] > threshold else "black")
    return save(fig, path)


def show_image(ax, image: np.ndarray, **kwargs) -> None:
    """Draw one image (H, W[, C]) on ``ax`` (grayscale when it has one channel), no ticks."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        kwargs.setdefault("cmap", "gray")
    ax.imshow(image, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def prediction_grid(images: np.ndarray, labels: Sequence[int], predictions: Sequence[int],
                    class_names: Sequence[str], path: str) -> str:
    """A grid of images (N, H, W, C) titled "predicted (true)"; wrong ones in red."""
    n = len(images)
    cols = min(5, n)
    rows = math.ceil(n / cols)
    fig = figure(2.2 * cols, 2.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    for ax, image, y, p in zip(axes, images, labels, predictions):
        show_image(ax, image)
        ok = int(y) == int(p)
        title = class_names[int(p)]
        if not ok:
            title += f"\n(true: {class_names[int(y)]})"
        ax.set_title(title, fontsize=8, color="green" if ok else "red")
    return save(fig, path)


def filters(kernel: np.ndarray, path: str, *, title: str = "first-layer filters") -> str:
    """Conv kernel HWIO (kh, kw, in, out) -> one tile per output channel (the input channels
    averaged, or shown as RGB when there are 3), each scaled to its own min..max."""
    kernel = np.asarray(kernel, np.float32)
    kh, kw, cin, cout = kernel.shape
    cols = min(8, cout)
    rows = math.ceil(cout / cols)
    fig = figure(1.2 * cols, 1.2 * rows + 0.4)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, ax in enumerate(axes):
        if i >= cout:
            ax.axis("off")
            continue
        k = kernel[..., i]
        k = k if cin == 3 else k.mean(axis=-1, keepdims=True)
        k = (k - k.min()) / (np.ptp(k) or 1.0)
        show_image(ax, k, interpolation="nearest")
    fig.suptitle(f"{title} ({cout} x {kh}x{kw}x{cin})")
    return save(fig, path)


def feature_maps(image: np.ndarray, layers: Sequence[tuple[str, np.ndarray]], path: str, *,
                 max_channels: int = 16) -> str:
    """The input image, then one row per layer with its first ``max_channels`` feature maps
    (``layers``: (name, activations (H, W, C)) in network order)."""
    cols = max_channels
    rows = len(layers) + 1
    fig = figure(1.1 * cols, 1.3 * rows)
    axes = np.asarray(fig.subplots(rows, cols)).reshape(rows, cols)
    for ax in axes.ravel():
        ax.axis("off")
    show_image(axes[0, 0], image)
    axes[0, 0].axis("on")
    axes[0, 0].set_title("input", fontsize=8)
    for r, (name, act) in enumerate(layers, start=1):
        act = np.asarray(act, np.float32)
        for c in range(min(cols, act.shape[-1])):
            ax = axes[r, c]
            ax.axis("on")
            show_image(ax, act[..., c], interpolation="nearest", cmap="viridis")
            if c == 0:
                ax.set_ylabel(f"{name}\n{act.shape[0]}x{act.shape[1]}x{act.shape[2]}", fontsize=7)
    return save(fig, path)


# --- the workshop's second day: GAN samples and losses, forecasts --------------------------------

def image_grid(images: np.ndarray, path: str, *, title: str = "") -> str:
    """Images (N, H, W, C) in [0, 1] tiled into one square-ish grid (no gaps, one image per
    cell, row-major), drawn as a single picture: the generated samples of a GAN epoch."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.zeros((rows * h, cols * w, c), np.float32)
    for i, image in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = image
    fig = figure(max(3.0, 0.35 * cols * w / 8), max(3.0, 0.35 * rows * h / 8))
    ax = fig.subplots()
    show_image(ax, canvas, vmin=0.0, vmax=1.0, interpolation="nearest")
    if title:
        ax.set_title(title)
    return save(fig, path)


def gan_losses(history: Sequence[dict], path: str) -> str:
    """The discriminator's and the generator's mean loss per epoch, and D's mean output on real
    and generated images (``history``: ``cnnlab gan``'s records, with ``epoch``,
    ``train_d_loss``, ``train_g_loss``, ``train_d_real``, ``train_d_fake``)."""
    fig = figure(10, 4)
    epochs = [r["epoch"] for r in history]
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [r["train_d_loss"] for r in history], "o-", label="discriminator")
    left.plot(epochs, [r["train_g_loss"] for r in history], "s--", label="generator")
    left.set_title("losses")
    right.plot(epochs, [r["train_d_real"] for r in history], "o-", label="D(real)")
    right.plot(epochs, [r["train_d_fake"] for r in history], "s--", label="D(generated)")
    right.axhline(0.5, color="gray", lw=0.8)
    right.set_ylim(0, 1)
    right.set_title("discriminator output")
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return save(fig, path)


def forecast(series: np.ndarray, split: int, predictions: dict[str, np.ndarray], path: str, *,
             title: str = "", x: np.ndarray | None = None) -> str:
    """A series with one-step-ahead forecasts over its test part: ``series`` (T,), the test part
    starting at index ``split``, ``predictions`` name -> (T - split,) values aligned with
    ``series[split:]``; ``x`` (T,) the time axis (default 0..T-1)."""
    series = np.asarray(series)
    x = np.arange(len(series)) if x is None else np.asarray(x)
    fig = figure(11, 4)
    ax = fig.subplots()
    ax.plot(x, series, color="black", lw=1, label="series")
    ax.axvline(x[split], color="gray", ls=":", lw=1)
    for (name, values), style in zip(predictions.items(), ("-", "--", "-.", ":")):
        ax.plot(x[split:split + len(values)], values, style, lw=1.2, label=name)
    ax.set_title(title or "one-step-ahead forecasts on the test part")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)
