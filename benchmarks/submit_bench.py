"""Submission throughput and latency of the API against the raw cost of the same work.

    .venv/bin/python benchmarks/submit_bench.py [--submissions 1000] [--clients 50] [--rounds 5]

Needs PostgreSQL and Redis (scripts/ensure-services.sh). It creates a scratch database, serves
the API with uvicorn in a subprocess, and measures, in the same run:

1. POST /v1/experiments from `--clients` concurrent HTTP clients: throughput, p50/p99 latency;
2. the raw work alone from as many threads: one INSERT of the job (and its run) plus one
   `send_task` per submission, with no HTTP, validation or authentication;
3. GET /v1/experiments/{id}/results for a stored 5-layer, 10-checkpoint, 100-δ result.

Targets: (1) ≥ 50 % of the throughput of (2) with p99 ≤ 100 ms; (3) p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.http_load import HttpConnection, percentile  # noqa: E402
from dfp.experiments import lifecycle  # noqa: E402
from dfp.keys.service import create_key  # noqa: E402
from dfp.queues.celery_app import create_celery  # noqa: E402
from dfp.queues.names import EXECUTE_RUN  # noqa: E402
from dfp.settings import Settings  # noqa: E402
from dfp.storage import migrate  # noqa: E402
from dfp.storage.database import Database  # noqa: E402
from dfp_engine.results import Checkpoint, HistoryPoint, LayerAnalysis, RunResult  # noqa: E402

PG_ADMIN = os.environ.get("DFP_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DFP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
MAX_UNFINISHED = 100  # per owner; the service's default is 20
SPEC: dict[str, Any] = {
    "name": "bench",
    "dataset": {"kind": "synthetic_1d", "expression": "cos(3*x) + cos(5*x)", "n_points": 61},
    "model": {"kind": "mlp", "depth": 3, "width": 50},
    "training": {"epochs": 100, "device": "cpu"},
    "analysis": {"checkpoints": {"every": 10}},
}


def summary(name: str, latencies: list[float], wall: float) -> dict[str, float]:
    stats = {
        "throughput_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
    }
    print(
        f"{name:<28} {stats['throughput_per_s']:8.1f} /s   p50 {stats['p50_ms']:6.1f} ms"
        f"   p99 {stats['p99_ms']:6.1f} ms   ({len(latencies)} in {wall:.2f} s)"
    )
    return stats


async def post_concurrently(
    url: str, keys: list[str], total: int, rate: float | None = None
) -> tuple[list[float], float]:
    """One connection per key, each sending its share of `total` submissions back to back or,
    with `rate`, paced so that all together offer `rate` submissions per second."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(SPEC).encode()
    clients = len(keys)
    latencies: list[float] = []
    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    interval = clients / rate if rate else 0.0

    async def client_loop(key: str, count: int, offset: float) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        connection = HttpConnection(host, int(port))
        due = time.perf_counter() + offset * interval
        try:
            for _ in range(count):
                if interval:
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    due += interval
                start = time.perf_counter()
                status, _, payload = await connection.request(
                    "POST", "/v1/experiments", headers, body
                )
                latencies.append(time.perf_counter() - start)
                if status != 202:
                    raise RuntimeError(f"{status}: {payload[:300]!r}")
        finally:
            await connection.close()

    start = time.perf_counter()
    await asyncio.gather(
        *(
            client_loop(key, n, i / clients)
            for i, (key, n) in enumerate(zip(keys, shares, strict=True))
        )
    )
    return latencies, time.perf_counter() - start


def finish_all(db: Database) -> None:
    """Mark every bench submission finished, as workers would have, and vacuum (not timed)."""
    from sqlalchemy import update

    from dfp.storage.models import Job

    with db.unit_of_work() as uow:
        uow.session.execute(update(Job).where(Job.owner != "raw").values(status="succeeded"))
    # What autovacuum does in a service that runs for a while: without it, every limit check
    # would step over the dead index entries the UPDATE left, more of them each phase.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE jobs")


