"""A worker stopped gracefully (SIGTERM) mid-run hands its run back instead of finishing hours
of training or leaving it `running`; the next worker runs it to success.

Two ways to send it: to the main process alone (`docker stop`, `dfp serve` exiting), which
stops the run at its next epoch; and to every process of the worker (Ctrl-C in a terminal, a
process-group kill), where the pool process exits at once and requeues the run on its way out.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fault_support import (
    assert_one_result_set,
    expected_epochs,
    kill_group,
    long_spec,
    runs_of,
    submit,
    wait_running,
    wait_terminal,
    worker_ready,
)
from service_support import Backend, start_worker, stop_process, wait_for

from dfp.settings import Settings


@pytest.fixture
def alice(pg: Backend) -> Iterator[httpx.Client]:
    with pg.client(pg.key("alice")) as client:
        yield client


def stop_mid_run(settings: Settings, log: Path, backend: Backend, job_id: str, group: bool) -> None:
    """Start a worker and SIGTERM it once it runs the job's run; wait until it has exited."""
    process = start_worker(settings, log)
    try:
        wait_for(lambda: worker_ready(log), timeout=90, what="the worker to start")
        wait_running(backend, job_id)
        if group:
            kill_group(process, signal.SIGTERM)
        else:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        stop_process(process)


def test_a_worker_stopped_mid_run_hands_its_run_back(
    pg: Backend, alice: httpx.Client, tmp_path: Path
) -> None:
    # Only a minute-old heartbeat would mark the run lost: what requeues it is the handover.
    settings = pg.settings.model_copy(update={"heartbeat_timeout": 60.0, "max_attempts": 3})
    job_id = submit(alice, long_spec(epochs=3000))
    for attempt, group in enumerate([False, True], start=1):
        stop_mid_run(settings, tmp_path / f"worker-{attempt}.log", pg, job_id, group)
        # Not finished by a warm shutdown, not left running: queued again for the next worker.
        run = runs_of(pg, job_id)[0]
        assert run.status == "queued" and run.attempts == attempt, run.progress_message
        assert f"requeued after attempt {attempt}" in (run.progress_message or "")
    last = start_worker(settings, tmp_path / "worker-3.log")
    try:
        job = wait_terminal(alice, job_id, timeout=50)
    finally:
        kill_group(last)  # its work is done and checked below; no warm shutdown needed
        last.wait()
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 3
    assert_one_result_set(pg, alice, job_id, expected_epochs(epochs=3000))
