"""Row-blocked Gaussian low-pass sums: the O(n^2) core shared by LFR and the filtering test.

For features z (n, d), values v (n, k) and bandwidths δ_1..δ_m it returns, for every δ and i,

    S_i = Σ_{j≠i} G_δ(z_i, z_j) v_j        O_i = Σ_{j≠i} G_δ(z_i, z_j)

with G_δ(a, b) = exp(-|a-b|^2 / (2δ)). The self term (weight exactly 1) is left out so callers
add it in float64: y_low = (v + S) / (1 + O) and y_high = (v O - S) / (1 + O), the latter
free of the cancellation that y - y_low suffers at small δ.

Work is arranged in b x b tiles of the upper triangle, grouped in row strips. One distance GEMM
per tile serves every δ, the symmetric kernel is evaluated once per unordered pair, and each
tile's kernel stack is multiplied by [v | 1] from both sides with the accumulation fused into
the GEMM. Products are summed in float32 over at most FLUSH_EVERY tiles (a 1 024-column block
for b = 128) and then added into float64. Memory is O(m·n·k) per worker, never n x n.

On CPU the strips are shared out to one thread per core, each running single-threaded torch
ops: small tiles then pay no fork/join cost per op, and each core keeps its tile in its own L2.
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
# Default tile: one worker's kernel stack (b, m, b) of float32 should stay in its core's L2
# (about 1.3 MiB here: b = 128 for 20 bandwidths); larger tiles spill to the shared L3, where two
# workers slow each other down.
TILE_ELEMENTS = 20 * 128 * 128
# On a GPU, tiles are sized for occupancy instead: this many kernel elements per tile.
GPU_TILE_ELEMENTS = 20 * 2048 * 2048
# Tile products summed in float32 before they are added into the float64 totals.
FLUSH_EVERY = 8


@dataclass(frozen=True)
class LowpassSums:
    """Off-diagonal kernel sums in float64: `values` (m, n, k) and `weights` (m, n)."""

    values: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class _Operands:
    """Everything a tile needs, prepared once per call; rows are zero-padded to whole blocks."""

    left: torch.Tensor  # (N, w) [z | |z|^2 | 1 | 0…] of the centred features, N = n_blocks * b
    right: torch.Tensor  # (N, w) [-2z | 1 | |z|^2 | 0…]: left_i . right_j = |z_i - z_j|^2
    rhs: torch.Tensor  # (N, kp) [values | 1 | 0-padding]; all-zero on padding rows
    scales: torch.Tensor  # (1, m, 1) -1 / (2δ), δ descending
    # Per δ, the squared distance beyond which exp(-D / (2δ)) would fall below EXP_FLOOR.
    floor_distances: list[float]
    block: int


class _Accumulator:
    """One worker's running sums: float32 for a few tiles, then float64.

    `rows` (N, m, kp) collects tile (i, j) @ rhs_j for the strip's own rows; `cols`
    (n_blocks, kp, m, b) collects rhs_i^T @ tile for the mirrored rows j, laid out so that
    both products are plain 2-D GEMMs that accumulate in place.
    """

    def __init__(self, n_blocks: int, b: int, m: int, kp: int, ops: _Operands) -> None:
        dev, dtype = ops.rhs.device, ops.rhs.dtype
        self.b, self.m, self.kp = b, m, kp
        self.total = torch.zeros(n_blocks * b, m, kp, dtype=torch.float64, device=dev)
        self.rows = torch.zeros(b * m, kp, dtype=dtype, device=dev)
        self.cols = torch.zeros(n_blocks, kp, m * b, dtype=dtype, device=dev)
        self.rows_pending = 0
        self.cols_pending = 0

    def flush_rows(self, i0: int) -> None:
        if self.rows_pending:
            self.total[i0 : i0 + self.b] += self.rows.view(self.b, self.m, self.kp)
            self.rows.zero_()
            self.rows_pending = 0

    def flush_cols(self) -> None:
        if self.cols_pending:
            # (blocks, kp, m, b) -> (blocks, b, m, kp), the layout of `total`
            cols = self.cols.view(-1, self.kp, self.m, self.b).permute(0, 3, 2, 1)
            self.total.view(-1, self.b, self.m, self.kp).add_(cols)
            self.cols.zero_()
            self.cols_pending = 0


def default_block_size(n: int, m: int, device: torch.device | None = None) -> int:
    """Rows per tile so that m float32 kernels of b x b stay near the device's tile budget."""
    on_gpu = device is not None and device.type != "cpu"
    budget, largest = (GPU_TILE_ELEMENTS, 8192) if on_gpu else (TILE_ELEMENTS, 1024)
    b = int((budget / max(m, 1)) ** 0.5)
    b = max(64, min(largest, b - b % 16))
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
    n, d = z.shape
    m, k = len(deltas), values.shape[1]
    device = z.device
    b = block_size or default_block_size(n, m, device)
    if b < 1:
        raise ValueError(f"block_size must be positive, got {b}")
    n_blocks = -(-n // b)
    padded = n_blocks * b

    # Centering leaves distances unchanged and shrinks |a|^2 + |b|^2 - 2ab cancellation.
    # Two extra columns let one GEMM per tile yield squared distances directly.
    width = -(-(d + 2) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE  # aligned rows keep the GEMM fast
    left = torch.zeros(padded, width, dtype=dtype, device=device)
    left[:n, :d] = z.to(dtype) - z.mean(dim=0, dtype=torch.float64).to(dtype)
    sq = (left[:, :d] * left[:, :d]).sum(dim=1)
    left[:, d], left[:, d + 1] = sq, 1.0
    right = torch.zeros_like(left)
    right[:, :d] = -2.0 * left[:, :d]
    right[:, d], right[:, d + 1] = 1.0, sq
    kp = -(-(k + 1) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    rhs = torch.zeros(padded, kp, dtype=dtype, device=device)
    rhs[:n, :k] = values.to(dtype)
    rhs[:n, k] = 1.0  # the ones column yields the kernel row sums; padding rows add nothing
    # Work with δ descending, so the bandwidths that need the exp floor form a suffix.
    order = sorted(range(m), key=lambda i: -deltas[i])
    deltas = [deltas[i] for i in order]
    ops = _Operands(
        left=left,
        right=right,
        rhs=rhs,
        scales=torch.tensor([-0.5 / x for x in deltas], dtype=dtype, device=device).view(1, m, 1),
        floor_distances=[-2.0 * x * EXP_FLOOR for x in deltas],
        block=b,
    )

    workers = _worker_count(device, n_blocks, threads)
    shares = _balanced_strips(n_blocks, workers)
    accs: list[_Accumulator | None] = [None] * workers
    total_tiles = n_blocks * (n_blocks + 1) // 2
    done = [0] * workers

    def work(w: int) -> None:
        acc = _Accumulator(n_blocks, b, m, kp, ops)
        kern = torch.empty(b, m, b, dtype=dtype, device=device)
        for count, strip in enumerate(shares[w], start=1):
            i0 = strip * b
            for j0 in range(i0, padded, b):
                _accumulate_tile(acc, kern, ops, i0, j0)
                done[w] += 1
                if acc.rows_pending == FLUSH_EVERY:
                    acc.flush_rows(i0)
                if w == 0 and on_progress is not None:
                    # Only the calling thread reports, so callbacks never run concurrently.
                    on_progress(min(1.0, sum(done) / total_tiles))
            acc.flush_rows(i0)
            if count % FLUSH_EVERY == 0:
                acc.flush_cols()
        acc.flush_cols()
        accs[w] = acc

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
    if any(a is None for a in accs):
        raise RuntimeError("a low-pass worker thread failed")
    if on_progress is not None:
        on_progress(1.0)
    # A fixed strip-to-worker assignment and a fixed order of this sum keep the result
    # bit-for-bit deterministic whatever the threads' timing.
    total = accs[0].total if accs[0] is not None else None
    assert total is not None
    for extra in accs[1:]:
        assert extra is not None
        total += extra.total
    back = torch.tensor(order, device=device).argsort()
    sums = total[:n].permute(1, 0, 2)[back]  # (n, m, kp) -> (m, n, kp) in the caller's δ order
    return LowpassSums(values=sums[:, :, :k], weights=sums[:, :, k])


def _accumulate_tile(
    acc: _Accumulator, kern: torch.Tensor, ops: _Operands, i0: int, j0: int
) -> None:
    """Add tile (i0, j0)'s kernel sums: rows i into acc.rows and, mirrored, rows j into acc.cols."""
    b, m = ops.block, ops.scales.shape[1]
    # (b, w) x (w, b) -> (b, b) squared distances; rounding can dip below zero
    dist = torch.mm(ops.left[i0 : i0 + b], ops.right[j0 : j0 + b].T).clamp_min_(0.0)
    # (b, b) -> (b, m, b): one kernel per δ from the same distances, row i outermost
    torch.mul(dist.unsqueeze(1), ops.scales, out=kern)
    if dist.device.type == "cpu":
        # Only the bandwidths small enough to reach the floor in this tile need the clamp.
        # (On a GPU reading the maximum back would stall the queue; the clamp is cheap there.)
        reach = float(dist.max())
        first = next((q for q, limit in enumerate(ops.floor_distances) if reach > limit), m)
    else:
        first = 0
    if first < m:
        kern[:, first:].clamp_(min=EXP_FLOOR)
    kern.exp_()
    if i0 == j0:
        kern.diagonal(dim1=0, dim2=2).zero_()
    # rows i gather columns j: (b * m, b) @ (b, kp) -> (b * m, kp), accumulated in place
    acc.rows.addmm_(kern.view(b * m, b), ops.rhs[j0 : j0 + b])
    acc.rows_pending += 1
    if j0 != i0:
        # the mirrored tile: (kp, b) @ (b, m * b) -> (kp, m * b) for rows j
        acc.cols[j0 // b].addmm_(ops.rhs[i0 : i0 + b].T, kern.view(b, m * b))
        acc.cols_pending += 1


def _balanced_strips(n_blocks: int, workers: int) -> list[list[int]]:
    """Strips for each worker, longest first to the least loaded: even and deterministic."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for strip in range(n_blocks):  # strip s holds n_blocks - s tiles
        w = min(range(workers), key=lambda i: (load[i], i))
        shares[w].append(strip)
        load[w] += n_blocks - strip
    return shares


def _worker_count(device: torch.device, n_strips: int, threads: int | None) -> int:
    if device.type != "cpu":
        return 1
    wanted = threads if threads is not None else torch.get_num_threads()
    return max(1, min(wanted, n_strips))


_op_threads_lock = threading.Lock()


@contextmanager
def _single_threaded_ops() -> Iterator[None]:
    """Run torch ops single-threaded while our own threads split the strips."""
    with _op_threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
