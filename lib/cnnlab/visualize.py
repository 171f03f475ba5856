"""Looking inside a trained CNN (the lectures' "understanding the layers" pictures), and reading
arbitrary image files into a model's input format.

- :func:`read_image`: any PNG/JPEG/... of any size -> uint8 (H, W, C) as the model was trained on.
- :func:`conv_activations`: the output of every convolution layer for one image, captured with
  Flax's ``capture_intermediates`` (no change to the model code).
- :func:`first_conv_kernel`: the kernel (HWIO) of the first convolution the image goes through.
"""

from __future__ import annotations

import os

import flax.linen as nn
import numpy as np
from flax import traverse_util
from PIL import Image, UnidentifiedImageError

from cnnlab import data, plots
from cnnlab.errors import CnnlabError
from cnnlab.layers import Conv


def read_image(path: str, input_shape, *, invert: str = "auto") -> np.ndarray:
    """Read an image file and convert it to the model's input: uint8 (H, W, C).

    Converted with Pillow to grayscale ("L") when C == 1 or RGB when C == 3, then resized to
    (H, W) (bilinear, aspect ratio not kept). ``invert``: "yes", "no", or "auto" — Fashion-MNIST
    and digits show light objects on a black background, so a grayscale image whose border is
    mostly light (a photo on white paper) is inverted.

    Raises:
      CnnlabError: the file is missing or is not an image Pillow can read.
    """
    h, w, c = (int(d) for d in input_shape)
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("L" if c == 1 else "RGB")
    except FileNotFoundError:
        raise CnnlabError(f"image {path} does not exist") from None
    except IsADirectoryError:
        raise CnnlabError(f"{path} is a directory, not an image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        reason = ("unknown format" if isinstance(e, UnidentifiedImageError)
                  else str(e) or type(e).__name__)
        raise CnnlabError(f"{path} is not an image that can be read ({reason}); give a PNG or "
                          "JPEG file") from None
    if c not in (1, 3):
        raise CnnlabError(f"models with {c} input channels cannot take image files")
    array = np.asarray(img.resize((w, h), Image.BILINEAR), np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if invert not in ("auto", "yes", "no"):
        raise CnnlabError(f"--invert must be auto, yes or no, got {invert!r}")
    if invert == "yes" or (invert == "auto" and c == 1 and _border_mean(array) > 127):
        array = 255 - array
    return array


def _border_mean(array: np.ndarray) -> float:
    border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(),
                             array[:, -1].ravel()])
    return float(border.mean())


def _is_conv(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv, Conv))


def conv_activations(run, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Outputs of every convolution for one image uint8 (H, W, C), in the order they ran:
    ``[(layer path, activations (H', W', C')), ...]`` (before the activation function)."""
    variables = {"params": run.state.params}
    if run.state.batch_stats:
        variables["batch_stats"] = run.state.batch_stats
    x = data.to_float(image[None])
    _, state = run.model.apply(
        variables, x, train=False, mutable=["intermediates"],
        capture_intermediates=lambda mdl, method: method == "__call__" and _is_conv(mdl))
    flat = traverse_util.flatten_dict(state.get("intermediates", {}))
    out = []
    for path, value in flat.items():
        if path[-1] == "__call__":
            for v in (value if isinstance(value, tuple) else (value,)):
                out.append(("/".join(path[:-1]), np.asarray(v[0])))
    return out


def first_conv_kernel(run, layers: list[tuple[str, np.ndarray]]) -> tuple[str, np.ndarray]:
    """``(path, kernel HWIO)`` of the first convolution in ``layers`` (from conv_activations)."""
    if not layers:
        raise CnnlabError(f"model {run.config.model!r} has no convolution layers to show")
    name = layers[0][0]
    params = run.state.params
    for part in name.split("/"):
        params = params[part]
    return name, np.asarray(params["kernel"])


def visualize(run, image: np.ndarray, out_dir: str, *, stem: str = "") -> dict[str, str]:
    """Write ``filters.png`` (first-layer kernels) and ``feature_maps[_stem].png`` into
    ``out_dir``; returns {"filters": path, "feature_maps": path}."""
    layers = conv_activations(run, image)
    name, kernel = first_conv_kernel(run, layers)
    suffix = f"_{stem}" if stem else ""
    return {
        "filters": plots.filters(kernel, os.path.join(out_dir, "filters.png"),
                                 title=f"first-layer filters ({name})"),
        "feature_maps": plots.feature_maps(image, layers,
                                           os.path.join(out_dir, f"feature_maps{suffix}.png")),
    }
