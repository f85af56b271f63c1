"""Exact analysis fanned out in row blocks: parallel efficiency with 1 and 2 worker processes,
and a cost model from the measured rates for 16 and 64 workers.

Each worker is its own process, single-threaded, reading the features from one memory-mapped
.npy (the shared storage) and writing its blocks' float64 partials as .npy files; the reducer
reads them in block order and forms LFR (dfp_engine.fanout). Measured: the tile rate of one
worker, the time with 2 workers (efficiency = T1 / (2 T2)), the rate at which partials are
written and read back and summed, and the features' read rate. The model for W workers:

    T(W) = compute / W + read features (every worker, in parallel) + write partials (parallel)
           + reduce (serial: B = W partials of |δ| n (c + 1) float64 each) + B task round trips

Usage: python benchmarks/fanout_bench.py [--n 20000] [--d 512] [--model-n 200000,1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLASSES = 10


def worker_main(folder: str, parts: int, blocks: str) -> None:
    """One worker process: compute the given blocks and store their partials."""
    from dfp_engine.fanout import block_sums, plan_blocks
    from dfp_engine.frequency import as_targets

    root = Path(folder)
    z = np.load(root / "x.npy", mmap_mode="r")
    y = as_targets(np.load(root / "y.npy"))
    deltas = [float(v) for v in (root / "deltas.txt").read_text().split(",")]
    plan = plan_blocks(z.shape[0], len(deltas), parts)
    for block in (int(b) for b in blocks.split(",")):
        part = block_sums(z, y, deltas, plan, block, threads=1)
        np.save(root / f"part_{block}.npy", part)


def run_workers(folder: Path, parts: int, workers: int) -> float:
    """Wall time of `workers` processes sharing the blocks round-robin."""
    shares = [list(range(w, parts, workers)) for w in range(workers)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(folder), str(parts), ",".join(map(str, s))],
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        )
        for s in shares
        if s
    ]
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("a worker failed")
    return time.perf_counter() - start


def reduce_seconds(folder: Path, parts: int) -> tuple[float, list[float], int]:
    from dfp_engine.fanout import reduce_blocks
    from dfp_engine.frequency import as_targets

    y = as_targets(np.load(folder / "y.npy"))
    start = time.perf_counter()
    partials = (np.load(folder / f"part_{b}.npy") for b in range(parts))
    lfr = reduce_blocks(partials, y)
    size = (folder / "part_0.npy").stat().st_size
    return time.perf_counter() - start, lfr, size


def broker_round_trip() -> float | None:
    """Seconds per push + pop on the local Redis (the broker): a floor on a task's overhead."""
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
        client.ping()
    except Exception:
        return None
    rounds = 500
    start = time.perf_counter()
    for i in range(rounds):
        client.lpush("dfp-bench-fanout", i)
        client.rpop("dfp-bench-fanout")
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--blocks-per-worker", type=int, default=2)
    parser.add_argument("--model-n", default="200000,1000000")
    args = parser.parse_args()
    from frequency_bench import N_DELTAS, make_data  # torch: kept out of the worker processes

    one, five, _ = os.getloadavg()
    print(f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        xp, yp, deltas = make_data(args.n, args.d, folder)
        xp.rename(folder / "x.npy")
        yp.rename(folder / "y.npy")
        (folder / "deltas.txt").write_text(",".join(repr(v) for v in deltas))
        start = time.perf_counter()
        np.asarray(np.load(folder / "x.npy", mmap_mode="r")).sum(dtype=np.float64)
        read_rate = args.n * args.d * 4 / (time.perf_counter() - start)

        parts2 = 2 * args.blocks_per_worker
        t1 = run_workers(folder, parts2, 1)
        red1, lfr1, size = reduce_seconds(folder, parts2)
        t2 = run_workers(folder, parts2, 2)
        red2, lfr2, _ = reduce_seconds(folder, parts2)
        assert lfr1 == lfr2, "the reduction must not depend on how blocks were spread"
        efficiency = (t1 + red1) / (2 * (t2 + red2))
        print(
            f"n = {args.n}, d = {args.d}, {parts2} blocks: 1 worker {t1:.1f} s + reduce "
            f"{red1:.2f} s; 2 workers {t2:.1f} s + reduce {red2:.2f} s; efficiency "
            f"{efficiency:.2f}; LFR identical bit for bit"
        )
        pairs = args.n * args.n / 2
        pair_rate = pairs / t1  # unordered pairs (all δ) per second for one worker
        reduce_rate = parts2 * size / red1  # partial bytes read and summed per second
        broker = broker_round_trip()
        print(
            f"rates: {pair_rate / 1e6:.1f} M pairs/s per worker (20 δ), features read "
            f"{read_rate / 1e9:.2f} GB/s, partials reduced {reduce_rate / 1e9:.2f} GB/s, "
            f"broker round trip {broker * 1e3:.2f} ms"
            if broker is not None
            else f"rates: {pair_rate / 1e6:.1f} M pairs/s per worker; no broker reachable"
        )
        print("model (seconds): n, W, compute, read features, reduce, broker, total, efficiency")
        for n in (int(v) for v in args.model_n.split(",")):
            for w in (1, 2, 16, 64):
                compute = n * n / 2 / pair_rate / w
                read = n * args.d * 4 / read_rate
                partial = N_DELTAS * n * (CLASSES + 1) * 8
                reduce = w * partial / reduce_rate
                rounds = w * (broker or 0.0)
                total = compute + read + reduce + rounds
                ideal = n * n / 2 / pair_rate / w
                print(
                    f"  {n} {w:3d} {compute:9.1f} {read:6.2f} {reduce:7.1f} {rounds:6.3f} "
                    f"{total:9.1f} {ideal / total:5.2f}"
                )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
