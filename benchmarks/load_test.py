"""Load with faults: many small experiments from many clients against the whole stack.

    .venv/bin/python benchmarks/load_test.py [--experiments 1000] [--clients 50] [--workers 2]

Needs PostgreSQL and Redis (scripts/ensure-services.sh); everything runs on loopback. It makes a
scratch database, starts the API (`dfp serve --no-worker`, several processes) and worker
processes (`dfp worker`), and runs two phases, bounded in count and time:

1. `steady`: `--clients` concurrent clients (one API key each) submit `--experiments` tiny
   experiments between them, each polling its own experiments while it submits and until all
   are finished;
2. `worker killed`: the same, while one worker is killed (SIGKILL to its whole process group,
   as a crash would) once half the experiments are accepted, and started again.

Per phase: accepted, succeeded, failed, lost (accepted but missing or unfinished at the end:
must be 0), duplicated results (a run holding more checkpoints or curves than one result set:
must be 0), re-executed runs, submit latency p50/p99, and time to drain (from the first
submission until the last experiment finished). Exits 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.http_load import HttpConnection, percentile  # noqa: E402
from dfp.keys.service import create_key  # noqa: E402
from dfp.settings import Settings  # noqa: E402
from dfp.storage import migrate  # noqa: E402
from dfp.storage.database import Database  # noqa: E402
from dfp.storage.models import Job, LayerCurve, Run, RunCheckpoint  # noqa: E402
from dfp_engine.runner import run_one  # noqa: E402
from dfp_engine.spec import ExperimentSpec  # noqa: E402

PG_ADMIN = os.environ.get("DFP_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DFP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
# The smallest experiment that still trains and analyses: 2 epochs, 8 points, 3 checkpoints.
SPEC: dict[str, Any] = {
    "name": "load",
    "dataset": {"kind": "synthetic_1d", "expression": "cos(3*x)", "n_points": 8},
    "model": {"kind": "mlp", "depth": 1, "width": 4},
    "training": {"epochs": 2, "seed": 1, "device": "cpu"},
    "analysis": {"checkpoints": {"every": 1}, "deltas": {"auto": 4}},
}
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


# ------------------------------------------------------------------------- the stack


def settings_env(settings: Settings) -> dict[str, str]:
    """The process environment that gives another process these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DFP_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, list):
            value = json.dumps([str(v) for v in value])
        env[f"DFP_{name.upper()}"] = str(value)
    return env


