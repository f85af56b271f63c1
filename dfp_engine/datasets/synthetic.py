"""Synthetic regression targets: an expression in x on an interval, and named d-dim families."""

from __future__ import annotations

import numpy as np

from dfp_engine.expression import parse_expression
from dfp_engine.spec import Synthetic1DDataset, SyntheticNDDataset

# gaussian_bumps: how many bumps and their width relative to 1/frequency.
N_BUMPS = 8
BUMP_WIDTH = 0.5


def synthetic_1d(spec: Synthetic1DDataset) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 1) on the interval (grid or seeded uniform) and y = expression(x) (n, 1)."""
    lo, hi = spec.interval
    if spec.sampling == "grid":
        x = np.linspace(lo, hi, spec.n_points)
    else:
        x = np.sort(np.random.default_rng(spec.seed).uniform(lo, hi, spec.n_points))
    y = parse_expression(spec.expression).evaluate(x)
    bad = ~np.isfinite(y)
    if bad.any():
        raise ValueError(
            f"dataset.expression: '{spec.expression}' is not finite at x = {float(x[bad][0]):.6g}"
        )
    return x[:, None], y[:, None]


def synthetic_nd(spec: SyntheticNDDataset) -> tuple[np.ndarray, np.ndarray]:
    """x (n, dim) uniform in [-1, 1]^dim and a target (n, 1) from the named family.

    cosine_sum:     y = mean_k cos(π f x_k)
    radial_cosine:  y = cos(π f |x|)
    gaussian_bumps: y = Σ_j a_j exp(-|x - c_j|² / (2 σ²)), σ = 0.5 / f, seeded a_j = ±1, c_j
    parity:         y = Π_k sign(sin(π f x_k))  (±1 checkerboard)
    """
    rng = np.random.default_rng(spec.seed)
    x = rng.uniform(-1.0, 1.0, size=(spec.n_samples, spec.dim))
    f = spec.frequency
    if spec.family == "cosine_sum":
        y = np.cos(np.pi * f * x).mean(axis=1)
    elif spec.family == "radial_cosine":
        y = np.cos(np.pi * f * np.linalg.norm(x, axis=1))
    elif spec.family == "gaussian_bumps":
        centers = rng.uniform(-1.0, 1.0, size=(N_BUMPS, spec.dim))
        signs = rng.choice([-1.0, 1.0], size=N_BUMPS)
        sigma = BUMP_WIDTH / f
        # (n, 1, d) - (1, J, d) -> (n, J) squared distances to each centre
        d2 = ((x[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        y = (signs * np.exp(-d2 / (2 * sigma**2))).sum(axis=1)
    else:
        y = np.prod(np.where(np.sin(np.pi * f * x) >= 0, 1.0, -1.0), axis=1)
    return x, y[:, None]
