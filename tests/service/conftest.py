"""Fixtures for the service tests: real PostgreSQL (built by the Alembic chain), real Redis,
SQLite with the filesystem broker, and real HTTP servers.

Each test session gets its own PostgreSQL database and its own Redis database number, so
parallel sessions on one machine do not see each other. Tables are emptied before each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from sqlalchemy import text

from api.app import create_app
from dfp.keys.service import create_key
from dfp.settings import Settings
from dfp.storage import migrate
from dfp.storage.database import Database
from tests.service.support import TABLES, LiveServer, auth
from worker.app import create_celery
from worker.dispatch import CeleryDispatcher

PG_ADMIN_URL = os.environ.get(
    "DFP_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_HOST = os.environ.get("DFP_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _database_url(name: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def create_pg_database(name: str) -> str:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return _database_url(name)


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


def service_settings(data_dir: Path, **overrides: object) -> Settings:
    """Small limits and fast clocks, so that limits and recovery are quick to exercise."""
    values: dict[str, object] = {
        "data_dir": data_dir,
        "max_epochs": 5000,
        "max_depth": 16,
        "max_width": 512,
        "max_samples": 5000,
        "max_sweep_size": 8,
        "max_concurrent_jobs": 12,
        "heartbeat_seconds": 0.3,
        "heartbeat_timeout": 3.0,
        "reconcile_seconds": 1.0,
        "requeue_after": 2.0,
        "max_attempts": 2,
        "dataset_roots": [data_dir / "datasets"],
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@dataclass
class Backend:
    """One deployment under test: its settings, database, dispatcher and live HTTP server."""

    name: str
    settings: Settings
    db: Database
    dispatcher: CeleryDispatcher
    server: LiveServer

    @property
    def url(self) -> str:
        return self.server.url

    def clean(self) -> None:
        with self.db.engine.begin() as connection:
            if self.db.dialect == "postgresql":
                connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in TABLES:
                    connection.execute(text(f"DELETE FROM {table}"))
        if self.settings.broker_url:
            redis.Redis.from_url(self.settings.broker_url).flushdb()
        else:
            for message in self.settings.broker_dir().glob("*.msg"):
                message.unlink(missing_ok=True)

    def key(self, owner: str) -> str:
        with self.db.unit_of_work() as uow:
            return create_key(uow.session, owner).key

    def client(self, key: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(key) if key else {}, timeout=90)


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
