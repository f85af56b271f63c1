"""Test support for the service: settings as environment, a live uvicorn server, real results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import redis
import uvicorn
from sqlalchemy import text

from dfp.keys.service import create_key
from dfp.queues.dispatch import CeleryDispatcher
from dfp.settings import Settings
from dfp.storage.database import Database
from dfp_engine.frequency import analyze_frequency
from dfp_engine.results import Checkpoint, HistoryPoint, LayerAnalysis, RunResult

REPO = Path(__file__).resolve().parents[2]
TABLES = (
    "webhook_deliveries",
    "fanout_chunks",
    "analysis_blocks",
    "analysis_fanouts",
    "layer_curves",
    "checkpoints",
    "runs",
    "job_tags",
    "jobs",
    "dataset_chunks",
    "datasets",
    "api_keys",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The DFP_* variables that reproduce `settings` in another process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list | dict):
            value = json.dumps([str(v) for v in value] if isinstance(value, list) else value)
        env[f"DFP_{name.upper()}"] = str(value)
    return env


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFP_")}
    env.update(settings_env(settings))
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LiveServer:
    """A real uvicorn server on a loopback port, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="uvicorn start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, every: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy, or fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def start_worker(
    settings: Settings, log_path: Path, *options: str, queues: str = "cpu"
) -> subprocess.Popen[bytes]:
    """A real Celery worker process (`dfp worker`) for `settings`, in its own process group."""
    command = [sys.executable, "-m", "dfp.cli", "worker", "--queues", queues, "--loglevel", "INFO"]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*command, *options],
            cwd=REPO,
            env=process_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Warm shutdown of a process group (a worker and its pool), then SIGKILL if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    with contextlib.suppress(ProcessLookupError):  # pool children that outlived their parent
        os.killpg(process.pid, signal.SIGKILL)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tiny_spec(**overrides: Any) -> dict[str, Any]:
    """A spec that trains in well under a second on one core."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "dataset": {"kind": "synthetic_1d", "expression": "cos(3*x)", "n_points": 24},
        "model": {"kind": "mlp", "depth": 2, "width": 8, "activation": "tanh"},
        "training": {"optimizer": "adam", "lr": 0.01, "epochs": 4, "device": "cpu", "seed": 3},
        "analysis": {"checkpoints": {"every": 2}, "deltas": {"auto": 6}, "n_samples": 24},
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


def analysed_checkpoints(
    epochs: list[int], layers: int = 3, n_deltas: int = 8, seed: int = 0
) -> list[Checkpoint]:
    """Checkpoints whose curves come from the real frequency analysis of random representations."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=40)
    checkpoints = []
    for epoch in epochs:
        analyses = []
        for layer in range(layers):
            features = rng.normal(size=(40, 4 + layer))
            result = analyze_frequency(features, labels, auto_deltas=n_deltas)
            name = "input" if layer == 0 else f"hidden.{layer}"
            analyses.append(LayerAnalysis.from_frequency(name, result))
        checkpoints.append(Checkpoint(epoch=epoch, step=epoch * 3, layers=analyses))
    return checkpoints


def run_result(index: int, checkpoints: list[Checkpoint], status: str = "succeeded") -> RunResult:
    last = checkpoints[-1].epoch if checkpoints else 0
    return RunResult(
        index=index,
        status=status,  # type: ignore[arg-type]
        n_train=40,
        n_analysis=40,
        layer_names=[layer.layer for layer in checkpoints[0].layers] if checkpoints else [],
        history=[
            HistoryPoint(epoch=e, step=3 * e, train_loss=1.0 / (e + 1)) for e in range(last + 1)
        ],
        checkpoints=checkpoints,
        elapsed_seconds=0.5,
    )


def finish_job(backend: Backend, job_id: str, body: dict[str, Any]) -> None:
    """Run every run of a submitted job to `succeeded` the way a worker stores it, with real
    analysed checkpoints and the engine's sweep summary."""
    from sqlalchemy import select

    from dfp.experiments import lifecycle
    from dfp.storage.models import Run
    from dfp_engine.spec import ExperimentSpec

    spec = ExperimentSpec.model_validate({k: v for k, v in body.items() if k != "tags"})
    with backend.db.unit_of_work() as uow:
        run_ids = list(
            uow.session.scalars(
                select(Run.id).where(Run.job_id == uuid.UUID(job_id)).order_by(Run.index)
            )
        )
    for index, run_id in enumerate(run_ids):
        with backend.db.unit_of_work() as uow:
            lease = lifecycle.claim_run(
                uow.session, run_id, worker="test:1", settings=backend.settings
            )
        assert lease is not None
        checkpoints = analysed_checkpoints([0, 2, 4], layers=3, seed=index)
        with backend.db.unit_of_work() as uow:
            assert lifecycle.finish_run(
                uow.session,
                lease,
                run_result(index, checkpoints),
                {"device": "cpu", "seed": 3},
                spec.summary_layers(),
            )


def get_json(client: httpx.Client, path: str, **kwargs: Any) -> Any:
    response = client.get(path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


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


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """A Redis database number no other running test session (or module) holds, emptied."""
    admin = redis.Redis.from_url(f"{REDIS_HOST}/0")
    for number in range(1, 16):
        if admin.set(f"dfp-test-db:{number}", os.getpid(), nx=True, ex=6 * 3600):
            break
    else:  # pragma: no cover - fifteen holders at once
        raise RuntimeError("no free Redis database number for this test session")
    url = f"{REDIS_HOST}/{number}"
    redis.Redis.from_url(url).flushdb()
    try:
        yield url
    finally:
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
        "events_heartbeat_seconds": 0.5,
        "heartbeat_timeout": 3.0,
        "reconcile_seconds": 1.0,
        "requeue_after": 2.0,
        "max_attempts": 2,
        "dataset_roots": [data_dir / "datasets"],
        "webhook_secret": "dfp-test-webhook-secret",
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
        for stored in (self.settings.data_dir / "dataset-files").glob("*"):
            stored.unlink()
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


@dataclass
class Delivery:
    """One request a Receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived


class Receiver:
    """A real HTTP server on loopback that records every POST and answers each path with the
    statuses it was told to (in turn; the last one repeats), optionally after a delay."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.scripts: dict[str, list[int]] = {}
        self.delays: dict[str, float] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.monotonic()
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, arrived)
                    )
                    script = receiver.scripts.get(self.path, [200])
                    status = script.pop(0) if len(script) > 1 else script[0]
                time.sleep(receiver.delays.get(self.path, 0.0))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]
