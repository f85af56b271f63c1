"""Row-blocked Gaussian low-pass sums: the O(n^2) core shared by LFR and the filtering test.

For features z (n, d), values v (n, k) and bandwidths δ_1..δ_m it returns, for every δ and i,

    S_i = Σ_{j≠i} G_δ(z_i, z_j) v_j        O_i = Σ_{j≠i} G_δ(z_i, z_j)

with G_δ(a, b) = exp(-|a-b|^2 / (2δ)). The self term (weight exactly 1) is left out so callers
add it in float64: y_low = (v + S) / (1 + O) and y_high = (v O - S) / (1 + O), the latter
free of the cancellation that y - y_low suffers at small δ.

Work is arranged in tiles of the upper triangle: one distance GEMM per tile serves every δ,
the symmetric kernel is evaluated once per unordered pair, and each tile's kernel stack
(m, bi, bj) is multiplied by [v | 1] from both sides. Memory is O(m·b² + m·n·k) per worker,
never n×n. On CPU the tiles are shared out to one thread per core, each running single-threaded
torch ops: small tiles then pay no fork/join cost per op.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# exp(x) for x below about -87 yields float32 subnormals, which run 8-20x slower on CPU;
# e^-87 ≈ 1.6e-38 is already far below anything that can move a float64 sum that includes 1.
EXP_FLOOR = -87.0
# Narrow GEMMs run markedly faster with the right-hand side padded to a multiple of 16.
COLUMN_MULTIPLE = 16
# Default tile: keep one worker's kernel stack (m, b, b) of float32 within a few MiB of cache.
TILE_ELEMENTS = 2**21


@dataclass(frozen=True)
class LowpassSums:
    """Off-diagonal kernel sums in float64: `values` (m, n, k) and `weights` (m, n)."""

    values: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class _Operands:
    """Everything a tile needs, prepared once per call."""

    z: torch.Tensor  # (n, d) centred features, compute dtype
    sq: torch.Tensor  # (n,) squared norms
    rhs: torch.Tensor  # (n, kp) [values | 1 | 0-padding]
    scales: torch.Tensor  # (m, 1, 1) -1 / (2δ)
    block: int


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
    threads: int | None = None,
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
    zc = z.to(dtype) - z.mean(dim=0, dtype=torch.float64).to(dtype)
    kp = -(-(k + 1) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    rhs = torch.zeros(n, kp, dtype=dtype, device=device)
    rhs[:, :k] = values.to(dtype)
    rhs[:, k] = 1.0  # the ones column yields the kernel row sums
    ops = _Operands(
        z=zc,
        sq=(zc * zc).sum(dim=1),
        rhs=rhs,
        scales=torch.tensor([-0.5 / d for d in deltas], dtype=dtype, device=device).view(m, 1, 1),
        block=b,
    )

    tiles = [(i0, j0) for i0 in range(0, n, b) for j0 in range(i0, n, b)]
    workers = _worker_count(device, len(tiles), threads)
    # A fixed tile-to-worker assignment and a fixed order of the final sum keep the result
    # bit-for-bit deterministic whatever the threads' timing.
    shares = [tiles[w::workers] for w in range(workers)]
    accs = [torch.zeros(m, n, kp, dtype=torch.float64, device=device) for _ in range(workers)]
    done = [0] * workers

    def work(w: int) -> None:
        kern = torch.empty(m, b, b, dtype=dtype, device=device)
        for i0, j0 in shares[w]:
            _accumulate_tile(accs[w], kern, ops, i0, j0)
            done[w] += 1
            if w == 0 and on_progress is not None:
                # Only the calling thread reports, so callbacks never run concurrently.
                on_progress(min(1.0, sum(done) / len(tiles)))

    if workers == 1:
        work(0)
    else:
        with _single_threaded_ops():
            helpers = [threading.Thread(target=work, args=(w,)) for w in range(1, workers)]
            for t in helpers:
                t.start()
            try:
                work(0)
            finally:
                for t in helpers:
                    t.join()
        if sum(done) != len(tiles):
            raise RuntimeError("a low-pass worker thread failed")
        if on_progress is not None:
            on_progress(1.0)
    acc = accs[0]
    for extra in accs[1:]:
        acc += extra
    return LowpassSums(values=acc[:, :, :k], weights=acc[:, :, k])


def _accumulate_tile(
    acc: torch.Tensor, kern: torch.Tensor, ops: _Operands, i0: int, j0: int
) -> None:
    """Add tile (i0, j0)'s kernel sums into acc (m, n, kp), for rows i and, mirrored, rows j."""
    n, b = ops.z.shape[0], ops.block
    i1, j1 = min(i0 + b, n), min(j0 + b, n)
    zi, sqi, ri = ops.z[i0:i1], ops.sq[i0:i1], ops.rhs[i0:i1]
    # (bi, d) x (d, bj) -> (bi, bj) squared distances
    dist = torch.addmm(sqi[:, None] + ops.sq[None, j0:j1], zi, ops.z[j0:j1].T, alpha=-2.0)
    dist.clamp_min_(0.0)
    tile = kern[:, : i1 - i0, : j1 - j0]
    # (bi, bj) -> (m, bi, bj): one kernel per δ from the same distances
    torch.mul(dist.unsqueeze(0), ops.scales, out=tile)
    tile.clamp_(min=EXP_FLOOR).exp_()
    if i0 == j0:
        tile.diagonal(dim1=1, dim2=2).zero_()
    # rows i gather columns j: (m, bi, bj) @ (bj, kp) -> (m, bi, kp)
    acc[:, i0:i1] += torch.matmul(tile, ops.rhs[j0:j1])
    if j0 != i0:
        # the mirrored tile: (kp, bi) @ (m, bi, bj) -> (m, kp, bj), added as (m, bj, kp)
        acc[:, j0:j1] += torch.matmul(ri.T, tile).transpose(1, 2)


def _worker_count(device: torch.device, n_tiles: int, threads: int | None) -> int:
    if device.type != "cpu":
        return 1
    wanted = threads if threads is not None else torch.get_num_threads()
    return max(1, min(wanted, n_tiles))


_op_threads_lock = threading.Lock()


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """Run torch ops single-threaded while our own threads split the tiles."""
    with _op_threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
