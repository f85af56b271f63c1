"""Exact analysis in row blocks: a partition of the tiles, reduced bit-for-bit alike."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dfp_engine import analyze_frequency
from dfp_engine.fanout import block_sums, plan_blocks, reduce_blocks
from dfp_engine.frequency import as_targets

DELTAS = [0.5, 0.15, 0.05, 0.02]  # by 1/δ ascending


def data(n: int = 1500, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, size=n)
    return rng.normal(size=(3, d))[labels] + rng.normal(scale=1.5, size=(n, d)), labels


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_blocks_partition_the_strips_with_even_work(parts: int) -> None:
    plan = plan_blocks(10_000, 20, parts, block_size=128)
    assert plan.blocks[0][0] == 0 and plan.blocks[-1][1] == plan.n_strips
    assert all(a[1] == b[0] for a, b in zip(plan.blocks, plan.blocks[1:], strict=False))
    assert len(plan.blocks) == parts
    tiles = [plan.tiles(i) for i in range(len(plan.blocks))]
    assert sum(tiles) == plan.n_strips * (plan.n_strips + 1) // 2
    assert max(tiles) <= 1.25 * min(tiles)


def _block(args: tuple[str, int, int]) -> np.ndarray:
    path, parts, block = args
    z = np.load(path, mmap_mode="r")
    labels = np.load(path.replace("x.npy", "y.npy"))
    plan = plan_blocks(z.shape[0], len(DELTAS), parts, block_size=64)
    return block_sums(z, as_targets(labels), DELTAS, plan, block)


def test_the_reduction_is_the_same_bits_however_blocks_are_spread(tmp_path: Path) -> None:
    x, labels = data()
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", labels)
    y = as_targets(labels)
    jobs = [(str(tmp_path / "x.npy"), 4, block) for block in range(4)]
    # in this process in reverse order, and spread over two worker processes
    here = {job[2]: _block(job) for job in reversed(jobs)}
    with ProcessPoolExecutor(max_workers=2) as pool:
        spread = list(pool.map(_block, jobs[::-1]))[::-1]
    one = reduce_blocks([here[b] for b in range(4)], y)
    two = reduce_blocks(spread, y)
    assert one == two  # bit for bit
    exact = analyze_frequency(x.astype(np.float32), labels, deltas=DELTAS)
    np.testing.assert_allclose(one, exact.lfr, rtol=0, atol=1e-7)
    # a block alone is partial: its rows miss the other blocks' contributions
    alone = reduce_blocks([here[0]], y)
    assert max(abs(a - b) for a, b in zip(alone, exact.lfr, strict=True)) > 1e-3


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="parts must be positive"):
        plan_blocks(100, 4, 0)
    with pytest.raises(ValueError, match="no block partials"):
        reduce_blocks([], np.ones((3, 1)))
