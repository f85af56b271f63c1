"""Features streamed from a memory-mapped file: the same analysis, without loading the file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dfp_engine import NORMALIZATION_MODES, analyze_frequency
from dfp_engine.lowpass import lowpass_sums, stream_group
from dfp_engine.normalization import column_statistics
from dfp_engine.streaming import column_means, release_pages

DELTAS = [0.02, 0.1, 0.3, 1.0, 3.0, 10.0]


def mapped(path: Path, z: np.ndarray, mode: str = "r") -> np.memmap:
    """z written to a raw file and mapped back read-only (or as `mode`)."""
    out = np.memmap(path, dtype=z.dtype, mode="w+", shape=z.shape)
    out[:] = z
    out.flush()
    del out
    return np.memmap(path, dtype=z.dtype, mode=mode, shape=z.shape)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 7)) * np.array([1.0, 3.0, 0.2, 5.0, 1.0, 0.0, 2.0])  # a dead unit
    labels = rng.integers(0, 4, size=300)
    return z, labels


@pytest.mark.parametrize("mode", NORMALIZATION_MODES)
def test_memmap_matches_in_memory_for_every_normalization(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], mode: str
) -> None:
    z, labels = data
    mm = mapped(tmp_path / "z.f64", z)
    kwargs = {"normalization": mode, "block_size": 32, "dtype": "float64"}
    streamed = analyze_frequency(mm, labels, deltas=DELTAS, **kwargs)  # type: ignore[arg-type]
    loaded = analyze_frequency(z, labels, deltas=DELTAS, **kwargs)  # type: ignore[arg-type]
    np.testing.assert_allclose(streamed.lfr, loaded.lfr, rtol=1e-10)
    np.testing.assert_allclose(streamed.rdf, loaded.rdf, rtol=1e-8, atol=1e-12)
    assert streamed.n_samples == 300 and streamed.dim == 7


def test_memmap_auto_grid_and_filtering_test_match(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    z, labels = data
    z32 = z.astype(np.float32)
    mm = mapped(tmp_path / "z.f32", z32)
    predictions = np.eye(4)[labels] * 0.8 + 0.05
    streamed = analyze_frequency(mm, labels, auto_deltas=8, predictions=predictions)
    loaded = analyze_frequency(z32, labels, auto_deltas=8, predictions=predictions)
    np.testing.assert_allclose(streamed.deltas, loaded.deltas, rtol=1e-5)
    np.testing.assert_allclose(streamed.lfr, loaded.lfr, rtol=1e-5)
    assert streamed.e_low is not None and loaded.e_low is not None
    np.testing.assert_allclose(
        np.array(streamed.e_low, dtype=float), np.array(loaded.e_low, dtype=float), rtol=1e-4
    )


@pytest.mark.parametrize("stream_memory", [1, 10**9])
def test_group_sizes_do_not_change_the_sums(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], stream_memory: int
) -> None:
    z, labels = data
    y = np.eye(4)[labels]
    mm = mapped(tmp_path / "z.f64", z)
    ref = lowpass_sums(z, y, DELTAS, block_size=16, dtype=np.float64)
    got = lowpass_sums(
        mm, y, DELTAS, block_size=16, dtype=np.float64, stream_memory=stream_memory, threads=2
    )
    np.testing.assert_allclose(got.values, ref.values, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(got.weights, ref.weights, rtol=1e-11, atol=1e-13)
    again = lowpass_sums(
        mm, y, DELTAS, block_size=16, dtype=np.float64, stream_memory=stream_memory, threads=2
    )
    assert np.array_equal(again.values, got.values)  # deterministic


def test_scale_is_applied_to_streamed_and_loaded_features(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    z, labels = data
    y = np.eye(4)[labels]
    scale = np.linspace(0.5, 2.0, z.shape[1])
    ref = lowpass_sums(z * scale, y, DELTAS, block_size=16, dtype=np.float64)
    for features in (z, mapped(tmp_path / "z.f64", z)):
        got = lowpass_sums(features, y, DELTAS, block_size=16, dtype=np.float64, scale=scale)
        np.testing.assert_allclose(got.values, ref.values, rtol=1e-11, atol=1e-13)


def test_groups_hold_what_the_budget_allows() -> None:
    assert stream_group(100, block_bytes=1000, workers=2, budget=10_000) == 5
    assert stream_group(100, block_bytes=1000, workers=2, budget=1) == 1
    # ample memory still leaves four groups per worker, so the load balances
    assert stream_group(100, block_bytes=1000, workers=2, budget=10**12) == 13


def test_column_statistics_in_chunks(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dfp_engine.streaming as streaming

    z, _ = data
    monkeypatch.setattr(streaming, "STREAM_CHUNK_BYTES", 7 * 8 * 13)  # 13 rows a chunk
    mm = mapped(tmp_path / "z.f64", z)
    stats = column_statistics(mm)
    np.testing.assert_allclose(stats.mean, z.mean(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(stats.std, z.std(axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(stats.max_abs, np.abs(z).max(axis=0))
    np.testing.assert_allclose(column_means(mm), z.mean(axis=0), rtol=1e-12, atol=1e-15)
    assert stats.finite
    bad = z.copy()
    bad[250, 3] = np.nan
    assert not column_statistics(mapped(tmp_path / "bad.f64", bad)).finite


def test_nan_in_a_mapped_file_is_reported(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    z, labels = data
    bad = z.copy()
    bad[5, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        analyze_frequency(mapped(tmp_path / "bad.f64", bad), labels, deltas=DELTAS)


def resident_kib(path: Path) -> int:
    """KiB of this process's resident pages that map `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_pages_read_are_released(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "big.f32"
    z = np.ones((4096, 1024), dtype=np.float32)  # 16 MiB
    mm = mapped(path, z, mode)
    assert float(mm[:2048].sum()) == 2048 * 1024
    touched = resident_kib(path)
    assert touched >= 8 * 1024 - 64
    release_pages(mm, 0, 2048)
    assert resident_kib(path) <= 64
    assert float(mm.sum()) == 4096 * 1024  # the data is still all there


def test_streaming_needs_the_numpy_backend(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    z, labels = data
    with pytest.raises(ValueError, match="numpy"):
        lowpass_sums(mapped(tmp_path / "z.f64", z), np.eye(4)[labels], DELTAS, backend="torch")


def test_grid_sample_distances_summed_over_column_chunks(
    tmp_path: Path, data: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dfp_engine.deltas as deltas

    z, _ = data
    whole = deltas.squared_distance_sample(z)
    diff = z[:, None, :] - z[None, :, :]
    np.testing.assert_allclose(whole, (diff**2).sum(-1), rtol=1e-10, atol=1e-9)
    monkeypatch.setattr(deltas, "GRAM_CHUNK_ELEMENTS", 300 * 2)  # two columns a chunk
    chunked = deltas.squared_distance_sample(mapped(tmp_path / "z.f64", z))
    np.testing.assert_allclose(chunked, whole, rtol=1e-10, atol=1e-9)
    scale = np.linspace(1.0, 2.0, z.shape[1])
    scaled = deltas.squared_distance_sample(z, scale=scale)
    np.testing.assert_allclose(scaled, deltas.squared_distance_sample(z * scale), rtol=1e-10)
    # a subset of rows when there are more than max_points
    assert deltas.squared_distance_sample(z, max_points=50).shape == (50, 50)
