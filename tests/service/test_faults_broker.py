"""Broker outage: Redis stops while experiments are submitted and while they run, and comes
back empty (no persistence: every queued message is gone). No accepted submission is lost:
the job rows are the record, and the reconciler sends again what the broker lost.

Runs on a private Redis (and PostgreSQL): other test sessions share the machine's servers.
"""

from __future__ import annotations

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
from private_services import PrivateRedis
from service_support import Backend
from sqlalchemy import select

from dfp.storage.models import Job


def test_a_broker_outage_loses_no_submission(
    private: Backend, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    with (
        running_worker(private.settings, tmp_path / "worker.log"),
        private.client(private.key("alice")) as alice,
    ):
        before = [submit(alice, long_spec(400, 100)) for _ in range(3)]
        wait_running(private, before[0])
        private_redis.stop()
        during, answers = [], []
        for _ in range(3):
            response = alice.post("/v1/experiments", json=long_spec(400, 100))
            answers.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["Retry-After"]
                assert response.json()["error"]["code"]
            else:
                assert response.status_code == 202, response.text
                during.append(response.json()["id"])
        # Reads need no broker; readiness says what is missing.
        assert alice.get(f"/v1/experiments/{before[0]}").status_code == 200
        ready = httpx.get(f"{private.url}/readyz", timeout=30)
        assert ready.status_code == 503 and not ready.json()["error"]["details"]["broker"]["ok"]
        time.sleep(1.0)  # the run under way goes on without the broker
        private_redis.start()
        jobs = [wait_terminal(alice, job_id, timeout=60) for job_id in before + during]
        assert [job["status"] for job in jobs] == ["succeeded"] * len(jobs), answers
        for job in jobs:
            assert_one_result_set(private, alice, job["id"], expected_epochs(400, 100))
    # Every row belongs to an accepted submission: none was left behind by a refused one.
    with private.db.reading() as session:
        assert set(session.scalars(select(Job.id))) == {uuid.UUID(i) for i in before + during}
