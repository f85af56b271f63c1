"""The reconciler against real Redis: lost workers and lost messages are recovered, once."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta

import httpx
import pytest
import redis
from service_support import Backend, auth, tiny_spec
from sqlalchemy import select, update

from dfp.experiments import lifecycle
from dfp.experiments.reconciler import reconcile
from dfp.storage.models import Run
from dfp.storage.types import utcnow


@pytest.fixture
def alice(pg: Backend) -> httpx.Client:  # overrides the two-backend fixture: Redis only here
    return httpx.Client(base_url=pg.url, headers=auth(pg.key("alice")), timeout=30)


def queued_run_ids(backend: Backend) -> list[int]:
    """Run ids in the Redis 'cpu' queue, oldest first."""
    client = redis.Redis.from_url(backend.settings.broker_url or "")
    messages = [json.loads(m) for m in client.lrange("cpu", 0, -1)]
    # Celery's JSON message body is base64 of [args, kwargs, embed]; args is [run_id].
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in reversed(messages)]


def only_run(backend: Backend, job_id: str) -> Run:
    with backend.db.unit_of_work() as uow:
        return uow.session.scalars(select(Run).where(Run.job_id == uuid.UUID(job_id))).one()


def shift(backend: Backend, run_id: int, **ages: float) -> None:
    """Move timestamps into the past, as if that much time had passed."""
    values = {column: utcnow() - timedelta(seconds=age) for column, age in ages.items()}
    with backend.db.unit_of_work() as uow:
        uow.session.execute(update(Run).where(Run.id == run_id).values(**values))


def test_a_run_whose_worker_died_is_requeued_and_sent_again(
    pg: Backend, alice: httpx.Client
) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    run = only_run(pg, job_id)
    redis.Redis.from_url(pg.settings.broker_url or "").delete("cpu")  # a worker took the message
    with pg.db.unit_of_work() as uow:
        assert lifecycle.claim_run(uow.session, run.id, worker="dead:1", settings=pg.settings)
    report = reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    assert report.requeued == []  # heartbeat still fresh
    shift(pg, run.id, heartbeat_at=pg.settings.heartbeat_timeout + 1)
    report = reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    assert report.requeued == [run.id]
    assert queued_run_ids(pg) == [run.id]
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["runs"][0]["status"] == "queued" and job["runs"][0]["attempts"] == 1
    assert "requeued after attempt 1" in job["runs"][0]["message"]
    # A second reconciler pass (or another worker's) does not send it twice.
    assert reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher).requeued == []
    assert queued_run_ids(pg) == [run.id]


def test_a_run_that_keeps_losing_its_worker_fails(pg: Backend, alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    run = only_run(pg, job_id)
    for attempt in range(pg.settings.max_attempts):
        with pg.db.unit_of_work() as uow:
            lease = lifecycle.claim_run(uow.session, run.id, worker="w", settings=pg.settings)
        assert lease is not None and lease.attempt == attempt + 1
        shift(pg, run.id, heartbeat_at=pg.settings.heartbeat_timeout + 1)
        reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "attempts_exhausted"


def test_a_lost_run_of_a_cancelled_job_ends_cancelled(pg: Backend, alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    run = only_run(pg, job_id)
    with pg.db.unit_of_work() as uow:
        assert lifecycle.claim_run(uow.session, run.id, worker="w", settings=pg.settings)
    alice.post(f"/v1/experiments/{job_id}/cancel")
    shift(pg, run.id, heartbeat_at=pg.settings.heartbeat_timeout + 1)
    reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    assert alice.get(f"/v1/experiments/{job_id}").json()["status"] == "cancelled"


def test_queued_runs_without_a_message_are_sent_again(pg: Backend, alice: httpx.Client) -> None:
    ids = [alice.post("/v1/experiments", json=tiny_spec()).json()["id"] for _ in range(3)]
    runs = [only_run(pg, job_id).id for job_id in ids]
    for run_id in runs:
        shift(pg, run_id, enqueued_at=pg.settings.requeue_after + 1)
    # All three messages are in Redis: nothing is missing, nothing is re-sent.
    assert reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher).resent == []
    # The broker lost two of them (an outage, a flushed Redis).
    client = redis.Redis.from_url(pg.settings.broker_url or "")
    client.rpop("cpu", 2)
    report = reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    assert len(report.resent) == 2 and set(report.resent) <= set(runs)
    assert sorted(queued_run_ids(pg)) == sorted(runs)
    # Freshly re-sent runs are not re-sent again on the next pass.
    assert reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher).resent == []


def test_a_run_no_worker_ever_takes_fails_after_the_cap(pg: Backend, alice: httpx.Client) -> None:
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    run_id = only_run(pg, job_id).id
    client = redis.Redis.from_url(pg.settings.broker_url or "")
    for _ in range(pg.settings.max_attempts + 1):
        client.delete("cpu")
        shift(pg, run_id, enqueued_at=pg.settings.requeue_after + 1)
        reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "never_started"


def test_never_started_counts_sends_since_the_run_last_started(
    pg: Backend, alice: httpx.Client
) -> None:
    """A run that lost its worker and then its messages is re-sent as often as one that was
    never taken, before it fails `never_started`."""
    job_id = alice.post("/v1/experiments", json=tiny_spec()).json()["id"]
    run_id = only_run(pg, job_id).id
    client = redis.Redis.from_url(pg.settings.broker_url or "")
    client.delete("cpu")
    with pg.db.unit_of_work() as uow:
        assert lifecycle.claim_run(uow.session, run_id, worker="w", settings=pg.settings)
    shift(pg, run_id, heartbeat_at=pg.settings.heartbeat_timeout + 1)
    assert reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher).requeued == [run_id]
    for _ in range(pg.settings.max_attempts):
        client.delete("cpu")
        shift(pg, run_id, enqueued_at=pg.settings.requeue_after + 1)
        assert reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher).resent == [run_id]
    client.delete("cpu")
    shift(pg, run_id, enqueued_at=pg.settings.requeue_after + 1)
    reconcile(pg.db, pg.settings, pg.dispatcher, pg.dispatcher)
    job = alice.get(f"/v1/experiments/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["code"] == "never_started"
