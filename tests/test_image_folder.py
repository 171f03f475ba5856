"""Image folders (ROOT/<class>/<images>) through the TFDS builder: real PNG/JPEG files, broken ones
included, no TensorFlow."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.image_folder import (dataset_spec, load_image_folder, load_spec)
from cnnlab.errors import CnnlabError

COLOURS = {"blue": (20, 40, 230), "green": (30, 200, 40), "red": (220, 30, 30)}


def _stripes(rng, kind, h, w):
    """Grey stripes (horizontal / vertical, ~4 periods across, random phase) or plain noise."""
    yy, xx = np.mgrid[:h, :w]
    period = min(h, w) / 4 * rng.uniform(0.8, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == "plain":
        wave = np.zeros((h, w))
    else:
        wave = np.sin(2 * np.pi * (yy if kind == "horizontal" else xx) / period + phase)
    a = 128 + 100 * wave[..., None] + rng.normal(0, 10, (h, w, 3))
    return np.clip(a, 0, 255).astype(np.uint8)


def make_folder(root, per_class=6, broken=True, kind="colours"):
    """Images of random sizes as JPEG and PNG, plus broken files.

    kind="colours": classes blue/green/red, noisy solid colours; kind="stripes": classes
    horizontal/plain/vertical, noisy stripes (what a CNN tells apart even in grayscale).
    """
    rng = np.random.default_rng(0)
    classes = COLOURS if kind == "colours" else {"horizontal": 0, "plain": 0, "vertical": 0}
    for name, rgb in classes.items():
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(20, 60, size=2)
            if kind == "colours":
                a = np.clip(np.array(rgb) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
            else:
                a = _stripes(rng, name, h, w)
            Image.fromarray(a).save(d / f"{i}.{'jpg' if i % 2 else 'png'}")
    if broken:
        a, b, c = sorted(classes)  # broken files go to fixed positions in the class order
        good = (root / c / "1.jpg").read_bytes()
        (root / c / "truncated.jpg").write_bytes(good[: len(good) // 2])
        (root / a / "notes.jpg").write_text("this is not an image")
        Image.new("RGB", (1, 1), (0, 0, 255)).save(root / a / "pixel.png")
        Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(root / c / "cmyk.jpg")
        Image.new("L", (30, 30), 120).save(root / b / "gray.png")
        Image.new("RGBA", (30, 30), (30, 200, 40, 255)).save(root / b / "alpha.png")
        (root / b / "README.txt").write_text("ignored: not an image extension")
        (root / b / ".hidden.png").write_bytes(b"ignored: hidden")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "colours")


def _load(root, tmp_path, **kw):
    kw.setdefault("image_size", 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_image_folder(root, tfds_dir=tmp_path / "tfds", **kw)
    return ds, [w for w in caught if issubclass(w.category, UserWarning)
                and "image folder" in str(w.message)]


def test_folder_with_broken_images(folder, tmp_path):
    ds, warned = _load(folder, tmp_path, val_fraction=0.25, seed=0)
    assert ds.class_names == ("blue", "green", "red")
    assert ds.train.images.shape[1:] == (16, 16, 3) and ds.train.images.dtype == np.uint8
    # ONE warning, listing every skipped and converted file.
    assert len(warned) == 1
    text = str(warned[0].message)
    for part in ("red/truncated.jpg (truncated or corrupt, skipped)",
                 "blue/notes.jpg (not an image, skipped)",
                 "blue/pixel.png (1x1 pixels", "red/cmyk.jpg (CMYK, converted to RGB)",
                 "green/gray.png (grayscale, converted to RGB)"):
        assert part in text, (part, text)
    assert "README" not in text and "hidden" not in text
    # Usable: 6 + 6 + 6 photos, + cmyk (red), gray + alpha (green) = 21, stratified 25% per class.
    counts = {c: (int(np.sum(ds.train.labels == i)), int(np.sum(ds.test.labels == i)))
              for i, c in enumerate(ds.class_names)}
    assert counts == {"blue": (4, 2), "green": (6, 2), "red": (5, 2)}, counts
    assert "3 unusable file(s) skipped" in ds.source
    # Pixels are the colours (resized, converted): the mean colour per class is right.
    for i, (name, rgb) in enumerate(sorted(COLOURS.items())):
        photos = ds.train.images[ds.train.labels == i].reshape(-1, 3).astype(float)
        assert np.argmax(np.median(photos, axis=0)) == int(np.argmax(rgb)), name
    assert "tensorflow" not in sys.modules


def test_prepared_once_and_split_by_seed(folder, tmp_path):
    a, _ = _load(folder, tmp_path, seed=0)
    b, warned = _load(folder, tmp_path, seed=0)       # read back: same arrays, warning again
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert len(warned) == 1
    prepared = [p for p in (tmp_path / "tfds" / "cnnlab_image_folder").iterdir() if p.is_dir()]
    assert len(prepared) == 1
    c, _ = _load(folder, tmp_path, seed=1)            # another seed: another split
    assert not np.array_equal(np.sort(a.test.images.reshape(len(a.test), -1), axis=0),
                              np.sort(c.test.images.reshape(len(c.test), -1), axis=0))
    # The spec names the same data set (what a finetune run records in config.json).
    spec = dataset_spec(folder, image_size=16, seed=0)
    with pytest.warns(UserWarning, match="5 file"):
        d = load_spec(spec, tfds_dir=tmp_path / "tfds")
    np.testing.assert_array_equal(d.train.images, a.train.images)


def test_all_grayscale_is_one_channel_and_channels_can_be_forced(tmp_path):
    root = tmp_path / "gray"
    for c, value in (("dark", 30), ("light", 220)):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (20, 24), value + i).save(root / c / f"{i}.png")
    ds, warned = _load(root, tmp_path)
    assert ds.train.images.shape[-1] == 1 and not warned
    rgb, _ = _load(root, tmp_path, channels=3)
    assert rgb.train.images.shape[-1] == 3
    gray, _ = _load(make_folder(tmp_path / "colours", broken=False), tmp_path, channels=1)
    assert gray.train.images.shape[-1] == 1


def test_folder_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(CnnlabError, match="does not exist"):
        load_image_folder(tmp_path / "nowhere", tfds_dir=tmp_path / "tfds")
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(one / "cats" / "a.png")
    with pytest.raises(CnnlabError, match="at least two classes; found only 'cats'"):
        load_image_folder(one, tfds_dir=tmp_path / "tfds")
    (one / "dogs").mkdir()
    (one / "dogs" / "notes.txt").write_text("no images here")
    with pytest.raises(CnnlabError, match=r"class folder .*dogs has no images"):
        load_image_folder(one, tfds_dir=tmp_path / "tfds")
    Image.new("RGB", (20, 20)).save(one / "dogs" / "a.png")
    Image.new("RGB", (20, 20)).save(one / "dogs" / "b.png")
    with pytest.raises(CnnlabError, match="class 'cats' has 1 usable image"):
        load_image_folder(one, tfds_dir=tmp_path / "tfds")
    with pytest.raises(CnnlabError, match="validation fraction"):
        load_image_folder(one, val_fraction=1.0, tfds_dir=tmp_path / "tfds")
    with pytest.raises(CnnlabError, match="unknown option"):
        load_spec(f"folder:{one}?image_size=16&colour=yes", tfds_dir=tmp_path / "tfds")
