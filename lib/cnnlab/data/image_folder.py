"""Your own images as a data set: ``ROOT/<class>/*.jpg|png|...`` -> :class:`~cnnlab.data.Dataset`.

>>> ds = load_image_folder("pets", image_size=64, val_fraction=0.2, seed=0)
>>> ds.class_names, ds.train.images.shape          # ('cat', 'dog'), (N, 64, 64, 3)

How it is prepared (once; later calls with the same files and options read the prepared copy):

1. scan: class names are the sub-folder names (sorted); files with an image extension
   (``IMAGE_EXTENSIONS``) are examples; hidden files and other extensions are ignored;
2. clean: every image is decoded with Pillow, converted (CMYK, palette, 16-bit, alpha, grayscale
   in an RGB set -> RGB; or everything -> L when *all* images are grayscale), resized to
   ``image_size`` x ``image_size`` (bilinear, aspect ratio not kept, like Keras's
   ``image_dataset_from_directory``) and written as a clean PNG into a temporary directory.
   Files that cannot be used (not an image, truncated, smaller than ``MIN_SIDE`` pixels) are
   skipped. ONE warning lists everything skipped or converted;
3. split: per class, a seeded shuffle puts ``round(val_fraction * n)`` images (at least one) in
   the validation split (``Dataset.test``) and the rest in ``train`` (stratified);
4. TFDS: the builder ``cnnlab_image_folder`` stores the PNGs with ``tfds.features.Image`` fed
   file paths (no TensorFlow needed) as ``array_record``; reading goes through ``as_data_source``
   like every cnnlab data set. Its config name is a hash of the files' checksums and the options:
   changed files are prepared beside the copy of the old ones, never over it, and a preparation
   that fails or is killed leaves no copy (:mod:`cnnlab.data.preparation`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from cnnlab.data import preparation
from cnnlab.data.builders import QuietBuilder
from cnnlab.data.dataset import Dataset, default_tfds_dir, read_split
from cnnlab.data.sources import sha256
from cnnlab.errors import CnnlabError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
MIN_SIDE = 8  # smaller images carry no usable content (and 1x1 "tracking pixels" exist)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
FORMAT_VERSION = "1.0.0"


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """One folder + options. ``name`` is a hash of the files (paths and sha256 of the contents)
    and the options, so changed files or options prepare a new copy beside the old ones."""

    class_names: tuple[str, ...] = ()
    image_size: int = 0
    channels: int = 3


class CnnlabImageFolder(QuietBuilder):
    """Images from class sub-folders, pre-cleaned into PNGs of one size (see the module doc).

    The examples come from ``manual_dir``/``manifest.json``: ``{"train": [[png, label], ...],
    "validation": [...], "problems": [...]}`` written by :func:`load_image_folder`.
    """

    VERSION = tfds.core.Version(FORMAT_VERSION)
    RELEASE_NOTES = {FORMAT_VERSION: "Clean PNGs of one size, stratified validation split."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Prepared by cnnlab.data.image_folder.load_image_folder."

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(cfg.image_size, cfg.image_size, cfg.channels),
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(names=list(cfg.class_names)),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        manifest = json.loads((Path(dl_manager.manual_dir) / "manifest.json").read_text())
        self.info.metadata["root"] = manifest["root"]
        self.info.metadata["problems"] = manifest["problems"]
        return {split: self._generate_examples(manifest[split])
                for split in ("train", "validation")}

    def _generate_examples(self, examples):
        for i, (png, label) in enumerate(examples):
            yield i, {"image": png, "label": label}


@dataclasses.dataclass(frozen=True)
class _Scan:
    root: Path
    class_names: tuple[str, ...]
    files: tuple[tuple[Path, int], ...]    # (path, label), sorted by class then name
    fingerprint: str   # sha256 over (label, relative path, sha256 of the file) of every file


def scan(root: str | os.PathLike) -> _Scan:
    """Class folders and their image files (no decoding; each file is read once for its sha256).

    Raises:
      CnnlabError: ``root`` missing or not a folder, fewer than two class folders, or a class
        folder without image files.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CnnlabError(f"image folder {root} does not exist or is not a directory; expected "
                          "ROOT/<class name>/<images>")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        found = f"only {class_dirs[0].name!r}" if class_dirs else "none"
        raise CnnlabError(f"image folder {root} needs one sub-folder per class and at least two "
                          f"classes; found {found}")
    files, h = [], hashlib.sha256()
    for label, d in enumerate(class_dirs):
        images = sorted(p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise CnnlabError(f"class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                              "add some or remove the folder")
        for p in images:
            h.update(f"{label}\0{p.relative_to(root)}\0{sha256(p)}\n".encode())
            files.append((p, label))
    return _Scan(root, tuple(d.name for d in class_dirs), tuple(files), h.hexdigest())


def _open(path: Path):
    """Decode fully (``load``) so truncated files fail here; returns (image, problem or None)."""
    try:
        im = Image.open(path)
        im.load()
    except UnidentifiedImageError:
        return None, "not an image"
    except (OSError, SyntaxError, ValueError):  # truncated / corrupt data
        return None, "truncated or corrupt"
    if min(im.size) < MIN_SIDE:
        return None, f"{im.size[0]}x{im.size[1]} pixels, smaller than {MIN_SIDE}x{MIN_SIDE}"
    return im, None


def _to_mode(im, channels: int):
    """(converted image, note or None): RGB for channels=3, L for channels=1."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        # 16/32-bit grayscale: scale to 8 bit instead of clipping at 255.
        a = np.asarray(im, dtype=np.float64)
        top = max(a.max(), 1.0)
        im = Image.fromarray(np.rint(a * (255.0 / (65535.0 if top > 255 else 255.0))
                                     ).clip(0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency on white (dropping alpha would expose arbitrary colours).
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    target = "RGB" if channels == 3 else "L"
    note = None
    if channels == 3 and mode in _GRAY_MODES:
        note = "grayscale, converted to RGB"
    elif mode == "CMYK":
        note = "CMYK, converted to RGB"
    return (im if im.mode == target else im.convert(target)), note


def _clean(scan_: _Scan, out_dir: Path, image_size: int, channels: int | None):
    """Write clean PNGs; returns (kept [(png, label, rel path)], problems [str], channels)."""
    opened, problems = [], []
    for path, label in scan_.files:
        im, problem = _open(path)
        rel = path.relative_to(scan_.root)
        if problem:
            problems.append(f"{rel} ({problem}, skipped)")
        else:
            opened.append((path, label, rel, im.mode))
            im.close()
    if not opened:
        raise CnnlabError(f"image folder {scan_.root}: none of the {len(scan_.files)} files "
                          "could be read as an image")
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for *_, mode in opened) else 3
    kept = []
    for i, (path, label, rel, _) in enumerate(opened):
        with Image.open(path) as im:
            im.load()
            im, note = _to_mode(im, channels)
            if note:
                problems.append(f"{rel} ({note})")
            im = im.resize((image_size, image_size), Image.BILINEAR)
            png = out_dir / f"{i:06d}.png"
            im.save(png, format="PNG")
        kept.append((str(png), label, str(rel)))
    return kept, problems, channels


def _split(labels: np.ndarray, val_fraction: float, seed: int, class_names) -> np.ndarray:
    """bool (N,): True for validation. Per class, a seeded shuffle; round(f * n), at least 1."""
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(labels), bool)
    for c, name in enumerate(class_names):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            raise CnnlabError(f"class {name!r} has {len(idx)} usable image(s); a train/validation "
                              "split needs at least 2 per class")
        n_val = min(max(1, round(val_fraction * len(idx))), len(idx) - 1)
        is_val[rng.permutation(idx)[:n_val]] = True
    return is_val


def load_image_folder(root: str | os.PathLike, *, image_size: int = 64,
                      val_fraction: float = 0.2, seed: int = 0,
                      tfds_dir: str | os.PathLike | None = None, channels: int | None = None):
    """Load ``ROOT/<class>/<images>`` as a :class:`~cnnlab.data.Dataset` (train, test=validation).

    Args:
      root: the folder with one sub-folder per class.
      image_size: images become ``image_size`` x ``image_size``.
      val_fraction: share of each class held out for validation (stratified), in (0, 1).
      seed: the split's seed.
      tfds_dir: where the prepared copy goes (default ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).
      channels: 3 (RGB), 1 (grayscale) or None: 1 if every image is grayscale, else 3.

    Returns:
      ``Dataset(name=<folder name>, train, test=validation, class_names=<folder names>, source)``.

    Raises:
      CnnlabError: see :func:`scan`; bad options; fewer than 2 usable images in a class.

    Warns:
      UserWarning: once, listing every file skipped or converted (again on later loads).
    """
    if not isinstance(image_size, int) or image_size < MIN_SIDE:
        raise CnnlabError(f"image size must be an integer >= {MIN_SIDE}, got {image_size!r}")
    if channels not in (None, 1, 3):
        raise CnnlabError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not 0 < val_fraction < 1:
        raise CnnlabError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    tfds_dir = Path(tfds_dir).expanduser() if tfds_dir is not None else default_tfds_dir()
    s = scan(root)
    options = f"{s.fingerprint}|{image_size}|{val_fraction}|{seed}|{channels}|{FORMAT_VERSION}"
    config_name = "f" + hashlib.sha256(options.encode()).hexdigest()[:16]

    def builder(channels):
        cfg = ImageFolderConfig(name=config_name, class_names=s.class_names,
                                image_size=image_size, channels=channels)
        return CnnlabImageFolder(config=cfg, data_dir=os.fspath(tfds_dir),
                                 file_format="array_record")

    with preparation.quiet(), preparation.exclusive(tfds_dir, CnnlabImageFolder.name, config_name):
        b = _prepared(tfds_dir, config_name, builder)
        if b is None:
            with tempfile.TemporaryDirectory(prefix="cnnlab-images-") as tmp:
                kept, problems, channels = _clean(s, Path(tmp), image_size, channels)
                labels = np.array([label for _, label, _ in kept])
                is_val = _split(labels, val_fraction, seed, s.class_names)
                manifest = {
                    "root": str(s.root.resolve()), "problems": problems,
                    "train": [[p, int(lab)] for (p, lab, _), v in zip(kept, is_val, strict=True)
                              if not v],
                    "validation": [[p, int(lab)] for (p, lab, _), v in zip(kept, is_val, strict=True)
                                   if v],
                }
                (Path(tmp) / "manifest.json").write_text(json.dumps(manifest))
                preparation.build(builder(channels), manual_dir=tmp,
                                  what=f"image folder {s.root} ({len(kept)} images, "
                                       f"{image_size}x{image_size})")
            b = builder(channels)
    problems = list(b.info.metadata.get("problems", []))
    if problems:
        warnings.warn(f"image folder {s.root}: {len(problems)} file(s) skipped or converted: "
                      + "; ".join(problems), UserWarning, stacklevel=2)
    with preparation.quiet():
        train, val = read_split(b, "train"), read_split(b, "validation")
    skipped = sum("skipped" in p for p in problems)
    return Dataset(
        s.root.name or str(s.root), train, val, s.class_names,
        f"image folder {s.root} ({len(train):,}/{len(val):,} train/validation, stratified "
        f"{val_fraction:g} split seed {seed}; {image_size}x{image_size}"
        f"{'' if not skipped else f'; {skipped} unusable file(s) skipped'}) "
        f"prepared in {b.data_dir}")


def _prepared(tfds_dir: Path, config_name: str, builder):
    """The prepared builder for this config if a complete copy exists, else None.

    The number of channels (known only after decoding every image) is read back from the
    prepared copy's ``features.json``.
    """
    features = tfds_dir / CnnlabImageFolder.name / config_name / FORMAT_VERSION / "features.json"
    if not features.exists():
        return None
    try:
        image = json.loads(features.read_text())["featuresDict"]["features"]["image"]["image"]
        channels = int(image["shape"]["dimensions"][-1])
    except (KeyError, ValueError, IndexError):
        return None
    b = builder(channels)
    return b if b.is_prepared() else None


#: Data set names of the form ``folder:/abs/root?image_size=64&val_fraction=0.2&seed=0&channels=3``
#: name an image folder with its options (what a fine-tuning run records in ``config.json`` so
#: ``cnnlab evaluate`` can load the same data again).
SPEC_PREFIX = "folder:"


def dataset_spec(root: str | os.PathLike, *, image_size: int, val_fraction: float = 0.2,
                 seed: int = 0, channels: int | None = None) -> str:
    """The data set name of an image folder with these options (absolute path)."""
    query = {"image_size": image_size, "val_fraction": val_fraction, "seed": seed}
    if channels is not None:
        query["channels"] = channels
    return f"{SPEC_PREFIX}{Path(root).expanduser().resolve()}?{urlencode(query)}"


def load_spec(spec: str, *, tfds_dir: str | os.PathLike | None = None):
    """:func:`load_image_folder` for a name made by :func:`dataset_spec`."""
    if not spec.startswith(SPEC_PREFIX):
        raise CnnlabError(f"not an image-folder data set name: {spec!r} (expected "
                          f"{SPEC_PREFIX}/path/to/root?image_size=64)")
    root, _, query = spec[len(SPEC_PREFIX):].rpartition("?")
    if not root:
        root, query = query, ""
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        kwargs = dict(image_size=int(options.pop("image_size", 64)),
                      val_fraction=float(options.pop("val_fraction", 0.2)),
                      seed=int(options.pop("seed", 0)),
                      channels=int(options["channels"]) if "channels" in options else None)
    except ValueError as e:
        raise CnnlabError(f"bad option in {spec!r}: {e}") from None
    options.pop("channels", None)
    if options:
        raise CnnlabError(f"unknown option(s) {sorted(options)} in {spec!r}; valid: image_size, "
                          "val_fraction, seed, channels")
    return load_image_folder(root, tfds_dir=tfds_dir, **kwargs)
