"""Exact analyses fanned out over real Celery workers on PostgreSQL + Redis: the blocks spread
over both workers and reduce to the same bits as one process computing them; a block whose
worker is killed is computed again; a cancel reaches every block; an experiment's checkpoints
fan out too."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_support import Backend, start_worker, stop_process, tiny_spec, wait_for
from sqlalchemy import func, select
from test_analyses_api import wait_terminal
from test_datasets_api import npz_bytes, upload

from dfp.storage.models import AnalysisBlock, AnalysisFanout, FanoutChunk, Run
from dfp_engine.fanout import block_partial, plan_blocks, reduce_partials, write_operand
from dfp_engine.frequency import analyze_frequency
from dfp_engine.lowpass import LowpassSums

BLOCKS = 6
MIN_ROWS = 1000
DELTAS = [2.0, 1.0, 0.5, 0.25, 0.12, 0.06, 0.03, 0.015]
# Blocks that take seconds each, so that both workers (one maybe a pool process restarted
# after the previous test killed it) are caught computing.
SLOW_DELTAS = [float(v) for v in np.geomspace(4.0, 0.01, 100)]


@pytest.fixture(scope="module")
def workers(
    pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two worker processes of one pool process each, fanning out from MIN_ROWS rows."""
    settings = pg_backend.settings.model_copy(
        update={
            "fanout_min_rows": MIN_ROWS,
            "fanout_blocks": BLOCKS,
            "fanout_threads": 1,  # two worker processes on this 2-core machine
            "heartbeat_seconds": 1.0,
            "progress_seconds": 0.3,
            "heartbeat_timeout": 60.0,  # a lost block must be found by its dead holder, at once
        }
    )
    folder = tmp_path_factory.mktemp("fanout-workers")
    logs = [folder / f"worker-{i}.log" for i in range(2)]
    processes = [start_worker(settings, log, "--concurrency", "1") for log in logs]
    for log in logs:
        wait_for(lambda log=log: "ready." in log.read_text(), timeout=120, what="a worker")
    yield processes
    for process in processes:
        stop_process(process)


