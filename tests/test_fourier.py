"""The Fourier view: spectra against numpy's FFT on known functions, peaks, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from tiny_specs import merge

from dfp.figures import figure_names, render_figure
from dfp_engine.fourier import compare, dft, dominant_frequency, is_uniform_grid, nudft, peaks
from dfp_engine.runner import run_experiment
from dfp_engine.spec import ExperimentSpec, describe_validation_error


def periodic_grid(n: int = 128) -> np.ndarray:
    return np.linspace(-np.pi, np.pi, n, endpoint=False)[:, None]


def test_dft_is_numpys_fft_and_puts_sin_kx_at_k() -> None:
    x = periodic_grid()
    y = np.sin(3 * x[:, 0]) + 0.5 * np.cos(7 * x[:, 0]) + 0.2
    s = dft(x, y)
    np.testing.assert_allclose(s.coefficients, np.fft.rfft(y) / len(y))
    np.testing.assert_allclose(s.frequencies, np.arange(65))  # period 2π: integer frequencies
    found = peaks(s.amplitude, 0.1)
    assert s.frequencies[found].tolist() == pytest.approx([0.0, 3.0, 7.0])
    np.testing.assert_allclose(s.amplitude[found], [0.2, 0.5, 0.25], atol=1e-12)
    # Shuffled points are sorted first: the spectrum does not depend on the order of samples.
    order = np.random.default_rng(0).permutation(len(x))
    np.testing.assert_allclose(dft(x[order], y[order]).amplitude, s.amplitude, atol=1e-12)


def test_round_off_makes_no_peaks() -> None:
    x = periodic_grid()
    s = dft(x, np.sin(5 * x[:, 0]))
    assert s.frequencies[peaks(s.amplitude, 0.1)].tolist() == pytest.approx([5.0])
    assert peaks(np.zeros(4), 0.1).tolist() == []


def test_nudft_equals_the_dft_on_a_uniform_grid() -> None:
    x = np.linspace(-2.0, 3.0, 41)[:, None]  # endpoints included, as synthetic_1d samples
    y = np.cos(4 * x[:, 0]) + x[:, 0]
    uniform, scattered = dft(x, y), nudft(x, y)
    assert is_uniform_grid(x) and uniform.method == "dft" and scattered.method == "nudft"
    np.testing.assert_allclose(scattered.frequencies, uniform.frequencies)
    np.testing.assert_allclose(scattered.amplitude, uniform.amplitude, atol=1e-12)


def test_nudft_along_a_direction_finds_the_frequency_of_scattered_2d_data() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-np.pi, np.pi, size=(4000, 2))
    y = np.sin(6 * x[:, 1]) + 0.1 * x[:, 0]
    assert not is_uniform_grid(x)
    along = nudft(x, y, [0.0, 2.0])  # normalised to (0, 1)
    assert along.direction.tolist() == [0.0, 1.0]
    step = along.frequencies[1]
    assert abs(along.frequencies[np.argmax(along.amplitude)] - 6.0) <= step
    assert dominant_frequency(x[:, 1:], y) == pytest.approx(6.0, abs=step)
    with pytest.raises(ValueError, match="fourier_direction: has 3 components"):
        nudft(x, y, [1.0, 0.0, 0.0])


def test_relative_error_at_the_peaks() -> None:
    x = periodic_grid()
    target = np.sin(2 * x[:, 0]) + np.sin(9 * x[:, 0])
    _, _, found, exact = compare(x, target, target)
    assert found.tolist() == [2, 9] and exact.tolist() == [0.0, 0.0]
    low_only = np.sin(2 * x[:, 0])
    _, h, _, errors = compare(x, target, low_only)
    np.testing.assert_allclose(errors, [0.0, 1.0], atol=1e-12)
    assert h.method == "dft"


def fourier_spec(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "dataset": {"kind": "synthetic_1d", "expression": "sin(x) + sin(4*x)", "n_points": 64},
        "model": {"kind": "mlp", "depth": 2, "width": 32},
        "training": {"epochs": 30, "lr": 0.01, "seed": 0},
        "analysis": {"checkpoints": {"every": 10}, "deltas": {"auto": 6}, "fourier": True},
    }
    return merge(base, changes)


def test_runs_record_a_spectrum_at_every_checkpoint() -> None:
    result = run_experiment(ExperimentSpec.model_validate(fourier_spec()))
    (run,) = result.runs
    assert [f.epoch for f in run.fourier] == [c.epoch for c in run.checkpoints] == [0, 10, 20, 30]
    first = run.fourier[0]
    assert first.method == "dft" and len(first.peaks) == 2
    # 64 points with both ends on ±π: frequency j sits at j · 63/64, so sin(x) and sin(4x) at
    # the grid frequencies next to 1 and 4.
    assert first.peaks == pytest.approx([63 / 64, 4 * 63 / 64])
    assert all(len(f.relative_error_at_peaks) == 2 for f in run.fourier)
    assert "fourier_run_0" in figure_names(result)
    assert render_figure(result, "fourier_run_0").startswith(b"\x89PNG")
    scattered = fourier_spec(dataset={"sampling": "uniform", "n_points": 64})
    (nu,) = run_experiment(ExperimentSpec.model_validate(scattered)).runs
    assert nu.fourier[0].method == "nudft"


def test_fourier_is_refused_where_it_does_not_apply(tmp_path: Path) -> None:
    digits = {**fourier_spec(training={"loss": "cross_entropy"}), "dataset": {"kind": "digits"}}
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(digits)
    assert describe_validation_error(info.value).startswith("analysis.fourier: needs a regression")
    wrong = fourier_spec(analysis={"fourier_direction": [1.0, 0.0]})
    with pytest.raises(ValidationError) as info:
        ExperimentSpec.model_validate(wrong)
    assert "analysis.fourier_direction: has 2 components" in describe_validation_error(info.value)
    np.savez(
        tmp_path / "classes.npz",
        x=np.random.default_rng(0).normal(size=(20, 3)),
        y=np.arange(20) % 2,
    )
    classes = {**fourier_spec(), "dataset": {"kind": "npz", "path": str(tmp_path / "classes.npz")}}
    with pytest.raises(ValueError, match=r"analysis\.fourier: needs one real-valued target"):
        run_experiment(ExperimentSpec.model_validate(classes))
