"""The row-sampled estimator: exact at m = n, nominal coverage, memory-mapped features."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from dfp_engine import analyze_frequency
from dfp_engine.frequency import as_targets
from dfp_engine.row_sampling import estimate, feature_scaling, sample_rows

DELTAS = [0.02, 0.05, 0.15, 0.5]


def clusters(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters: per-row low-frequency powers vary a lot."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    x = rng.normal(size=(classes, d))[labels] + rng.normal(scale=1.5, size=(n, d))
    return x, labels


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("mode", ["max_abs_per_dim", "standardize_per_dim", "none"])
def test_every_row_gives_the_exact_result(backend: str, mode: str) -> None:
    x, labels = clusters(700, 6, 3, seed=1)
    exact = analyze_frequency(x, labels, deltas=DELTAS, normalization=mode, dtype="float64")
    y = as_targets(labels)
    rows = np.random.default_rng(0).permutation(700)  # m = n, in a shuffled order
    sample = sample_rows(
        x, feature_scaling(x, mode), y, rows, exact.deltas, dtype=np.float64, backend=backend
    )  # type: ignore[arg-type]
    result = estimate(sample, 700, float((y * y).sum()), exact.deltas)
    np.testing.assert_allclose(result.lfr, exact.lfr, rtol=0, atol=1e-10)
    assert result.lfr_half_width == [0.0] * len(DELTAS)
    assert result.rdf_half_width == [0.0] * (len(DELTAS) - 1)


def test_interval_covers_the_exact_lfr_at_its_nominal_rate() -> None:
    """200 independent samples: each 95 % interval (LFR and RDF) covers the exact value."""
    x, labels = clusters(4000, 8, 3, seed=2)
    exact = analyze_frequency(x, labels, deltas=DELTAS)
    width, repeats = 0.01, 200
    lfr_hits = np.zeros(len(DELTAS))
    rdf_hits = np.zeros(len(DELTAS) - 1)
    rows = []
    for seed in range(repeats):
        r = analyze_frequency(x, labels, deltas=DELTAS, ci=width, seed=seed, threads=1)
        assert r.estimator == "row_sampled"
        assert r.lfr_ci_half_width is not None and r.rdf_ci_half_width is not None
        assert max(r.lfr_ci_half_width) <= width
        lfr_hits += np.abs(np.subtract(r.lfr, exact.lfr)) <= r.lfr_ci_half_width
        rdf_hits += np.abs(np.subtract(r.rdf, exact.rdf)) <= r.rdf_ci_half_width
        rows.append(r.rows_evaluated)
    # The adaptive rounds did grow the sample past the first round, and stayed well below n.
    assert min(rows) > 512 and max(rows) < 2000
    assert (lfr_hits / repeats >= 0.93).all(), lfr_hits / repeats
    assert (rdf_hits / repeats >= 0.93).all(), rdf_hits / repeats
    # An interval far wider than needed would cover every time: it must not.
    assert (lfr_hits / repeats < 1.0).any()


def test_paired_rdf_intervals_are_narrower_than_unpaired() -> None:
    x, labels = clusters(4000, 8, 3, seed=3)
    r = analyze_frequency(x, labels, deltas=DELTAS, ci=0.01)
    assert r.lfr_ci_half_width is not None and r.rdf_ci_half_width is not None
    u = r.inverse_deltas
    for j, half in enumerate(r.rdf_ci_half_width):
        unpaired = (r.lfr_ci_half_width[j] ** 2 + r.lfr_ci_half_width[j + 1] ** 2) ** 0.5
        assert half < unpaired / (u[j + 1] - u[j])


def test_tiny_width_falls_back_to_the_exact_pass() -> None:
    x, labels = clusters(1500, 4, 2, seed=4)
    exact = analyze_frequency(x, labels, deltas=DELTAS)
    r = analyze_frequency(x, labels, deltas=DELTAS, ci=1e-6)
    assert r.estimator == "exact" and r.rows_evaluated == 1500
    assert r.lfr == exact.lfr
    assert r.lfr_ci_half_width == [0.0] * len(DELTAS)


def test_memory_mapped_features_are_read_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Statistics chunks of 1 MiB instead of 64, so a small file shows what is held at once.
    monkeypatch.setattr("dfp_engine.streaming.STREAM_CHUNK_BYTES", 2**20)
    n, d = 250_000, 32
    x, labels = clusters(n, d, 3, seed=5)
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    del x
    tracemalloc.start()
    try:
        r = analyze_frequency(mapped, labels, deltas=DELTAS, ci=0.02)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.estimator == "row_sampled" and r.rows_evaluated < n / 10
    # The features are 32 MB; the estimator allocates fixed-size chunks and the targets.
    assert peak < 0.6 * mapped.nbytes, peak
    # The same rows from an in-memory copy give the same estimate.
    again = analyze_frequency(np.array(mapped), labels, deltas=DELTAS, ci=0.02)
    assert again.lfr == r.lfr


def test_automatic_grid_matches_the_exact_path() -> None:
    x, labels = clusters(3000, 5, 3, seed=6)
    r = analyze_frequency(x, labels, auto_deltas=6, ci=0.01)
    exact = analyze_frequency(x, labels, auto_deltas=6)
    np.testing.assert_allclose(r.deltas, exact.deltas, rtol=1e-5)
    assert len(r.lfr) == 6 and r.rows_evaluated is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ci": 0.0}, "ci must lie strictly between 0 and 1"),
        ({"ci": 1.5}, "ci must lie strictly between 0 and 1"),
        ({"ci": float("nan")}, "ci must be a finite number"),
        ({"ci": 0.01, "predictions": np.zeros((50, 2))}, "ci: the row-sampled estimator"),
    ],
)
def test_bad_ci_is_refused(kwargs: dict[str, object], message: str) -> None:
    x, labels = clusters(50, 3, 2, seed=7)
    with pytest.raises(ValueError, match=message):
        analyze_frequency(x, labels, deltas=DELTAS, **kwargs)  # type: ignore[arg-type]


def test_nan_features_are_refused_while_streaming() -> None:
    x, labels = clusters(3000, 3, 2, seed=8)
    x[2999, 1] = np.nan
    with pytest.raises(ValueError, match="features contain NaN or inf"):
        analyze_frequency(x, labels, deltas=DELTAS, ci=0.01)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_estimate_matches_cpu() -> None:
    x, labels = clusters(20_000, 16, 4, seed=9)
    cpu = analyze_frequency(x, labels, deltas=DELTAS, ci=0.005, dtype="float64")
    gpu = analyze_frequency(x, labels, deltas=DELTAS, ci=0.005, dtype="float64", device="cuda")
    assert gpu.estimator == cpu.estimator == "row_sampled"
    assert gpu.rows_evaluated == cpu.rows_evaluated
    np.testing.assert_allclose(gpu.lfr, cpu.lfr, atol=1e-9)
    assert gpu.device.startswith("cuda")
