"""Low Frequency Ratio, Ratio Density Function and the filtering test (docs/method.md §2-§4)."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dfp_engine.deltas import auto_deltas, resolve_deltas
from dfp_engine.lowpass import Backend, lowpass_sums
from dfp_engine.normalization import (
    NORMALIZATION_MODES,
    column_divisors,
    column_statistics,
    normalize,
)
from dfp_engine.row_sampling import FeatureScaling, sampled_lfr

if TYPE_CHECKING:
    import torch

    from dfp_engine.fanout import ExactSums

# numpy arrays, torch tensors (on any device) or nested sequences
ArrayLike = Any
DTYPES: dict[str, type[np.floating[Any]]] = {"float32": np.float32, "float64": np.float64}


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
    estimator: str = "exact"  # or "row_sampled" (see dfp_engine.row_sampling)
    rows_evaluated: int | None = None  # rows whose kernel row was evaluated: n when exact
    lfr_ci_half_width: list[float] | None = None  # 95 % half-widths, one per δ
    rdf_ci_half_width: list[float] | None = None  # 95 % half-widths, one per RDF value

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


def as_array(data: ArrayLike) -> np.ndarray:
    """A numpy view of an array, a (possibly CUDA) tensor or a nested sequence."""
    if hasattr(data, "detach"):  # a torch tensor, converted without importing torch
        data = data.detach().cpu().numpy()
    return np.asarray(data)


def as_targets(labels: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Labels as an (n, c) float64 matrix: integer class vectors become one-hot."""
    t = as_array(labels)
    if t.ndim == 1 and t.dtype.kind in "iu":
        if t.size and int(t.min()) < 0:
            raise ValueError("class labels must be non-negative integers")
        c = n_classes if n_classes is not None else (int(t.max()) + 1 if t.size else 0)
        if t.size and int(t.max()) >= c:
            raise ValueError(f"class label {int(t.max())} is not below n_classes = {c}")
        onehot = np.zeros((t.shape[0], c), dtype=np.float64)
        onehot[np.arange(t.shape[0]), t] = 1.0
        return onehot
    if t.dtype.kind not in "biuf":
        raise ValueError(f"labels must be numbers, got {t.dtype}")
    t = t.astype(np.float64)
    if t.ndim == 1:
        return t[:, None]
    if t.ndim != 2:
        raise ValueError(f"labels must be 1-D or 2-D, got shape {tuple(t.shape)}")
    return t


def as_features(features: ArrayLike) -> np.ndarray:
    """Features as an (n, d) array; higher-rank inputs are flattened per sample.

    A memory-mapped array stays one (a view of the same file), so it can be streamed.
    """
    t = features if isinstance(features, np.memmap) else as_array(features)
    if t.ndim == 0:
        raise ValueError("features must have one row per sample")
    if t.dtype.kind not in "biuf":
        raise ValueError(f"features must be numbers, got {t.dtype}")
    return t[:, None] if t.ndim == 1 else t.reshape(t.shape[0], -1)


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
    zn: np.ndarray,
    deltas: Sequence[float] | None,
    inverse_deltas: Sequence[float] | None,
    auto: int | None,
    scale: np.ndarray | None = None,
) -> list[float]:
    given = sum(x is not None for x in (deltas, inverse_deltas, auto))
    if given > 1:
        raise ValueError("give only one of deltas, inverse_deltas or auto_deltas")
    if given == 0:
        auto = 20
    if auto is not None:
        return auto_deltas(zn, auto, scale=scale)
    return resolve_deltas(deltas=deltas, inverse_deltas=inverse_deltas)


def _check_inputs(z: np.ndarray, y: np.ndarray, *, z_finite: bool | None = None) -> None:
    if z.shape[0] != y.shape[0]:
        raise ValueError(f"features have {z.shape[0]} rows but labels have {y.shape[0]}")
    if z.shape[0] < 2:
        raise ValueError(f"need at least 2 samples, got {z.shape[0]}")
    if z.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError("features and labels need at least one column")
    if not (np.isfinite(z).all() if z_finite is None else z_finite):
        raise ValueError("features contain NaN or inf")
    if not np.isfinite(y).all():
        raise ValueError("labels contain NaN or inf")


