"""Authentication and authorisation: hashed keys compared in constant time, revocation that
takes effect at once, every route but health and documentation behind a key, owners isolated
from each other's experiments, results, figures and CSV, and per-key rate limits (one limit
across several API processes).
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from service_support import (
    REPO,
    Backend,
    LiveServer,
    auth,
    finish_job,
    free_port,
    process_env,
    service_settings,
    stop_process,
    tiny_spec,
    wait_for,
)
from sqlalchemy import select, text

from api.app import create_app
from dfp.cli import main
from dfp.keys import service as keys
from dfp.storage.models import ApiKey

# Routes that answer without a key; any other route must refuse a request without one.
PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# A well-formed body for POST /v1/analyses, so that only the key can be what is refused.
ANALYSIS_BODY = {"dataset_id": str(uuid.uuid4()), "features": ["x"], "targets": "y"}
# The web UI's login page and its scripts and styles; every other page needs a session.
UI_PUBLIC = {"/ui/login", "/ui/static"}


@pytest.fixture
def finished(pg: Backend) -> tuple[str, str, str]:
    """alice's key, bob's key, and alice's finished sweep with stored results and figures."""
    alice, bob = pg.key("alice"), pg.key("bob")
    body = tiny_spec(sweep={"field": "model.depth", "values": [1, 2]})
    with pg.client(alice) as client:
        job_id = client.post("/v1/experiments", json=body).json()["id"]
    finish_job(pg, job_id, body)
    return alice, bob, job_id


# ------------------------------------------------------------------------ keys


def test_keys_are_stored_as_sha256_hashes_only(
    pg: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DFP_DATABASE_URL", str(pg.settings.database_url))
    assert main(["keys", "create", "--owner", "vault"]) == 0
    key = capsys.readouterr().out.strip()
    key_id, secret = keys.KEY_PATTERN.fullmatch(key).groups()  # type: ignore[union-attr]
    with pg.db.engine.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(text("SELECT * FROM api_keys"))]
    [row] = [r for r in rows if r["id"] == key_id]
    assert row["secret_hash"] == hashlib.sha256(key.encode()).hexdigest()
    stored = " ".join(str(value) for value in row.values())
    assert secret not in stored and key not in stored


