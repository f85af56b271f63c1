"""Row-sampled LFR with 95 % confidence intervals: O(m · n · |δ|) instead of O(n² · |δ|)
(docs/method.md §2a).

LFR(δ) = Σ_i a_i(δ) / P with a_i = |y_i^low|² and P = Σ_i |y_i|² (known exactly). Each a_i
needs the kernel row of i against all n points, so a simple random sample S of m rows drawn
without replacement, with every a_i (i ∈ S) evaluated exactly, gives

    LFR^ = (n / m) Σ_{i∈S} a_i / P,   Var^ = (n / P)² (1 - m/n) s² / m,   s² = sample variance

and the interval LFR^ ± z_{0.975} sqrt(Var^) (finite population corrected: zero at m = n).
One sample serves every δ, so an RDF difference LFR_j - LFR_{j-1} is estimated from the paired
per-row differences a_i(δ_j) - a_i(δ_{j-1}), whose variance is far below the sum of the two.

m grows in rounds: a first sample gives s² per δ, from which the m reaching half-width W at
every δ follows; new rows are drawn (the sample is a prefix of one seeded permutation) until
every half-width is at most W. When the rows needed reach half of n, the exact symmetric pass
(n² / 2 pairs) is cheaper than m · n, and the exact result is returned instead.

Features are read in chunks of rows, so an np.memmap is never copied whole: one streaming pass
gives the normalisation statistics (dfp_engine.normalization.column_statistics), and every
round streams the columns once against the sampled rows, releasing their pages as it goes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from dfp_engine.lowpass import (
    COLUMN_MULTIPLE,
    EXP_FLOOR,
    FLUSH_EVERY,
    GPU_TILE_ELEMENTS,
    SUBNORMAL_FLUSH,
    Backend,
    _cpu_count,
    _single_threaded_blas,
    default_block_size,
)
from dfp_engine.normalization import ColumnStatistics, column_divisors, column_statistics
from dfp_engine.streaming import release_pages

Z95 = NormalDist().inv_cdf(0.975)
FIRST_ROUND_ROWS = 512  # enough rows for a usable first estimate of every s²
GROWTH_MARGIN = 1.1  # ask for 10 % more rows than the current s² says are needed
CHUNK_ROWS = 8192  # feature rows streamed (normalised, centred) at a time
EXACT_FRACTION = 0.5  # beyond m = n/2 rows, the exact symmetric pass costs less


@dataclass(frozen=True)
class FeatureScaling:
    """z -> (z - centre) * scale per dimension: the normalisation, centred."""

    centre: np.ndarray  # (d,) float64: the features' mean (distances ignore the shift)
    scale: np.ndarray  # (d,) float64

    @classmethod
    def from_statistics(cls, stats: ColumnStatistics, mode: str) -> FeatureScaling:
        """The scaling `normalize(z, mode)` applies, from the streamed column statistics."""
        return cls(centre=stats.mean, scale=1.0 / column_divisors(stats, mode))

    def apply(self, rows: np.ndarray, dtype: type[np.floating[Any]]) -> np.ndarray:
        """Normalised, centred rows (r, d) in `dtype`."""
        out = np.array(rows, dtype=np.float64)  # one float64 copy of the chunk, worked in place
        out -= self.centre
        out *= self.scale
        return out.astype(dtype, copy=False)


def feature_scaling(z: np.ndarray, mode: str) -> FeatureScaling:
    """The scaling of `normalize(z, mode)` from one streaming pass; rejects NaN and inf."""
    stats = column_statistics(z)
    if not stats.finite:
        raise ValueError("features contain NaN or inf")
    return FeatureScaling.from_statistics(stats, mode)


@dataclass(frozen=True)
class RowSample:
    """Per-row low-frequency powers a_i(δ) of the sampled rows: `power` (|δ|, m)."""

    rows: np.ndarray  # (m,) row indices, in drawing order
    power: np.ndarray  # (|δ|, m) float64


@dataclass(frozen=True)
class SampledEstimate:
    """LFR^ per δ with 95 % half-widths, and the paired half-widths of the RDF differences."""

    lfr: list[float]
    lfr_half_width: list[float]
    rdf_half_width: list[float]  # of RDF_j = ΔLFR_j / Δu_j, one per interval
    rows: int


def estimate(
    sample: RowSample, n: int, total_power: float, deltas: Sequence[float]
) -> SampledEstimate:
    """The estimator of the module docstring on one sample (deltas sorted by 1/δ ascending)."""
    a = sample.power
    m = a.shape[1]
    scale = n / total_power
    fpc = max(0.0, 1.0 - m / n)
    lfr = a.mean(axis=1) * scale
    var = a.var(axis=1, ddof=1) if m > 1 else np.zeros(a.shape[0])
    half = Z95 * scale * np.sqrt(fpc * var / m)
    u = np.array([1.0 / x for x in deltas])
    diffs = np.diff(a, axis=0)  # (|δ| - 1, m): paired per-row differences
    dvar = diffs.var(axis=1, ddof=1) if m > 1 else np.zeros(diffs.shape[0])
    rdf_half = Z95 * scale * np.sqrt(fpc * dvar / m) / np.diff(u)
    return SampledEstimate(
        lfr=[float(v) for v in lfr],
        lfr_half_width=[float(v) for v in half],
        rdf_half_width=[float(v) for v in rdf_half],
        rows=m,
    )


def rows_needed(sample: RowSample, n: int, total_power: float, width: float) -> int:
    """Rows that bring every δ's half-width to `width`, judged by the sample's variances."""
    m = sample.power.shape[1]
    var = sample.power.var(axis=1, ddof=1) if m > 1 else np.full(sample.power.shape[0], np.inf)
    # Z (n/P) sqrt((1/m - 1/n) s²) <= W  <=>  1/m <= (W P / (Z n))² / s² + 1/n
    target = (width * total_power / (Z95 * n)) ** 2
    worst = float(var.max())
    if worst <= 0.0:
        return int(m)
    return min(n, math.ceil(1.0 / (target / worst + 1.0 / n)))


def sample_rows(
    z: np.ndarray,
    scaling: FeatureScaling,
    targets: np.ndarray,
    rows: np.ndarray,
    deltas: Sequence[float],
    *,
    block_size: int | None = None,
    dtype: type[np.floating[Any]] = np.float32,
    threads: int | None = None,
    device: str = "cpu",
    backend: Backend | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> RowSample:
    """a_i(δ) = |y_i^low|² for the given rows, each against all n points (self weight exact).

    `backend` defaults to numpy on the CPU and torch elsewhere (as for the exact pass).
    """
    c = targets.shape[1]
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    desc = sorted(deltas, reverse=True)  # δ descending: the floored ones form a suffix
    backend = backend or ("numpy" if device == "cpu" else "torch")
    if backend == "numpy" and device != "cpu":
        raise ValueError("the numpy backend runs on the CPU only")
    run = _numpy_row_sums if backend == "numpy" else _torch_row_sums
    sums = run(
        z, scaling, targets, sorted_rows, desc, dtype, block_size, threads, device, on_progress
    )  # (|δ| descending, m, c + 1)
    back = [desc.index(x) for x in deltas]
    y = targets[sorted_rows]  # (m, c)
    low = (y[None] + sums[back, :, :c]) / (1.0 + sums[back, :, c])[:, :, None]
    power = (low**2).sum(axis=2)  # (|δ|, m)
    unsort = np.empty_like(order)
    unsort[order] = np.arange(len(order))
    return RowSample(rows=rows, power=power[:, unsort])


def _numpy_row_sums(
    z: np.ndarray,
    scaling: FeatureScaling,
    targets: np.ndarray,
    sorted_rows: np.ndarray,
    desc: list[float],
    dtype: type[np.floating[Any]],
    block_size: int | None,
    threads: int | None,
    device: str,
    on_progress: Callable[[float], None] | None,
) -> np.ndarray:
    """Off-diagonal [S | O] of the sampled rows on CPU threads: (|δ|, m, c + 1) float64."""
    rows = sorted_rows
    n, d = z.shape
    md, c = len(desc), targets.shape[1]
    b = block_size or default_block_size(n, md)
    b = max(1, min(b, CHUNK_ROWS))
    chunk = max(b, CHUNK_ROWS - CHUNK_ROWS % b)
    width = -(-(d + 2) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    kp = -(-(c + 1) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    n_blocks = -(-len(rows) // b)
    padded = n_blocks * b

    # left_i = [z_i | |z_i|^2 | 1 | 0…] and right_j = [-2 z_j | 1 | |z_j|^2 | 0…]:
    # one GEMM left_i . right_j gives |z_i - z_j|^2.
    left = np.zeros((padded, width), dtype=dtype)
    left[: len(rows), :d] = scaling.apply(z[sorted_rows], dtype)
    left[:, d] = np.einsum("ij,ij->i", left[:, :d], left[:, :d])
    left[:, d + 1] = 1.0
    floors = [-2.0 * x * EXP_FLOOR for x in desc] if dtype == np.float32 else []
    scales = np.array([-0.5 / x for x in desc], dtype=dtype).reshape(md, 1, 1)
    total = np.zeros((md, padded, kp), dtype=np.float64)
    right = np.zeros((chunk, width), dtype=dtype)
    rhs = np.zeros((chunk, kp), dtype=dtype)
    workers = max(1, min(threads or _cpu_count(), n_blocks))
    shares = [list(range(w, n_blocks, workers)) for w in range(workers)]
    # Padding rows of the sample get an index no column has, so no self weight is removed there.
    ids = np.full(padded, -1, dtype=np.int64)
    ids[: len(rows)] = sorted_rows

    def work(w: int, j0: int, cols: int) -> None:
        kern = np.empty((md, b, b), dtype=dtype)
        dist = np.empty((b, b), dtype=dtype)
        product = np.empty((md * b, kp), dtype=dtype)
        acc = np.zeros((md, b, kp), dtype=dtype)
        for blk in shares[w]:
            r0 = blk * b
            lb, idb = left[r0 : r0 + b], ids[r0 : r0 + b]
            pending = 0
            for t0 in range(0, cols, b):
                # (b, w) x (w, b) -> (b, b) squared distances; rounding can dip below zero
                np.matmul(lb, right[t0 : t0 + b].T, out=dist)
                np.maximum(dist, 0, out=dist)
                # (b, b) -> (|δ|, b, b): one kernel per δ from the same distances
                np.multiply(dist, scales, out=kern)
                np.exp(kern, out=kern)
                if floors:
                    reach = float(dist.max())
                    first = next((q for q, lim in enumerate(floors) if reach > lim), md)
                    if first < md:
                        tail = kern[first:]
                        tail += SUBNORMAL_FLUSH
                        tail -= SUBNORMAL_FLUSH
                g0 = j0 + t0
                own = np.flatnonzero((idb >= g0) & (idb < g0 + b))
                if own.size:  # the self weight 1 is added exactly, in float64, later
                    kern[:, own, idb[own] - g0] = 0.0
                # (|δ| b, b) @ (b, kp) -> (|δ| b, kp)
                np.matmul(kern.reshape(md * b, b), rhs[t0 : t0 + b], out=product)
                acc += product.reshape(md, b, kp)
                pending += 1
                if pending == FLUSH_EVERY:
                    total[:, r0 : r0 + b] += acc
                    acc.fill(0)
                    pending = 0
            if pending:
                total[:, r0 : r0 + b] += acc
                acc.fill(0)

    with _single_threaded_blas():
        for j0 in range(0, n, chunk):
            cols = min(chunk, n - j0)
            block = scaling.apply(z[j0 : j0 + cols], dtype)  # (cols, d), streamed
            release_pages(z, j0, j0 + cols)
            right.fill(0)
            rhs.fill(0)
            right[:cols, :d] = block * -2.0
            right[:cols, d] = 1.0
            right[:cols, d + 1] = np.einsum("ij,ij->i", block, block)
            rhs[:cols, :c] = targets[j0 : j0 + cols]
            rhs[:cols, c] = 1.0  # the ones column yields the kernel row sums
            span = -(-cols // b) * b
            if workers == 1:
                work(0, j0, span)
            else:
                helpers = [
                    threading.Thread(target=work, args=(w, j0, span)) for w in range(1, workers)
                ]
                for t in helpers:
                    t.start()
                try:
                    work(0, j0, span)
                finally:
                    for t in helpers:
                        t.join()
            if on_progress is not None:
                on_progress(min(1.0, (j0 + cols) / n))

    return total[:, : len(rows), : c + 1]


def _torch_row_sums(
    z: np.ndarray,
    scaling: FeatureScaling,
    targets: np.ndarray,
    sorted_rows: np.ndarray,
    desc: list[float],
    dtype: type[np.floating[Any]],
    block_size: int | None,
    threads: int | None,
    device: str,
    on_progress: Callable[[float], None] | None,
) -> np.ndarray:
    """The same sums with torch (for CUDA): whole row blocks against a streamed column chunk."""
    import torch

    dev = torch.device(device)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    n = z.shape[0]
    md, c, m = len(desc), targets.shape[1], len(sorted_rows)
    chunk = 4 * CHUNK_ROWS
    # rows per block so that one kernel stack (|δ|, r, chunk) stays within the GPU tile budget
    r = block_size or max(1, GPU_TILE_ELEMENTS // (md * chunk))
    left = torch.from_numpy(scaling.apply(z[sorted_rows], dtype)).to(dev)  # (m, d)
    left_sq = (left * left).sum(dim=1)
    ids = torch.from_numpy(sorted_rows).to(dev)
    scales = torch.tensor([-0.5 / x for x in desc], dtype=tdtype, device=dev).view(md, 1, 1)
    total = torch.zeros(md, m, c + 1, dtype=torch.float64, device=dev)
    for j0 in range(0, n, chunk):
        cols = min(chunk, n - j0)
        right = torch.from_numpy(scaling.apply(z[j0 : j0 + cols], dtype)).to(dev)  # (cols, d)
        release_pages(z, j0, j0 + cols)
        right_sq = (right * right).sum(dim=1)
        rhs = torch.ones(cols, c + 1, dtype=tdtype, device=dev)  # [values | 1]
        rhs[:, :c] = torch.from_numpy(targets[j0 : j0 + cols]).to(dev, tdtype)
        for r0 in range(0, m, r):
            lb, idb = left[r0 : r0 + r], ids[r0 : r0 + r]
            # (r, d) x (d, cols) -> (r, cols) squared distances; rounding can dip below zero
            dist = (left_sq[r0 : r0 + r, None] + right_sq[None] - 2.0 * (lb @ right.T)).clamp_(0)
            # (r, cols) -> (|δ|, r, cols); clamped arguments keep exp off its subnormal path
            kern = (dist.unsqueeze(0) * scales).clamp_(min=EXP_FLOOR).exp_()
            own = ((idb >= j0) & (idb < j0 + cols)).nonzero().squeeze(1)
            kern[:, own, idb[own] - j0] = 0.0  # the self weight is added exactly later
            # (|δ| r, cols) @ (cols, c + 1) -> (|δ|, r, c + 1), summed in float64 per chunk
            part = (kern.view(-1, cols) @ rhs).view(md, -1, c + 1)
            total[:, r0 : r0 + r] += part.double()
        if on_progress is not None:
            on_progress(min(1.0, (j0 + cols) / n))
    return total.cpu().numpy()


def sampled_lfr(
    z: np.ndarray,
    scaling: FeatureScaling,
    targets: np.ndarray,
    deltas: Sequence[float],
    width: float,
    *,
    seed: int = 0,
    block_size: int | None = None,
    dtype: type[np.floating[Any]] = np.float32,
    threads: int | None = None,
    device: str = "cpu",
    backend: Backend | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> SampledEstimate | None:
    """Grow the row sample until every LFR half-width is at most `width`.

    None when the rows needed reach EXACT_FRACTION of n: the exact pass is then cheaper.
    """
    n = z.shape[0]
    total_power = float((targets * targets).sum())
    order = np.random.default_rng(seed).permutation(n)
    m = min(n, FIRST_ROUND_ROWS)
    if m > EXACT_FRACTION * n:
        return None
    parts: list[np.ndarray] = []
    done = 0
    shown = 0.0

    def reporter(lo: int, hi: int) -> Callable[[float], None] | None:
        """Progress of a round drawing rows lo..hi, as a share of the rows asked for so far."""
        if on_progress is None:
            return None

        def report(fraction: float) -> None:
            nonlocal shown
            shown = max(shown, min(1.0, (lo + fraction * (hi - lo)) / hi))
            on_progress(shown)

        return report

    while True:
        new = order[done:m]
        part = sample_rows(
            z,
            scaling,
            targets,
            new,
            deltas,
            block_size=block_size,
            dtype=dtype,
            threads=threads,
            device=device,
            backend=backend,
            on_progress=reporter(done, m),
        )
        parts.append(part.power)
        done = m
        sample = RowSample(rows=order[:done], power=np.concatenate(parts, axis=1))
        result = estimate(sample, n, total_power, deltas)
        if max(result.lfr_half_width) <= width or done == n:
            return result
        needed = rows_needed(sample, n, total_power, width)
        m = min(n, max(done + 1, math.ceil(GROWTH_MARGIN * needed)))
        if m > EXACT_FRACTION * n:
            return None
