"""Dataset loaders: shapes, task types, seeded splits and subsets, scaling fitted on train,
torchvision-layout folders written here, and clear errors for missing or malformed files."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_specs import write_cifar, write_idx, write_mnist

from dfp_engine.datasets import load_dataset
from dfp_engine.datasets.files import read_idx
from dfp_engine.spec import ExperimentSpec


def dataset(**fields: Any) -> Any:
    return ExperimentSpec.model_validate({"dataset": fields}).dataset


def test_synthetic_1d_grid_evaluates_the_expression() -> None:
    data = load_dataset(
        dataset(kind="synthetic_1d", expression="sin(2*x)", n_points=11, interval=[0, 1])
    )
    x = np.linspace(0, 1, 11)
    assert data.task == "regression" and data.n_classes is None and data.n_outputs == 1
    np.testing.assert_allclose(data.x_train[:, 0].numpy(), x, rtol=1e-6)
    np.testing.assert_allclose(data.y_train[:, 0].numpy(), np.sin(2 * x), rtol=1e-6)
    assert data.x_test.shape == (0, 1)


def test_synthetic_1d_uniform_sampling_and_split_are_seeded() -> None:
    spec = dataset(kind="synthetic_1d", n_points=50, sampling="uniform", test_fraction=0.2, seed=3)
    a, b = load_dataset(spec), load_dataset(spec)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert a.x_train.shape == (40, 1) and a.x_test.shape == (10, 1)
    other = load_dataset(
        dataset(kind="synthetic_1d", n_points=50, sampling="uniform", test_fraction=0.2, seed=4)
    )
    assert not torch.equal(a.x_train, other.x_train)


def test_an_expression_that_is_not_finite_on_the_interval_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not finite at x"):
        load_dataset(dataset(kind="synthetic_1d", expression="1/x", n_points=3, interval=[-1, 1]))


@pytest.mark.parametrize("family", ["cosine_sum", "radial_cosine", "gaussian_bumps", "parity"])
def test_synthetic_nd_families(family: str) -> None:
    data = load_dataset(
        dataset(kind="synthetic_nd", family=family, dim=3, n_samples=100, frequency=2.0)
    )
    assert data.x_train.shape == (80, 3) and data.y_train.shape == (80, 1)
    assert data.task == "regression"
    assert torch.isfinite(data.y_train).all() and float(data.y_train.std()) > 0
    assert data.x_train.abs().max() <= 1.0


def test_digits_are_images_with_ten_classes() -> None:
    data = load_dataset(dataset(kind="digits", test_fraction=0.25))
    assert data.input_shape == (1, 8, 8) and data.task == "classification"
    assert data.n_classes == 10 and data.y_train.dtype == torch.int64
    assert len(data.x_train) + len(data.x_test) == 1797
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0


def test_scaling_is_fitted_on_the_train_split_only() -> None:
    data = load_dataset(dataset(kind="digits", scaling="standardize", test_fraction=0.3))
    flat = data.x_train.flatten(1).double()
    varying = flat.std(dim=0) > 0
    assert torch.allclose(flat.mean(dim=0), torch.zeros(64, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        flat.std(dim=0, unbiased=False)[varying], torch.ones(1).double(), atol=1e-4
    )
    assert float(data.x_test.flatten(1).mean(dim=0).abs().max()) > 1e-3
    minmax = load_dataset(dataset(kind="digits", scaling="minmax"))
    assert float(minmax.x_train.min()) == 0.0 and float(minmax.x_train.max()) == 1.0


def test_train_and_test_subsets_are_seeded() -> None:
    spec = dataset(kind="digits", max_train_samples=100, max_test_samples=30, seed=5)
    a, b = load_dataset(spec), load_dataset(spec)
    assert a.x_train.shape[0] == 100 and a.x_test.shape[0] == 30
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_mnist1d_is_generated_locally_without_touching_global_rngs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import requests

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mnist1d must not download")

    monkeypatch.setattr(requests, "get", no_network)
    np.random.seed(123)
    random.seed(123)
    before = (np.random.get_state()[1].copy(), random.getstate())
    data = load_dataset(dataset(kind="mnist1d", n_samples=100, test_fraction=0.2))
    assert data.x_train.shape == (80, 40) and data.x_test.shape == (20, 40)
    assert data.n_classes == 10 and set(data.y_train.tolist()) <= set(range(10))
    assert np.array_equal(np.random.get_state()[1], before[0]) and random.getstate() == before[1]


@pytest.mark.parametrize(
    ("kind", "folder", "gz"), [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True)]
)
def test_idx_folders_in_torchvision_layout(
    tmp_path: Path, kind: str, folder: str, gz: bool
) -> None:
    images, labels = write_mnist(tmp_path, folder, gz=gz)
    data = load_dataset(dataset(kind=kind, root=str(tmp_path)))
    assert data.input_shape == (1, 28, 28) and len(data.x_train) == 40 and len(data.x_test) == 10
    np.testing.assert_allclose(data.x_train[:, 0].numpy(), images / 255.0, atol=1e-6)
    assert data.y_train.tolist() == labels.tolist() and data.n_classes == 10


def test_a_missing_folder_names_the_path_and_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no mnist data at '.*MNIST'.*allow_download"):
        load_dataset(dataset(kind="mnist", root=str(tmp_path)))
    with pytest.raises(ValueError, match=r"cifar-10-batches-py"):
        load_dataset(dataset(kind="cifar10", root=str(tmp_path)))


def test_allow_download_without_torchvision_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - this project's environment has no torchvision
        pytest.fail("torchvision is installed; this test checks the error without it")
    with pytest.raises(ValueError, match="allow_download needs torchvision"):
        load_dataset(dataset(kind="fashion_mnist", root=str(tmp_path), allow_download=True))


def test_malformed_idx_files_are_value_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((3, 2, 2)))
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="needs"):
        read_idx(short)
    write_mnist(tmp_path / "m")
    os.remove(tmp_path / "m" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    with pytest.raises(ValueError, match=r"missing .*t10k-labels-idx1-ubyte"):
        load_dataset(dataset(kind="mnist", root=str(tmp_path / "m")))


def test_cifar10_python_batches(tmp_path: Path) -> None:
    first = write_cifar(tmp_path, per_batch=6)
    data = load_dataset(dataset(kind="cifar10", root=str(tmp_path)))
    assert data.input_shape == (3, 32, 32) and len(data.x_train) == 30 and len(data.x_test) == 6
    np.testing.assert_allclose(
        data.x_train[0].numpy(), first[0].reshape(3, 32, 32) / 255.0, atol=1e-6
    )


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch pwned-by-pickle",))


def test_a_pickle_that_would_run_code_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path)
    with (tmp_path / "cifar-10-batches-py" / "data_batch_3").open("wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, handle)
    with pytest.raises(ValueError, match="not allowed in a data batch"):
        load_dataset(dataset(kind="cifar10", root=str(tmp_path)))
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_npz_classification_regression_and_explicit_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", x=rng.normal(size=(30, 2, 4, 4)), y=np.arange(30) % 3)
    c = load_dataset(dataset(kind="npz", path=str(tmp_path / "c.npz"), test_fraction=0.2))
    assert c.task == "classification" and c.n_classes == 3 and c.input_shape == (2, 4, 4)
    assert len(c.x_train) == 24
    np.savez(
        tmp_path / "r.npz",
        x=rng.normal(size=(20, 3)),
        y=rng.normal(size=(20, 2)),
        x_test=rng.normal(size=(5, 3)),
        y_test=rng.normal(size=(5, 2)),
    )
    r = load_dataset(dataset(kind="npz", path=str(tmp_path / "r.npz")))
    assert r.task == "regression" and r.n_outputs == 2 and len(r.x_test) == 5


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((4, 2))}, "has no array 'y'"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "x has 4 samples but y has 3"),
        ({"x": np.full((4, 2), np.nan), "y": np.zeros(4)}, "NaN or inf"),
        ({"x": np.zeros((4, 2)), "y": np.array([0, -1, 1, 0])}, "non-negative"),
        ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_test": np.zeros((1, 2))}, "both x_test"),
    ],
)
def test_bad_npz_files_are_value_errors(
    tmp_path: Path, arrays: dict[str, Any], message: str
) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(dataset(kind="npz", path=str(tmp_path / "d.npz")))


def test_npz_missing_or_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(dataset(kind="npz", path=str(tmp_path / "none.npz")))
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="cannot read"):
        load_dataset(dataset(kind="npz", path=str(tmp_path / "junk.npz")))