def test_keys_are_compared_in_constant_time(pg: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    key = pg.key("timing")
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    compared: list[tuple[str, str]] = []
    compare_digest = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    with pg.db.unit_of_work() as uow:
        assert keys.authenticate(uow.session, key) == "timing"
        assert keys.authenticate(uow.session, forged) is None
        stored = uow.session.scalar(select(ApiKey.secret_hash).where(ApiKey.id == key[4:16]))
    # Both the right and the forged secret went through the constant-time comparison of hashes.
    assert compared == [
        (stored, hashlib.sha256(key.encode()).hexdigest()),
        (stored, hashlib.sha256(forged.encode()).hexdigest()),
    ]


def test_dfp_keys_revoke_stops_a_key_at_once(
    pg: Backend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = pg.key("leaver")
    monkeypatch.setenv("DFP_DATABASE_URL", str(pg.settings.database_url))
    with pg.client(key) as client:
        job_id = client.post("/v1/experiments", json=tiny_spec()).json()["id"]
        outcome: dict[str, Any] = {}

        def long_poll() -> None:
            with pg.client(key) as poller:
                start = time.monotonic()
                response = poller.get(f"/v1/experiments/{job_id}", params={"wait": 20})
                outcome.update(status=response.status_code, seconds=time.monotonic() - start)

        waiting = threading.Thread(target=long_poll)
        waiting.start()
        time.sleep(0.5)
        assert main(["keys", "revoke", key[4:16]]) == 0  # by id, as `dfp keys list` shows it
        assert "revoked key" in capsys.readouterr().out
        # The next request on the same open connection is refused ...
        assert client.get("/v1/experiments").status_code == 401
        waiting.join(timeout=10)
    # ... and so is a long-poll that started before the revocation, within one poll period.
    assert outcome["status"] == 401 and outcome["seconds"] < 5


# ------------------------------------------------------------------- every route


def app_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, with routers included into it flattened."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from app_routes(included.routes)
        else:
            yield route


def test_every_route_but_health_and_documentation_needs_a_key(
    pg: Backend, finished: tuple[str, str, str]
) -> None:
    _, _, job_id = finished
    routes = list(app_routes(pg.server.server.config.app.routes))
    public = {route.path for route in routes if not isinstance(route, APIRoute)}
    public |= {"/healthz", "/readyz", "/ui/login"}
    # A new route that needs no key must be added here on purpose.
    assert public == PUBLIC | UI_PUBLIC
    checked = set()
    with httpx.Client(base_url=pg.url) as anonymous:
        for path in PUBLIC:
            assert anonymous.get(path).status_code == 200, path
        for route in routes:
            if not isinstance(route, APIRoute) or route.path in PUBLIC | UI_PUBLIC:
                continue
            if route.path.startswith("/ui"):
                # A page without a session (or with a forged one) sends the browser to login.
                url = route.path.format(experiment_id=job_id)
                forged = f"{'0' * 12}.9999999999.{'a' * 22}.{'0' * 64}"
                for method in route.methods:
                    for cookie in (None, forged):
                        anonymous.cookies.clear()
                        if cookie is not None:
                            anonymous.cookies.set("dfp_session", cookie)
                        response = anonymous.request(method, url, data={}, follow_redirects=True)
                        assert response.url.path == "/ui/login", (method, url, response.text)
                        assert response.status_code == 200
                anonymous.cookies.clear()
                continue
            url = route.path.format(
                experiment_id=job_id,
                name="loss_curves",
                dataset_id=uuid.uuid4(),
                analysis_id=uuid.uuid4(),
            )
            for method in route.methods:
                for headers in ({}, auth("dfp_000000000000_" + "x" * 43), auth(str(uuid.uuid4()))):
                    body = ANALYSIS_BODY if url.startswith("/v1/analyses") else tiny_spec()
                    response = anonymous.request(method, url, json=body, headers=headers)
                    assert response.status_code == 401, (method, url, response.text)
                    assert response.headers["www-authenticate"] == "Bearer"
                checked.add((method, route.path))
    document = httpx.get(f"{pg.url}/openapi.json").json()
    declared = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
        if path not in PUBLIC
    }
    assert checked == declared and len(checked) >= 11


# --------------------------------------------------------------------- owners


def test_another_owners_experiment_results_figures_and_csv_are_404(
    pg: Backend, finished: tuple[str, str, str]
) -> None:
    alice, bob, job_id = finished
    base = f"/v1/experiments/{job_id}"
    with pg.client(alice) as owner, pg.client(bob) as other:
        figures = [f["name"] for f in owner.get(f"{base}/figures").json()["data"]]
        assert "loss_curves" in figures and len(figures) >= 3
        reads = [
            base,
            f"{base}?wait=1",
            f"{base}/results",
            f"{base}/results?layer=hidden.1&epoch=2&run=1",
            f"{base}/results.csv",
            f"{base}/results.csv?layer=input",
            f"{base}/figures",
            *(f"{base}/figures/{name}.png" for name in figures),
        ]
        for path in reads:
            assert owner.get(path).status_code == 200, path
            response = other.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"] == {
                "code": "not_found",
                "message": f"no experiment {job_id}",
                "details": None,
            }
            assert job_id not in other.get("/v1/experiments").text
        assert other.post(f"{base}/cancel").status_code == 404
        assert other.delete(base).status_code == 404
        # Nothing bob tried changed alice's experiment.
        job = owner.get(base).json()
        assert job["status"] == "succeeded" and job["cancel_requested"] is False
        assert owner.delete(base).status_code == 204


# ---------------------------------------------------------------- rate limits


