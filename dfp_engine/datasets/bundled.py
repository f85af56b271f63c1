"""Datasets that need no files: scikit-learn's digits and the locally generated MNIST-1D."""

from __future__ import annotations

import random

import numpy as np

from dfp_engine.spec import DigitsDataset, MNIST1DDataset


def digits(spec: DigitsDataset) -> tuple[np.ndarray, np.ndarray]:
    """8x8 digit images as (n, 1, 8, 8) in [0, 1] and integer labels (n,)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float64)[:, None, :, :] / 16.0
    return x, np.asarray(bunch.target, dtype=np.int64)


def mnist1d(spec: MNIST1DDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D from the package's generator: x (n, 40), labels (n,), its own train/test split."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = spec.n_samples
    args.seed = spec.seed
    args.train_split = 1.0 - spec.test_fraction
    # make_dataset reseeds the global numpy and random generators: keep the caller's state.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # generation only; the url in args is never used here
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (
        np.asarray(data["x"], dtype=np.float64),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float64),
        np.asarray(data["y_test"], dtype=np.int64),
    )
