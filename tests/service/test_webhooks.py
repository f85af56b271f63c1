"""Webhooks end to end: real Celery workers (one training, one delivering on its own queue),
PostgreSQL, Redis, and a real HTTP receiver on loopback (allowed here by
DFP_WEBHOOK_ALLOWED_NETWORKS). Signatures verify with the owner's secret, receiver errors are
retried with exponential backoff under the same event id, refusals are not retried, and a slow
receiver never delays an experiment.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import (
    REPO,
    Backend,
    Delivery,
    LiveServer,
    Receiver,
    redis_database,
    service_settings,
    start_worker,
    stop_process,
    tiny_spec,
    wait_for,
)
from sqlalchemy import select

from api.app import create_app
from dfp.client import Client
from dfp.experiments import lifecycle
from dfp.queues.celery_app import create_celery
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings
from dfp.storage.database import Database
from dfp.storage.models import Job, WebhookDelivery
from dfp.webhooks import outbox
from dfp.webhooks.delivery import post_event
from dfp.webhooks.signing import owner_secret, signature_header, verify_signature

RETRY_SECONDS = 0.25
MAX_ATTEMPTS = 4


@dataclass
class Stack:
    backend: Backend
    receiver: Receiver
    key: str
    secret: str


@pytest.fixture(scope="module")
def stack(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API, a CPU worker and a webhook worker on PostgreSQL and Redis, plus a receiver.

    The workers get a Redis database of their own: other tests' runs are not theirs to take."""
    data_dir = tmp_path_factory.mktemp("webhooks")
    with redis_database() as broker_url:
        yield from _stack(data_dir, pg_url, broker_url)


def _stack(data_dir: Path, pg_url: str, broker_url: str) -> Iterator[Stack]:
    settings = service_settings(
        data_dir,
        database_url=pg_url,
        broker_url=broker_url,
        webhook_allowed_networks=["127.0.0.0/8"],
        webhook_retry_seconds=RETRY_SECONDS,
        webhook_poll_seconds=0.1,
        webhook_max_attempts=MAX_ATTEMPTS,
        webhook_timeout=5.0,
    )
    server = LiveServer(create_app(settings)).start()
    db = Database.from_settings(settings)
    backend = Backend("webhooks", settings, db, CeleryDispatcher(create_celery(settings)), server)
    backend.clean()
    logs = data_dir / "cpu.log", data_dir / "webhooks.log"
    workers = [
        start_worker(settings, logs[0]),
        start_worker(
            settings, logs[1], "--pool", "threads", "--concurrency", "4", queues="webhooks"
        ),
    ]
    try:
        for log in logs:
            wait_for(lambda log=log: "ready." in log.read_text(), timeout=90, what=f"{log.name}")
        with Receiver() as receiver:
            key = backend.key("lab")
            with Client(server.url, key) as client:
                secret = client.webhook_secret()
            yield Stack(backend, receiver, key, secret)
    finally:
        for worker in workers:
            stop_process(worker)
        server.stop()
        backend.clean()
        db.dispose()


