"""Pytrees across the process boundary: a JSON skeleton plus arrays in an ``.npz`` (never pickle).

``encode(tree)`` turns nested dicts/lists/tuples of arrays and Python scalars into a JSON-able
skeleton whose array leaves name entries of a flat ``{name: np.ndarray}`` dict; ``decode`` does the
reverse. Both sides use it: the grader writes case inputs this way and the worker writes outputs.
The grader treats everything the worker wrote as untrusted: ``load_arrays`` refuses pickles,
object dtypes and oversized files, ``decode`` bounds depth and leaf count.

This module imports only numpy (the grader process never needs JAX).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio

MAX_DEPTH = 40
MAX_LEAVES = 20_000
MAX_NPZ_BYTES = 256 * 2**20   # one worker's outputs for a whole module
MAX_JSON_BYTES = 16 * 2**20
ALLOWED_KINDS = "biufc"       # bool, int, uint, float, complex: no objects, no strings, no voids


class CodecError(ValueError):
    """Something that cannot cross the boundary (an unsupported type, a malformed file)."""


def _to_numpy(x: Any) -> np.ndarray | None:
    """A plain ndarray copy of an array-like leaf, or None if ``x`` is not one."""
    if isinstance(x, np.ndarray | np.generic):
        arr = np.array(x, copy=True, subok=False)
    elif type(x).__module__.startswith(("jax", "jaxlib")) and hasattr(x, "shape"):
        dtype = getattr(x, "dtype", None)
        if dtype is not None and "key<" in str(dtype):   # typed PRNG key -> its raw uint32 data
            import jax  # noqa: PLC0415 - loaded already (x is a jax.Array); not in the grader
            x = jax.random.key_data(x)
        arr = np.array(x, copy=True)
    else:
        return None
    if type(arr) is not np.ndarray:        # subclasses are refused, whatever np.array did
        arr = np.asarray(arr).view(np.ndarray).copy()
    if arr.dtype.kind not in ALLOWED_KINDS:
        raise CodecError(f"array of dtype {arr.dtype} cannot be returned (numbers and bools only)")
    if arr.dtype.byteorder not in "=|":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def encode(tree: Any, arrays: dict[str, np.ndarray], *, prefix: str = "a",
           _depth: int = 0) -> Any:
    """JSON skeleton of ``tree``; array leaves are stored in ``arrays`` under fresh names."""
    if _depth > MAX_DEPTH:
        raise CodecError("structure nested too deeply")
    if len(arrays) > MAX_LEAVES:
        raise CodecError("too many arrays")
    if tree is None:
        return {"t": "none"}
    if isinstance(tree, bool):
        return {"t": "bool", "v": bool(tree)}
    if isinstance(tree, int) and type(tree) is int:
        return {"t": "int", "v": int(tree)}
    if isinstance(tree, float) and type(tree) is float:
        return {"t": "float", "v": repr(float(tree))}
    if isinstance(tree, str) and type(tree) is str:
        if len(tree) > 100_000:
            raise CodecError("string too long")
        return {"t": "str", "v": str(tree)}
    arr = _to_numpy(tree)
    if arr is not None:
        name = f"{prefix}{len(arrays)}"
        while name in arrays:
            name += "_"
        arrays[name] = arr
        return {"t": "array", "k": name}
    if isinstance(tree, Mapping):
        items = []
        for k, v in tree.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise CodecError(f"dict key of type {type(k).__name__} cannot be returned")
            items.append([str(k) if isinstance(k, str) else int(k),
                          encode(v, arrays, prefix=prefix, _depth=_depth + 1)])
        return {"t": "dict", "items": items}
    if isinstance(tree, list | tuple):
        kind = "list" if isinstance(tree, list) else "tuple"
        return {"t": kind, "items": [encode(v, arrays, prefix=prefix, _depth=_depth + 1)
                                     for v in tree]}
    raise CodecError(f"a value of type {type(tree).__name__} cannot be returned "
                     "(return arrays, numbers, or dicts/lists/tuples of them)")


def decode(skeleton: Any, arrays: Mapping[str, np.ndarray], *, array_fn=None,
           _depth: int = 0) -> Any:
    """Rebuild the tree described by ``skeleton``; ``array_fn`` converts each array leaf."""
    if _depth > MAX_DEPTH or not isinstance(skeleton, dict):
        raise CodecError("malformed structure")
    t = skeleton.get("t")
    if t == "none":
        return None
    if t == "bool":
        return bool(skeleton["v"])
    if t == "int":
        v = skeleton["v"]
        if not isinstance(v, int):
            raise CodecError("malformed int")
        return int(v)
    if t == "float":
        return float(skeleton["v"])
    if t == "str":
        return str(skeleton["v"])
    if t == "array":
        a = arrays[str(skeleton["k"])]
        return array_fn(a) if array_fn else a
    if t == "dict":
        return {k: decode(v, arrays, array_fn=array_fn, _depth=_depth + 1)
                for k, v in skeleton["items"]}
    if t in ("list", "tuple"):
        items = [decode(v, arrays, array_fn=array_fn, _depth=_depth + 1)
                 for v in skeleton["items"]]
        return items if t == "list" else tuple(items)
    raise CodecError(f"unknown node type {t!r}")


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to an ``.npz`` atomically (temp file in the same dir, then rename)."""
    with fileio.atomic_open(path, "wb", durable=False) as f:
        np.savez(f, **arrays)


def load_arrays(path: Path, *, max_bytes: int = MAX_NPZ_BYTES) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by someone we do not trust: no pickles, numeric dtypes, bounded."""
    path = Path(path)
    if not path.exists():
        return {}
    if path.stat().st_size > max_bytes:
        raise CodecError(f"{path.name} is larger than {max_bytes // 2**20} MB")
    try:
        with zipfile.ZipFile(path) as zf:
            if sum(i.file_size for i in zf.infolist()) > max_bytes:
                raise CodecError(f"{path.name} unpacks to more than {max_bytes // 2**20} MB")
            if len(zf.infolist()) > MAX_LEAVES:
                raise CodecError(f"{path.name} holds too many arrays")
        out = {}
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                a = z[k]
                if a.dtype.kind not in ALLOWED_KINDS:
                    raise CodecError(f"array {k!r} has dtype {a.dtype}")
                out[k] = a
        return out
    except CodecError:
        raise
    except Exception as e:  # a corrupt or hostile file: report, never crash the grader
        raise CodecError(f"cannot read {path.name}: {type(e).__name__}: {e}") from None


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write."""
    with fileio.atomic_open(path, "w", durable=False) as f:
        json.dump(obj, f)


def read_json(path: Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read JSON written by someone we do not trust (bounded size; CodecError on garbage)."""
    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise CodecError(f"{path.name} is larger than {max_bytes // 2**20} MB")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise CodecError(f"cannot read {path.name}: {e}") from None
