"""Row-blocked Gaussian low-pass sums: the O(n^2) core shared by LFR and the filtering test.

For features z (n, d), values v (n, k) and bandwidths δ_1..δ_m it returns, for every δ and i,

    S_i = Σ_{j≠i} G_δ(z_i, z_j) v_j        O_i = Σ_{j≠i} G_δ(z_i, z_j)

with G_δ(a, b) = exp(-|a-b|^2 / (2δ)). The self term (weight exactly 1) is left out so callers
add it in float64: y_low = (v + S) / (1 + O) and y_high = (v O - S) / (1 + O), the latter
free of the cancellation that y - y_low suffers at small δ.

Work is arranged in b x b tiles of the upper triangle, grouped in row strips. One GEMM per tile
gives the squared distances for every δ, the symmetric kernel is evaluated once per unordered
pair, and each tile's kernel stack is multiplied by [v | 1] from both sides. Products are summed
in float32 over at most FLUSH_EVERY tiles (a 1 024-column block for b = 128) and then added into
float64. Memory is O(n (d + m k)) per worker, never n x n.

Two backends run the tiles: numpy on the CPU (no torch import; its exp is fast and has no
slow path for tiny results) and torch on CUDA (also usable on the CPU). On the CPU the strips
are shared out to one thread per core, each with single-threaded BLAS: small tiles then pay no
fork/join cost per operation, and each core keeps its tile in its own L2.

Features given as an `np.memmap` are streamed instead of copied: the prepared rows are built
block by block from the file, strips are processed in groups whose left rows fit a memory
budget, so each column block is read once per group, and the pages read are released as the
pass moves on, so resident memory stays at the group, one block and the sums.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from dfp_engine.streaming import column_means, release_pages

if TYPE_CHECKING:
    import torch

Backend = Literal["numpy", "torch"]

# exp(x) for x below about -87 gives float32 subnormals; some CPUs multiply those 10-100x
# slower, so tiles that reach them flush them to 0 (an absolute change below 5e-38, far
# beneath anything that can move a sum that includes the self weight 1).
EXP_FLOOR = -87.0
SUBNORMAL_FLUSH = np.float32(2.0**-100)
# Narrow GEMMs run markedly faster with the right-hand side padded to a multiple of 16.
COLUMN_MULTIPLE = 16
# Default tile: one worker's kernel stack (m, b, b) of float32 should stay in its core's L2
# (about 1.3 MiB here: b = 128 for 20 bandwidths); larger tiles spill to the shared L3, where two
# workers slow each other down.
TILE_ELEMENTS = 20 * 128 * 128
# On a GPU, tiles are sized for occupancy instead: this many kernel elements per tile.
GPU_TILE_ELEMENTS = 20 * 2048 * 2048
# Tile products summed in float32 before they are added into the float64 totals.
FLUSH_EVERY = 8
# Streamed features: bytes of prepared left rows held by all workers together, by default.
STREAM_MEMORY = 256 * 2**20


@dataclass(frozen=True)
class LowpassSums:
    """Off-diagonal kernel sums in float64: `values` (m, n, k) and `weights` (m, n)."""

    values: np.ndarray
    weights: np.ndarray


class _Rows(Protocol):
    """Prepared right-hand rows [-2 z_j | 1 | |z_j|^2 | 0…] of the centred features, by block."""

    @property
    def width(self) -> int: ...

    def block(self, j0: int, b: int) -> np.ndarray: ...  # (b, width)


@dataclass(frozen=True)
class _PreparedRows:
    """Every prepared row in memory: (N, w), padding rows zero."""

    array: np.ndarray

    @property
    def width(self) -> int:
        return int(self.array.shape[1])

    def block(self, j0: int, b: int) -> np.ndarray:
        return self.array[j0 : j0 + b]


@dataclass(frozen=True)
class _StreamedRows:
    """Prepared rows built on demand from a memory-mapped z (n, d): z' = (z - mean) * scale."""

    z: np.memmap
    mean: np.ndarray  # (d,) float64, of z before scaling
    scale: np.ndarray  # (d,) float64
    columns: int  # w
    dtype: type[np.floating[Any]]

    @property
    def width(self) -> int:
        return self.columns

    def block(self, j0: int, b: int) -> np.ndarray:
        n, d = self.z.shape
        out = np.zeros((b, self.width), dtype=self.dtype)
        stop = min(j0 + b, n)
        if stop > j0:
            rows = out[: stop - j0]
            # (rows, d) read from the file straight into the tile's dtype: no float64 copy
            np.subtract(self.z[j0:stop], self.mean, out=rows[:, :d], casting="same_kind")
            release_pages(self.z, j0, stop)
            rows[:, :d] *= self.scale
            _fill_prepared(rows, rows[:, :d], d)
        return out