@dataclass
class Stack:
    """API processes and worker processes for `settings`, each in its own process group."""

    settings: Settings
    logs: Path
    api_processes: int = 2
    workers: int = 2
    port: int = 0
    api: subprocess.Popen[bytes] | None = None
    worker_processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        command = ["serve", "--no-worker", "--workers", str(self.api_processes)]
        self.api = self._spawn([*command, "--port", str(self.port)], "api.log")
        self.worker_processes = [self._start_worker() for _ in range(self.workers)]
        _wait(lambda: _ready(self.url), 90, "the API to be ready")
        return self

    def _spawn(self, arguments: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with (self.logs / log_name).open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "dfp.cli", *arguments],
                cwd=REPO,
                env=settings_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_worker(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        return self._spawn(["worker", "--loglevel", "WARNING"], f"worker-{self.starts}.log")

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker and its pool, as a crash would, and start a new one in its place."""
        _signal_group(self.worker_processes[index], signal.SIGKILL)
        self.worker_processes[index].wait()
        self.worker_processes[index] = self._start_worker()

    def stop(self) -> None:
        for process in [*self.worker_processes, *([self.api] if self.api else [])]:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in [*self.worker_processes, *([self.api] if self.api else [])]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)  # whatever lingers in its group
            process.wait()

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


# ------------------------------------------------------------------------- a phase


@dataclass
class PhaseReport:
    name: str
    submitted: int = 0
    accepted: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    succeeded: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    incomplete: int = 0  # succeeded runs holding less than one result set
    reexecuted: int = 0  # runs that needed more than one attempt
    submit_p50_ms: float = 0.0
    submit_p99_ms: float = 0.0
    submit_seconds: float = 0.0
    drain_seconds: float = 0.0
    polls: int = 0
    killed_at: float | None = None

    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.incomplete == 0

    def describe(self) -> str:
        refused = ", ".join(f"{n} × {s}" for s, n in sorted(self.refused.items())) or "none"
        lines = [
            f"{self.name}: {self.submitted} submitted, {self.accepted} accepted "
            f"(refused: {refused}); {self.succeeded} succeeded, {self.failed} failed",
            f"  lost {self.lost}, duplicated results {self.duplicated}, incomplete results "
            f"{self.incomplete}, runs re-executed {self.reexecuted}",
            f"  submit latency p50 {self.submit_p50_ms:.0f} ms, p99 {self.submit_p99_ms:.0f} ms;"
            f" all submitted in {self.submit_seconds:.1f} s; drained in {self.drain_seconds:.1f} s"
            f" ({self.polls} status polls)",
        ]
        if self.killed_at is not None:
            lines.append(f"  a worker was killed {self.killed_at:.1f} s in and started again")
        return "\n".join(lines)


def run_phase(
    name: str,
    stack: Stack,
    keys: list[str],
    experiments: int,
    *,
    kill_worker: bool = False,
    timeout: float = 600.0,
) -> PhaseReport:
    """Submit `experiments` from one client per key while polling; wait until all finish.

    Each client polls its oldest unfinished experiment after every submission, then lists its
    unfinished ones once a second until there are none (as a lab script would)."""
    report = PhaseReport(name)
    body = json.dumps(SPEC).encode()
    latencies: list[float] = []
    accepted: list[str] = []
    submitted_by: list[float] = []
    start, start_wall = time.monotonic(), time.time()
    deadline = start + timeout
    shares = [experiments // len(keys) + (i < experiments % len(keys)) for i in range(len(keys))]

    async def client(key: str, count: int) -> None:
        connection = HttpConnection("127.0.0.1", stack.port)
        auth = {"Authorization": f"Bearer {key}"}
        mine: deque[str] = deque()
        try:
            for _ in range(count):
                job_id = await submit_one(connection, auth)
                if job_id is not None:
                    mine.append(job_id)
                if mine:
                    await poll_oldest(connection, auth, mine)
            submitted_by.append(time.monotonic())
            while mine and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                await poll_unfinished(connection, auth, mine)
        finally:
            await connection.close()

    async def submit_one(connection: HttpConnection, auth: dict[str, str]) -> str | None:
        headers = {**auth, "Idempotency-Key": uuid.uuid4().hex}
        report.submitted += 1
        while time.monotonic() < deadline:
            began = time.monotonic()
            status, reply, payload = await connection.request(
                "POST", "/v1/experiments", headers, body
            )
            latencies.append(time.monotonic() - began)
            if status == 202:
                job_id = str(json.loads(payload)["id"])
                accepted.append(job_id)
                return job_id
            report.refused[status] = report.refused.get(status, 0) + 1
            if status != 503:  # anything but "retry later" is an answer: do not retry
                return None
            await asyncio.sleep(float(reply.get("retry-after", "1")))
        return None

    async def poll_oldest(
        connection: HttpConnection, auth: dict[str, str], mine: deque[str]
    ) -> None:
        status, _, payload = await connection.request("GET", f"/v1/experiments/{mine[0]}", auth)
        report.polls += 1
        if status == 200 and json.loads(payload)["status"] in TERMINAL:
            mine.popleft()

    async def poll_unfinished(
        connection: HttpConnection, auth: dict[str, str], mine: deque[str]
    ) -> None:
        path = "/v1/experiments?status=queued&status=running&limit=200"
        status, _, payload = await connection.request("GET", path, auth)
        report.polls += 1
        if status == 200:
            still = {job["id"] for job in json.loads(payload)["data"]}
            for job_id in [job_id for job_id in mine if job_id not in still]:
                mine.remove(job_id)

    async def killer() -> None:
        while len(accepted) < experiments // 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(stack.kill_worker, 0)
        report.killed_at = time.monotonic() - start

    async def everyone() -> None:
        clients = [client(key, count) for key, count in zip(keys, shares, strict=True)]
        await asyncio.gather(*clients, *([killer()] if kill_worker else []))

    asyncio.run(everyone())
    report.submit_seconds = max(submitted_by, default=start) - start
    report.accepted = len(accepted)
    report.submit_p50_ms = 1000 * statistics.median(latencies) if latencies else 0.0
    report.submit_p99_ms = 1000 * percentile(latencies, 99)
    _tally(stack.settings, accepted, report, start_wall)
    return report


def _tally(settings: Settings, accepted: list[str], report: PhaseReport, start_wall: float) -> None:
    """Count outcomes from the database, the record of every job."""
    expected = run_one(ExperimentSpec.model_validate(SPEC), 0)
    checkpoints, layers = len(expected.checkpoints), len(expected.layer_names)
    ids = [uuid.UUID(job_id) for job_id in accepted]
    db = Database.from_settings(settings)
    try:
        with db.reading() as session:
            jobs = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())
            finished = session.scalar(select(func.max(Job.finished_at)).where(Job.id.in_(ids)))
            curves = (
                select(RunCheckpoint.run_id, func.count(LayerCurve.id).label("curves"))
                .join(LayerCurve, LayerCurve.checkpoint_id == RunCheckpoint.id)
                .group_by(RunCheckpoint.run_id)
                .subquery()
            )
            per_run = session.execute(
                select(
                    Run.status,
                    Run.attempts,
                    select(func.count())
                    .where(RunCheckpoint.run_id == Run.id)
                    .scalar_subquery()
                    .label("checkpoints"),
                    func.coalesce(curves.c.curves, 0),
                )
                .outerjoin(curves, curves.c.run_id == Run.id)
                .where(Run.job_id.in_(ids))
            ).all()
    finally:
        db.dispose()
    statuses = list(jobs.values())
    report.succeeded = statuses.count("succeeded")
    report.failed = statuses.count("failed")
    report.lost = len(ids) - sum(status in TERMINAL for status in statuses)
    report.duplicated = sum(
        1 for _, _, n, c in per_run if n > checkpoints or c > checkpoints * layers
    )
    report.incomplete = sum(
        1
        for status, _, n, c in per_run
        if status == "succeeded" and (n < checkpoints or c < checkpoints * layers)
    )
    report.reexecuted = sum(1 for _, attempts, _, _ in per_run if attempts > 1)
    if finished is not None:
        report.drain_seconds = finished.timestamp() - start_wall


def create_keys(settings: Settings, owners: list[str]) -> list[str]:
    db = Database.from_settings(settings)
    try:
        with db.unit_of_work() as uow:
            return [create_key(uow.session, owner).key for owner in owners]
    finally:
        db.dispose()


# ------------------------------------------------------------------------------ main


@contextlib.contextmanager
def scratch_deployment(logs: Path) -> Iterator[Settings]:
    """A scratch database on the machine's PostgreSQL and a Redis database, removed after."""
    name = f"dfp_load_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    redis.Redis.from_url(REDIS).flushdb()
    try:
        settings = Settings(
            data_dir=logs / "data",
            database_url=f"{base}/{name}",
            broker_url=REDIS,
            max_concurrent_jobs=10**6,
            db_pool_size=10,
        )
        migrate.upgrade(settings.resolved_database_url())
        yield settings
    finally:
        redis.Redis.from_url(REDIS).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--api-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--logs", type=Path, default=Path("/tmp") / f"dfp-load-{os.getpid()}")
    args = parser.parse_args()

    reports = []
    with scratch_deployment(args.logs) as settings:
        print(
            f"{os.cpu_count()} CPUs; {args.api_processes} API processes, {args.workers} workers;"
            f" {args.experiments} experiments from {args.clients} clients per phase;"
            f" heartbeat timeout {settings.heartbeat_timeout:.0f} s, reconcile every"
            f" {settings.reconcile_seconds:.0f} s; logs in {args.logs}",
            flush=True,
        )
        with Stack(settings, args.logs, args.api_processes, args.workers) as stack:
            # Warm up (each API process's first requests, each worker's first runs), unreported.
            run_phase("warm-up", stack, create_keys(settings, ["warm-up"]), 20)
            for name, kill in (("steady", False), ("worker killed", True)):
                owners = [f"{name.split()[0]}-{i}" for i in range(args.clients)]
                keys = create_keys(settings, owners)
                report = run_phase(
                    name, stack, keys, args.experiments, kill_worker=kill, timeout=args.timeout
                )
                print(report.describe(), flush=True)
                reports.append(report)
    sys.exit(0 if all(report.ok() for report in reports) else 1)


if __name__ == "__main__":
    main()
