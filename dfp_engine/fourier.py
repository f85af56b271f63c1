"""The Fourier view of the frequency principle: spectra of the target and the network's output.

On a uniform 1-D grid the spectrum is numpy's real DFT; on anything else (scattered points,
several input dimensions) it is the non-uniform transform along a direction v,

    f̂(ω) = (1/n) Σ_i y_i exp(-i ω v·x_i),

on the grid ω_j = 2π j / L, j = 0 … min(n // 2, MAX_FREQUENCIES - 1), with L the span of the
projections v·x_i stretched by n / (n - 1): on a uniform grid these are exactly the DFT's
frequencies, and the two transforms agree in amplitude. Frequencies are angular, in the units
of x, so sin(k·x) sits at k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Cap on the non-uniform grid: cost is n × frequencies complex exponentials per checkpoint.
MAX_FREQUENCIES = 512
# Rows of x per block of the non-uniform transform (keeps the (rows, frequencies) block small).
BLOCK_ROWS = 4096
# Relative spread of the spacings under which sorted 1-D points count as a uniform grid.
GRID_TOLERANCE = 1e-3  # float32 grids are uneven by ~1e-6 of a step


@dataclass(frozen=True)
class Spectrum:
    """Complex coefficients (normalised by n) at angular frequencies, and how they were taken."""

    method: str
    direction: np.ndarray  # (d,) unit vector
    frequencies: np.ndarray  # (m,)
    coefficients: np.ndarray  # (m,) complex

    @property
    def amplitude(self) -> np.ndarray:
        return np.asarray(np.abs(self.coefficients))


def is_uniform_grid(x: np.ndarray) -> bool:
    """True for 1-D inputs (n, 1) whose sorted values are evenly spaced."""
    if x.ndim != 2 or x.shape[1] != 1 or len(x) < 3:
        return False
    steps = np.diff(np.sort(x[:, 0]))
    return bool(steps.min() > 0 and np.ptp(steps) <= GRID_TOLERANCE * steps.mean())


def unit_direction(direction: list[float] | np.ndarray | None, dim: int) -> np.ndarray:
    """The direction as a unit vector of length `dim` (default: the first input axis)."""
    if direction is None:
        v = np.zeros(dim)
        v[0] = 1.0
        return v
    v = np.asarray(direction, dtype=np.float64)
    if v.shape != (dim,):
        raise ValueError(
            f"analysis.fourier_direction: has {v.size} components but the inputs have {dim}"
        )
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm == 0:
        raise ValueError("analysis.fourier_direction: must be a finite, non-zero vector")
    return v / norm


def dft(x: np.ndarray, y: np.ndarray) -> Spectrum:
    """The real DFT of y (n,) on the uniform grid x (n, 1), sorted by x first."""
    order = np.argsort(x[:, 0], kind="stable")
    xs, ys = x[order, 0], y[order]
    n = len(xs)
    step = (xs[-1] - xs[0]) / (n - 1)
    frequencies = 2 * np.pi * np.fft.rfftfreq(n, d=step)
    return Spectrum("dft", np.ones(1), frequencies, np.fft.rfft(ys) / n)


def nudft(
    x: np.ndarray,
    y: np.ndarray,
    direction: list[float] | np.ndarray | None = None,
    frequencies: np.ndarray | None = None,
) -> Spectrum:
    """The non-uniform transform of y (n,) at points x (n, d) projected on `direction`."""
    n, d = x.shape
    v = unit_direction(direction, d)
    p = x.astype(np.float64) @ v  # (n, d) -> (n,) projections
    if frequencies is None:
        frequencies = nudft_frequencies(p)
    coefficients = np.zeros(len(frequencies), dtype=np.complex128)
    for start in range(0, n, BLOCK_ROWS):
        block = p[start : start + BLOCK_ROWS]
        # (rows, 1) * (1, m) -> (rows, m) phases
        phases = np.exp(-1j * block[:, None] * frequencies[None, :])
        coefficients += y[start : start + BLOCK_ROWS].astype(np.float64) @ phases
    return Spectrum("nudft", v, np.asarray(frequencies, dtype=np.float64), coefficients / n)


def nudft_frequencies(projections: np.ndarray) -> np.ndarray:
    """ω_j = 2π j / L for j = 0 … min(n // 2, MAX_FREQUENCIES - 1) (see the module docstring)."""
    n = len(projections)
    span = float(np.ptp(projections))
    if n < 2 or span <= 0:
        raise ValueError("analysis.fourier: the inputs do not vary along the direction")
    length = span * n / (n - 1)
    count = min(n // 2, MAX_FREQUENCIES - 1) + 1
    return 2 * np.pi * np.arange(count) / length


def spectrum(
    x: np.ndarray, y: np.ndarray, direction: list[float] | np.ndarray | None = None
) -> Spectrum:
    """The DFT on a uniform 1-D grid (unless a direction is given), else the non-uniform one."""
    if direction is None and is_uniform_grid(x):
        return dft(x, y)
    return nudft(x, y, direction)


def peaks(amplitude: np.ndarray, floor: float) -> np.ndarray:
    """Indices of local maxima at or above `floor` × the largest amplitude (ends included)."""
    a = np.asarray(amplitude, dtype=np.float64)
    if len(a) == 0 or a.max() <= 0:
        return np.zeros(0, dtype=np.int64)
    left = np.concatenate([[-np.inf], a[:-1]])
    right = np.concatenate([a[1:], [-np.inf]])
    # > on the left, >= on the right: a flat top counts once, at its first point.
    found = (a > left) & (a >= right) & (a >= floor * a.max())
    return np.flatnonzero(found)


def dominant_frequency(x: np.ndarray, y: np.ndarray) -> float:
    """The frequency of the largest spectral amplitude of y (n, 1) at x (n, d)."""
    s = spectrum(x, y[:, 0] if y.ndim == 2 else y)
    return float(s.frequencies[int(np.argmax(s.amplitude))])


def compare(
    x: np.ndarray,
    target: np.ndarray,
    output: np.ndarray,
    *,
    direction: list[float] | None = None,
    floor: float = 0.1,
) -> tuple[Spectrum, Spectrum, np.ndarray, np.ndarray]:
    """Spectra of target and output (same frequencies), the target's peaks and the relative
    error |ĥ(k) − f̂(k)| / |f̂(k)| at each peak."""
    f = spectrum(x, target, direction)
    if f.method == "dft":
        h = dft(x, output)
    else:
        h = nudft(x, output, f.direction, f.frequencies)
    found = peaks(f.amplitude, floor)
    errors = np.abs(h.coefficients[found] - f.coefficients[found]) / f.amplitude[found]
    return f, h, found, errors
