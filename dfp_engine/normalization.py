"""Scaling a representation before filtering, so that one δ grid means the same across layers.

Every mode divides each column by a positive number (standardising also subtracts the mean, which
the filter ignores: distances do not move). The divisors come from column statistics gathered
chunk by chunk, so a memory-mapped representation is scaled without being loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from dfp_engine.streaming import chunk_rows, release_pages

NormalizationMode = Literal["none", "max_abs_per_dim", "max_abs_global", "standardize_per_dim"]
NORMALIZATION_MODES: tuple[str, ...] = get_args(NormalizationMode)


@dataclass(frozen=True)
class ColumnStatistics:
    """Per-column max |z|, mean and standard deviation (float64) and whether z is all finite."""

    max_abs: np.ndarray  # (d,)
    mean: np.ndarray  # (d,)
    std: np.ndarray  # (d,)
    finite: bool


def column_statistics(z: np.ndarray) -> ColumnStatistics:
    """One chunked pass over z (n, d): moments merged per chunk (Chan et al.), in float64."""
    n, d = z.shape
    max_abs = np.zeros(d)
    mean = np.zeros(d)
    m2 = np.zeros(d)
    finite = True
    seen = 0
    step = chunk_rows(z)
    for start in range(0, n, step):
        chunk = np.asarray(z[start : start + step], dtype=np.float64)  # (rows, d)
        release_pages(z, start, start + step)
        if not np.isfinite(chunk).all():
            finite = False  # moments are meaningless now; callers reject the input
            break
        rows = chunk.shape[0]
        np.maximum(max_abs, np.abs(chunk).max(axis=0), out=max_abs)
        chunk_mean = chunk.mean(axis=0)
        chunk_m2 = ((chunk - chunk_mean) ** 2).sum(axis=0)
        delta = chunk_mean - mean
        total = seen + rows
        mean += delta * (rows / total)
        m2 += chunk_m2 + delta**2 * (seen * rows / total)
        seen = total
    std = np.sqrt(m2 / max(seen, 1))
    return ColumnStatistics(max_abs=max_abs, mean=mean, std=std, finite=finite)


def column_divisors(stats: ColumnStatistics, mode: str) -> np.ndarray:
    """What each column is divided by under `mode` (d,); dead (constant-zero) units by 1."""
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalization '{mode}'; expected one of {NORMALIZATION_MODES}")
    d = stats.max_abs.shape[0]
    if mode == "none":
        return np.ones(d)
    if mode == "max_abs_per_dim":
        return np.where(stats.max_abs > 0, stats.max_abs, 1.0)
    if mode == "max_abs_global":
        top = float(stats.max_abs.max()) if d else 0.0
        return np.full(d, top if top > 0 else 1.0)
    return np.where(stats.std > 0, stats.std, 1.0)


def normalize(z: np.ndarray, mode: str = "max_abs_per_dim") -> np.ndarray:
    """Return z (n, d) scaled by `mode`, in z's dtype; all-zero (dead) units stay 0."""
    if mode == "none":
        return z
    stats = column_statistics(z)
    divisors = column_divisors(stats, mode)
    if mode == "standardize_per_dim":
        return np.asarray((z - stats.mean) / divisors, dtype=z.dtype)
    return np.asarray(z / divisors.astype(z.dtype))
