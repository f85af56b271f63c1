"""Low Frequency Ratio, Ratio Density Function and the filtering test (METHOD.md §2-§4)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from dfp_engine.deltas import auto_deltas, resolve_deltas
from dfp_engine.lowpass import lowpass_sums
from dfp_engine.normalization import NORMALIZATION_MODES, normalize

ArrayLike = np.ndarray | torch.Tensor | Sequence[Any]


@dataclass(frozen=True)
class RatioDensity:
    """RDF over u = 1/δ (backward differences at each interval's right end) and its summaries."""

    inverse_deltas: list[float]
    rdf: list[float]
    peak_inverse_delta: float | None
    mean_inverse_delta: float | None


@dataclass(frozen=True)
class FrequencyResult:
    """Frequency content of a sampled function {(z_i, y_i)}; lists are ordered by 1/δ ascending."""

    deltas: list[float]
    inverse_deltas: list[float]
    lfr: list[float]
    rdf_inverse_deltas: list[float]
    rdf: list[float]
    peak_inverse_delta: float | None
    mean_inverse_delta: float | None
    lfr_limit: float  # LFR as δ → ∞: |mean y|^2 / mean |y|^2
    normalization: str
    n_samples: int
    dim: int
    n_outputs: int
    device: str
    dtype: str
    block_size: int | None
    elapsed_seconds: float
    e_low: list[float | None] | None = None
    e_high: list[float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def as_targets(labels: ArrayLike, n_classes: int | None = None) -> torch.Tensor:
    """Labels as an (n, c) float64 matrix: integer class vectors become one-hot."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if t.ndim == 1 and not t.is_floating_point() and t.dtype != torch.bool:
        if t.numel() and int(t.min()) < 0:
            raise ValueError("class labels must be non-negative integers")
        c = n_classes if n_classes is not None else (int(t.max()) + 1 if t.numel() else 0)
        return torch.nn.functional.one_hot(t.long(), num_classes=c).to(torch.float64)
    t = t.to(torch.float64)
    if t.ndim == 1:
        return t[:, None]
    if t.ndim != 2:
        raise ValueError(f"labels must be 1-D or 2-D, got shape {tuple(t.shape)}")
    return t


def as_features(features: ArrayLike) -> torch.Tensor:
    """Features as an (n, d) tensor; higher-rank inputs are flattened per sample."""
    t = torch.as_tensor(
        np.asarray(features) if not isinstance(features, torch.Tensor) else features
    )
    if t.ndim == 1:
        return t[:, None]
    if t.ndim == 0:
        raise ValueError("features must have one row per sample")
    return t.reshape(t.shape[0], -1)


def ratio_density(deltas: Sequence[float], lfr: Sequence[float]) -> RatioDensity:
    """RDF(u_j) = (LFR_j - LFR_{j-1}) / (u_j - u_{j-1}) on δ sorted by u = 1/δ ascending."""
    u = [1.0 / d for d in deltas]
    if any(b <= a for a, b in itertools.pairwise(u)):
        raise ValueError("deltas must be sorted so that 1/δ strictly ascends")
    rdf = [(lfr[j] - lfr[j - 1]) / (u[j] - u[j - 1]) for j in range(1, len(u))]
    right = u[1:]
    peak = right[int(np.argmax(rdf))] if rdf else None
    # RDF-weighted mean of u: Σ RDF_j Δu_j u_j / Σ RDF_j Δu_j = Σ ΔLFR_j u_j / Σ ΔLFR_j
    mass = [lfr[j] - lfr[j - 1] for j in range(1, len(u))]
    total = math.fsum(mass)
    mean = math.fsum(w * x for w, x in zip(mass, right, strict=True)) / total if total else None
    return RatioDensity(
        inverse_deltas=right, rdf=rdf, peak_inverse_delta=peak, mean_inverse_delta=mean
    )


def _resolve_grid(
    zn: torch.Tensor,
    deltas: Sequence[float] | None,
    inverse_deltas: Sequence[float] | None,
    auto: int | None,
) -> list[float]:
    given = sum(x is not None for x in (deltas, inverse_deltas, auto))
    if given > 1:
        raise ValueError("give only one of deltas, inverse_deltas or auto_deltas")
    if given == 0:
        auto = 20
    if auto is not None:
        return auto_deltas(zn, auto)
    return resolve_deltas(deltas=deltas, inverse_deltas=inverse_deltas)


def _check_inputs(z: torch.Tensor, y: torch.Tensor) -> None:
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"features have {z.shape[0]} rows but labels have {y.shape[0]}")
    if z.shape[0] < 2:
        raise ValueError(f"need at least 2 samples, got {z.shape[0]}")
    if z.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError("features and labels need at least one column")
    if not torch.isfinite(z).all():
        raise ValueError("features contain NaN or inf")
    if not torch.isfinite(y).all():
        raise ValueError("labels contain NaN or inf")


def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return dev


def analyze_frequency(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    deltas: Sequence[float] | None = None,
    inverse_deltas: Sequence[float] | None = None,
    auto_deltas: int | None = None,
    normalization: str = "max_abs_per_dim",
    predictions: ArrayLike | None = None,
    block_size: int | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    n_classes: int | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> FrequencyResult:
    """LFR(δ), RDF over 1/δ and its peak and mean for the function {(features_i, labels_i)}.

    `labels` are integer classes (one-hot internally) or real targets (n,) / (n, c).
    With `predictions` (same shape as the one-hot/real targets) the filtering test's
    e_low(δ) and e_high(δ) are computed in the same pass. With no grid given, an automatic
    grid of 20 values is used.
    """
    start = time.perf_counter()
    if normalization not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalization '{normalization}'; expected {NORMALIZATION_MODES}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError("dtype must be torch.float32 or torch.float64")
    dev = _resolve_device(device)
    z = as_features(features)
    y = as_targets(labels, n_classes)
    _check_inputs(z, y)
    power = float((y * y).sum())
    if power == 0.0:
        raise ValueError("labels are all zero: the low frequency ratio is undefined")

    zn = normalize(
        z.to(dev, dtype=dtype if z.is_floating_point() else torch.float32), normalization
    )
    grid = _resolve_grid(zn, deltas, inverse_deltas, auto_deltas)
    y = y.to(dev)

    values = y
    if predictions is not None:
        p = as_targets(predictions).to(dev)
        if p.shape != y.shape:
            raise ValueError(f"predictions shape {tuple(p.shape)} != targets {tuple(y.shape)}")
        if not torch.isfinite(p).all():
            raise ValueError("predictions contain NaN or inf")
        # Filter y and the residual y - ŷ: filtering is linear, and smoothing the residual
        # directly avoids subtracting two nearly equal filtered functions.
        values = torch.cat([y, y - p], dim=1)

    sums = lowpass_sums(
        zn, values, grid, block_size=block_size, dtype=dtype, on_progress=on_progress
    )
    c = y.shape[1]
    norm = (1.0 + sums.weights)[:, :, None]  # (m, n, 1): C_i = 1 + off-diagonal weights
    low = (values[None] + sums.values) / norm  # (m, n, k)
    lfr_t = (low[:, :, :c] ** 2).sum(dim=(1, 2)) / power
    lfr = [float(v) for v in lfr_t.cpu()]

    e_low: list[float | None] | None = None
    e_high: list[float | None] | None = None
    if predictions is not None:
        high = (values[None] * sums.weights[:, :, None] - sums.values) / norm
        e_low = _relative_errors(low[:, :, c:], low[:, :, :c])
        e_high = _relative_errors(high[:, :, c:], high[:, :, :c])

    density = ratio_density(grid, lfr)
    mean_y = y.mean(dim=0)
    limit = float((mean_y * mean_y).sum() / (power / y.shape[0]))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return FrequencyResult(
        deltas=grid,
        inverse_deltas=[1.0 / d for d in grid],
        lfr=lfr,
        rdf_inverse_deltas=density.inverse_deltas,
        rdf=density.rdf,
        peak_inverse_delta=density.peak_inverse_delta,
        mean_inverse_delta=density.mean_inverse_delta,
        lfr_limit=limit,
        normalization=normalization,
        n_samples=int(z.shape[0]),
        dim=int(z.shape[1]),
        n_outputs=c,
        device=str(dev),
        dtype=str(dtype).removeprefix("torch."),
        block_size=block_size,
        elapsed_seconds=time.perf_counter() - start,
        e_low=e_low,
        e_high=e_high,
    )


def _relative_errors(residual: torch.Tensor, reference: torch.Tensor) -> list[float | None]:
    """sqrt(Σ|residual|^2 / Σ|reference|^2) per δ; None where the reference has no power."""
    num = (residual**2).sum(dim=(1, 2)).cpu()
    den = (reference**2).sum(dim=(1, 2)).cpu()
    return [
        math.sqrt(a / b) if b > 0 else None for a, b in zip(num.tolist(), den.tolist(), strict=True)
    ]


def filtering_test(
    inputs: ArrayLike,
    targets: ArrayLike,
    predictions: ArrayLike,
    deltas: Sequence[float],
    *,
    normalization: str = "none",
    block_size: int | None = None,
    device: str | torch.device = "cpu",
    n_classes: int | None = None,
) -> FrequencyResult:
    """The F-principle filtering test (METHOD §4): e_low, e_high of predictions vs targets.

    Filters in input space (no normalisation by default, as in the original demo).
    """
    return analyze_frequency(
        inputs,
        targets,
        deltas=deltas,
        normalization=normalization,
        predictions=predictions,
        block_size=block_size,
        device=device,
        n_classes=n_classes,
    )
