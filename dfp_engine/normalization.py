"""Scaling a representation before filtering, so that one δ grid means the same across layers."""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

NormalizationMode = Literal["none", "max_abs_per_dim", "max_abs_global", "standardize_per_dim"]
NORMALIZATION_MODES: tuple[str, ...] = get_args(NormalizationMode)


def normalize(z: np.ndarray, mode: str = "max_abs_per_dim") -> np.ndarray:
    """Return z (n, d) scaled by `mode`, in z's dtype; all-zero (dead) units stay 0."""
    if mode == "none":
        return z
    if mode == "max_abs_per_dim":
        scale = np.abs(z).max(axis=0)  # (d,)
        return np.asarray(z / np.where(scale > 0, scale, 1).astype(z.dtype))
    if mode == "max_abs_global":
        top = np.abs(z).max()
        return z / top if top > 0 else z.copy()
    if mode == "standardize_per_dim":
        # Moments in float64: a float32 running sum over many rows loses digits.
        mean = z.mean(axis=0, dtype=np.float64)
        std = z.std(axis=0, dtype=np.float64)
        return np.asarray((z - mean) / np.where(std > 0, std, 1.0), dtype=z.dtype)
    raise ValueError(f"unknown normalization '{mode}'; expected one of {NORMALIZATION_MODES}")
