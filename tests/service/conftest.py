"""Fixtures for the service tests: real PostgreSQL (built by the Alembic chain), real Redis,
SQLite with the filesystem broker, and real HTTP servers.

Each test session gets its own PostgreSQL database and its own Redis database number, so
parallel sessions on one machine do not see each other. Tables are emptied before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
import redis
from private_services import PrivatePostgres, PrivateRedis
from service_support import (
    REDIS_HOST,
    Backend,
    LiveServer,
    create_pg_database,
    drop_pg_database,
    service_settings,
)

from api.app import create_app
from dfp.queues.celery_app import create_celery
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings
from dfp.storage import migrate
from dfp.storage.database import Database


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session, migrated by the real Alembic chain."""
    name = f"dfp_test_{os.getpid()}"
    url = create_pg_database(name)
    migrate.upgrade(url)
    yield url
    drop_pg_database(name)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database number no other running test session holds."""
    admin = redis.Redis.from_url(f"{REDIS_HOST}/0")
    for number in range(1, 16):
        if admin.set(f"dfp-test-db:{number}", os.getpid(), nx=True, ex=6 * 3600):
            break
    else:  # pragma: no cover - sixteen sessions at once
        raise RuntimeError("no free Redis database number for this test session")
    url = f"{REDIS_HOST}/{number}"
    redis.Redis.from_url(url).flushdb()
    yield url
    redis.Redis.from_url(url).flushdb()
    admin.delete(f"dfp-test-db:{number}")


def _backend(name: str, settings: Settings) -> Backend:
    server = LiveServer(create_app(settings)).start()
    db = Database.from_settings(settings)
    return Backend(name, settings, db, CeleryDispatcher(create_celery(settings)), server)


@pytest.fixture(scope="session")
def pg_backend(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    data_dir = tmp_path_factory.mktemp("pg-backend")
    settings = service_settings(data_dir, database_url=pg_url, broker_url=redis_url)
    backend = _backend("postgresql", settings)
    yield backend
    backend.server.stop()
    backend.db.dispose()


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    data_dir = tmp_path_factory.mktemp("sqlite-backend")
    settings = service_settings(data_dir)
    migrate.upgrade(settings.resolved_database_url())
    backend = _backend("sqlite", settings)
    yield backend
    backend.server.stop()
    backend.db.dispose()


@pytest.fixture
def pg(pg_backend: Backend) -> Backend:
    """The PostgreSQL + Redis deployment, emptied for this test."""
    pg_backend.clean()
    return pg_backend


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each deployment in turn (PostgreSQL + Redis, SQLite + filesystem broker), emptied."""
    chosen: Backend = request.getfixturevalue(
        "pg_backend" if request.param == "postgresql" else "sqlite_backend"
    )
    chosen.clean()
    return chosen


@pytest.fixture
def alice(backend: Backend) -> Iterator[httpx.Client]:
    with backend.client(backend.key("alice")) as client:
        yield client


@pytest.fixture
def bob(backend: Backend) -> Iterator[httpx.Client]:
    with backend.client(backend.key("bob")) as client:
        yield client


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this session's own, for tests that stop and restart it."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis server of this session's own, for tests that stop and restart it."""
    server = PrivateRedis()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def private_backend(
    private_pg: PrivatePostgres,
    private_redis: PrivateRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    """The deployment on the private servers: API over HTTP, PostgreSQL and Redis."""
    url = private_pg.create_database("dfp")
    migrate.upgrade(url)
    data_dir = tmp_path_factory.mktemp("private-backend")
    settings = service_settings(
        data_dir,
        database_url=url,
        broker_url=private_redis.url(),
        max_attempts=3,
        max_concurrent_jobs=1000,
    )
    backend = _backend("private", settings)
    yield backend
    backend.server.stop()
    backend.db.dispose()


@pytest.fixture
def private(
    private_backend: Backend, private_pg: PrivatePostgres, private_redis: PrivateRedis
) -> Backend:
    """The private deployment with both servers up (an earlier test may have stopped one)."""
    if not private_pg.running:
        private_pg.start()
    private_redis.start()
    private_backend.db.engine.dispose()
    private_backend.clean()
    return private_backend
