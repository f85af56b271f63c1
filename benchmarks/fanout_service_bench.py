"""An exact analysis fanned out over real Celery workers (PostgreSQL + Redis), against the
machine's bound for the same n.

Stores an n x d float32 dataset with 10 classes through the dataset service, starts W
`dfp worker --concurrency 1` processes (each computes blocks single-threaded, so W = 2 fills
this 2-core machine), submits one analysis with 20 δ, and reads back from the block rows who
computed what and when. Prints the wall time from submission to the stored result, its parts
(fetch + operand written, blocks, reduce + store), the parallel efficiency against the sum of
the blocks' compute times, and the ratio to the bound of benchmarks/frequency_bench.py
(the unavoidable work at this machine's measured GEMM, exp and product rates, on all cores).

Then it measures the rates a larger cluster would pay for (the fan-out store's write and read
rates on this PostgreSQL, float64 additions of partials, a broker round trip) and prints the
cost model for W workers and B = 2W blocks, from these and the measured compute rate per worker:

    T(W) = publish (dataset read + operand written, by the run's worker)
         + (W - 1) operand reads (every other worker fetches it; the database serves them)
         + n²/2 pairs / (W · pairs/s per worker)
         + W partials written at the end of the last round (the database takes them in turn)
         + B partials read and added by the run's worker (the serial reduce)
         + B broker round trips
    with a partial of about (2/3) n |δ| (k + 1) float64 on average (its rows at or after its
    first row; k = 10 classes).

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
        # one thread per worker process: W processes share the machine's cores
        "DFP_FANOUT_THREADS": "1",
        "DFP_MAX_SAMPLES": str(10**7),
        "DFP_MAX_DATASET_ARRAY_BYTES": str(2**40),
        "DFP_HEARTBEAT_TIMEOUT": "3600",
    }


def features(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """n rows of 10 Gaussian classes in d dimensions, float32, and their labels."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, CLASSES, size=n)
    centres = rng.normal(size=(CLASSES, d)).astype(np.float32)
    return centres[labels] + rng.normal(scale=2.0, size=(n, d)).astype(np.float32), labels


def single(args: argparse.Namespace, limits: object) -> None:
    """The exact analysis of the same data in this one process, on all cores."""
    from dfp_engine.frequency import analyze_frequency

    z, labels = features(args.n, args.d)
    start = time.perf_counter()
    analyze_frequency(z, labels, auto_deltas=DELTAS)
    out: dict[str, object] = {"n": args.n, "d": args.d, "single_process_s": 0.0}
    out["single_process_s"] = round(time.perf_counter() - start, 1)
    if limits is not None:
        bound = limits.lower_bound(args.n, args.d, DELTAS)  # type: ignore[attr-defined]
        out["bound_s"] = round(bound, 1)
        out["single_over_bound"] = round(float(out["single_process_s"]) / bound, 3)  # type: ignore[arg-type]
    print(json.dumps(out, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--no-bound", action="store_true", help="skip measuring the bound")
    parser.add_argument(
        "--single",
        action="store_true",
        help="instead: the same data analysed exactly by one process on all cores",
    )
    parser.add_argument(
        "--model-from",
        type=Path,
        help="only the rates and the cost model, for the JSON a finished run printed",
    )
    args = parser.parse_args()
    if args.model_from is not None:
        measured = json.loads(args.model_from.read_text())
        args.n, args.d = measured["n"], measured["d"]
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
        settings = Settings(database_url=url, broker_url=REDIS)
        model(Database.from_settings(settings), settings, measured, args)
        return

    limits = None if args.no_bound else measure_limits()
    if args.single:
        single(args, limits)
        return
    redis.Redis.from_url(REDIS).flushdb()
    url = fresh_database()
    folder = Path(tempfile.mkdtemp(prefix="dfp-fanout-bench-"))
    env = settings_for(url, folder, args.blocks)
    os.environ.update(env)
    settings = Settings()
    db = Database.from_settings(settings)

    z, labels = features(args.n, args.d)
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
        measured = report(db, job_id, wall, args, limits)
        model(db, settings, measured, args)
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
    out["fanout_id"] = str(fanout.id)
    pairs = args.n * args.n / 2
    out["pairs_per_s_per_worker"] = round(pairs / sum(compute))
    out["publish_s"] = out["before_blocks_s"]
    print(json.dumps(out, indent=2))
    return out


def model(
    db: Database, settings: Settings, measured: dict[str, object], args: argparse.Namespace
) -> None:
    """The rates the cost model needs, measured here, and T(W) for larger clusters."""
    import uuid

    from dfp.fanout.store import ChunkedPartStore

    size = 256 * 2**20
    folder = Path(tempfile.mkdtemp(prefix="dfp-rates-"))
    blob = folder / "part.npy"
    np.save(blob, np.random.default_rng(1).random(size // 8))
    store = ChunkedPartStore()
    fanout_id = uuid.UUID(str(measured["fanout_id"]))
    start = time.perf_counter()
    with db.unit_of_work() as uow:
        store.write(uow, fanout_id, 10**6, blob)
    write_rate = size / (time.perf_counter() - start)
    start = time.perf_counter()
    with db.unit_of_work() as uow, store.local_copy(uow.session, fanout_id, 10**6) as path:
        part = np.load(path)
    read_rate = size / (time.perf_counter() - start)
    total = np.zeros_like(part)
    start = time.perf_counter()
    for _ in range(4):
        total += part
    add_rate = 4 * size / (time.perf_counter() - start)
    client = redis.Redis.from_url(REDIS)
    start = time.perf_counter()
    for _ in range(200):
        client.lpush("dfp-bench-rt", b"x" * 512)
        client.brpop(["dfp-bench-rt"], timeout=1)
    broker = (time.perf_counter() - start) / 200
    rate = float(measured["pairs_per_s_per_worker"])  # type: ignore[arg-type]
    print(
        f"rates: store write {write_rate / 1e6:.0f} MB/s, read {read_rate / 1e6:.0f} MB/s, "
        f"add {add_rate / 1e9:.2f} GB/s, broker round trip {broker * 1e3:.2f} ms, "
        f"{rate / 1e6:.2f} M pairs/s per worker"
    )
    columns = "n | W | blocks | compute s | publish + fetch s | partials written s | reduce s"
    print(f"| {columns} | total s | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in (args.n, 1_000_000):
        operand = n * args.d * 4
        partial = (2 / 3) * n * DELTAS * (CLASSES + 1) * 8
        for w in (2, 16, 64):
            blocks = 2 * w
            compute = n * n / 2 / (rate * w)
            publish = w * operand / read_rate + operand / write_rate
            written = w * partial / write_rate
            reduce = blocks * partial / read_rate + blocks * partial / add_rate + blocks * broker
            total_s = compute + publish + written + reduce
            print(
                f"| {n:,} | {w} | {blocks} | {compute:,.0f} | {publish:,.1f} | {written:,.1f} | "
                f"{reduce:,.1f} | {total_s:,.0f} | {compute / total_s:.2f} |"
            )


if __name__ == "__main__":
    main()