def raw_work(
    db_url: str, settings: Settings, total: int, clients: int
) -> tuple[list[float], float]:
    """The same rows and message without the API: INSERT job + run, then send_task."""
    celery = create_celery(settings)
    engine = Database(db_url, pool_size=settings.db_pool_size, max_overflow=0).engine
    spec_json = json.dumps(SPEC)
    latencies: list[float] = []

    def one() -> None:
        start = time.perf_counter()
        job_id = uuid.uuid4()
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO jobs (id, owner, name, status, spec, spec_hash, request_hash, queue,"
                " n_runs, cancel_requested, created_at, updated_at)"
                " VALUES (%s, 'raw', 'bench', 'queued', %s, '', '', 'cpu', 1, false, now(), now())",
                (job_id, spec_json),
            )
            run_id = connection.exec_driver_sql(
                "INSERT INTO runs (job_id, index, status, queue, attempts, enqueues,"
                " progress_fraction, n_train, n_test, n_analysis, layer_names, history,"
                " history_fields, elapsed_seconds, analysis_seconds) VALUES"
                " (%s, 0, 'queued', 'cpu', 0, 1, 0, 0, 0, 0, '[]', '', '[]', 0, 0) RETURNING id",
                (job_id,),
            ).scalar_one()
        celery.send_task(EXECUTE_RUN, args=[run_id], queue="cpu", routing_key="cpu")
        latencies.append(time.perf_counter() - start)

    def worker(count: int) -> None:
        for _ in range(count):
            one()

    shares = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, shares))
    wall = time.perf_counter() - start
    engine.dispose()
    return latencies, wall


def synthetic_result(layers: int = 5, checkpoints: int = 10, deltas: int = 100) -> RunResult:
    """A result of the benchmark's size; the numbers are smooth curves of the right shape."""
    inverse = [0.01 * 1.08**i for i in range(deltas)]
    analyses = []
    for layer in range(layers):
        lfr = [1 - 0.9 / (1 + u * (layer + 1)) for u in inverse]
        rdf = [
            (b - a) / (v - u)
            for a, b, u, v in zip(lfr, lfr[1:], inverse, inverse[1:], strict=False)
        ]
        analyses.append(
            LayerAnalysis(
                layer=f"hidden.{layer + 1}",
                dim=50,
                normalization="max_abs_per_dim",
                deltas=[1 / u for u in inverse],
                inverse_deltas=inverse,
                lfr=lfr,
                rdf_inverse_deltas=inverse[1:],
                rdf=rdf,
                peak_inverse_delta=inverse[1],
                mean_inverse_delta=inverse[10],
            )
        )
    return RunResult(
        index=0,
        status="succeeded",
        layer_names=[a.layer for a in analyses],
        history=[HistoryPoint(epoch=e, step=e, train_loss=1 / (e + 1)) for e in range(1000)],
        checkpoints=[
            Checkpoint(epoch=100 * c, step=100 * c, layers=analyses) for c in range(checkpoints)
        ],
    )


def store_result(db: Database, settings: Settings, job_id: str) -> None:
    from sqlalchemy import select

    from dfp.storage.models import Run

    with db.unit_of_work() as uow:
        run_id = uow.session.scalar(select(Run.id).where(Run.job_id == uuid.UUID(job_id)))
        lease = lifecycle.claim_run(uow.session, run_id, worker="bench", settings=settings)
    assert lease is not None
    with db.unit_of_work() as uow:
        assert lifecycle.finish_run(uow.session, lease, synthetic_result(), {"device": "cpu"})