@pytest.fixture
def alice(workers: list[subprocess.Popen[bytes]], pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def arrays(n: int, d: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    h = (rng.normal(size=(4, d))[labels] + rng.normal(scale=1.2, size=(n, d))).astype(np.float32)
    return {"h": h, "labels": labels}


def one_process_fanout(
    z: np.ndarray,
    values: np.ndarray,
    deltas: list[float],
    blocks: int = BLOCKS,
    block_threads: int = 1,
    **kw: Any,
) -> LowpassSums:
    """What the workers compute, in this process alone: blocks in reverse order, reduced in
    block order from the same operand."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "z.npy"
        write_operand(z, kw.get("scale"), path, kw.get("dtype", np.float32))
        operand = np.load(path)  # loaded, as the workers load an operand this small
        stored = np.load(_saved(values, Path(folder)))
        plan = plan_blocks(len(z), len(deltas), blocks, kw.get("block_size"))
        parts = {
            b: block_partial(operand, stored, deltas, plan, b, threads=block_threads)
            for b in reversed(range(blocks))
        }
        return reduce_partials((parts[b] for b in range(blocks)), len(z))


def _saved(values: np.ndarray, folder: Path) -> Path:
    np.save(folder / "values.npy", np.ascontiguousarray(values, dtype=np.float64))
    return folder / "values.npy"


def submit(alice: httpx.Client, data: dict[str, np.ndarray], deltas: list[float] = DELTAS) -> str:
    uploaded = upload(alice, npz_bytes(**data))
    assert uploaded.status_code in (200, 201), uploaded.text
    dataset_id = uploaded.json()["id"]
    body = {"dataset_id": dataset_id, "features": ["h"], "targets": "labels", "deltas": deltas}
    response = alice.post("/v1/analyses", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def blocks_of(pg: Backend, job_id: str) -> list[AnalysisBlock]:
    with pg.db.reading() as session:
        query = (
            select(AnalysisBlock)
            .join(AnalysisFanout, AnalysisFanout.id == AnalysisBlock.fanout_id)
            .join(Run, Run.id == AnalysisFanout.run_id)
            .where(Run.job_id == uuid.UUID(job_id))
            .order_by(AnalysisFanout.created_at, AnalysisBlock.block)
        )
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def run_worker(pg: Backend, job_id: str) -> str | None:
    with pg.db.reading() as session:
        return session.scalar(select(Run.worker).where(Run.job_id == uuid.UUID(job_id)))


def stored_chunks(pg: Backend) -> int:
    with pg.db.reading() as session:
        return int(session.scalar(select(func.count()).select_from(FanoutChunk)) or 0)


def both_workers_take_blocks(pg: Backend, alice: httpx.Client) -> None:
    """Wait until a small fan-out is computed by both workers: a pool process the previous
    test killed has been replaced and takes tasks again."""

    seeds = iter(range(100, 1000))

    def spread() -> bool:
        job_id = submit(alice, arrays(MIN_ROWS, d=64, seed=next(seeds)))
        assert wait_terminal(alice, job_id)["status"] == "succeeded"
        return len({b.worker for b in blocks_of(pg, job_id)}) == 2

    wait_for(spread, timeout=120, what="both workers to take blocks", every=0.5)


def lfr_of(alice: httpx.Client, job_id: str) -> list[float]:
    result = alice.get(f"/v1/analyses/{job_id}/results").json()
    return list(result["layers"][0]["lfr"])


def test_blocks_spread_over_both_workers_and_reduce_to_one_process_bits(
    pg: Backend, alice: httpx.Client
) -> None:
    data = arrays(5000)
    job_id = submit(alice, data)
    done = wait_terminal(alice, job_id, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    blocks = blocks_of(pg, job_id)
    assert [b.block for b in blocks] == list(range(BLOCKS))
    assert all(b.status == "succeeded" and b.attempts == 1 for b in blocks)
    assert len({b.worker for b in blocks}) == 2  # the run's own worker and the other one
    expected = analyze_frequency(
        data["h"], data["labels"], deltas=DELTAS, exact_sums=one_process_fanout
    )
    assert lfr_of(alice, job_id) == expected.lfr  # bit for bit
    local = analyze_frequency(data["h"], data["labels"], deltas=DELTAS)
    np.testing.assert_allclose(expected.lfr, local.lfr, rtol=0, atol=1e-7)
    assert stored_chunks(pg) == 0  # the operand and partials are gone; the rows stay


def test_a_block_whose_worker_is_killed_is_computed_again(pg: Backend, alice: httpx.Client) -> None:
    both_workers_take_blocks(pg, alice)
    data = arrays(5000, d=1024, seed=1)
    job_id = submit(alice, data, SLOW_DELTAS)

    def helper_block() -> AnalysisBlock | None:
        parent = run_worker(pg, job_id)
        return next(
            (b for b in blocks_of(pg, job_id) if b.status == "running" and b.worker != parent),
            None,
        )

    victim: AnalysisBlock = wait_for(helper_block, timeout=120, what="a block on the other worker")
    assert victim.worker is not None
    os.kill(int(victim.worker.split(":")[1]), signal.SIGKILL)
    done = wait_terminal(alice, job_id, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1  # the run itself went on; only the block was redone
    again = next(b for b in blocks_of(pg, job_id) if b.block == victim.block)
    assert again.status == "succeeded" and again.attempts >= 2 and again.worker != victim.worker
    expected = analyze_frequency(
        data["h"], data["labels"], deltas=SLOW_DELTAS, exact_sums=one_process_fanout
    )
    assert lfr_of(alice, job_id) == expected.lfr


def test_a_run_whose_own_worker_dies_mid_fanout_starts_again_from_a_new_fanout(
    pg: Backend, alice: httpx.Client
) -> None:
    """SIGKILL to the process that fanned out: its task is redelivered, the run's next attempt
    takes over, removes the dead attempt's fan-out and makes its own; the other worker's
    block of the old attempt stops. One result, the same bits."""
    both_workers_take_blocks(pg, alice)
    data = arrays(5000, d=1024, seed=4)
    job_id = submit(alice, data, SLOW_DELTAS)

    def parent_computing() -> str | None:
        parent = run_worker(pg, job_id)
        running = {b.worker for b in blocks_of(pg, job_id) if b.status == "running"}
        return parent if parent in running and len(running) == 2 else None

    parent: str = wait_for(parent_computing, timeout=120, what="both workers computing blocks")
    os.kill(int(parent.split(":")[1]), signal.SIGKILL)
    done = wait_terminal(alice, job_id, timeout=240)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    with pg.db.reading() as session:
        fanouts = list(
            session.scalars(
                select(AnalysisFanout.run_attempt)
                .join(Run, Run.id == AnalysisFanout.run_id)
                .where(Run.job_id == uuid.UUID(job_id))
            )
        )
    assert fanouts == [2]  # the first attempt's fan-out is gone with its bytes
    blocks = blocks_of(pg, job_id)
    assert len(blocks) == BLOCKS and all(b.status == "succeeded" for b in blocks)
    assert parent not in {b.worker for b in blocks}
    expected = analyze_frequency(
        data["h"], data["labels"], deltas=SLOW_DELTAS, exact_sums=one_process_fanout
    )
    assert lfr_of(alice, job_id) == expected.lfr
    assert stored_chunks(pg) == 0


def test_a_cancel_reaches_every_block(pg: Backend, alice: httpx.Client) -> None:
    both_workers_take_blocks(pg, alice)
    data = arrays(5000, d=1024, seed=2)
    job_id = submit(alice, data, SLOW_DELTAS)

    def both_computing() -> bool:
        running = [b for b in blocks_of(pg, job_id) if b.status == "running"]
        return len({b.worker for b in running}) == 2

    wait_for(both_computing, timeout=120, what="blocks running on both workers")
    cancelled_at = time.monotonic()
    assert alice.post(f"/v1/analyses/{job_id}/cancel").status_code == 200
    done = wait_terminal(alice, job_id, timeout=60)
    assert done["status"] == "cancelled"
    blocks = wait_for(
        lambda: (
            (rows := blocks_of(pg, job_id))
            and all(b.status in ("succeeded", "cancelled") for b in rows)
            and rows
        ),
        timeout=15,
        what="every block to stop",
    )
    assert time.monotonic() - cancelled_at < 20
    assert sum(b.status == "cancelled" for b in blocks) >= 2
    assert stored_chunks(pg) == 0


def test_an_experiments_checkpoints_fan_out_too(pg: Backend, alice: httpx.Client) -> None:
    spec = tiny_spec(
        dataset={"kind": "synthetic_1d", "expression": "cos(3*x)", "n_points": 1500},
        analysis={"checkpoints": {"every": 2}, "deltas": {"auto": 6}, "n_samples": 1500},
    )
    response = alice.post("/v1/experiments", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 240
    while (job := alice.get(f"/v1/experiments/{job_id}", params={"wait": 10}).json())[
        "is_terminal"
    ] is False:
        assert time.monotonic() < deadline
    assert job["status"] == "succeeded", job["error"]
    results = alice.get(f"/v1/experiments/{job_id}/results").json()
    checkpoints = results["runs"][0]["checkpoints"]
    layers = sum(len(c["layers"]) for c in checkpoints)
    blocks = blocks_of(pg, job_id)
    # every layer of every checkpoint was one fan-out of BLOCKS blocks, all computed
    assert len(blocks) == layers * BLOCKS and all(b.status == "succeeded" for b in blocks)
    for checkpoint in checkpoints:
        for layer in checkpoint["layers"]:
            assert all(0.0 <= v <= 1.0 + 1e-9 for v in layer["lfr"])


def test_embedded_mode_fans_out_through_the_data_directory(
    sqlite_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SQLite and the file queue: the one worker computes every block itself, with as many
    threads as it has cores, through parts stored as files; they are gone afterwards."""
    sqlite_backend.clean()
    settings = sqlite_backend.settings.model_copy(
        update={
            "fanout_min_rows": MIN_ROWS,
            "fanout_blocks": 3,
            "heartbeat_seconds": 1.0,
            "heartbeat_timeout": 60.0,
        }
    )
    log = tmp_path_factory.mktemp("fanout-embedded") / "worker.log"
    process = start_worker(settings, log)
    try:
        wait_for(lambda: "ready." in log.read_text(), timeout=120, what="the worker")
        with sqlite_backend.client(sqlite_backend.key("alice")) as client:
            data = arrays(2000, seed=3)
            job_id = submit(client, data)
            done = wait_terminal(client, job_id, timeout=180)
            assert done["status"] == "succeeded", done["error"]
            blocks = blocks_of(sqlite_backend, job_id)
            assert [b.status for b in blocks] == ["succeeded"] * 3
            assert {b.worker for b in blocks} == {run_worker(sqlite_backend, job_id)}
            threads = len(os.sched_getaffinity(0))
            expected = analyze_frequency(
                data["h"],
                data["labels"],
                deltas=DELTAS,
                exact_sums=partial(one_process_fanout, blocks=3, block_threads=threads),
            )
            assert lfr_of(client, job_id) == expected.lfr
        parts = settings.data_dir / "fanout-parts"
        assert not parts.exists() or not any(parts.iterdir())
    finally:
        stop_process(process)
