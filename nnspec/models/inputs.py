"""Input sets: .npy, .npz (named arrays), PNG/JPEG files and folders, IDX (MNIST format, gz or not).

``load_input_set`` returns the raw array and labels as stored (selection applied); ``fit_to_model``
then brings them to the model's input shape (layout, singleton dimensions) or says, in one line
naming both shapes and the spec line, why it cannot.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnspec.errors import DataError
from nnspec.properties.spec import InputSetSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class InputSet:
    x: np.ndarray  # (N, *shape) float32
    labels: np.ndarray | None  # (N,) int64
    ids: tuple[str, ...]  # one name per input, e.g. "digits_test.npz[3]"
    source: str


def load_input_set(spec: InputSetSpec) -> InputSet:
    path = Path(spec.path)
    where = f"{spec.span}"
    try:
        found = path.exists()
    except OSError as err:  # e.g. a name longer than the file system allows
        raise DataError(f"{where}: cannot open {path} ({err.strerror})") from None
    if not found:
        raise DataError(f"{where}: input file not found: {path}")
    if spec.scale is not None and is_pixel_source(path):
        raise DataError(f"{where}: 'scale {spec.scale:g}' on {path.name}: nnspec reads image and IDX pixels as values in "
                        "[0, 1] already (bytes / 255), so scale would divide them again; remove 'scale'")
    x, arrays = _read(path, spec.key, where)
    x = _numeric(x, f"{where}: {path.name}")
    labels = _labels(spec, arrays, where)
    if labels is not None and len(labels) != len(x):
        raise DataError(f"{where}: {len(labels)} labels for {len(x)} inputs")
    index = np.arange(len(x))
    if spec.first is not None:
        index = index[: spec.first]
    if spec.select is not None:
        bad = [i for i in spec.select if i >= len(x)]
        if bad:
            raise DataError(f"{where}: select index {bad[0]} out of range: {path.name} has {len(x)} inputs")
        index = np.asarray(spec.select)
    x = x[index].astype(np.float64)
    if spec.scale is not None:
        with np.errstate(over="ignore", under="ignore"):
            x = x / spec.scale
    ids = tuple(f"{path.name}[{i}]" for i in index.tolist())
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    bad = ~np.isfinite(x32.reshape(len(x32), -1)).all(axis=1)
    if bad.any():
        i = int(bad.nonzero()[0][0])
        cause = "" if np.isfinite(x[i]).all() else " in the file"
        what = f"after 'scale {spec.scale:g}'" if spec.scale is not None and not cause else "(nan or infinity)"
        raise DataError(f"{where}: input {ids[i]} has non-finite values{cause} {what}".replace("  ", " "))
    x = x32
    if spec.layout == "hwc" and x.ndim == 4:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return InputSet(x, None if labels is None else labels[index], ids, str(path))


def is_pixel_source(path: Path) -> bool:
    """Image files, image folders and IDX files: raw bytes, read as values in [0, 1] (the one rule
    for raw pixel data; ``scale`` is for arrays stored in other units, .npy and .npz)."""
    name = path.name.lower()
    return path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES or "idx" in name or name.endswith(
        ("-ubyte", "-ubyte.gz"))


def _read(path: Path, key: str | None, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    name = path.name.lower()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{where}: no image files in folder {path}")
        return np.stack([_image(p, where) for p in files]), {}
    if name.endswith(".npy"):
        return _npy(path, where), {}
    if name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as err:
            raise DataError(f"{where}: cannot read {path} ({err})") from None
        if key is None:
            if len(arrays) != 1:
                raise DataError(f"{where}: {path.name} holds arrays {', '.join(sorted(arrays))}; "
                                "name one with 'key'")
            key = next(iter(arrays))
        if key not in arrays:
            raise DataError(f"{where}: {path.name} has no array '{key}' (it has {', '.join(sorted(arrays))})")
        return arrays[key], arrays
    if "idx" in name or name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
        return read_idx(path, where).astype(np.float32) / 255.0, {}
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _image(path, where)[None], {}
    raise DataError(f"{where}: unknown input format '{path.suffix}' (use .npy, .npz, images, a folder or IDX)")


def _numeric(x: np.ndarray, where: str) -> np.ndarray:
    """An array of inputs: real numbers, at least one dimension (the inputs), at least one input."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        kind = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "objects", "M": "dates",
                "m": "time spans", "V": "records"}.get(x.dtype.kind, f"{x.dtype} values")
        raise DataError(f"{where} holds {kind}, not real numbers")
    if x.ndim == 0:
        raise DataError(f"{where} holds a single number, not an array of inputs (one row per input)")
    if len(x) == 0:
        raise DataError(f"{where} holds no inputs (0 rows)")
    return x