def submit(stack: Stack, path: str, **spec: Any) -> str:
    body = {**tiny_spec(**spec), "callback_url": stack.receiver.url + path, "tags": ["wh"]}
    with stack.backend.client(stack.key) as client:
        response = client.post("/v1/experiments", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def job_row(stack: Stack, job_id: str) -> Job:
    with stack.backend.db.unit_of_work() as uow:
        job = uow.session.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job


def deliveries_of(stack: Stack, job_id: str) -> list[WebhookDelivery]:
    with stack.backend.db.unit_of_work() as uow:
        query = select(WebhookDelivery).where(WebhookDelivery.job_id == uuid.UUID(job_id))
        return list(uow.session.scalars(query))


def readme_verify() -> Any:
    """The receiver's check exactly as README shows it (standard library only)."""
    readme = (REPO / "README.md").read_text()
    start = readme.index("```python\nimport hashlib, hmac, time")
    code = readme[start + len("```python\n") : readme.index("```", start + 3)]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["verify"]


def check_signed(stack: Stack, delivery: Delivery) -> dict[str, Any]:
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("dfp-webhooks/")
    signature = headers["x-dfp-signature"]
    assert verify_signature(stack.secret, delivery.body, signature)
    assert readme_verify()(stack.secret, delivery.body, signature)
    assert not verify_signature(stack.secret, delivery.body + b" ", signature)
    assert not verify_signature("whsec_" + "0" * 64, delivery.body, signature)
    event: dict[str, Any] = json.loads(delivery.body)
    assert headers["x-dfp-event-id"] == event["id"]
    assert headers["x-dfp-event-type"] == event["type"]
    return event


# ---------------------------------------------------------------- end to end


def test_a_finished_experiment_posts_one_signed_event(stack: Stack) -> None:
    job_id = submit(stack, "/ok")
    wait_for(lambda: stack.receiver.at("/ok"), timeout=60, what="the webhook")
    [delivery] = stack.receiver.at("/ok")
    event = check_signed(stack, delivery)
    experiment = event["data"]["experiment"]
    assert event["type"] == "experiment.succeeded"
    assert experiment["id"] == job_id and experiment["status"] == "succeeded"
    assert experiment["tags"] == ["wh"] and experiment["error"] is None
    assert experiment["links"]["results"] == f"/v1/experiments/{job_id}/results"
    assert job_row(stack, job_id).status == "succeeded"
    time.sleep(1.0)  # nothing more comes
    assert len(stack.receiver.at("/ok")) == 1
    [row] = deliveries_of(stack, job_id)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)
    assert str(row.id) == event["id"]


def test_a_receiver_error_is_retried_with_backoff_under_the_same_event_id(stack: Stack) -> None:
    stack.receiver.scripts["/flaky"] = [500, 503, 200]
    job_id = submit(stack, "/flaky")
    wait_for(lambda: len(stack.receiver.at("/flaky")) >= 3, timeout=60, what="three attempts")
    attempts = stack.receiver.at("/flaky")
    events = [check_signed(stack, attempt) for attempt in attempts]
    assert len({event["id"] for event in events}) == 1  # one event, retried
    assert len({attempt.body for attempt in attempts}) == 1  # byte for byte the same
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    # Exponential backoff: at least 0.8 x 0.25 s, then 0.8 x 0.5 s (jitter is ±20 %).
    assert gaps[0] >= 0.8 * RETRY_SECONDS and gaps[1] >= 0.8 * 2 * RETRY_SECONDS, gaps
    wait_for(lambda: deliveries_of(stack, job_id)[0].status == "delivered", timeout=10, what="done")
    time.sleep(1.0)
    assert len(stack.receiver.at("/flaky")) == 3


def test_a_refusing_receiver_is_not_asked_again(stack: Stack) -> None:
    stack.receiver.scripts["/gone"] = [410]
    stack.receiver.scripts["/bad"] = [400]
    jobs = [submit(stack, "/gone"), submit(stack, "/bad")]
    for path in ("/gone", "/bad"):
        wait_for(lambda path=path: stack.receiver.at(path), timeout=60, what=path)
    time.sleep(2.0)  # several retry periods: no storm
    assert len(stack.receiver.at("/gone")) == len(stack.receiver.at("/bad")) == 1
    for job_id, status in zip(jobs, (410, 400), strict=True):
        [row] = deliveries_of(stack, job_id)
        assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, status)
        assert f"HTTP {status}" in (row.last_error or "")


def test_a_receiver_that_never_recovers_gets_the_attempt_cap(stack: Stack) -> None:
    stack.receiver.scripts["/down"] = [502]
    job_id = submit(stack, "/down")
    wait_for(
        lambda: deliveries_of(stack, job_id) and deliveries_of(stack, job_id)[0].status == "failed",
        timeout=60,
        what="the delivery to give up",
    )
    assert len(stack.receiver.at("/down")) == MAX_ATTEMPTS
    [row] = deliveries_of(stack, job_id)
    assert row.attempts == MAX_ATTEMPTS and row.last_status_code == 502