def burst(client: httpx.Client, n: int, path: str = "/v1/experiments") -> list[httpx.Response]:
    return [client.get(path) for _ in range(n)]


def test_rate_limit_per_key_is_429_with_retry_after_in_process(tmp_path: Path) -> None:
    """The embedded mode (SQLite, no Redis) limits in its one process."""
    from dfp.storage import migrate

    settings = service_settings(tmp_path, rate_limit_per_minute=60, rate_limit_burst=5)
    migrate.upgrade(settings.resolved_database_url())
    server = LiveServer(create_app(settings)).start()
    backend = Backend("sqlite", settings, *_db_and_dispatcher(settings), server)
    try:
        first, second = backend.key("busy"), backend.key("calm")
        with backend.client(first) as busy, backend.client(second) as calm:
            statuses = [r.status_code for r in burst(busy, 8)]
            assert statuses == [200] * 5 + [429] * 3
            limited = busy.get("/v1/experiments")
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            error = limited.json()["error"]
            assert (
                error["code"] == "rate_limited" and "DFP_RATE_LIMIT_PER_MINUTE" in error["message"]
            )
            assert calm.get("/v1/experiments").status_code == 200  # per key
            assert busy.get("/healthz").status_code == 200  # health is never limited
            time.sleep(int(limited.headers["retry-after"]))
            assert busy.get("/v1/experiments").status_code == 200  # the bucket refills
    finally:
        server.stop()
        backend.db.dispose()


def _db_and_dispatcher(settings: Any) -> tuple[Any, Any]:
    from dfp.queues.celery_app import create_celery
    from dfp.queues.dispatch import CeleryDispatcher
    from dfp.storage.database import Database

    return Database.from_settings(settings), CeleryDispatcher(create_celery(settings))


def test_without_redis_the_limit_falls_back_to_the_process(pg: Backend, tmp_path: Path) -> None:
    """A Redis outage neither fails requests nor lifts the limit."""
    settings = service_settings(
        tmp_path,
        database_url=pg.settings.database_url,
        broker_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        rate_limit_per_minute=60,
        rate_limit_burst=3,
    )
    server = LiveServer(create_app(settings)).start()
    try:
        with httpx.Client(base_url=server.url, headers=auth(pg.key("offline"))) as client:
            assert [r.status_code for r in burst(client, 5)] == [200] * 3 + [429] * 2
    finally:
        server.stop()


@pytest.fixture
def two_api_processes(pg: Backend, tmp_path: Path) -> Iterator[list[str]]:
    """Two `dfp serve --no-worker` processes on PostgreSQL and Redis, 60 requests a minute
    per key with a burst of 10."""
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
        yield urls
    finally:
        for process in processes:
            stop_process(process)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_one_rate_limit_holds_across_api_processes(
    pg: Backend, two_api_processes: list[str]
) -> None:
    key = pg.key("shared")
    with (
        httpx.Client(base_url=two_api_processes[0], headers=auth(key)) as one,
        httpx.Client(base_url=two_api_processes[1], headers=auth(key)) as two,
    ):
        statuses = [client.get("/v1/experiments").status_code for client in [one, two] * 15]
    allowed = statuses.count(200)
    # Each process alone would allow its own burst of 10 (20 together); shared, the key gets
    # 10 plus whatever refilled meanwhile (one a second).
    assert 10 <= allowed <= 13, statuses
    assert statuses.count(429) == len(statuses) - allowed
    assert 429 in statuses[0::2] and 429 in statuses[1::2]  # both processes enforce it


def test_429_and_retry_after_are_declared_for_every_operation_with_a_key(pg: Backend) -> None:
    document = httpx.get(f"{pg.url}/openapi.json").json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "401" not in operation["responses"]:
                assert path in PUBLIC, (method, path)
                continue
            limited = operation["responses"]["429"]
            assert "Retry-After" in limited["headers"], (method, path)
            assert limited["content"]["application/json"]["schema"]["$ref"].endswith(
                "ErrorResponse"
            )
