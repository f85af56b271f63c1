"""The frequency core against a dense float64 reference and against cases derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfp_engine import NORMALIZATION_MODES, analyze_frequency, normalize, ratio_density
from dfp_engine.deltas import auto_deltas, resolve_deltas, validate_deltas

DELTAS = [0.02, 0.1, 0.3, 1.0, 3.0, 10.0]


def dense_reference(
    z: np.ndarray, y: np.ndarray, deltas: list[float], p: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Textbook formulas of docs/method.md §2/§4: full n x n kernel per δ, float64 throughout."""
    diff = z[:, None, :] - z[None, :, :]
    dist = (diff**2).sum(-1)
    lfr, e_low, e_high = [], [], []
    for delta in deltas:
        g = np.exp(-dist / (2 * delta))
        c = g.sum(axis=1, keepdims=True)
        y_low = g @ y / c
        lfr.append((y_low**2).sum() / (y**2).sum())
        if p is not None:
            p_low = g @ p / c
            y_high, p_high = y - y_low, p - p_low
            e_low.append(math.sqrt(((y_low - p_low) ** 2).sum() / (y_low**2).sum()))
            e_high.append(math.sqrt(((y_high - p_high) ** 2).sum() / (y_high**2).sum()))
    if p is None:
        return np.array(lfr), None, None
    return np.array(lfr), np.array(e_low), np.array(e_high)


def reference_normalize(z: np.ndarray, mode: str) -> np.ndarray:
    if mode == "none":
        return z
    if mode == "max_abs_per_dim":
        s = np.abs(z).max(axis=0)
        return z / np.where(s > 0, s, 1.0)
    if mode == "max_abs_global":
        return z / np.abs(z).max()
    mean, std = z.mean(axis=0), z.std(axis=0)
    return (z - mean) / np.where(std > 0, std, 1.0)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    z = rng.normal(size=(90, 4)) * np.array([1.0, 3.0, 0.2, 5.0])
    labels = rng.integers(0, 3, size=90)
    return z, labels