def _fill_prepared(out: np.ndarray, centred: np.ndarray, d: int) -> None:
    """out (r, w) := [-2 z | 1 | |z|^2 | 0…] for centred rows z (r, d), in out's dtype."""
    out[:, :d] = centred
    sq = np.einsum("ij,ij->i", out[:, :d], out[:, :d])
    out[:, :d] *= -2.0
    out[:, d], out[:, d + 1] = 1.0, sq


@dataclass(frozen=True)
class _Operands:
    """Everything a tile needs, prepared once per call; rows are zero-padded to whole blocks.

    With right_j = [-2 z_j | 1 | |z_j|^2 | 0…] and left_i = [z_i | |z_i|^2 | 1 | 0…], one GEMM
    left_i . right_j gives |z_i - z_j|^2. Only `right` is kept; left comes from it per strip.
    """

    right: _Rows  # (N, w) for the centred features, N = n_blocks * b
    dim: int  # d, the features' own width inside w
    rhs: np.ndarray  # (N, kp) [values | 1 | 0…]; all-zero on padding rows
    deltas: list[float]  # descending
    block: int

    @property
    def m(self) -> int:
        return len(self.deltas)

    @property
    def kp(self) -> int:
        return int(self.rhs.shape[1])

    @property
    def padded(self) -> int:
        return int(self.rhs.shape[0])

    def floor_distances(self) -> list[float]:
        """Per δ, the squared distance beyond which exp(-D / (2δ)) falls below EXP_FLOOR."""
        return [-2.0 * x * EXP_FLOOR for x in self.deltas]

    def right_block(self, j0: int) -> np.ndarray:
        """Prepared rows j0 … j0 + b: (b, w)."""
        return self.right.block(j0, self.block)

    def left(self, i0: int) -> np.ndarray:
        """[z_i | |z_i|^2 | 1 | 0…] for the strip starting at row i0: (b, w)."""
        return left_rows(self.right_block(i0), self.dim)


def left_rows(right: np.ndarray, d: int) -> np.ndarray:
    """Left GEMM operand [z | |z|^2 | 1 | 0…] from prepared right rows: (r, w)."""
    left = np.zeros_like(right)
    left[:, :d] = right[:, :d] * -0.5
    left[:, d] = right[:, d + 1]
    left[:, d + 1] = 1.0
    return left


class _TileWorker(Protocol):
    """One thread's (or one device's) share of the tiles and its running sums."""

    rows_pending: int

    def start_strip(self, i0: int) -> None: ...
    def tile(self, i0: int, j0: int) -> None: ...
    def flush_rows(self, i0: int) -> None: ...
    def flush_cols(self) -> None: ...
    def totals(self) -> np.ndarray: ...  # (m, N, kp) float64


