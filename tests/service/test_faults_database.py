"""Database outage: PostgreSQL stops while experiments are submitted and while one runs, then
comes back. The API answers 503 with Retry-After meanwhile (never 500) and recovers without a
restart; the worker keeps training, retries its writes, and the run ends succeeded with every
checkpoint; every accepted submission runs.

Runs on a private PostgreSQL (and Redis): other test sessions share the machine's servers.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
from fault_support import (
    assert_one_result_set,
    expected_epochs,
    long_spec,
    running_worker,
    submit,
    wait_running,
    wait_terminal,
)
from private_services import PrivatePostgres
from service_support import Backend, tiny_spec, wait_for
from sqlalchemy import select

from dfp.storage.models import Job


def test_a_database_restart_during_submissions_and_a_run(
    private: Backend, private_pg: PrivatePostgres, tmp_path: Path
) -> None:
    # The outage is shorter than this, so the run keeps its worker rather than being requeued.
    settings = private.settings.model_copy(update={"heartbeat_timeout": 30.0})
    answers: list[tuple[int, str | None, str | None]] = []  # (status, job id, Retry-After)
    stop = threading.Event()

    def submit_steadily(client: httpx.Client) -> None:
        while not stop.is_set():
            response = client.post("/v1/experiments", json=tiny_spec())
            job_id = response.json().get("id") if response.status_code == 202 else None
            answers.append((response.status_code, job_id, response.headers.get("Retry-After")))
            stop.wait(0.05)

    with (
        running_worker(settings, tmp_path / "worker.log"),
        private.client(private.key("alice")) as alice,
        private.client(private.key("bob")) as bob,
    ):
        job_id = submit(alice, long_spec())
        wait_running(private, job_id, checkpoints=2)
        submitter = threading.Thread(target=submit_steadily, args=(bob,), daemon=True)
        submitter.start()
        try:
            time.sleep(0.3)
            private_pg.stop()
            down = alice.get(f"/v1/experiments/{job_id}")
            assert down.status_code == 503, down.text
            assert down.headers["Retry-After"]
            assert down.json()["error"]["code"] == "database_unavailable"
            time.sleep(2.0)  # the run trains on; its checkpoint writes and heartbeats fail
            private_pg.start()
            private.db.engine.dispose()  # the test's own connections died with the server
            # The same API process serves again, without a restart.
            wait_for(
                lambda: alice.get(f"/v1/experiments/{job_id}").status_code == 200,
                timeout=30,
                what="the API to recover",
            )
            time.sleep(0.5)
        finally:
            stop.set()
            submitter.join()

        job = wait_terminal(alice, job_id, timeout=60)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 1  # the worker rode the outage out
        assert_one_result_set(private, alice, job_id, expected_epochs())

        statuses = [status for status, _, _ in answers]
        assert set(statuses) <= {202, 503}, statuses
        assert 503 in statuses and statuses[-1] == 202, statuses
        assert all(retry for status, _, retry in answers if status == 503)
        accepted = {uuid.UUID(job) for _, job, _ in answers if job is not None}
        with private.db.reading() as session:
            stored = set(session.scalars(select(Job.id).where(Job.owner == "bob")))
        # Every accepted submission is stored; a row whose answer was lost (a commit that
        # went through as the connection broke) is no orphan: it runs all the same.
        assert accepted <= stored
        for submitted in stored:
            assert wait_terminal(bob, str(submitted), timeout=60)["status"] == "succeeded"
