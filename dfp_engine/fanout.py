"""The exact analysis split into row blocks that separate processes compute, reduced exactly.

The upper triangle of tiles is cut into contiguous ranges of row strips with about equal numbers
of tiles (`plan_blocks`). Each block's float64 partial sums (`block_sums`: the off-diagonal
kernel sums its tiles add, to its own rows and, mirrored, to the rows of its columns) depend only
on the block, never on which process computed it or when. `reduce_blocks` adds the partials in
block order and forms LFR, so the result is bit-for-bit the same however the blocks were spread
over workers. Every block reads the whole representation (z and the targets) from shared
storage; its output is (|δ|, n, c + 1) float64.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfp_engine.lowpass import default_block_size, lowpass_sums
from dfp_engine.normalization import column_divisors, column_statistics


@dataclass(frozen=True)
class BlockPlan:
    """How an exact analysis of n rows is cut: strips of `block_size` rows, grouped in blocks."""

    n: int
    block_size: int
    blocks: list[tuple[int, int]]  # [first strip, end strip) per block

    @property
    def n_strips(self) -> int:
        return -(-self.n // self.block_size)

    def tiles(self, block: int) -> int:
        """Tiles a block visits: strip s holds n_strips - s of them."""
        lo, hi = self.blocks[block]
        return sum(self.n_strips - s for s in range(lo, hi))


def plan_blocks(n: int, n_deltas: int, parts: int, block_size: int | None = None) -> BlockPlan:
    """At most `parts` contiguous strip ranges holding about equal numbers of tiles."""
    if parts < 1:
        raise ValueError(f"parts must be positive, got {parts}")
    b = block_size or default_block_size(n, n_deltas)
    strips = -(-n // b)
    total = strips * (strips + 1) // 2
    blocks: list[tuple[int, int]] = []
    start, done = 0, 0
    for s in range(strips):
        done += strips - s
        # close a block once it reaches its share of the tiles still to be shared out
        if done * parts >= (len(blocks) + 1) * total or s == strips - 1:
            blocks.append((start, s + 1))
            start = s + 1
    return BlockPlan(n=n, block_size=b, blocks=blocks)


def block_sums(
    z: np.ndarray,
    targets: np.ndarray,
    deltas: Sequence[float],
    plan: BlockPlan,
    block: int,
    *,
    normalization: str = "max_abs_per_dim",
    dtype: type[np.floating[Any]] = np.float32,
    threads: int | None = 1,
) -> np.ndarray:
    """One block's partial off-diagonal sums [S | O]: (|δ|, n, c + 1) float64.

    `targets` is the (n, c) float64 matrix (one-hot for classes). A memory-mapped z is streamed.
    """
    stats = column_statistics(z)
    if not stats.finite:
        raise ValueError("features contain NaN or inf")
    lo, hi = plan.blocks[block]
    sums = lowpass_sums(
        z,
        targets,
        deltas,
        block_size=plan.block_size,
        dtype=dtype,
        threads=threads,
        scale=1.0 / column_divisors(stats, normalization),
        strips=range(lo, hi),
    )
    out: np.ndarray = np.concatenate([sums.values, sums.weights[:, :, None]], axis=2)
    return out


def reduce_blocks(partials: Iterable[np.ndarray], targets: np.ndarray) -> list[float]:
    """LFR per δ from every block's partial sums, added in block order (float64)."""
    total: np.ndarray | None = None
    for part in partials:
        total = part.copy() if total is None else total + part
    if total is None:
        raise ValueError("no block partials to reduce")
    c = targets.shape[1]
    low = (targets[None] + total[:, :, :c]) / (1.0 + total[:, :, c])[:, :, None]  # (|δ|, n, c)
    power = float((targets * targets).sum())
    return [float(v) for v in (low**2).sum(axis=(1, 2)) / power]
