"""The exact analysis split into row blocks that separate processes compute, reduced exactly.

(docs/method.md §2b.) The upper triangle of tiles is cut into contiguous ranges of row strips
with about equal numbers of tiles (`plan_blocks`). Every block reads one operand, the normalised
features written once by `write_operand`; a block's float64 partial sums (`block_partial`: the
off-diagonal kernel sums its tiles add to its own rows and, mirrored, to the rows of its
columns, all at or after its first row) depend only on the block, the operand and the thread
count, never on which process computed it or when. `reduce_partials` adds them in block order,
so the result is bit-for-bit the same however the blocks were spread over workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfp_engine.lowpass import LowpassSums, default_block_size, lowpass_sums

# What `analyze_frequency(exact_sums=...)` calls instead of `lowpass_sums`, with the same
# arguments: a service hands the exact sums to its workers this way (dfp.fanout).
ExactSums = Callable[..., LowpassSums]
# Rows of the operand written per step, so a memory-mapped z is never copied whole.
OPERAND_ROWS = 8192


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

    def first_row(self, block: int) -> int:
        """The first row a block's sums can touch: its tiles add to rows of strips ≥ its own."""
        return self.blocks[block][0] * self.block_size


@dataclass(frozen=True)
class BlockPartial:
    """One block's float64 sums [S | O] for rows first_row … n - 1: (|δ|, n - first_row, k + 1)."""

    first_row: int
    sums: np.ndarray


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


def write_operand(z: np.ndarray, scale: np.ndarray | None, path: Path, dtype: Any) -> None:
    """Store z * scale (n, d) as an .npy of `dtype`: the operand every block of a fan-out reads.

    Written in row chunks, so a memory-mapped z is read once and never held whole."""
    n, d = z.shape
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=(n, d))
    factors = None if scale is None else np.asarray(scale, dtype=np.float64).reshape(d)
    for start in range(0, n, OPERAND_ROWS):
        rows = np.asarray(z[start : start + OPERAND_ROWS], dtype=np.float64)
        out[start : start + len(rows)] = rows if factors is None else rows * factors
    out.flush()
    del out


def block_partial(
    operand: np.ndarray,
    values: np.ndarray,
    deltas: Sequence[float],
    plan: BlockPlan,
    block: int,
    *,
    threads: int = 1,
    on_progress: Callable[[float], None] | None = None,
) -> BlockPartial:
    """One block's partial sums over the operand (see `write_operand`), loaded or mapped.

    Every block of a fan-out must be computed from the same operand read the same way (all
    loaded, or all memory-mapped and so streamed) with the same `threads`: then the bits depend
    on the block alone, not on who computed it."""
    lo, hi = plan.blocks[block]
    sums = lowpass_sums(
        operand,
        values,
        deltas,
        block_size=plan.block_size,
        dtype=operand.dtype.type,
        threads=threads,
        strips=range(lo, hi),
        on_progress=on_progress,
    )
    first = plan.first_row(block)
    stacked = np.concatenate([sums.values[:, first:], sums.weights[:, first:, None]], axis=2)
    return BlockPartial(first_row=first, sums=np.ascontiguousarray(stacked))


class PartialSum:
    """Adds block partials into the whole sums as they arrive, in block order (float64).

    Rows a block cannot touch are exactly zero in it, so adding only its own rows changes no
    bit; the same sequence of additions happens however the partials arrive."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.added = 0  # partials added so far: blocks 0 … added - 1
        self._total: np.ndarray | None = None  # (|δ|, n, k + 1)

    def add(self, part: BlockPartial) -> None:
        if self._total is None:
            self._total = np.zeros((part.sums.shape[0], self.n, part.sums.shape[2]))
        self._total[:, part.first_row :] += part.sums
        self.added += 1

    def result(self) -> LowpassSums:
        if self._total is None:
            raise ValueError("no block partials to reduce")
        return LowpassSums(values=self._total[:, :, :-1], weights=self._total[:, :, -1])


def reduce_partials(partials: Iterable[BlockPartial], n: int) -> LowpassSums:
    """The whole off-diagonal sums from every block's partial, given in block order."""
    total = PartialSum(n)
    for part in partials:
        total.add(part)
    return total.result()