class _NumpyWorker:
    """Tiles with numpy: kernel stack (m, b, b), sums (m, N, kp)."""

    def __init__(self, ops: _Operands) -> None:
        m, b, kp, dtype = ops.m, ops.block, ops.kp, ops.rhs.dtype
        self.ops = ops
        self.floors = ops.floor_distances() if dtype == np.float32 else []
        self.scales = np.array([-0.5 / x for x in ops.deltas], dtype=dtype).reshape(m, 1, 1)
        self.total = np.zeros((m, ops.padded, kp), dtype=np.float64)
        self.cols = np.zeros((m, ops.padded, kp), dtype=dtype)
        self.rows = np.zeros((m, b, kp), dtype=dtype)
        self.kern = np.empty((m, b, b), dtype=dtype)
        self.dist = np.empty((b, b), dtype=dtype)
        self.row_product = np.empty((m * b, kp), dtype=dtype)
        self.col_product = np.empty((m, b, kp), dtype=dtype)
        self.left = np.empty(0, dtype=dtype)
        self.rows_pending = self.cols_pending = 0

    def start_strip(self, i0: int) -> None:
        self.left = self.ops.left(i0)

    def tile(self, i0: int, j0: int) -> None:
        ops = self.ops
        m, b = ops.m, ops.block
        kern = self._kernels(self.left, ops.right_block(j0), i0 == j0)
        # rows i gather columns j: (m * b, b) @ (b, kp) -> (m * b, kp)
        np.matmul(kern.reshape(m * b, b), ops.rhs[j0 : j0 + b], out=self.row_product)
        self.rows += self.row_product.reshape(m, b, -1)
        self.rows_pending += 1
        if j0 != i0:
            # the mirrored tile: (m, b, b)^T @ (b, kp) -> (m, b, kp) for rows j
            np.matmul(kern.transpose(0, 2, 1), ops.rhs[i0 : i0 + b], out=self.col_product)
            self.cols[:, j0 : j0 + b] += self.col_product
            self.cols_pending += 1

    def streamed_tile(self, left: np.ndarray, right: np.ndarray, i0: int, j0: int) -> None:
        """One tile from given operands, its products added straight into the float64 sums.

        Used when features stream from a file: tiles then come in group order, and at the
        widths that make streaming worthwhile a tile's GEMM dwarfs the float64 additions.
        """
        ops = self.ops
        m, b = ops.m, ops.block
        kern = self._kernels(left, right, i0 == j0)
        np.matmul(kern.reshape(m * b, b), ops.rhs[j0 : j0 + b], out=self.row_product)
        self.total[:, i0 : i0 + b] += self.row_product.reshape(m, b, -1)
        if j0 != i0:
            np.matmul(kern.transpose(0, 2, 1), ops.rhs[i0 : i0 + b], out=self.col_product)
            self.total[:, j0 : j0 + b] += self.col_product

    def _kernels(self, left: np.ndarray, right: np.ndarray, diagonal: bool) -> np.ndarray:
        """(m, b, b) Gaussian kernels between left rows i and right rows j, one per δ."""
        kern, dist = self.kern, self.dist
        m, b = self.ops.m, self.ops.block
        # (b, w) x (w, b) -> (b, b) squared distances; rounding can dip below zero
        np.matmul(left, right.T, out=dist)
        np.maximum(dist, 0, out=dist)
        # (b, b) -> (m, b, b): one kernel per δ from the same distances
        np.multiply(dist, self.scales, out=kern)
        np.exp(kern, out=kern)
        first = _first_floored(self.floors, dist) if self.floors else m
        if first < m:
            tail = kern[first:]
            tail += SUBNORMAL_FLUSH
            tail -= SUBNORMAL_FLUSH
        if diagonal:
            kern.reshape(m, b * b)[:, :: b + 1] = 0.0
        return kern

    def flush_rows(self, i0: int) -> None:
        if self.rows_pending:
            self.total[:, i0 : i0 + self.ops.block] += self.rows
            self.rows.fill(0)
            self.rows_pending = 0

    def flush_cols(self) -> None:
        if self.cols_pending:
            self.total += self.cols
            self.cols.fill(0)
            self.cols_pending = 0

    def totals(self) -> np.ndarray:
        return self.total