def _integer_labels(values: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64: integer-valued real numbers, nothing truncated, nothing too large."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels must be integers, not {values.dtype} values")
    if values.dtype.kind == "f":
        bad = ~(np.isfinite(values) & (values == np.round(values)))
        if bad.any():
            i = int(bad.reshape(-1).nonzero()[0][0])
            raise DataError(f"{where}: label {values.reshape(-1)[i]!r} (position {i}) is not an integer")
    if values.size and (values.max() >= 2**31 or values.min() < 0):
        i = int(((values >= 2**31) | (values < 0)).reshape(-1).nonzero()[0][0])
        raise DataError(f"{where}: label {values.reshape(-1)[i]} (position {i}) is out of range")
    return values.astype(np.int64).reshape(-1)


def _npy(path: Path, where: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:
        raise DataError(f"{where}: cannot read {path} ({err})") from None


def _image(path: Path, where: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with torchvision
        raise DataError(f"{where}: reading images needs Pillow") from None
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L") if img.mode in ("L", "1", "P") else img.convert("RGB"))
    except Exception as err:
        raise DataError(f"{where}: cannot read image {path} ({err})") from None
    arr = arr.astype(np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_idx(path: Path, where: str = "") -> np.ndarray:
    """The IDX format of the MNIST files: magic (0, 0, type, ndim), big-endian sizes, data."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as err:
        raise DataError(f"{where}: cannot read {path} ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{where}: {path.name} is not an IDX file")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in types:
        raise DataError(f"{where}: {path.name}: unknown IDX data type {raw[2]:#x}")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=types[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{where}: {path.name}: IDX header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def _labels(spec: InputSetSpec, arrays: dict[str, np.ndarray], where: str) -> np.ndarray | None:
    src = spec.labels
    if src.kind in ("none", "predicted"):
        return None
    if src.kind == "list":
        return _integer_labels(np.asarray(src.value, dtype=object).astype(np.float64), str(src.span))
    if src.kind == "key":
        if src.value not in arrays:
            raise DataError(f"{src.span}: no label array '{src.value}' in {Path(spec.path).name}")
        return _integer_labels(arrays[src.value], str(src.span))
    path = Path(src.value)
    if not path.exists():
        raise DataError(f"{src.span}: label file not found: {path}")
    if "idx" in path.name or "ubyte" in path.name:
        return _integer_labels(read_idx(path, str(src.span)), str(src.span))
    return _integer_labels(_npy(path, str(src.span)), str(src.span))


def fit_to_model(x: np.ndarray, input_shape: tuple[int, ...], where: str, model_name: str) -> np.ndarray:
    """Bring (N, *data_shape) to (N, *input_shape): equal sizes up to singleton dimensions or a
    plain flatten/unflatten. Anything else is an error naming both shapes."""
    data_shape = tuple(x.shape[1:])
    if data_shape == tuple(input_shape):
        return x
    squeeze = lambda s: tuple(d for d in s if d != 1)  # noqa: E731
    size = int(np.prod(input_shape))
    same_core = squeeze(data_shape) == squeeze(input_shape)
    flat = int(np.prod(data_shape)) == size and (len(data_shape) == 1 or len(squeeze(input_shape)) == 1)
    if same_core or flat:
        return x.reshape((x.shape[0],) + tuple(input_shape))
    hint = ""
    if x.ndim == 4 and (x.shape[3],) + x.shape[1:3] == tuple(input_shape):
        hint = " (the data looks HWC: add 'layout hwc')"
    raise DataError(f"{where}: inputs have shape {data_shape} but {model_name} expects {tuple(input_shape)}{hint}")
