"""An exact analysis fanned out over real Celery workers (PostgreSQL + Redis), against the
machine's bound for the same n.

Stores an n x d float32 dataset with 10 classes through the dataset service, starts W
`dfp worker --concurrency 1` processes (each computes blocks single-threaded, so W = 2 fills
this 2-core machine), submits one analysis with 20 δ, and reads back from the block rows who
computed what and when. Prints the wall time from submission to the stored result, its parts
(fetch + operand written, blocks, reduce + store), the parallel efficiency against the sum of
the blocks' compute times, and the ratio to the bound of benchmarks/frequency_bench.py
(the unavoidable work at this machine's measured GEMM, exp and product rates, on all cores).

Needs PostgreSQL and Redis (scripts/ensure-services.sh). Usage:
    python benchmarks/fanout_service_bench.py --n 200000 --d 512 --workers 2 --blocks 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
import redis
from sqlalchemy import select

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from frequency_bench import measure_limits  # noqa: E402

from dfp.analyses.schemas import AnalysisCreate  # noqa: E402
from dfp.analyses.service import submit  # noqa: E402
from dfp.datasets.blobs import blob_store  # noqa: E402
from dfp.datasets.service import upload  # noqa: E402
from dfp.queues.celery_app import create_celery  # noqa: E402
from dfp.queues.dispatch import CeleryDispatcher  # noqa: E402
from dfp.settings import Settings  # noqa: E402
from dfp.storage import migrate  # noqa: E402
from dfp.storage.database import Database  # noqa: E402
from dfp.storage.models import AnalysisBlock, AnalysisFanout, Job, Run  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
DATABASE = "dfp_fanout_bench"
REDIS = "redis://127.0.0.1:6379/15"
CLASSES = 10
DELTAS = 20


def fresh_database() -> str:
    with psycopg.connect(ADMIN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
    migrate.upgrade(url)
    return url


def settings_for(url: str, data_dir: Path, blocks: int) -> dict[str, str]:
    return {
        "DFP_DATABASE_URL": url,
        "DFP_BROKER_URL": REDIS,
        "DFP_DATA_DIR": str(data_dir),
        "DFP_FANOUT_MIN_ROWS": "2",
        "DFP_FANOUT_BLOCKS": str(blocks),
        "DFP_MAX_SAMPLES": str(10**7),
        "DFP_MAX_DATASET_ARRAY_BYTES": str(2**40),
        "DFP_HEARTBEAT_TIMEOUT": "3600",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--no-bound", action="store_true", help="skip measuring the bound")
    args = parser.parse_args()

    limits = None if args.no_bound else measure_limits()
    redis.Redis.from_url(REDIS).flushdb()
    url = fresh_database()
    folder = Path(tempfile.mkdtemp(prefix="dfp-fanout-bench-"))
    env = settings_for(url, folder, args.blocks)
    os.environ.update(env)
    settings = Settings()
    db = Database.from_settings(settings)

    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, size=args.n)
    centres = rng.normal(size=(CLASSES, args.d)).astype(np.float32)
    z = centres[labels] + rng.normal(scale=2.0, size=(args.n, args.d)).astype(np.float32)
    path = folder / "features.npz"
    np.savez(path, z=z, y=labels)
    del z
    with path.open("rb") as source, db.unit_of_work() as uow:
        stored = upload(
            uow, "bench", source, name="bench", store=blob_store(db, settings), settings=settings
        )
        dataset_id = stored.dataset.id
    path.unlink()

    logs = [folder / f"worker-{i}.log" for i in range(args.workers)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "dfp.cli", "worker", "--queues", "cpu", "--concurrency", "1"],
            env={**os.environ, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for log in logs
    ]
    try:
        deadline = time.monotonic() + 180
        while not all("ready." in log.read_text() for log in logs):
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not start")
            time.sleep(0.5)
        body = AnalysisCreate(
            dataset_id=dataset_id, features=["z"], targets="y", auto_deltas=DELTAS
        )
        dispatcher = CeleryDispatcher(create_celery(settings))
        started = time.perf_counter()
        with db.unit_of_work() as uow:
            job_id = submit(uow, "bench", body, settings=settings, dispatcher=dispatcher).job.id
        while True:
            time.sleep(2.0)
            with db.reading() as session:
                status, fraction = session.execute(
                    select(Job.status, Run.progress_fraction)
                    .join(Run, Run.job_id == Job.id)
                    .where(Job.id == job_id)
                ).one()
            print(f"  {time.perf_counter() - started:7.1f} s  {status}  {fraction:.3f}", flush=True)
            if status in ("succeeded", "failed", "cancelled"):
                break
        wall = time.perf_counter() - started
        report(db, job_id, wall, args, limits)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        db.dispose()


def report(
    db: Database, job_id: object, wall: float, args: argparse.Namespace, limits: object
) -> None:
    with db.reading() as session:
        run = session.scalars(select(Run).where(Run.job_id == job_id)).one()
        fanout = session.scalars(
            select(AnalysisFanout).where(AnalysisFanout.run_id == run.id)
        ).one()
        blocks = list(
            session.scalars(
                select(AnalysisBlock)
                .where(AnalysisBlock.fanout_id == fanout.id)
                .order_by(AnalysisBlock.block)
            )
        )
        assert run.status == "succeeded", run.error_message
        assert run.started_at and run.finished_at
        first = min(b.started_at for b in blocks if b.started_at)
        last = max(b.finished_at for b in blocks if b.finished_at)
        compute = [(b.finished_at - b.started_at).total_seconds() for b in blocks]  # type: ignore[operator]
        busy: dict[str, float] = {}
        for b, seconds in zip(blocks, compute, strict=True):
            busy[str(b.worker)] = busy.get(str(b.worker), 0.0) + seconds
        span = (last - first).total_seconds()
        out = {
            "n": args.n,
            "d": args.d,
            "deltas": DELTAS,
            "workers": args.workers,
            "blocks": len(blocks),
            "wall_s": round(wall, 1),
            "before_blocks_s": round((first - run.started_at).total_seconds(), 1),
            "blocks_span_s": round(span, 1),
            "after_blocks_s": round((run.finished_at - last).total_seconds(), 1),
            "block_compute_s": [round(c, 1) for c in compute],
            "worker_busy_s": {k: round(v, 1) for k, v in busy.items()},
            "efficiency_in_blocks": round(sum(compute) / (args.workers * span), 3),
        }
        if limits is not None:
            bound = limits.lower_bound(args.n, args.d, DELTAS)  # type: ignore[attr-defined]
            out["bound_s"] = round(bound, 1)
            out["wall_over_bound"] = round(wall / bound, 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