def _check_ci(ci: float | None, predictions: ArrayLike | None) -> None:
    if ci is None:
        return
    if isinstance(ci, bool) or not isinstance(ci, int | float) or not math.isfinite(ci):
        raise ValueError(f"ci must be a finite number, got {ci!r}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must lie strictly between 0 and 1, got {ci}")
    if predictions is not None:
        raise ValueError("ci: the row-sampled estimator does not run the filtering test")


def _resolve_device(device: str | torch.device) -> str:
    """'cpu', or a CUDA device that exists ('auto' picks CUDA when there is one)."""
    name = str(device)
    if name == "cpu":
        return name  # no torch import on the CPU path
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but CUDA is not available")
    return str(dev)


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
    dtype: Any = "float32",
    threads: int | None = None,
    backend: Backend | None = None,
    n_classes: int | None = None,
    stream_memory: int | None = None,
    on_progress: Callable[[float], None] | None = None,
    ci: float | None = None,
    seed: int = 0,
    exact_sums: ExactSums | None = None,
) -> FrequencyResult:
    """LFR(δ), RDF over 1/δ and its peak and mean for the function {(features_i, labels_i)}.

    `labels` are integer classes (one-hot internally) or real targets (n,) / (n, c).
    With `predictions` (same shape as the one-hot/real targets) the filtering test's
    e_low(δ) and e_high(δ) are computed in the same pass. With no grid given, an automatic
    grid of 20 values is used. `dtype` ('float32' or 'float64', numpy or torch) sets the tile
    precision; sums are float64 either way. `threads` caps the CPU threads (default: all
    cores); `backend` picks numpy or torch for the tiles (default: numpy on the CPU).
    Features given as an `np.memmap` are streamed from their file, never loaded whole
    (CPU only); `stream_memory` caps the bytes of rows the tiles then hold.
    With `ci` = W, LFR is estimated from sampled rows (seeded by `seed`) until its 95 %
    half-width is at most W at every δ (dfp_engine.row_sampling; docs/method.md §2a); when that
    needs half the rows or more, the exact result is computed instead.
    `exact_sums` replaces `lowpass_sums` (same arguments) for the exact pass: a service fans it
    out over its workers that way (dfp_engine.fanout).
    """
    start = time.perf_counter()
    if normalization not in NORMALIZATION_MODES:
        raise ValueError(f"unknown normalization '{normalization}'; expected {NORMALIZATION_MODES}")
    precision = str(np.dtype(dtype) if isinstance(dtype, type) else dtype).removeprefix("torch.")
    if precision not in DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    _check_ci(ci, predictions)
    dev = _resolve_device(device)
    z = as_features(features)
    y = as_targets(labels, n_classes)
    # A memory-mapped z is streamed: statistics in one chunked pass, scaling applied per tile.
    # The row-sampled estimator reads any z that way.
    streamed = isinstance(z, np.memmap)
    stats = column_statistics(z) if streamed or ci is not None else None
    _check_inputs(z, y, z_finite=None if stats is None else stats.finite)
    power = float((y * y).sum())
    if power == 0.0:
        raise ValueError("labels are all zero: the low frequency ratio is undefined")
    mean_y = y.mean(axis=0)
    limit = float((mean_y * mean_y).sum() / (power / y.shape[0]))

    if ci is not None:
        assert stats is not None
        scaling = FeatureScaling.from_statistics(stats, normalization)
        # the automatic grid looks at the same seeded row sample as on the exact path
        grid = _resolve_grid(z, deltas, inverse_deltas, auto_deltas, scaling.scale)
        estimate = sampled_lfr(
            z, scaling, y, grid, ci, seed=seed, block_size=block_size, dtype=DTYPES[precision],
            threads=threads, device=dev, backend=backend, on_progress=on_progress,
        )  # fmt: skip
        if estimate is not None:
            density = ratio_density(grid, estimate.lfr)
            return FrequencyResult(
                deltas=grid,
                inverse_deltas=[1.0 / d for d in grid],
                lfr=estimate.lfr,
                rdf_inverse_deltas=density.inverse_deltas,
                rdf=density.rdf,
                peak_inverse_delta=density.peak_inverse_delta,
                mean_inverse_delta=density.mean_inverse_delta,
                lfr_limit=limit,
                normalization=normalization,
                n_samples=int(z.shape[0]),
                dim=int(z.shape[1]),
                n_outputs=y.shape[1],
                device=dev,
                dtype=precision,
                block_size=block_size,
                elapsed_seconds=time.perf_counter() - start,
                estimator="row_sampled",
                rows_evaluated=estimate.rows,
                lfr_ci_half_width=estimate.lfr_half_width,
                rdf_ci_half_width=estimate.rdf_half_width,
            )

    scale: np.ndarray | None = None
    if not streamed:
        zn = normalize(z.astype(DTYPES[precision], copy=False), normalization)
        grid = _resolve_grid(zn, deltas, inverse_deltas, auto_deltas)
    else:
        assert stats is not None
        zn = z
        scale = 1.0 / column_divisors(stats, normalization)
        grid = _resolve_grid(z, deltas, inverse_deltas, auto_deltas, scale)

    values = y
    if predictions is not None:
        p = as_targets(predictions)
        if p.shape != y.shape:
            raise ValueError(f"predictions shape {tuple(p.shape)} != targets {tuple(y.shape)}")
        if not np.isfinite(p).all():
            raise ValueError("predictions contain NaN or inf")
        # Filter y and the residual y - ŷ: filtering is linear, and smoothing the residual
        # directly avoids subtracting two nearly equal filtered functions.
        values = np.concatenate([y, y - p], axis=1)

    sums = (exact_sums or lowpass_sums)(
        zn,
        values,
        grid,
        block_size=block_size,
        dtype=DTYPES[precision],
        threads=threads,
        device=dev,
        backend=backend,
        scale=scale,
        stream_memory=stream_memory,
        on_progress=on_progress,
    )
    c = y.shape[1]
    norm = (1.0 + sums.weights)[:, :, None]  # (m, n, 1): C_i = 1 + off-diagonal weights
    low = (values[None] + sums.values) / norm  # (m, n, k)
    lfr = [float(v) for v in (low[:, :, :c] ** 2).sum(axis=(1, 2)) / power]

    e_low: list[float | None] | None = None
    e_high: list[float | None] | None = None
    if predictions is not None:
        high = (values[None] * sums.weights[:, :, None] - sums.values) / norm
        e_low = _relative_errors(low[:, :, c:], low[:, :, :c])
        e_high = _relative_errors(high[:, :, c:], high[:, :, :c])

    density = ratio_density(grid, lfr)
    exact_ci = ci is not None  # an interval was asked for: the exact result's is zero
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
        device=dev,
        dtype=precision,
        block_size=block_size,
        elapsed_seconds=time.perf_counter() - start,
        e_low=e_low,
        e_high=e_high,
        rows_evaluated=int(z.shape[0]),
        lfr_ci_half_width=[0.0] * len(grid) if exact_ci else None,
        rdf_ci_half_width=[0.0] * (len(grid) - 1) if exact_ci else None,
    )


def _relative_errors(residual: np.ndarray, reference: np.ndarray) -> list[float | None]:
    """sqrt(Σ|residual|^2 / Σ|reference|^2) per δ; None where the reference has no power."""
    num = (residual**2).sum(axis=(1, 2))
    den = (reference**2).sum(axis=(1, 2))
    return [math.sqrt(a / b) if b > 0 else None for a, b in zip(num, den, strict=True)]


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
    """The F-principle filtering test (docs/method.md §4): e_low, e_high of predictions vs targets.

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
