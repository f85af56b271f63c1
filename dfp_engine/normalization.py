"""Scaling a representation before filtering, so that one δ grid means the same across layers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:  # imported where used, so the spec module stays light to import
    import torch

NormalizationMode = Literal["none", "max_abs_per_dim", "max_abs_global", "standardize_per_dim"]
NORMALIZATION_MODES: tuple[str, ...] = get_args(NormalizationMode)


def normalize(z: torch.Tensor, mode: str = "max_abs_per_dim") -> torch.Tensor:
    """Return z (n, d) scaled by `mode`; all-zero (dead) units stay 0. Never modifies z."""
    import torch

    if mode == "none":
        return z
    if mode == "max_abs_per_dim":
        scale = z.abs().amax(dim=0)  # (d,)
        return z / torch.where(scale > 0, scale, torch.ones_like(scale))
    if mode == "max_abs_global":
        top = z.abs().max()
        return z / top if top > 0 else z.clone()
    if mode == "standardize_per_dim":
        # Moments in float64: a float32 running sum over many rows loses digits.
        z64 = z.to(torch.float64)
        mean = z64.mean(dim=0)
        std = z64.std(dim=0, unbiased=False)
        out = (z64 - mean) / torch.where(std > 0, std, torch.ones_like(std))
        return out.to(z.dtype)
    raise ValueError(f"unknown normalization '{mode}'; expected one of {NORMALIZATION_MODES}")