def get_results(url: str, key: str, job_id: str, n: int) -> tuple[list[float], float]:
    latencies = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        client.get(f"/v1/experiments/{job_id}/results").raise_for_status()  # warm up
        start = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            response = client.get(f"/v1/experiments/{job_id}/results")
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
        size = len(response.content)
    print(f"results document: {size / 1024:.0f} KiB")
    return latencies, time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children so far (Linux /proc)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="API processes (uvicorn workers)")
    parser.add_argument("--gets", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop offered load, /s")
    parser.add_argument("--rounds", type=int, default=5, help="API and raw phases, alternated")
    args = parser.parse_args()

    name = f"dfp_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = (
        PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    )
    redis.Redis.from_url(REDIS).flushdb()
    settings = Settings(
        database_url=db_url,
        broker_url=REDIS,
        # Each client is an owner of its own whose submissions are marked finished after every
        # phase (no workers run here): the limit check then counts what it would in service.
        max_concurrent_jobs=MAX_UNFINISHED,
        db_pool_size=max(5, 20 // args.workers),
        rate_limit_per_minute=0,  # measure throughput, not the rate limit
    )
    env = {
        **os.environ,
        "DFP_DATABASE_URL": db_url,
        "DFP_BROKER_URL": REDIS,
        "DFP_MAX_CONCURRENT_JOBS": str(MAX_UNFINISHED),
        "DFP_DB_POOL_SIZE": str(settings.db_pool_size),
        "DFP_RATE_LIMIT_PER_MINUTE": "0",
    }
    port = 8400 + os.getpid() % 500
    url = f"http://127.0.0.1:{port}"
    server = None
    try:
        migrate.upgrade(db_url)
        db = Database.from_settings(settings)
        with db.unit_of_work() as uow:
            keys = [create_key(uow.session, f"bench-{i}").key for i in range(args.clients)]
        key = keys[0]
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "api.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO,
            env=env,
        )
        wait_ready(url)
        print(
            f"{os.cpu_count()} CPUs; {args.clients} clients; {args.submissions} submissions; "
            f"uvicorn workers: {args.workers}"
        )
        asyncio.run(post_concurrently(url, keys, min(200, args.submissions)))  # warm up
        finish_all(db)
        # The VM's speed drifts by tens of per cent within minutes: alternate the two phases
        # and compare each API phase with the raw phase right after it.
        shares = []
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}/{args.rounds}")
            cpu_before, client_before = cpu_seconds(server.pid), time.process_time()
            api_lat, api_wall = asyncio.run(post_concurrently(url, keys, args.submissions))
            server_cpu = cpu_seconds(server.pid) - cpu_before
            client_cpu = time.process_time() - client_before
            finish_all(db)
            api = summary("POST /v1/experiments", api_lat, api_wall)
            print(
                f"  CPU per submission: API server {1000 * server_cpu / args.submissions:.2f} ms,"
                f" clients {1000 * client_cpu / args.submissions:.2f} ms"
            )
            raw_before = time.process_time()
            raw_lat, raw_wall = raw_work(db_url, settings, args.submissions, args.clients)
            raw_cpu = time.process_time() - raw_before
            raw = summary("raw INSERT + send_task", raw_lat, raw_wall)
            print(f"  CPU per submission: {1000 * raw_cpu / args.submissions:.2f} ms")
            shares.append(100 * api["throughput_per_s"] / raw["throughput_per_s"])
            print(f"  API throughput = {shares[-1]:.0f} % of raw")
        print(
            f"API throughput = {statistics.median(shares):.0f} % of raw "
            f"(median of {len(shares)} rounds; {min(shares):.0f}-{max(shares):.0f} %)"
        )
        open_lat, open_wall = asyncio.run(
            post_concurrently(url, keys, args.submissions // 2, args.rate)
        )
        finish_all(db)
        summary(f"POST, {args.rate:.0f}/s offered", open_lat, open_wall)

        job = httpx.post(
            f"{url}/v1/experiments",
            json={**SPEC, "name": "results"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        store_result(db, settings, job["id"])
        cpu_before = cpu_seconds(server.pid)
        get_lat, get_wall = get_results(url, key, job["id"], args.gets)
        get_cpu = cpu_seconds(server.pid) - cpu_before
        summary("GET results (5x10x100)", get_lat, get_wall)
        print(f"  API server CPU: {1000 * get_cpu / (args.gets + 1):.2f} ms per request")
        db.dispose()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        redis.Redis.from_url(REDIS).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
