"""Readers for files on disk: MNIST-style IDX, CIFAR-10 python batches, and user .npz files.

MNIST, Fashion-MNIST and CIFAR-10 are read from torchvision's folder layout, without torchvision:

    <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    <root>/FashionMNIST/raw/…                    (same file names)
    <root>/cifar-10-batches-py/data_batch_1 … data_batch_5, test_batch
"""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np


class DatasetMissingError(ValueError):
    """A file or folder the spec names is not there."""


IDX_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
# IDX type codes (the third magic byte) and the numpy dtypes they hold, big-endian.
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (optionally gzipped) as an array of its stored shape."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"'{path}' is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"'{path}' has a truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"'{path}' holds {len(raw)} bytes; its header {shape} needs {expected}")
    return np.frombuffer(raw[header:], dtype=dtype).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetMissingError(f"missing '{folder / stem}' (or .gz)")


def read_idx_dataset(root: Path, kind: str) -> Arrays:
    """MNIST or Fashion-MNIST: images (n, 1, 28, 28) in [0, 1] and labels, official split."""
    folder = root / IDX_FOLDERS[kind] / "raw"
    out: list[np.ndarray] = []
    for split in ("train", "t10k"):
        images = read_idx(_idx_file(folder, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(folder, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
        out += [images[:, None].astype(np.float64) / 255.0, labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a batch file cannot run code."""

    ALLOWED: ClassVar[dict[tuple[str, str], tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
        ("_codecs", "encode"): ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        target = self.ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"'{module}.{name}' is not allowed in a data batch")
        return getattr(importlib.import_module(target[0]), target[1])


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: images (n, 3, 32, 32) in [0, 1] and labels (n,)."""
    try:
        with path.open("rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"'{path}' is not a CIFAR-10 batch: {exc}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"'{path}' is not a CIFAR-10 batch: expected a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"'{path}' is not a CIFAR-10 batch: no data/labels entries")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise ValueError(f"'{path}': data {data.shape} and labels {labels.shape} do not match")
    return data.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0, labels


def read_cifar10(root: Path) -> Arrays:
    """CIFAR-10: the five training batches and the test batch."""
    folder = root / CIFAR_FOLDER
    for name in (*CIFAR_TRAIN, CIFAR_TEST):
        if not (folder / name).is_file():
            raise DatasetMissingError(f"missing '{folder / name}'")
    parts = [read_cifar_batch(folder / name) for name in CIFAR_TRAIN]
    x_test, y_test = read_cifar_batch(folder / CIFAR_TEST)
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x, y, x_test, y_test


def dataset_folder(root: Path, kind: str) -> Path:
    """Where torchvision keeps `kind` under `root`."""
    return root / (CIFAR_FOLDER if kind == "cifar10" else IDX_FOLDERS[kind])


def download(root: Path, kind: str) -> None:
    """Fetch a dataset with torchvision (only when a spec allows it and torchvision exists)."""
    try:
        tvd = importlib.import_module("torchvision.datasets")
    except ImportError:
        raise ValueError(
            f"dataset.allow_download needs torchvision, which is not installed; "
            f"install dfp[vision] or put the files under '{dataset_folder(root, kind)}'"
        ) from None
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[kind]
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as exc:  # network and archive errors come in many types
        raise ValueError(f"downloading {kind} into '{root}' failed: {exc}") from None


def read_torchvision_layout(root: Path, kind: str, *, allow_download: bool) -> Arrays:
    """MNIST / Fashion-MNIST / CIFAR-10 arrays from `root` in torchvision's layout."""
    folder = dataset_folder(root, kind)
    if not folder.is_dir():
        if not allow_download:
            raise DatasetMissingError(
                f"dataset.root: no {kind} data at '{folder}'; put the files there "
                f"(torchvision's layout) or set dataset.allow_download: true"
            )
        download(root, kind)
    if kind == "cifar10":
        return read_cifar10(root)
    return read_idx_dataset(root, kind)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """x, y and, when present, x_test, y_test from a user .npz (no pickled objects)."""
    if not path.is_file():
        raise DatasetMissingError(f"dataset.path: '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as bundle:
            arrays = {k: np.asarray(bundle[k]) for k in bundle.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, io.UnsupportedOperation) as exc:
        raise ValueError(f"dataset.path: cannot read '{path}': {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(
                f"dataset.path: '{path}' has no array '{key}' (it has {sorted(arrays)})"
            )
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"dataset.path: '{path}' needs both x_test and y_test, or neither")
    return arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")
