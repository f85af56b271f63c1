"""Small experiment specs and data files for the runner tests (seconds, not minutes)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from dfp_engine.spec import ExperimentSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with nested `changes` applied (dicts merge, other values replace)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def tiny_1d(**changes: Any) -> ExperimentSpec:
    """cos(3x) on 41 points, a 2x16 tanh MLP, 12 full-batch epochs, checkpoints every 4."""
    base: dict[str, Any] = {
        "name": "tiny-1d",
        "dataset": {"kind": "synthetic_1d", "expression": "cos(3*x) + 0.5", "n_points": 41},
        "model": {"kind": "mlp", "depth": 2, "width": 16},
        "training": {"epochs": 12, "lr": 0.01, "seed": 0},
        "analysis": {"checkpoints": {"every": 4}, "deltas": {"auto": 8}},
    }
    return ExperimentSpec.model_validate(merge(base, changes))


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> None:
    """An IDX file of unsigned bytes, as MNIST ships them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 10, *, gz: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Random 28x28 images with labels 0-9 in torchvision's raw layout; returns train arrays."""
    rng = np.random.default_rng(1)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    images = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    labels = np.arange(n_train, dtype=np.uint8) % 10
    write_idx(raw / "train-images-idx3-ubyte", images, gz=gz)
    write_idx(raw / "train-labels-idx1-ubyte", labels, gz=gz)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:n_test], gz=gz)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:n_test], gz=gz)
    return images, labels


def write_cifar(root: Path, per_batch: int = 8) -> np.ndarray:
    """Five training batches and a test batch of random 32x32 colour images, pickled as dicts."""
    rng = np.random.default_rng(2)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        with (folder / name).open("wb") as handle:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, handle)
        first = data if first is None else first
    assert first is not None
    return first