class _TorchWorker:
    """Tiles with torch, for CUDA: kernel stack (b, m, b) so both products are 2-D GEMMs that
    accumulate in place; sums (N, m, kp)."""

    def __init__(self, ops: _Operands, device: torch.device) -> None:
        import torch

        m, b, kp = ops.m, ops.block, ops.kp
        dtype = torch.float32 if ops.rhs.dtype == np.float32 else torch.float64
        self.ops, self.device = ops, device
        if not isinstance(ops.right, _PreparedRows):
            raise ValueError("features streamed from a file run on the numpy backend only")
        self.right = torch.from_numpy(ops.right.array).to(device)
        self.rhs = torch.from_numpy(ops.rhs).to(device)
        self.scales = torch.tensor([-0.5 / x for x in ops.deltas], dtype=dtype, device=device)
        self.scales = self.scales.view(1, m, 1)
        self.total = torch.zeros(ops.padded, m, kp, dtype=torch.float64, device=device)
        self.rows = torch.zeros(b * m, kp, dtype=dtype, device=device)
        self.cols = torch.zeros(ops.padded // b, kp, m * b, dtype=dtype, device=device)
        self.kern = torch.empty(b, m, b, dtype=dtype, device=device)
        self.left = torch.empty(0, dtype=dtype, device=device)
        self.rows_pending = self.cols_pending = 0

    def start_strip(self, i0: int) -> None:
        import torch

        self.left = torch.from_numpy(self.ops.left(i0)).to(self.device)

    def tile(self, i0: int, j0: int) -> None:
        import torch

        ops, kern = self.ops, self.kern
        m, b = ops.m, ops.block
        # (b, w) x (w, b) -> (b, b) squared distances; rounding can dip below zero
        dist = (self.left @ self.right[j0 : j0 + b].T).clamp_min_(0.0)
        # (b, b) -> (b, m, b): one kernel per δ from the same distances, row i outermost
        torch.mul(dist.unsqueeze(1), self.scales, out=kern)
        # torch's CPU exp is 8-20x slower where results are subnormal: clamp the arguments
        kern.clamp_(min=EXP_FLOOR).exp_()
        if i0 == j0:
            kern.diagonal(dim1=0, dim2=2).zero_()
        # rows i gather columns j: (b * m, b) @ (b, kp) -> (b * m, kp), accumulated in place
        self.rows.addmm_(kern.view(b * m, b), self.rhs[j0 : j0 + b])
        self.rows_pending += 1
        if j0 != i0:
            # the mirrored tile: (kp, b) @ (b, m * b) -> (kp, m * b) for rows j
            self.cols[j0 // b].addmm_(self.rhs[i0 : i0 + b].T, kern.view(b, m * b))
            self.cols_pending += 1

    def flush_rows(self, i0: int) -> None:
        if self.rows_pending:
            b, m, kp = self.ops.block, self.ops.m, self.ops.kp
            self.total[i0 : i0 + b] += self.rows.view(b, m, kp)
            self.rows.zero_()
            self.rows_pending = 0

    def flush_cols(self) -> None:
        if self.cols_pending:
            b, m, kp = self.ops.block, self.ops.m, self.ops.kp
            # (blocks, kp, m, b) -> (blocks, b, m, kp), the layout of `total`
            cols = self.cols.view(-1, kp, m, b).permute(0, 3, 2, 1)
            self.total.view(-1, b, m, kp).add_(cols)
            self.cols.zero_()
            self.cols_pending = 0

    def totals(self) -> np.ndarray:
        return np.ascontiguousarray(self.total.permute(1, 0, 2).cpu().numpy())


def default_block_size(n: int, m: int, device: str = "cpu") -> int:
    """Rows per tile so that m float32 kernels of b x b stay near the device's tile budget."""
    on_gpu = not str(device).startswith("cpu")
    budget, largest = (GPU_TILE_ELEMENTS, 8192) if on_gpu else (TILE_ELEMENTS, 1024)
    b = int((budget / max(m, 1)) ** 0.5)
    b = max(64, min(largest, b - b % 16))
    return min(b, n)


def lowpass_sums(
    z: np.ndarray,
    values: np.ndarray,
    deltas: Sequence[float],
    *,
    block_size: int | None = None,
    dtype: type[np.floating[Any]] = np.float32,
    threads: int | None = None,
    device: str = "cpu",
    backend: Backend | None = None,
    scale: np.ndarray | None = None,
    stream_memory: int | None = None,
    strips: range | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> LowpassSums:
    """Off-diagonal Gaussian kernel sums of `values` for every δ (see module docstring).

    With `strips` (a range of row-strip indices, strips of `block_size` rows) only those strips'
    tiles are visited: partial sums, which added over a partition of all strips give the whole
    (dfp_engine.fanout).

    The features filtered are z * scale (`scale`: one multiplier per column, default 1).
    An `np.memmap` z is streamed from its file, never copied whole; `stream_memory` caps the
    bytes of prepared rows its workers hold (default STREAM_MEMORY).
    `backend` defaults to numpy on the CPU and torch elsewhere; `threads` (CPU) to one per core.
    """
    n, d = z.shape
    m, k = len(deltas), values.shape[1]
    backend = backend or ("numpy" if str(device) == "cpu" else "torch")
    if backend == "numpy" and str(device) != "cpu":
        raise ValueError("the numpy backend runs on the CPU only")
    streamed = isinstance(z, np.memmap)
    if isinstance(z, np.memmap) and backend != "numpy":
        raise ValueError("features streamed from a memory-mapped file run on the CPU (numpy)")
    b = block_size or default_block_size(n, m, device)
    if b < 1:
        raise ValueError(f"block_size must be positive, got {b}")
    n_blocks = -(-n // b)
    padded = n_blocks * b
    chosen = range(n_blocks) if strips is None else strips
    if chosen.step != 1 or not 0 <= chosen.start <= chosen.stop <= n_blocks:
        raise ValueError(f"strips must be a contiguous range within 0 … {n_blocks}, got {strips}")

    # Work with δ descending, so the bandwidths that reach the exp floor form a suffix.
    order = sorted(range(m), key=lambda i: -deltas[i])
    # Centering leaves distances unchanged and shrinks |a|^2 + |b|^2 - 2ab cancellation.
    width = -(-(d + 2) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE  # aligned rows keep the GEMM fast
    factors = np.ones(d) if scale is None else np.asarray(scale, dtype=np.float64).reshape(d)
    right: _Rows
    if isinstance(z, np.memmap):
        right = _StreamedRows(z, column_means(z), factors, width, dtype)
    else:
        prepared = np.zeros((padded, width), dtype=dtype)
        np.subtract(z, z.mean(axis=0, dtype=np.float64), out=prepared[:n, :d], casting="same_kind")
        if scale is not None:
            prepared[:n, :d] *= factors.astype(dtype)
        _fill_prepared(prepared, prepared[:, :d], d)
        right = _PreparedRows(prepared)
    kp = -(-(k + 1) // COLUMN_MULTIPLE) * COLUMN_MULTIPLE
    rhs = np.zeros((padded, kp), dtype=dtype)
    rhs[:n, :k] = values
    rhs[:n, k] = 1.0  # the ones column yields the kernel row sums; padding rows add nothing
    ops = _Operands(right, d, rhs, [deltas[i] for i in order], b)

    make_worker: Callable[[], _TileWorker]
    if backend == "numpy":
        make_worker = lambda: _NumpyWorker(ops)  # noqa: E731
        workers = max(1, min(threads or _cpu_count(), n_blocks))
        quiet: AbstractContextManager[object] = _single_threaded_blas()
    else:
        import torch

        dev = torch.device(device)
        make_worker = lambda: _TorchWorker(ops, dev)  # noqa: E731
        on_cpu = dev.type == "cpu"
        workers = max(1, min(threads or torch.get_num_threads(), n_blocks)) if on_cpu else 1
        quiet = _single_threaded_torch() if workers > 1 else nullcontext()

    if streamed:
        budget = STREAM_MEMORY if stream_memory is None else stream_memory
        group = stream_group(n_blocks, b * width * np.dtype(dtype).itemsize, workers, budget)
        totals = _run_groups(ops, n_blocks, workers, group, quiet, on_progress, chosen)
    else:
        totals = _run_strips(make_worker, n_blocks, b, workers, quiet, on_progress, chosen)
    back = np.argsort(order)
    sums = totals[back, :n]  # (m, n, kp) in the caller's δ order
    return LowpassSums(values=sums[:, :, :k], weights=sums[:, :, k])


def stream_group(n_blocks: int, block_bytes: int, workers: int, budget: int) -> int:
    """Strips per group when streaming: as many as the budget holds, at least 4 groups a worker."""
    fits = max(1, budget // max(1, workers * block_bytes))
    balanced = max(1, -(-n_blocks // (4 * workers)))
    return min(fits, balanced)


def _first_floored(floors: list[float], dist: np.ndarray) -> int:
    """Index of the first δ (descending) whose kernel reaches the exp floor in this tile."""
    reach = float(dist.max())
    return next((q for q, limit in enumerate(floors) if reach > limit), len(floors))


def _run_strips(
    make_worker: Callable[[], _TileWorker],
    n_blocks: int,
    b: int,
    workers: int,
    quiet: AbstractContextManager[object],
    on_progress: Callable[[float], None] | None,
    strips: range | None = None,
) -> np.ndarray:
    """Run the strips (default all) on `workers` threads; float64 totals (m, N, kp), summed in
    order."""
    strips = range(n_blocks) if strips is None else strips
    loads = [n_blocks - strip for strip in strips]
    shares = [[strips[i] for i in share] for share in _balanced_shares(loads, workers)]
    results: list[np.ndarray | None] = [None] * workers
    total_tiles = max(1, sum(loads))
    done = [0] * workers

    def work(w: int) -> None:
        worker = make_worker()
        for count, strip in enumerate(shares[w], start=1):
            i0 = strip * b
            worker.start_strip(i0)
            for j0 in range(i0, n_blocks * b, b):
                worker.tile(i0, j0)
                done[w] += 1
                if worker.rows_pending == FLUSH_EVERY:
                    worker.flush_rows(i0)
                if w == 0 and on_progress is not None:
                    # Only the calling thread reports, so callbacks never run concurrently.
                    on_progress(min(1.0, sum(done) / total_tiles))
            worker.flush_rows(i0)
            if count % FLUSH_EVERY == 0:
                worker.flush_cols()
        worker.flush_cols()
        results[w] = worker.totals()

    _run_workers(work, workers, quiet)
    if on_progress is not None:
        on_progress(1.0)
    return _sum_in_order(results)


def _run_groups(
    ops: _Operands,
    n_blocks: int,
    workers: int,
    group: int,
    quiet: AbstractContextManager[object],
    on_progress: Callable[[float], None] | None,
    chosen: range | None = None,
) -> np.ndarray:
    """Streamed tiles: each worker holds a group of strips' left rows and reads every column
    block once per group; float64 totals (m, N, kp), summed in a fixed order."""
    b = ops.block
    chosen = range(n_blocks) if chosen is None else chosen
    firsts = list(range(chosen.start, chosen.stop, group))
    loads = [sum(n_blocks - s for s in range(g, min(g + group, chosen.stop))) for g in firsts]
    shares = _balanced_shares(loads, workers)
    results: list[np.ndarray | None] = [None] * workers
    total_tiles = max(1, sum(loads))
    done = [0] * workers

    def work(w: int) -> None:
        worker = _NumpyWorker(ops)
        for index in shares[w]:
            strips = range(firsts[index], min(firsts[index] + group, chosen.stop))
            lefts = [ops.left(s * b) for s in strips]  # group * (b, w) held for the pass
            for jb in range(strips[0], n_blocks):
                right = ops.right_block(jb * b)  # (b, w), read once for the whole group
                for s, left in zip(strips, lefts, strict=True):
                    if s > jb:
                        break
                    worker.streamed_tile(left, right, s * b, jb * b)
                    done[w] += 1
                if w == 0 and on_progress is not None:
                    on_progress(min(1.0, sum(done) / total_tiles))
        results[w] = worker.totals()

    _run_workers(work, workers, quiet)
    if on_progress is not None:
        on_progress(1.0)
    return _sum_in_order(results)


def _run_workers(
    work: Callable[[int], None], workers: int, quiet: AbstractContextManager[object]
) -> None:
    """work(0) on this thread, work(1 … workers-1) on helper threads, all joined; a helper's
    exception is re-raised here."""
    if workers == 1:
        # BLAS stays single-threaded here too: its own threads on these small GEMMs spin and
        # contend (25x slower at n = 3000 on 2 busy cores).
        with quiet:
            work(0)
        return
    errors: list[BaseException] = []
    with quiet:
        helpers = [
            threading.Thread(target=_recording(work, errors), args=(w,)) for w in range(1, workers)
        ]
        for t in helpers:
            t.start()
        try:
            work(0)
        finally:
            for t in helpers:
                t.join()
    if errors:
        # The helper's own exception (e.g. MemoryError), not a generic one.
        raise errors[0]


def _sum_in_order(results: list[np.ndarray | None]) -> np.ndarray:
    """The workers' totals summed in worker order.

    A fixed assignment of work to workers and a fixed order of this sum keep the result
    bit-for-bit deterministic whatever the threads' timing.
    """
    total: np.ndarray | None = None
    for part in results:
        assert part is not None  # every worker either stored its totals or raised above
        total = part if total is None else total + part
    assert total is not None
    return total


def _recording(work: Callable[[int], None], errors: list[BaseException]) -> Callable[[int], None]:
    """`work` for a helper thread: an exception is kept for the caller to re-raise."""

    def run(w: int) -> None:
        try:
            work(w)
        except BaseException as exc:  # handed to the calling thread, re-raised there
            errors.append(exc)

    return run


def _balanced_shares(loads: list[int], workers: int) -> list[list[int]]:
    """Items (in order) to the least loaded worker: an even, deterministic assignment."""
    shares: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for item, cost in enumerate(loads):
        w = min(range(workers), key=lambda i: (load[i], i))
        shares[w].append(item)
        load[w] += cost
    return shares


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_threads_lock = threading.Lock()


@contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS on one thread while our own threads split the strips."""
    from threadpoolctl import threadpool_limits

    with _threads_lock, threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def _single_threaded_torch() -> Iterator[None]:
    """Torch ops on one thread while our own threads split the strips."""
    import torch

    with _threads_lock:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)
