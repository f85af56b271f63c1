"""`dfp serve` (API plus workers, embedded by default) and `dfp worker` (a worker alone)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dfp.cli.app import app
from dfp.cli.db import database_schema
from dfp.cli.errors import fail
from dfp.cli.options import DataDirOption, load_settings
from dfp.queues import CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE

if TYPE_CHECKING:
    from dfp.settings import Settings

WORKER_STOP_SECONDS = 10


def ensure_local_key(settings: Settings) -> str:
    """The embedded mode's key for owner 'local': reused from the data dir, or created there."""
    from dfp.keys.service import authenticate, create_key
    from dfp.storage.database import Database

    path = settings.local_key_file()
    db = Database.from_settings(settings)
    try:
        with db.unit_of_work() as uow:
            if path.exists():
                key = path.read_text(encoding="utf-8").strip()
                if authenticate(uow.session, key) is not None:
                    return key
            key = create_key(uow.session, "local").key
    finally:
        db.dispose()
    write_private(path, key)
    return key


def ensure_webhook_secret(settings: Settings) -> str:
    """The embedded mode's webhook signing secret: reused from the data dir, or created there."""
    path = settings.data_dir / "webhook-secret"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    secret = secrets.token_urlsafe(32)
    write_private(path, secret)
    return secret


def write_private(path: Path, value: str) -> None:
    """Write a secret to a file only its owner can read (created so, never widened first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")


def prepare_database(settings: Settings) -> None:
    """Embedded SQLite: migrate on first use. A configured database is migrated explicitly."""
    from dfp.storage import migrate

    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(settings.resolved_database_url())
        return
    state = database_schema(settings)
    if not state.is_current:
        print(f"warning: {state.describe()}; the API answers 503 until then", file=sys.stderr)


def start_worker(data_dir: Path | None, *options: str) -> subprocess.Popen[bytes]:
    """A real Celery worker process (`dfp worker OPTIONS`)."""
    command = [sys.executable, "-m", "dfp.cli", "worker", *options]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return subprocess.Popen(command)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown first (finish the current epoch's work), then stop it hard."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        # Its run stays 'running' without heartbeats; the reconciler requeues it next time.
        process.kill()
        process.wait()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind. Env: DFP_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Port. Env: DFP_PORT.")] = None,
    data_dir: DataDirOption = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Also start a worker process.")
    ] = True,
    workers: Annotated[int, typer.Option(help="API processes (each reads DFP_* itself).")] = 1,
) -> None:
    """Run the API and a worker; with no DFP_DATABASE_URL/DFP_BROKER_URL, needs no other service."""
    import uvicorn

    from api.app import create_app

    if workers < 1:
        fail(f"--workers must be at least 1, got {workers}")
    if host is not None:
        os.environ["DFP_HOST"] = host
    if port is not None:
        os.environ["DFP_PORT"] = str(port)
    settings = load_settings(data_dir)
    prepare_database(settings)
    key = ensure_local_key(settings) if settings.database_url is None else None
    if settings.database_url is None and settings.webhook_secret is None:
        # The API and the workers started below read it from the environment.
        os.environ["DFP_WEBHOOK_SECRET"] = ensure_webhook_secret(settings)
        settings = load_settings(data_dir)
    url = f"http://{settings.host}:{settings.port}"
    print(f"dfp API at {url}  (interactive docs: {url}/docs)", flush=True)
    if key is not None:
        print(f"API key (owner 'local'): {key}", flush=True)
        print(f"data directory: {settings.data_dir}", flush=True)
    processes = []
    if worker:
        # Experiments on both queues (device routing happens in the runner); webhooks in a
        # process of their own, so a delivery never waits for a training run.
        processes.append(start_worker(data_dir, "--queues", f"{CPU_QUEUE},{GPU_QUEUE}"))
        processes.append(
            start_worker(
                data_dir, "--queues", WEBHOOK_QUEUE, "--pool", "threads", "--concurrency", "4"
            )
        )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit through `finally`
    # (and stop the worker) instead of dying on the spot.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        if workers == 1:
            app_or_factory: object = create_app(settings)
        else:  # each process builds its app from the same environment
            app_or_factory = "api.app:create_app"
        uvicorn.run(
            app_or_factory,  # type: ignore[arg-type]
            factory=workers > 1,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level="info",
        )
    finally:
        for process in processes:
            stop_worker(process)


@app.command("worker")
def worker_command(
    queues: Annotated[
        str, typer.Option(help="Comma-separated queues: cpu, gpu, webhooks.")
    ] = CPU_QUEUE,
    concurrency: Annotated[
        int | None, typer.Option(help="Processes (default DFP_WORKER_CONCURRENCY).")
    ] = None,
    pool: Annotated[
        str,
        typer.Option(
            help="prefork; solo for a GPU worker (one process per GPU); threads for webhooks."
        ),
    ] = "prefork",
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
    data_dir: DataDirOption = None,
) -> None:
    """Run a Celery worker against DFP_DATABASE_URL and DFP_BROKER_URL (or the embedded ones)."""
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(names) - {CPU_QUEUE, GPU_QUEUE, WEBHOOK_QUEUE})
    if not names or unknown:
        fail(f"--queues: expected cpu, gpu and/or webhooks, got '{queues}'")
    if pool not in {"prefork", "solo", "threads"}:
        fail(f"--pool: expected prefork, solo or threads, got '{pool}'")
    settings = load_settings(data_dir)
    if settings.database_url is None:
        prepare_database(settings)
    from worker.main import celery_app

    if WEBHOOK_QUEUE in names:
        from worker.webhooks import WebhookRelayStep

        celery_app.steps["worker"].add(WebhookRelayStep)

    processes = 1 if pool == "solo" else (concurrency or settings.worker_concurrency)
    celery_app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(names),
            "--concurrency",
            str(processes),
            "--pool",
            pool,
            "--hostname",
            f"dfp-{'-'.join(names)}-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            loglevel,
        ]
    )
