"""Exact analysis in row blocks: a partition of the tiles, reduced bit-for-bit alike."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from dfp_engine import analyze_frequency
from dfp_engine.fanout import (
    BlockPartial,
    block_partial,
    plan_blocks,
    reduce_partials,
    write_operand,
)
from dfp_engine.frequency import as_targets
from dfp_engine.lowpass import LowpassSums, lowpass_sums

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


def _block(args: tuple[str, int, int]) -> tuple[int, np.ndarray]:
    path, parts, block = args
    operand = np.load(path, mmap_mode="r")
    labels = np.load(path.replace("z.npy", "y.npy"))
    plan = plan_blocks(operand.shape[0], len(DELTAS), parts, block_size=64)
    part = block_partial(operand, as_targets(labels), DELTAS, plan, block)
    return part.first_row, part.sums


def test_the_reduction_is_the_same_bits_however_blocks_are_spread(tmp_path: Path) -> None:
    x, labels = data()
    write_operand(x.astype(np.float32), None, tmp_path / "z.npy", np.float32)
    np.save(tmp_path / "y.npy", labels)
    jobs = [(str(tmp_path / "z.npy"), 4, block) for block in range(4)]
    # in this process in reverse order, and spread over two worker processes
    here = {job[2]: _block(job) for job in reversed(jobs)}
    with ProcessPoolExecutor(max_workers=2) as pool:
        spread = list(pool.map(_block, jobs[::-1]))[::-1]
    one = reduce_partials((BlockPartial(*here[b]) for b in range(4)), len(x))
    two = reduce_partials((BlockPartial(*part) for part in spread), len(x))
    assert np.array_equal(one.values, two.values) and np.array_equal(one.weights, two.weights)
    exact = lowpass_sums(x.astype(np.float32), as_targets(labels), DELTAS, block_size=64)
    np.testing.assert_allclose(one.weights, exact.weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one.values, exact.values, rtol=1e-5, atol=1e-6)
    # a block alone is partial: its rows miss the other blocks' contributions
    alone = reduce_partials([BlockPartial(*here[0])], len(x))
    assert np.abs(alone.weights - exact.weights).max() > 1e-3


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="parts must be positive"):
        plan_blocks(100, 4, 0)
    with pytest.raises(ValueError, match="no block partials"):
        reduce_partials([], 3)


def test_the_exact_sums_hook_fanned_out_over_an_operand_gives_the_exact_result(
    tmp_path: Path,
) -> None:
    """What a service does through analyze_frequency(exact_sums=): the operand written once,
    blocks computed from it memory-mapped (here in reverse order), reduced in block order.
    Trimming each partial to the rows it can touch changes no bit."""
    x, labels = data(n=1200)
    calls: list[int] = []

    def fanned(z: np.ndarray, values: np.ndarray, deltas: list[float], **kw: object) -> LowpassSums:
        write_operand(z, kw.get("scale"), tmp_path / "z.npy", kw.get("dtype", np.float32))  # type: ignore[arg-type]
        operand = np.load(tmp_path / "z.npy", mmap_mode="r")
        plan = plan_blocks(len(z), len(deltas), 5, block_size=64)
        parts = {b: block_partial(operand, values, deltas, plan, b) for b in reversed(range(5))}
        calls.append(len(parts))
        assert [parts[b].first_row for b in range(5)] == [plan.first_row(b) for b in range(5)]
        assert parts[4].sums.shape[1] < len(z)  # later blocks store fewer rows
        return reduce_partials((parts[b] for b in range(5)), len(z))

    for normalization in ("max_abs_per_dim", "standardize_per_dim"):
        exact = analyze_frequency(x, labels, deltas=DELTAS, normalization=normalization)
        fanned_out = analyze_frequency(
            x, labels, deltas=DELTAS, normalization=normalization, exact_sums=fanned
        )
        np.testing.assert_allclose(fanned_out.lfr, exact.lfr, rtol=0, atol=1e-7)
        assert fanned_out.lfr != analyze_frequency(x[::-1], labels, deltas=DELTAS).lfr
    assert calls == [5, 5]
    # a block's sums are exactly zero above its first row, so trimming them loses nothing
    operand = np.load(tmp_path / "z.npy", mmap_mode="r")
    values = as_targets(labels)
    plan = plan_blocks(len(x), len(DELTAS), 3, block_size=64)
    for b, (lo, hi) in enumerate(plan.blocks):
        full = lowpass_sums(operand, values, DELTAS, block_size=64, threads=1, strips=range(lo, hi))
        first = plan.first_row(b)
        assert not full.weights[:, :first].any() and full.weights[:, first:].any()
        part = block_partial(operand, values, DELTAS, plan, b)
        assert np.array_equal(part.sums[:, :, -1], full.weights[:, first:])