def test_a_slow_receiver_never_delays_experiments(stack: Stack) -> None:
    stack.receiver.delays["/slow"] = 3.0
    first = submit(stack, "/slow")
    wait_for(lambda: stack.receiver.at("/slow"), timeout=60, what="the first webhook")
    held_since = stack.receiver.at("/slow")[0].at
    second = submit(stack, "/ok-second")
    with stack.backend.client(stack.key) as client:
        finished = client.get(f"/v1/experiments/{second}", params={"wait": 30}).json()
        while not finished["is_terminal"]:
            finished = client.get(f"/v1/experiments/{second}", params={"wait": 30}).json()
    # The second experiment ran and finished while the receiver still held the first event.
    assert finished["status"] == "succeeded"
    assert time.monotonic() - held_since < 3.0
    assert job_row(stack, first).status == "succeeded"


def test_the_secret_is_per_owner(stack: Stack) -> None:
    other = stack.backend.key("another-lab")
    with Client(stack.backend.url, other) as client:
        assert client.webhook_secret() != stack.secret
    assert stack.secret == owner_secret(stack.backend.settings, "lab")


# -------------------------------------------------------------------- pieces


def test_an_event_is_recorded_once_per_experiment_and_only_with_a_callback(pg: Backend) -> None:
    key = pg.key("once")
    with pg.client(key) as client:
        url = "https://93.184.216.34/hook"
        with_callback = client.post(
            "/v1/experiments", json={**tiny_spec(), "callback_url": url}
        ).json()["id"]
        without = client.post("/v1/experiments", json=tiny_spec()).json()["id"]
        for job_id in (with_callback, without, with_callback):
            assert client.post(f"/v1/experiments/{job_id}/cancel").status_code == 200
    with pg.db.unit_of_work() as uow:
        rows = list(uow.session.scalars(select(WebhookDelivery)))
        assert lifecycle.finalize_job(uow.session, uuid.UUID(with_callback)) == "cancelled"
    [row] = rows
    assert str(row.job_id) == with_callback and row.event_type == "experiment.cancelled"
    event = json.loads(row.body)
    assert event["data"]["experiment"]["error"]["code"] == "cancelled"
    with pg.db.unit_of_work() as uow:
        assert len(list(uow.session.scalars(select(WebhookDelivery)))) == 1


def test_delivery_checks_the_address_again_before_connecting(tmp_path: Path) -> None:
    """A name that resolved to a public address at submission may point inside later: the
    attempt is refused without a connection, and not retried."""
    settings: Settings = service_settings(tmp_path)
    with Receiver() as receiver:
        attempt = outbox.Attempt(uuid.uuid4(), 1, "lab", receiver.url + "/in", "t", "{}")
        secret = owner_secret(settings, "lab")
        assert secret is not None
        refused = post_event(attempt, secret, timeout=2)
        assert not refused.delivered and not refused.retry
        assert "loopback, private" in (refused.error or "")
        assert receiver.at("/in") == []
        allowed = post_event(attempt, secret, timeout=2, allowed_networks=settings_networks())
        assert allowed.delivered and len(receiver.at("/in")) == 1


def settings_networks() -> list[Any]:
    import ipaddress

    return [ipaddress.ip_network("127.0.0.0/8")]


def test_redirects_are_not_followed(tmp_path: Path) -> None:
    with Receiver() as receiver:
        receiver.scripts["/moved"] = [307]
        attempt = outbox.Attempt(uuid.uuid4(), 1, "lab", receiver.url + "/moved", "t", "{}")
        outcome = post_event(attempt, "s", timeout=2, allowed_networks=settings_networks())
        assert not outcome.delivered and not outcome.retry and "redirect" in (outcome.error or "")


def test_signatures_are_bound_to_body_secret_and_time() -> None:
    body = b'{"id": "x"}'
    header = signature_header("whsec_a", body, timestamp=1_000_000)
    assert verify_signature("whsec_a", body, header, now=1_000_100)
    assert not verify_signature("whsec_a", body, header, now=1_000_400)  # too old: replayed
    assert not verify_signature("whsec_b", body, header, now=1_000_100)
    assert not verify_signature("whsec_a", body + b"\n", header, now=1_000_100)
    assert not verify_signature("whsec_a", body, "t=1000000", now=1_000_100)
    assert not verify_signature("whsec_a", body, "garbage", now=1_000_100)
    assert httpx.URL(f"http://x/?s={header}")  # printable: fits a header
