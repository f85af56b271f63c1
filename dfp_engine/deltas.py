"""Bandwidth grids: explicit δ lists and the automatic grid from pairwise distances."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dfp_engine.streaming import release_pages

# Pairs used to estimate the squared-distance distribution; exact below this size.
AUTO_GRID_SAMPLE = 2048
# Float64 elements of one column chunk of the sample while its Gram matrix is summed.
GRAM_CHUNK_ELEMENTS = 2**22


def validate_deltas(values: Sequence[float], *, name: str = "deltas") -> list[float]:
    """Check a bandwidth list: at least 2 values, all finite and positive, no duplicates."""
    out = [float(v) for v in values]
    if len(out) < 2:
        raise ValueError(f"{name} needs at least 2 values, got {len(out)}")
    for v in out:
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")
    if len(set(out)) != len(out):
        dupes = sorted({v for v in out if out.count(v) > 1})
        raise ValueError(f"{name} contains duplicates: {dupes}")
    return out


def sorted_by_frequency(deltas: Sequence[float]) -> list[float]:
    """δ sorted so that u = 1/δ ascends (δ descending): the order every result uses."""
    return sorted(deltas, reverse=True)


def resolve_deltas(
    *,
    deltas: Sequence[float] | None = None,
    inverse_deltas: Sequence[float] | None = None,
) -> list[float]:
    """One explicit grid given as δ or as 1/δ, validated and sorted by u ascending."""
    if (deltas is None) == (inverse_deltas is None):
        raise ValueError("give exactly one of deltas or inverse_deltas")
    if deltas is not None:
        return sorted_by_frequency(validate_deltas(deltas, name="deltas"))
    assert inverse_deltas is not None
    inv = validate_deltas(inverse_deltas, name="inverse deltas")
    return sorted_by_frequency([1.0 / u for u in inv])


def grid_sample_rows(n: int, max_points: int = AUTO_GRID_SAMPLE) -> np.ndarray:
    """The seeded, sorted row subset the automatic grid looks at: all rows up to max_points."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=max_points, replace=False))


def squared_distance_sample(
    z: np.ndarray,
    *,
    max_points: int = AUTO_GRID_SAMPLE,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Pairwise squared distances (float64) of a seeded row subset: (s, s), s ≤ max_points.

    Features are taken `scale`-multiplied (one factor per column) when given. The Gram matrix
    is summed over column chunks, so a wide z (a memory-mapped conv stage, say) is never held
    whole in float64.
    """
    rows = grid_sample_rows(z.shape[0], max_points)
    whole = len(rows) == z.shape[0]
    s, d = len(rows), z.shape[1]
    gram = np.zeros((s, s))
    step = max(1, GRAM_CHUNK_ELEMENTS // max(s, 1))
    for c0 in range(0, d, step):
        block = z[:, c0 : c0 + step] if whole else z[rows, c0 : c0 + step]
        part = np.asarray(block, dtype=np.float64)  # (s, chunk)
        if scale is not None:
            part = part * scale[c0 : c0 + step]
        part = part - part.mean(axis=0)
        gram += part @ part.T
        release_pages(z, 0, z.shape[0])
    sq = np.diag(gram).copy()
    # (s, d) -> (s, s); clamp the expansion's rounding below zero
    d2: np.ndarray = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    return d2


def auto_deltas(z: np.ndarray, m: int = 20, *, scale: np.ndarray | None = None) -> list[float]:
    """A geometric grid of m δ spanning 'neighbours barely mix' to 'everything is averaged'.

    With D the pairwise squared distances of the (normalised) features, the low end is the
    10th percentile of nearest-neighbour D over 10 (nine in ten nearest neighbours weigh at
    most e^-5, so LFR is near 1) and the high end is 2 * max D (every pair weighs at least
    e^-0.25, so LFR is near its δ → ∞ limit). Degenerate sets (all points equal)
    fall back to 1e-3 .. 1e3.
    """
    if m < 2:
        raise ValueError(f"the automatic grid needs at least 2 values, got {m}")
    d2 = squared_distance_sample(z, scale=scale)
    top = float(d2.max()) if d2.shape[0] > 1 else 0.0
    if top <= 0.0:
        lo, hi = 1e-3, 1e3
    else:
        np.fill_diagonal(d2, np.inf)
        nearest = d2.min(axis=1)
        positive = nearest[nearest > 0]
        nn = float(np.quantile(positive, 0.1)) if positive.size else float(d2[d2 > 0].min())
        lo, hi = nn / 10.0, 2.0 * top
        if not lo < hi:
            lo = hi / 1e3
    ratio = (hi / lo) ** (1.0 / (m - 1))
    return sorted_by_frequency([lo * ratio**k for k in range(m)])
