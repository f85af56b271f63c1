"""Datasets as tensors: one loader per spec kind, then split, seeded subsets and input scaling."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dfp_engine.datasets.bundled import digits, mnist1d
from dfp_engine.datasets.files import read_npz, read_torchvision_layout
from dfp_engine.datasets.synthetic import synthetic_1d, synthetic_nd
from dfp_engine.spec import (
    DatasetSpec,
    DigitsDataset,
    InputScaling,
    MNIST1DDataset,
    NpzDataset,
    Synthetic1DDataset,
    SyntheticNDDataset,
    TorchvisionDataset,
    UploadedDataset,
)

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors; y is (n,) int64 classes or (n, c) float32 regression targets."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: Task
    n_classes: int | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: (d,) for vectors, (c, h, w) for images."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_outputs(self) -> int:
        """Width of the network's output layer."""
        return self.n_classes if self.n_classes is not None else int(self.y_train.shape[1])


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Load, split (seeded), subset (seeded) and scale (fitted on train) the dataset of `spec`."""
    x, y, x_test, y_test = _arrays(spec)
    x, x_test = _as_samples(x, "x"), None if x_test is None else _as_samples(x_test, "x_test")
    rng = np.random.default_rng(spec.seed)
    if x_test is None or y_test is None:
        x, y, x_test, y_test = _split(x, y, spec.test_fraction, rng)
    x, y = _subset(x, y, spec.max_train_samples, rng)
    x_test, y_test = _subset(x_test, y_test, spec.max_test_samples, rng)
    task, n_classes = _task(spec, y, y_test)
    shift, scale = fit_scaling(x, spec.scaling)
    return Dataset(
        x_train=torch.as_tensor((x - shift) / scale, dtype=torch.float32),
        y_train=_targets(y, task),
        x_test=torch.as_tensor((x_test - shift) / scale, dtype=torch.float32),
        y_test=_targets(y_test, task),
        task=task,
        n_classes=n_classes,
    )


Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _arrays(spec: DatasetSpec) -> Raw:
    if isinstance(spec, Synthetic1DDataset):
        return (*synthetic_1d(spec), None, None)
    if isinstance(spec, SyntheticNDDataset):
        return (*synthetic_nd(spec), None, None)
    if isinstance(spec, DigitsDataset):
        return (*digits(spec), None, None)
    if isinstance(spec, MNIST1DDataset):
        return mnist1d(spec)
    if isinstance(spec, TorchvisionDataset):
        root = Path(spec.root).expanduser()
        return read_torchvision_layout(root, spec.kind, allow_download=spec.allow_download)
    if isinstance(spec, UploadedDataset):
        raise ValueError(
            f"dataset: kind 'uploaded' names a file stored by a dfp service (dataset {spec.id}); "
            "submit the spec there (dfp submit), or use kind: npz with a local path"
        )
    return read_npz(Path(spec.path).expanduser())


def _as_samples(x: np.ndarray, name: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise ValueError(f"dataset: {name} holds {x.dtype} data; expected numbers")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if not np.isfinite(x).all():
        raise ValueError(f"dataset: {name} contains NaN or inf")
    return x


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"dataset: x has {len(x)} samples but y has {len(y)}")
    n_test = round(fraction * len(x))
    if n_test == 0:
        return x, y, x[:0], y[:0]
    order = rng.permutation(len(x))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return x[train], y[train], x[test], y[test]


def _subset(
    x: np.ndarray, y: np.ndarray, limit: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"dataset: x has {len(x)} samples but y has {len(y)}")
    if limit is None or len(x) <= limit:
        return x, y
    keep = np.sort(rng.choice(len(x), size=limit, replace=False))
    return x[keep], y[keep]


def _task(spec: DatasetSpec, y: np.ndarray, y_test: np.ndarray) -> tuple[Task, int | None]:
    if len(y) < 2:
        raise ValueError(f"dataset: the train split has {len(y)} samples; at least 2 are needed")
    if isinstance(spec, Synthetic1DDataset | SyntheticNDDataset):
        return "regression", None
    if not isinstance(spec, NpzDataset):
        return "classification", 10
    if y.dtype.kind in "biu" and y.ndim == 1:
        labels = np.concatenate([y, y_test]).astype(np.int64)
        if labels.min() < 0:
            raise ValueError("dataset: integer labels y must be non-negative class indices")
        return "classification", int(labels.max()) + 1
    if y.dtype.kind == "f" and y.ndim in (1, 2):
        if not (np.isfinite(y).all() and np.isfinite(y_test).all()):
            raise ValueError("dataset: y contains NaN or inf")
        return "regression", None
    raise ValueError(
        f"dataset: y must be integer classes (n,) or real targets (n,) / (n, c); got "
        f"{y.dtype} {y.shape}"
    )


def _targets(y: np.ndarray, task: Task) -> torch.Tensor:
    if task == "classification":
        return torch.as_tensor(np.asarray(y, dtype=np.int64))
    y = np.asarray(y, dtype=np.float64)
    return torch.as_tensor(y[:, None] if y.ndim == 1 else y, dtype=torch.float32)


def fit_scaling(x: np.ndarray, mode: InputScaling) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (shift, scale) fitted on the train inputs; constant features keep scale 1."""
    ones = np.ones(x.shape[1:])
    if mode == "none" or len(x) == 0:
        return np.zeros(x.shape[1:]), ones
    if mode == "standardize":
        shift, spread = x.mean(axis=0), x.std(axis=0)
    elif mode == "minmax":
        shift, spread = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
    else:  # max_abs
        shift, spread = np.zeros(x.shape[1:]), np.abs(x).max(axis=0)
    return shift, np.where(spread > 0, spread, ones)


__all__ = ["Dataset", "Task", "fit_scaling", "load_dataset"]
