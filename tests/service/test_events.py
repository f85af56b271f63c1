"""Live progress: the event stream, the long-poll and the client that follow real runs.

Real servers throughout: `dfp serve --no-worker` API processes on PostgreSQL and Redis, the
in-process API on SQLite with the file queue (the embedded mode), and real Celery workers.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import (
    REPO,
    Backend,
    auth,
    free_port,
    process_env,
    service_settings,
    start_worker,
    stop_process,
    tiny_spec,
    wait_for,
)

from dfp.client import Client
from dfp.keys.service import revoke_key
from dfp.settings import Settings

# Long enough (about 5-10 s on a busy core) to watch progress move while it trains.
EPOCHS = 4000
# The stream promises an event at least every 2 s while a run trains; a loaded machine may
# deliver one late by the time a poll and a thread hop take.
MAX_GAP = 3.0


def training_spec(epochs: int = EPOCHS, **overrides: Any) -> dict[str, Any]:
    return tiny_spec(
        training={"optimizer": "adam", "lr": 0.01, "epochs": epochs, "device": "cpu", "seed": 3},
        analysis={"checkpoints": {"every": 1000}, "deltas": {"auto": 6}, "n_samples": 24},
        **overrides,
    )


@dataclass
class Stream:
    """What one event-stream connection received, with arrival times."""

    status: int
    content_type: str = ""
    events: list[tuple[float, str, Any, str | None]] = field(default_factory=list)
    comments: list[tuple[float, str]] = field(default_factory=list)

    def experiments(self) -> list[dict[str, Any]]:
        return [data for _, event, data, _ in self.events if event == "experiment"]


def read_stream(
    url: str,
    key: str | None,
    job_id: str,
    *,
    last_event_id: str | None = None,
    until: Any = None,
    timeout: float = 180,
) -> Stream:
    """Read `GET /v1/experiments/{id}/events` until the server closes it (or `until(stream)`)."""
    headers = auth(key) if key else {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with (
        httpx.Client(base_url=url, timeout=timeout) as client,
        client.stream("GET", f"/v1/experiments/{job_id}/events", headers=headers) as response,
    ):
        stream = Stream(response.status_code, response.headers.get("content-type", ""))
        if response.status_code != 200:
            response.read()
            stream.events.append((time.monotonic(), "status", response.content, None))
            return stream
        event, data, event_id = "message", [], None
        for line in response.iter_lines():
            now = time.monotonic()
            if line.startswith(":"):
                stream.comments.append((now, line))
            elif line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data.append(line.removeprefix("data: "))
            elif line.startswith("id: "):
                event_id = line.removeprefix("id: ")
            elif not line and data:
                stream.events.append((now, event, json.loads("\n".join(data)), event_id))
                event, data = "message", []
            if until is not None and until(stream):
                break
    return stream


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pg_worker(pg_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    log = tmp_path_factory.mktemp("events-worker") / "worker.log"
    # The worker's clocks as deployed (the test settings beat every 0.3 s).
    deployed = {"heartbeat_seconds": 5.0, "heartbeat_timeout": 120.0, "progress_seconds": 1.0}
    process = start_worker(pg_backend.settings.model_copy(update=deployed), log)
    wait_for(lambda: "ready." in log.read_text(), timeout=90, what="the worker to start")
    yield
    stop_process(process)


@pytest.fixture(scope="module")
def sqlite_worker(
    sqlite_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    log = tmp_path_factory.mktemp("events-sqlite-worker") / "worker.log"
    process = start_worker(sqlite_backend.settings, log)
    wait_for(lambda: "ready." in log.read_text(), timeout=90, what="the worker to start")
    yield
    stop_process(process)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def two_api_processes(pg: Backend, tmp_path: Path) -> Iterator[tuple[Settings, list[str]]]:
    """Two `dfp serve --no-worker` processes on PostgreSQL and Redis, with a tight rate limit
    (60 a minute, burst 10)."""
    settings = service_settings(
        tmp_path,
        database_url=pg.settings.database_url,
        broker_url=pg.settings.broker_url,
        rate_limit_per_minute=60,
        rate_limit_burst=10,
    )
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "dfp.cli", "serve", "--no-worker", "--port", str(port)],
            cwd=REPO,
            env=process_env(settings),
            stdout=(tmp_path / f"api-{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        for url in urls:
            wait_for(lambda url=url: _up(url), timeout=60, what=f"the API at {url}")
        yield settings, urls
    finally:
        for process in processes:
            stop_process(process)


# -------------------------------------------------------------------------------- tests


def test_a_stream_on_another_api_process_follows_the_run_to_its_end(
    pg: Backend, pg_worker: None, two_api_processes: tuple[Settings, list[str]]
) -> None:
    """Submitted through one API process, followed on the other: progress written by the
    worker reaches the stream at least every 2 s, the rate limit does not cut it, and the
    stream closes after the terminal event, which equals what GET returns."""
    _, (first, second) = two_api_processes
    key = pg.key("alice")
    with httpx.Client(base_url=first, headers=auth(key), timeout=60) as client:
        # Three runs one after the other: still training when the long-polls below are done,
        # however fast the machine is (an idle 2-core machine trains 4 000 epochs in 5 s).
        body = training_spec(epochs=5000, sweep={"field": "model.depth", "values": [2, 3, 4]})
        job_id = client.post("/v1/experiments", json=body).json()["id"]

        # The long-poll answers when progress moves, not only when the status changes.
        wait_for(
            lambda: (client.get(f"/v1/experiments/{job_id}").json()["progress"]["epoch"] or 0) > 0,
            timeout=60,
            what="the run to train",
            every=1.0,  # within the key's rate of one request a second
        )
        polled_epochs = set()
        for _ in range(4):
            started = time.monotonic()
            polled = client.get(f"/v1/experiments/{job_id}", params={"wait": 30}).json()
            assert time.monotonic() - started < MAX_GAP
            polled_epochs.add(polled["progress"]["epoch"])
        assert len(polled_epochs) >= 2

        flood: list[int] = []

        def exhaust_the_key(stream: Stream) -> bool:
            # Once the stream is open, use up the key's budget on the other process.
            if len(stream.events) == 2 and not flood:
                flood.extend(client.get("/v1/experiments").status_code for _ in range(15))
            return False

        stream = read_stream(second, key, job_id, until=exhaust_the_key)
        # The bucket refills at one request a second.
        final = wait_for(
            lambda: (r := client.get(f"/v1/experiments/{job_id}")).status_code == 200 and r,
            timeout=30,
            what="the rate limit to let a request through",
            every=0.5,
        ).json()

    assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
    assert 429 in flood  # the key was over its limit while the stream went on
    experiments = stream.experiments()
    assert experiments[-1]["is_terminal"] and experiments[-1]["status"] == "succeeded"
    assert not any(e["is_terminal"] for e in experiments[:-1])
    assert experiments[-1] == final
    # While the run trained, an event at least every 2 s, and the progress moved in them.
    running = [(at, data) for at, event, data, _ in stream.events if data["status"] == "running"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(running)]
    assert len(running) >= 3 and max(gaps) <= MAX_GAP, gaps
    fractions = [data["progress"]["fraction"] for _, data in running]
    assert fractions == sorted(fractions) and len(set(fractions)) >= 3
    epochs = {data["progress"]["epoch"] for _, data in running}
    assert len(epochs) >= 3
    print(f"stream: {len(running)} running events, gaps median {sorted(gaps)[len(gaps) // 2]:.2f}")

    # Reconnecting with the terminal event's id: 204, so an EventSource stops reconnecting.
    last_id = stream.events[-1][3]
    again = wait_for(
        lambda: (r := read_stream(first, key, job_id, last_event_id=last_id)).status != 429 and r,
        timeout=30,
        what="the rate limit to let a request through",
        every=0.5,
    )
    assert again.status == 204


def test_cancel_stops_a_running_run_within_a_second_and_progress_agrees(
    pg: Backend, pg_worker: None
) -> None:
    key = pg.key("alice")
    body = training_spec(epochs=5000, sweep={"field": "model.depth", "values": [2, 3]})
    with pg.client(key) as client:
        job_id = client.post("/v1/experiments", json=body).json()["id"]
        wait_for(
            lambda: (
                (client.get(f"/v1/experiments/{job_id}").json()["progress"]["epoch"] or 0) > 200
            ),
            timeout=60,
            what="run 0 to train",
            every=0.1,
        )
        cancelled_at = time.monotonic()
        assert client.post(f"/v1/experiments/{job_id}/cancel").status_code == 200
        stream = read_stream(pg.url, key, job_id)
        ended_at = stream.events[-1][0]
        job = client.get(f"/v1/experiments/{job_id}").json()
    latency = ended_at - cancelled_at
    print(f"cancel latency: {latency:.2f} s")
    # One second for the worker to notice, one epoch (milliseconds) to stop, the final write.
    assert latency < 2.5
    assert job["status"] == "cancelled"
    assert [run["status"] for run in job["runs"]] == ["cancelled", "cancelled"]
    progress = job["progress"]
    assert progress["message"].startswith("cancelled") and "succeeded" not in progress["message"]
    assert progress["runs_finished"] == 0
    # Run 0 had trained a share of its epochs, run 1 none: the fraction says so.
    assert 0 < progress["fraction"] < 0.5
    assert stream.experiments()[-1]["status"] == "cancelled"


def test_the_client_follows_the_stream_in_the_embedded_mode(
    sqlite_backend: Backend, sqlite_worker: None
) -> None:
    sqlite_backend.clean()
    key = sqlite_backend.key("alice")
    updates: list[tuple[float, str, float]] = []
    with Client(sqlite_backend.url, key) as client:
        job = client.submit(training_spec())
        done = client.wait(
            job.id,
            timeout=180,
            on_update=lambda e: updates.append((time.monotonic(), e.status, e.progress.fraction)),
        )
    assert done.status == "succeeded" and done.progress.fraction == 1.0
    running = [(at, fraction) for at, status, fraction in updates if status == "running"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(running)]
    assert len(running) >= 3 and max(gaps) <= MAX_GAP, gaps
    assert len({fraction for _, fraction in running}) >= 3


def test_stream_access_heartbeats_resumption_and_the_end(
    backend: Backend, alice: httpx.Client, bob: httpx.Client
) -> None:
    """Runs on the gpu queue, which no worker here takes: they stay queued until cancelled."""
    queued = tiny_spec(training={"epochs": 4, "device": "cuda"})
    job_id = alice.post("/v1/experiments", json=queued).json()["id"]
    alice_key = alice.headers["Authorization"].removeprefix("Bearer ")
    bob_key = bob.headers["Authorization"].removeprefix("Bearer ")

    missing = read_stream(backend.url, None, job_id)
    assert missing.status == 401
    assert json.loads(missing.events[0][2])["error"]["code"] == "unauthenticated"
    other = read_stream(backend.url, bob_key, job_id)
    assert other.status == 404
    assert json.loads(other.events[0][2])["error"]["code"] == "not_found"

    # Idle: the queued state once, then comment heartbeats; a cancel ends the stream.
    cancelling: list[threading.Thread] = []

    def cancel_after_heartbeats(stream: Stream) -> bool:
        if len(stream.comments) == 2 and not cancelling:
            cancel = f"/v1/experiments/{job_id}/cancel"
            cancelling.append(threading.Thread(target=alice.post, args=(cancel,)))
            cancelling[0].start()
        return False

    stream = read_stream(backend.url, alice_key, job_id, until=cancel_after_heartbeats)
    cancelling[0].join()
    assert [e["status"] for e in stream.experiments()] == ["queued", "cancelled"]
    assert all(text == ": heartbeat" for _, text in stream.comments)
    beats = [at for at, _ in stream.comments]
    assert beats[1] - beats[0] < 2 * backend.settings.events_heartbeat_seconds + 1
    queued_id, terminal_id = stream.events[0][3], stream.events[-1][3]
    assert queued_id and terminal_id and queued_id != terminal_id

    # Resuming from an older event sends the current state; from the terminal one, 204.
    resumed = read_stream(backend.url, alice_key, job_id, last_event_id=queued_id)
    assert [e["status"] for e in resumed.experiments()] == ["cancelled"]
    assert read_stream(backend.url, alice_key, job_id, last_event_id=terminal_id).status == 204

    # A key revoked while its stream is open: an error event, and the stream ends.
    second = alice.post("/v1/experiments", json=queued).json()["id"]

    revoked_at: list[float] = []

    def revoke_once_open(stream: Stream) -> bool:
        if len(stream.events) == 1 and not revoked_at:
            with backend.db.unit_of_work() as uow:
                revoke_key(uow.session, alice_key)
            revoked_at.append(time.monotonic())
        return False

    revoked = read_stream(backend.url, alice_key, second, until=revoke_once_open, timeout=30)
    kind, data = revoked.events[-1][1], revoked.events[-1][2]
    assert kind == "error" and data["status"] == 401
    assert data["error"]["code"] == "unauthenticated"
