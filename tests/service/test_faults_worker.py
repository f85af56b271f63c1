"""Faults while a run executes, against one real worker process that outlives them all: its
pool process killed mid-run, a job that kills its worker every time, cancels racing the
start and the end of runs, and a result larger than the configured limit.

The worker waits a minute before calling a silent run lost, so every recovery seen here comes
from the fast path: a redelivered task taking over from a pool process known to be dead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import httpx
import pytest
from fault_support import (
    assert_one_result_set,
    expected_epochs,
    holder_pid,
    long_spec,
    running_worker,
    runs_of,
    stored,
    submit,
    wait_running,
    wait_terminal,
)
from service_support import Backend, tiny_spec, wait_for
from sqlalchemy import select, text

from dfp.storage.models import Run
from dfp_engine.status import aggregate_status
from worker.context import holder_alive, process_name

SLOW_TO_CALL_LOST = 60.0
MAX_RESULT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def worker(
    pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    settings = pg_backend.settings.model_copy(
        update={"heartbeat_timeout": SLOW_TO_CALL_LOST, "max_result_bytes": MAX_RESULT_BYTES}
    )
    log = tmp_path_factory.mktemp("faults-worker") / "worker.log"
    with running_worker(settings, log) as process:
        yield process


@pytest.fixture
def alice(worker: subprocess.Popen[bytes], pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def test_a_pool_process_killed_mid_run_is_taken_over_by_its_redelivered_task(
    worker: subprocess.Popen[bytes], pg: Backend, alice: httpx.Client
) -> None:
    """SIGKILL to the process training (as the OOM killer does): Celery requeues the task, the
    next attempt sees the holder is gone and takes over; one set of results, two attempts."""
    job_id = submit(alice, long_spec())
    os.kill(holder_pid(wait_running(pg, job_id)), signal.SIGKILL)
    job = wait_terminal(alice, job_id, timeout=SLOW_TO_CALL_LOST - 10)
    assert worker.poll() is None  # the worker itself lives on
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert_one_result_set(pg, alice, job_id, expected_epochs())


def test_a_job_that_kills_its_worker_every_time_fails_after_the_attempt_cap(
    pg: Backend, alice: httpx.Client
) -> None:
    """A poison job: every attempt's process dies. It ends failed with the reason once
    `max_attempts` starts are spent, instead of looping; the worker then serves others."""
    job_id = submit(alice, long_spec())
    killed: list[int] = []
    done = threading.Event()

    def poison() -> None:
        while not done.is_set():
            run = runs_of(pg, job_id)[0]
            if run.status == "running" and run.attempts > len(killed):
                os.kill(holder_pid(run), signal.SIGKILL)
                killed.append(run.attempts)
            done.wait(0.02)

    killer = threading.Thread(target=poison, daemon=True)
    killer.start()
    try:
        job = wait_terminal(alice, job_id, timeout=SLOW_TO_CALL_LOST - 10)
    finally:
        done.set()
        killer.join()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "attempts_exhausted"
    assert f"gave up after {pg.settings.max_attempts} attempts" in job["error"]["message"]
    assert killed == list(range(1, pg.settings.max_attempts + 1))
    assert wait_terminal(alice, submit(alice, tiny_spec()))["status"] == "succeeded"


def test_only_a_process_this_host_could_see_and_that_is_gone_counts_as_dead() -> None:
    """What lets a task take over a run at once: a holder of this host and pid namespace that
    no longer exists."""
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    assert holder_alive(process_name(os.getpid()))
    assert not holder_alive(process_name(child.pid))
    assert holder_alive(process_name(child.pid).replace(socket.gethostname(), "elsewhere", 1))
    assert holder_alive(f"{socket.gethostname()}:{child.pid}:1")  # another pid namespace
    assert holder_alive("w:1") and holder_alive("not a worker name")


# ------------------------------------------------------------------------ cancel races


def assert_consistent(pg: Backend, job: dict[str, Any], checkpoints: int) -> None:
    """A terminal job agrees with its runs, and its stored results with its status: all
    `checkpoints` when it succeeded, at most that many when it was cancelled."""
    runs = runs_of(pg, job["id"])
    assert job["is_terminal"] and job["finished_at"] is not None
    assert job["status"] == aggregate_status([run.status for run in runs])
    for run in runs:
        count = stored(pg, run.id)
        if run.status == "succeeded":
            assert count == checkpoints  # complete, never partial
        else:
            assert run.status == "cancelled" and run.error_code == "cancelled"
            assert count <= checkpoints
    if job["status"] == "cancelled":
        assert job["error"]["code"] == "cancelled" and job["cancel_requested"] is True
    else:
        assert job["status"] == "succeeded" and job["error"] is None


def test_cancels_racing_the_start_of_runs_leave_consistent_jobs(
    pg: Backend, alice: httpx.Client
) -> None:
    """Cancel at once after submitting, and the moment the run is seen running: each job ends
    cancelled (a run that had started keeps its partial results)."""
    at_once = [submit(alice, long_spec()) for _ in range(3)]
    for job_id in at_once:
        assert alice.post(f"/v1/experiments/{job_id}/cancel").status_code == 200
    on_start = submit(alice, long_spec())
    wait_for(
        lambda: runs_of(pg, on_start)[0].status != "queued",
        timeout=30,
        what="the run to start",
        every=0.002,
    )
    assert alice.post(f"/v1/experiments/{on_start}/cancel").status_code == 200
    for job_id in [*at_once, on_start]:
        job = wait_terminal(alice, job_id)
        assert job["status"] == "cancelled", job
        assert_consistent(pg, job, checkpoints=len(expected_epochs()))


def stored_or_ended(pg: Backend, run_id: int, checkpoints: int) -> bool:
    with pg.db.reading() as session:
        status = session.scalar(select(Run.status).where(Run.id == run_id))
    return status != "running" or stored(pg, run_id) >= checkpoints


def test_cancels_racing_the_end_of_runs_leave_consistent_jobs(
    pg: Backend, alice: httpx.Client
) -> None:
    """Cancel as the last checkpoints come in: the job ends either succeeded with all its
    results (the cancel came too late; `cancel_requested` records it) or cancelled with
    partial ones, never a mixture."""
    epochs = expected_epochs(1000, 100)
    for seen in range(len(epochs) - 3, len(epochs) + 1):
        job_id = submit(alice, long_spec(1000, 100))
        run_id = wait_running(pg, job_id).id
        wait_for(
            partial(stored_or_ended, pg, run_id, seen),
            timeout=30,
            what=f"checkpoint {seen}",
            every=0.002,
        )
        assert alice.post(f"/v1/experiments/{job_id}/cancel").status_code == 200
        assert_consistent(pg, wait_terminal(alice, job_id), checkpoints=len(epochs))
    # After the end, a cancel changes nothing.
    done = wait_terminal(alice, submit(alice, tiny_spec()))
    after = alice.post(f"/v1/experiments/{done['id']}/cancel")
    assert after.status_code == 200
    assert after.json()["status"] == "succeeded" and after.json()["cancel_requested"] is False


def test_cancelling_twice_at_once_is_the_same_as_once(pg: Backend, alice: httpx.Client) -> None:
    job_id = submit(alice, long_spec())
    wait_running(pg, job_id)
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda _: alice.post(f"/v1/experiments/{job_id}/cancel"), range(2)))
    assert [reply.status_code for reply in replies] == [200, 200]
    job = wait_terminal(alice, job_id)
    assert job["status"] == "cancelled"
    assert_consistent(pg, job, checkpoints=len(expected_epochs()))
    again = alice.post(f"/v1/experiments/{job_id}/cancel").json()
    assert again["status"] == "cancelled" and again["finished_at"] == job["finished_at"]


# ------------------------------------------------------------------------- result size


def test_a_result_over_the_size_limit_fails_the_run_not_the_worker(
    worker: subprocess.Popen[bytes], pg: Backend, alice: httpx.Client
) -> None:
    """Checkpoints every epoch with many δ values outgrow DFP_MAX_RESULT_BYTES: the run stops
    and fails with a message naming the limit, keeping what was stored within it."""
    base = tiny_spec()
    huge = tiny_spec(
        training={**base["training"], "epochs": 2000},
        analysis={**base["analysis"], "checkpoints": {"every": 1}, "deltas": {"auto": 60}},
    )
    job = wait_terminal(alice, submit(alice, huge))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "result_too_large"
    assert "DFP_MAX_RESULT_BYTES" in job["error"]["message"]
    assert str(MAX_RESULT_BYTES) in job["error"]["message"]
    kept = stored(pg, runs_of(pg, job["id"])[0].id)
    assert 0 < kept < 100  # stopped early, not after 2000 checkpoints
    results = alice.get(f"/v1/experiments/{job['id']}/results")
    assert results.status_code == 200 and len(results.content) < 20 * MAX_RESULT_BYTES
    assert worker.poll() is None
    assert wait_terminal(alice, submit(alice, tiny_spec()))["status"] == "succeeded"


DISK_FULL = """
CREATE FUNCTION dfp_test_disk_full() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full';
END $$;
CREATE TRIGGER dfp_test_disk_full BEFORE INSERT ON layer_curves
    FOR EACH ROW EXECUTE FUNCTION dfp_test_disk_full();
"""


def test_a_database_that_cannot_store_results_fails_the_run_not_the_worker(
    worker: subprocess.Popen[bytes], pg: Backend, alice: httpx.Client
) -> None:
    """Disk full: PostgreSQL refuses every curve with SQLSTATE 53100 (as when it cannot extend
    a file). Not an outage to wait out: the run fails with `storage_error` and the reason."""
    with pg.db.engine.begin() as connection:
        connection.execute(text(DISK_FULL))
    try:
        job = wait_terminal(alice, submit(alice, tiny_spec()))
    finally:
        with pg.db.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER dfp_test_disk_full ON layer_curves"))
            connection.execute(text("DROP FUNCTION dfp_test_disk_full()"))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "storage_error"
    assert "No space left on device" in job["error"]["message"]
    assert worker.poll() is None
    assert wait_terminal(alice, submit(alice, tiny_spec()))["status"] == "succeeded"
