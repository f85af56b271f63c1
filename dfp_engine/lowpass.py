"""Row-blocked Gaussian low-pass sums: the O(n^2) core shared by LFR and the filtering test.

For features z (n, d), values v (n, k) and bandwidths δ_1..δ_m it returns, for every δ and i,

    S_i = Σ_{j≠i} G_δ(z_i, z_j) v_j        O_i = Σ_{j≠i} G_δ(z_i, z_j)

with G_δ(a, b) = exp(-|a-b|^2 / (2δ)). The self term (weight exactly 1) is left out so callers
add it in float64: y_low = (v + S) / (1 + O) and y_high = (v O - S) / (1 + O), the latter
free of the cancellation that y - y_low suffers at small δ.

Work is arranged in tiles of the upper triangle: one distance GEMM per tile serves every δ,
the symmetric kernel is evaluated once per unordered pair, and each tile's kernel stack
(m, bi, bj) is multiplied by [v | 1] from both sides. Memory is O(m·b² + m·n·k), never n×n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# exp(x) for x below about -87 yields float32 subnormals, which run 8-20x slower on CPU;
# e^-87 ≈ 1.6e-38 is already far below anything that can move a float64 sum that includes 1.
EXP_FLOOR = -87.0
# Narrow GEMMs run markedly faster with the right-hand side padded to a multiple of 16.
COLUMN_MULTIPLE = 16
# Default tile: keep the kernel stack (m, b, b) of float32 within a few MiB of cache.
TILE_ELEMENTS = 2**21


@dataclass(frozen=True)
class LowpassSums:
    """Off-diagonal kernel sums in float64: `values` (m, n, k) and `weights` (m, n)."""

    values: torch.Tensor
    weights: torch.Tensor


def default_block_size(n: int, m: int) -> int:
    """Rows per tile so that m float32 kernels of b x b stay near TILE_ELEMENTS."""
    b = int((TILE_ELEMENTS / max(m, 1)) ** 0.5)
    b = max(64, min(1024, b - b % 32))
    return min(b, n)


def lowpass_sums(
    z: torch.Tensor,
    values: torch.Tensor,
    deltas: Sequence[float],
    *,
    block_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    on_progress: Callable[[float], None] | None = None,
) -> LowpassSums:
    """Off-diagonal Gaussian kernel sums of `values` for every δ (see module docstring)."""
    n, _ = z.shape
    m, k = len(deltas), values.shape[1]
    device = z.device
    b = block_size or default_block_size(n, m)
    if b < 1:
        raise ValueError(f"block_size must be positive, got {b}")

    # Centering leaves distances unchanged and shrinks |a|^2 + |b|^2 - 2ab cancellation.
    zc = (z.to(torch.float64) - z.to(torch.float64).mean(dim=0)).to(dtype)
    sq = (zc * zc).sum(dim=1)  # (n,)

    kp = -(-(k + 1) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    rhs = torch.zeros(n, kp, dtype=dtype, device=device)
    rhs[:, :k] = values.to(dtype)
    rhs[:, k] = 1.0  # the ones column yields the kernel row sums
    scales = torch.tensor([-0.5 / d for d in deltas], dtype=dtype, device=device).view(m, 1, 1)

    acc = torch.zeros(m, n, kp, dtype=torch.float64, device=device)
    kern = torch.empty(m, b, b, dtype=dtype, device=device)
    n_blocks = -(-n // b)
    total_tiles, done = n_blocks * (n_blocks + 1) // 2, 0
    for i0 in range(0, n, b):
        i1 = min(i0 + b, n)
        zi, sqi, ri = zc[i0:i1], sq[i0:i1], rhs[i0:i1]
        for j0 in range(i0, n, b):
            j1 = min(j0 + b, n)
            bi, bj = i1 - i0, j1 - j0
            # (bi, d) x (d, bj) -> (bi, bj) squared distances
            dist = torch.addmm(sqi[:, None] + sq[None, j0:j1], zi, zc[j0:j1].T, alpha=-2.0)
            dist.clamp_min_(0.0)
            tile = kern[:, :bi, :bj] if (bi, bj) != (b, b) else kern
            # (bi, bj) -> (m, bi, bj): one kernel per δ from the same distances
            torch.mul(dist.unsqueeze(0), scales, out=tile)
            tile.clamp_(min=EXP_FLOOR).exp_()
            if i0 == j0:
                tile.diagonal(dim1=1, dim2=2).zero_()
            # rows i gather columns j: (m, bi, bj) @ (bj, kp) -> (m, bi, kp)
            acc[:, i0:i1] += torch.matmul(tile, rhs[j0:j1]).to(torch.float64)
            if j0 != i0:
                # the mirrored tile: (m, bj, bi) @ (bi, kp) -> (m, bj, kp)
                acc[:, j0:j1] += torch.matmul(tile.transpose(1, 2), ri).to(torch.float64)
            done += 1
            if on_progress is not None:
                on_progress(done / total_tiles)
    return LowpassSums(values=acc[:, :, :k], weights=acc[:, :, k])