@pytest.mark.parametrize("mode", NORMALIZATION_MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_dense_reference_for_class_labels(
    data: tuple[np.ndarray, np.ndarray], mode: str, dtype: str
) -> None:
    z, labels = data
    result = analyze_frequency(z, labels, deltas=DELTAS, normalization=mode, dtype=dtype)
    expected, _, _ = dense_reference(reference_normalize(z, mode), np.eye(3)[labels], result.deltas)
    tol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(result.lfr, expected, rtol=0, atol=tol)
    assert result.normalization == mode
    assert result.deltas == sorted(DELTAS, reverse=True)


@pytest.mark.parametrize("mode", NORMALIZATION_MODES)
def test_matches_dense_reference_for_vector_targets(mode: str) -> None:
    rng = np.random.default_rng(3)
    z = rng.uniform(-2, 2, size=(70, 3))
    y = np.stack([np.sin(3 * z[:, 0]), z[:, 1] ** 2, np.cos(z.sum(axis=1))], axis=1)
    result = analyze_frequency(z, y, deltas=DELTAS, normalization=mode, dtype="float64")
    expected, _, _ = dense_reference(reference_normalize(z, mode), y, result.deltas)
    np.testing.assert_allclose(result.lfr, expected, rtol=0, atol=1e-12)


def test_one_dimensional_real_targets_are_a_single_output() -> None:
    x = np.linspace(-1, 1, 50)
    result = analyze_frequency(x, np.sin(4 * x), deltas=DELTAS, normalization="none")
    expected, _, _ = dense_reference(x[:, None], np.sin(4 * x)[:, None], result.deltas)
    np.testing.assert_allclose(result.lfr, expected, atol=2e-6)
    assert (result.n_outputs, result.dim) == (1, 1)


@pytest.mark.parametrize("block_size", [1, 7, 16, 33, 64, 89, 90, 500])
def test_blocked_equals_unblocked(data: tuple[np.ndarray, np.ndarray], block_size: int) -> None:
    z, labels = data
    whole = analyze_frequency(z, labels, deltas=DELTAS, block_size=90, dtype="float64")
    blocked = analyze_frequency(z, labels, deltas=DELTAS, block_size=block_size, dtype="float64")
    np.testing.assert_allclose(blocked.lfr, whole.lfr, rtol=0, atol=1e-13)
    np.testing.assert_allclose(blocked.rdf, whole.rdf, rtol=1e-10, atol=1e-12)


def test_filtering_test_matches_dense_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(90, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = analyze_frequency(
        z, labels, deltas=DELTAS, normalization="none", predictions=probs, dtype="float64"
    )
    _, e_low, e_high = dense_reference(z, np.eye(3)[labels], result.deltas, probs)
    assert result.e_low is not None and result.e_high is not None
    np.testing.assert_allclose(result.e_low, e_low, rtol=1e-10)
    np.testing.assert_allclose(result.e_high, e_high, rtol=1e-10)


def test_filtering_test_extremes(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    onehot = np.eye(3)[labels]
    perfect = analyze_frequency(z, labels, deltas=DELTAS, predictions=onehot)
    assert perfect.e_low == [0.0] * len(DELTAS)
    assert perfect.e_high == [0.0] * len(DELTAS)
    silent = analyze_frequency(z, labels, deltas=DELTAS, predictions=np.zeros_like(onehot))
    np.testing.assert_allclose(silent.e_low, 1.0, atol=1e-12)  # type: ignore[arg-type]
    np.testing.assert_allclose(silent.e_high, 1.0, atol=1e-12)  # type: ignore[arg-type]


def test_high_frequency_part_is_accurate_at_small_delta() -> None:
    """y_high is a difference of nearly equal numbers at small δ; it must keep its digits."""
    x = np.linspace(0, 1, 40)[:, None]
    y = np.sin(9 * x[:, 0])
    p = y + 0.1 * np.cos(5 * x[:, 0])
    tiny = [1e-4, 2e-4]
    got = analyze_frequency(x, y, deltas=tiny, normalization="none", predictions=p)
    _, _, e_high = dense_reference(x, y[:, None], sorted(tiny, reverse=True), p[:, None])
    assert got.e_high is not None
    np.testing.assert_allclose(got.e_high, e_high, rtol=1e-4)


def test_constant_target_has_lfr_one_everywhere(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, _ = data
    exact = analyze_frequency(z, np.full(90, 2.5), deltas=DELTAS, dtype="float64")
    np.testing.assert_allclose(exact.lfr, 1.0, atol=1e-12)
    result = analyze_frequency(z, np.full(90, 2.5), deltas=DELTAS)
    np.testing.assert_allclose(result.lfr, 1.0, atol=1e-6)  # float32 tiles
    assert result.lfr_limit == pytest.approx(1.0)


def test_limits_in_delta(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    onehot = np.eye(3)[labels]
    result = analyze_frequency(z, labels, deltas=[1e-9, 1e-8, 1e12, 1e13], dtype="float64")
    limit = (onehot.mean(axis=0) ** 2).sum() / (onehot**2).sum(axis=1).mean()
    assert result.lfr_limit == pytest.approx(limit, rel=1e-12)
    # δ → ∞: every point sees the mean; δ → 0: every point sees only itself.
    assert result.lfr[0] == pytest.approx(limit, rel=1e-9)
    assert result.lfr[-1] == pytest.approx(1.0, abs=1e-12)


def test_periodic_target_matches_continuum_gaussian_smoothing() -> None:
    """Dense samples of sin(kx): Gaussian smoothing of variance δ scales power by exp(-k²δ)."""
    # Wide enough that the one-sided windows near the two ends move LFR by < 1e-3.
    x = np.arange(-600.0, 600.0, 0.1)
    deltas = [0.05, 0.2, 0.5, 1.0]
    for k in (1.0, 2.0):
        result = analyze_frequency(x, np.sin(k * x), deltas=deltas, normalization="none")
        continuum = [math.exp(-(k**2) * d) for d in result.deltas]
        np.testing.assert_allclose(result.lfr, continuum, atol=1.5e-3)


def test_rdf_is_the_backward_difference_over_inverse_delta() -> None:
    deltas = [4.0, 2.0, 1.0, 0.5]
    lfr = [0.1, 0.3, 0.8, 0.9]
    density = ratio_density(deltas, lfr)
    assert density.inverse_deltas == [0.5, 1.0, 2.0]
    np.testing.assert_allclose(density.rdf, [0.2 / 0.25, 0.5 / 0.5, 0.1 / 1.0])
    assert density.peak_inverse_delta == 1.0
    assert density.mean_inverse_delta == pytest.approx((0.2 * 0.5 + 0.5 * 1.0 + 0.1 * 2.0) / 0.8)
    with pytest.raises(ValueError, match="ascend"):
        ratio_density([1.0, 2.0], [0.1, 0.2])


def test_flat_lfr_has_no_mean() -> None:
    assert ratio_density([2.0, 1.0], [0.5, 0.5]).mean_inverse_delta is None


def test_grid_given_as_inverse_deltas(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    by_delta = analyze_frequency(z, labels, deltas=[0.5, 2.0, 0.25])
    by_inverse = analyze_frequency(z, labels, inverse_deltas=[2.0, 0.5, 4.0])
    assert by_inverse.deltas == by_delta.deltas == [2.0, 0.5, 0.25]
    assert by_inverse.inverse_deltas == [0.5, 2.0, 4.0]
    assert by_inverse.lfr == by_delta.lfr


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0], "at least 2"),
        ([1.0, 0.0], "positive"),
        ([1.0, -2.0], "positive"),
        ([1.0, math.nan], "finite"),
        ([1.0, math.inf], "finite"),
        ([1.0, 2.0, 1.0], "duplicates"),
    ],
)
def test_grid_validation(values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_deltas(values)
    with pytest.raises(ValueError, match=message):
        resolve_deltas(inverse_deltas=values)


def test_auto_grid_spans_the_distance_scale(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    zn = normalize(z.astype(np.float32), "max_abs_per_dim")
    grid = auto_deltas(zn, 15)
    assert len(grid) == 15 and grid == sorted(grid, reverse=True)
    assert all(d > 0 for d in grid)
    result = analyze_frequency(z, labels, auto_deltas=15)
    assert result.deltas == pytest.approx(grid, rel=1e-5)
    # The grid reaches from 'almost only self' to 'almost the global mean'.
    assert result.lfr[-1] > 0.95
    assert result.lfr[0] < result.lfr_limit + 0.05


def test_auto_grid_for_identical_points_falls_back() -> None:
    grid = auto_deltas(np.zeros((10, 3)), 5)
    assert grid[0] == pytest.approx(1e3) and grid[-1] == pytest.approx(1e-3)
    result = analyze_frequency(np.zeros((10, 3)), np.arange(10) % 2, auto_deltas=5)
    np.testing.assert_allclose(result.lfr, result.lfr_limit, atol=1e-12)


def test_normalization_modes() -> None:
    z = np.array([[1.0, 0.0, -4.0], [-2.0, 0.0, 2.0], [0.5, 0.0, 1.0]])
    per_dim = normalize(z, "max_abs_per_dim")
    assert np.abs(per_dim).max(axis=0).tolist() == [1.0, 0.0, 1.0]  # the dead unit stays 0
    assert np.abs(normalize(z, "max_abs_global")).max() == 1.0
    std = normalize(z, "standardize_per_dim")
    assert abs(std[:, 0].mean()) < 1e-12
    assert np.abs(std[:, 1]).max() == 0.0
    assert normalize(z, "none") is z
    with pytest.raises(ValueError, match="unknown normalization"):
        normalize(z, "l2")


def test_deterministic(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    first = analyze_frequency(z, labels, auto_deltas=10)
    second = analyze_frequency(z, labels, auto_deltas=10)
    assert first.lfr == second.lfr and first.deltas == second.deltas


@pytest.mark.parametrize(
    ("z", "y", "message"),
    [
        (np.zeros((5, 2)), np.zeros(4, dtype=int), "5 rows but labels have 4"),
        (np.zeros((1, 2)), np.zeros(1, dtype=int), "at least 2 samples"),
        (np.array([[0.0], [np.nan]]), np.array([0, 1]), "features contain NaN"),
        (np.array([[0.0], [1.0]]), np.array([0.0, np.inf]), "labels contain NaN or inf"),
        (np.array([[0.0], [1.0]]), np.array([0.0, 0.0]), "all zero"),
        (np.array([[0.0], [1.0]]), np.array([0, -1]), "non-negative"),
    ],
)
def test_bad_inputs_are_named(z: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_frequency(z, y, deltas=DELTAS)


def test_result_serialises_to_plain_json(data: tuple[np.ndarray, np.ndarray]) -> None:
    import json

    z, labels = data
    payload = json.loads(json.dumps(analyze_frequency(z, labels, deltas=DELTAS).to_dict()))
    assert len(payload["lfr"]) == len(DELTAS)
    assert len(payload["rdf"]) == len(payload["rdf_inverse_deltas"]) == len(DELTAS) - 1
    assert payload["n_samples"] == 90 and payload["dim"] == 4
    assert payload["device"] == "cpu" and payload["elapsed_seconds"] >= 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    cpu = analyze_frequency(z, labels, deltas=DELTAS, dtype="float64")
    gpu = analyze_frequency(z, labels, deltas=DELTAS, dtype="float64", device="cuda")
    np.testing.assert_allclose(gpu.lfr, cpu.lfr, atol=1e-12)
    assert gpu.device.startswith("cuda")


def test_thread_split_does_not_change_the_sums(data: tuple[np.ndarray, np.ndarray]) -> None:
    from dfp_engine.lowpass import lowpass_sums

    z, labels = data
    from threadpoolctl import threadpool_info

    y = np.eye(3)[labels]
    before = [pool["num_threads"] for pool in threadpool_info()]
    one = lowpass_sums(z, y, DELTAS, block_size=16, dtype=np.float64, threads=1)
    three = lowpass_sums(z, y, DELTAS, block_size=16, dtype=np.float64, threads=3)
    np.testing.assert_allclose(three.values, one.values, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(three.weights, one.weights, rtol=1e-13, atol=1e-13)
    # the BLAS thread setting is restored afterwards
    assert [pool["num_threads"] for pool in threadpool_info()] == before


def test_progress_reports_rise_to_one(data: tuple[np.ndarray, np.ndarray]) -> None:
    z, labels = data
    seen: list[float] = []
    analyze_frequency(z, labels, deltas=DELTAS, block_size=8, on_progress=seen.append)
    assert seen == sorted(seen)
    assert seen[-1] == 1.0
    assert len(seen) > 3


def test_tiles_fit_a_core_on_cpu_and_fill_a_gpu() -> None:
    from dfp_engine.lowpass import default_block_size

    assert default_block_size(100_000, 20) == 128  # 20 x 128 x 128 floats: one core's L2
    assert default_block_size(100_000, 20, "cuda") == 2048
    assert default_block_size(50, 20) == 50  # never more rows than samples


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_backend_matches_numpy(data: tuple[np.ndarray, np.ndarray], dtype: str) -> None:
    """The CUDA code path, run on the CPU, agrees with the CPU's numpy path."""
    z, labels = data
    probs = np.full((90, 3), 1 / 3)
    args = {"deltas": DELTAS, "dtype": dtype, "predictions": probs, "block_size": 32}
    by_numpy = analyze_frequency(z, labels, **args)
    by_torch = analyze_frequency(z, labels, backend="torch", **args)
    tol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(by_torch.lfr, by_numpy.lfr, rtol=0, atol=tol)
    np.testing.assert_allclose(by_torch.e_high, by_numpy.e_high, rtol=1e-5)  # type: ignore[arg-type]


def test_tensors_are_accepted_and_the_cpu_path_needs_no_torch() -> None:
    import subprocess
    import sys

    z = torch.linspace(-1, 1, 40).reshape(20, 2)
    labels = torch.arange(20) % 2
    from_tensors = analyze_frequency(z, labels, deltas=DELTAS)
    from_arrays = analyze_frequency(z.numpy(), labels.numpy(), deltas=DELTAS)
    assert from_tensors.lfr == from_arrays.lfr
    script = (
        "import sys, numpy as np; from dfp_engine import analyze_frequency; "
        "analyze_frequency(np.eye(4), np.arange(4) % 2, auto_deltas=4); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_helper_threads_own_error_reaches_the_caller() -> None:
    import threading
    from contextlib import nullcontext

    from dfp_engine.lowpass import _run_strips

    class TileMemoryError(MemoryError):
        pass

    class Idle:
        rows_pending = 0

        def start_strip(self, i0: int) -> None: ...
        def tile(self, i0: int, j0: int) -> None: ...
        def flush_rows(self, i0: int) -> None: ...
        def flush_cols(self) -> None: ...
        def totals(self) -> np.ndarray:
            return np.zeros((1, 1, 1))

    def make_worker() -> Idle:
        if threading.current_thread() is not threading.main_thread():
            raise TileMemoryError("no room for the tile buffers")
        return Idle()

    with pytest.raises(TileMemoryError, match="no room"):
        _run_strips(make_worker, 4, 8, 2, nullcontext(), None)
