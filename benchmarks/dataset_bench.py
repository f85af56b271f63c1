"""Uploads and analyses through the service: upload throughput and the API's memory, and an
analysis of captured layers via the workers against `dfp analyze` on the same arrays.

    .venv/bin/python benchmarks/dataset_bench.py [--upload-mb 500] [--n 20000] [--d 512]

Needs PostgreSQL and Redis (scripts/ensure-services.sh). It makes a scratch database, starts
one API process (uvicorn, as deployed) and one worker (`dfp worker`), and measures:

1. upload: a `--upload-mb` MB .npz (float32 arrays, uncompressed, as `np.savez` writes) streamed
   by the Python client; MB/s from the first byte sent to the 201, and the API process's peak
   RSS (VmHWM) above its idle RSS just before;
2. analysis: `--layers` arrays (n, d) float32 with 10 class labels. `dfp analyze` runs once per
   layer (the CLI analyses one function per call; its times are summed); the service analyses
   all layers in one analysis, timed from submission to the terminal status (the upload of
   the arrays is reported separately). Both use the automatic grid of 20 δ. Prints the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dfp.client import Client  # noqa: E402
from dfp.keys.service import create_key  # noqa: E402
from dfp.settings import Settings  # noqa: E402
from dfp.storage import migrate  # noqa: E402
from dfp.storage.database import Database  # noqa: E402

PG_ADMIN = os.environ.get("DFP_BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("DFP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def rss_kib(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak since start) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def wait_ready(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError("the API did not become ready")


def write_npz(path: Path, megabytes: int, seed: int = 0) -> None:
    """Float32 arrays of about `megabytes` MB in all, written a piece at a time."""
    rng = np.random.default_rng(seed)
    per_array = 64  # MB
    arrays = {}
    for i in range(max(1, megabytes // per_array)):
        arrays[f"block{i}"] = rng.standard_normal(
            (per_array * 2**20 // (4 * 256), 256), dtype=np.float32
        )
    np.savez(path, **arrays)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--layers", type=int, default=3)
    args = parser.parse_args()

    name = f"dfp_dataset_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = (
        PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    )
    redis.Redis.from_url(REDIS).flushdb()
    scratch = Path(tempfile.mkdtemp(prefix="dfp-dataset-bench-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DFP_")},
        "DFP_DATABASE_URL": db_url,
        "DFP_BROKER_URL": REDIS,
        "DFP_DATA_DIR": str(scratch / "data"),
        "DFP_RATE_LIMIT_PER_MINUTE": "0",
        "DFP_MAX_DATASET_BYTES": str(2 * 2**30),
    }
    port = 8900 + os.getpid() % 90
    url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        migrate.upgrade(db_url)
        db = Database(db_url)
        with db.unit_of_work() as uow:
            key = create_key(uow.session, "bench").key
        db.dispose()
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=REPO, env=env,
        )  # fmt: skip
        processes.append(api)
        wait_ready(url)
        settings = Settings(url=url, api_key=key, client_timeout=3600)

        # 1. upload
        big = scratch / "big.npz"
        write_npz(big, args.upload_mb)
        size = big.stat().st_size
        with Client(settings=settings) as client:
            client.datasets()  # warm: connection, key, first request paths
            idle = rss_kib(api.pid, "VmRSS")
            started = time.perf_counter()
            uploaded = client.upload_dataset(big)
            seconds = time.perf_counter() - started
            peak = rss_kib(api.pid, "VmHWM")
        big.unlink()
        print(
            f"upload: {size / 1e6:.0f} MB in {seconds:.1f} s = {size / 1e6 / seconds:.1f} MB/s; "
            f"API RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB "
            f"(+{(peak - idle) / 1024:.0f} MiB); {len(uploaded.arrays)} arrays checked",
            flush=True,
        )

        # 2. analysis: the CLI per layer, then the service for all layers.
        rng = np.random.default_rng(1)
        labels = rng.integers(0, 10, size=args.n)
        layers = {}
        for i in range(args.layers):
            centres = rng.standard_normal((10, args.d)).astype(np.float32)
            noise = rng.standard_normal((args.n, args.d), dtype=np.float32)
            layers[f"h{i}"] = centres[labels] * (i + 1) / args.layers + noise
        np.save(scratch / "labels.npy", labels)
        cli_seconds = 0.0
        for layer, features in layers.items():
            np.save(scratch / f"{layer}.npy", features)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "dfp.cli", "analyze", str(scratch / f"{layer}.npy"),
                 str(scratch / "labels.npy"), "--json", "--out", str(scratch / f"{layer}.json")],
                cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
            cli_seconds += time.perf_counter() - started
        print(f"dfp analyze: {args.layers} layers, n = {args.n}, d = {args.d}: {cli_seconds:.1f} s")

        worker_log = (scratch / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "dfp.cli", "worker", "--loglevel", "INFO"],
            cwd=REPO, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        processes.append(worker)
        deadline = time.monotonic() + 120
        while b"ready." not in (scratch / "worker.log").read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.3)
        with Client(settings=settings) as client:
            started = time.perf_counter()
            dataset = client.upload_dataset({**layers, "labels": labels})
            upload_seconds = time.perf_counter() - started
            started = time.perf_counter()
            analysis = client.analyze(dataset.id, features=list(layers), targets="labels")
            done = client.wait_analysis(analysis.id, timeout=3600)
            service_seconds = time.perf_counter() - started
            assert done.status == "succeeded", done.error
            result = client.analysis_results(analysis.id)
        import json

        for layer in result.layers:
            local = json.loads((scratch / f"{layer.layer}.json").read_text())
            gap = max(abs(a - b) for a, b in zip(layer.lfr, local["lfr"], strict=True))
            assert gap < 1e-9, (layer.layer, gap)
        print(
            f"service: upload {upload_seconds:.1f} s, analysis (submit to succeeded) "
            f"{service_seconds:.1f} s = {service_seconds / cli_seconds:.2f}x dfp analyze; "
            "LFR identical to the CLI's",
            flush=True,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(20)
            process.kill()
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
