"""Engine vs dense baseline for LFR, and the engine against this machine's own limits.

Every measurement runs as its own process (the engine through the real `dfp analyze` CLI), so
wall time includes start-up and peak RSS is that process's own. The machine's limits are
measured in the same run: fp32 GEMM FLOP/s, exp/s and the kernel-times-labels product, from
which the lower bound for the unavoidable work follows:

    distance GEMM      (n^2 / 2) * 2d  flop       one triangle: the kernel is symmetric
    exp                (n^2 / 2) * m   exps       one per unordered pair and δ
    kernel x labels    n^2 * m * 2 * 16 flop      every ordered pair, [Y | 1] padded to 16

Needs /usr/bin/time (Debian package `time`) for per-process peak RSS.
Usage: python benchmarks/frequency_bench.py [--n 2000,5000,...] [--d 64,512,3072] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
N_CLASSES = 10
N_DELTAS = 20
LABEL_COLUMNS = 16  # [one-hot | 1] padded, as the engine multiplies it


@dataclass
class ProcessRun:
    wall: float
    peak_rss_gib: float
    stdout: str
    returncode: int


@dataclass
class Limits:
    gemm_flops: float
    exp_per_s: float
    product_flops: float

    def lower_bound(self, n: int, d: int, m: int) -> float:
        pairs = n * n / 2
        return (
            pairs * 2 * d / self.gemm_flops
            + pairs * m / self.exp_per_s
            + n * n * m * 2 * LABEL_COLUMNS / self.product_flops
        )


def run_measured(cmd: list[str]) -> ProcessRun:
    """Run a command under /usr/bin/time: wall time and the command's own peak RSS.

    The figure must come from a small parent: a child forked from this (torch-sized) process
    inherits its resident set in ru_maxrss before exec.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *cmd],
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        lines = Path(rss_file.name).read_text().split()
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-2000:])
    peak_kib = float(lines[-1]) if lines and lines[-1].isdigit() else float("nan")
    return ProcessRun(wall, peak_kib / 2**20, proc.stdout, proc.returncode)


def best_rate(work: float, fn: Callable[[], object], repeats: int = 5) -> float:
    """work / best time of `repeats` calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return work / best


def threaded_rate(work: float, fns: list[Callable[[], object]], repeats: int = 5) -> float:
    """Total work / best wall time with each fn running on its own thread, one BLAS thread each."""
    from threadpoolctl import threadpool_limits

    def run_all() -> None:
        threads = [threading.Thread(target=fn) for fn in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with threadpool_limits(limits=1, user_api="blas"):
        return best_rate(work * len(fns), run_all, repeats)


def measure_limits() -> Limits:
    """This machine's fp32 GEMM FLOP/s, exp/s and kernel-times-labels FLOP/s on all cores.

    Each is the best of torch (its own threads) and numpy (one thread per core), over
    cache-resident and streaming sizes: the fastest this machine does each part of the work.
    """
    cores = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)

    def arrays(*shape: int) -> list[np.ndarray]:
        return [rng.standard_normal(shape, dtype=np.float32) for _ in range(cores)]

    gemm = 0.0
    for rows, inner in ((4096, 512), (2048, 2048), (4096, 3072), (128, 528)):
        flop = 2.0 * rows * inner * rows
        a, b = torch.randn(rows, inner), torch.randn(inner, rows)
        gemm = max(gemm, best_rate(flop, lambda a=a, b=b: a @ b))
        pairs = list(zip(arrays(rows, inner), arrays(rows, inner), strict=True))
        gemm = max(gemm, threaded_rate(flop, [lambda p=p: p[0] @ p[1].T for p in pairs]))
    exp_rate = 0.0
    for size in (2**18, 2**20, 2**24):
        x = -87.0 * torch.rand(size)
        out = torch.empty_like(x)
        exp_rate = max(exp_rate, best_rate(float(size), lambda x=x, out=out: torch.exp(x, out=out)))
        xs = [(-87.0 * np.abs(v), np.empty_like(v)) for v in arrays(size)]
        calls = [lambda v=v: np.exp(v[0], out=v[1]) for v in xs]
        exp_rate = max(exp_rate, threaded_rate(float(size), calls))
    product = 0.0
    for rows, inner in ((8192, 8192), (20 * 128, 128), (20 * 256, 256), (16384, 4096)):
        flop = 2.0 * rows * inner * LABEL_COLUMNS
        k, y = torch.rand(rows, inner), torch.randn(inner, LABEL_COLUMNS)
        product = max(product, best_rate(flop, lambda k=k, y=y: k @ y))
        pairs = list(zip(arrays(rows, inner), arrays(inner, LABEL_COLUMNS), strict=True))
        product = max(product, threaded_rate(flop, [lambda p=p: p[0] @ p[1] for p in pairs]))
    return Limits(gemm_flops=gemm, exp_per_s=exp_rate, product_flops=product)


def make_data(n: int, d: int, folder: Path) -> tuple[Path, Path, list[float]]:
    """Class-structured random features (10 Gaussian clusters) and their integer labels."""
    rng = np.random.default_rng(n * 7 + d)
    centres = rng.normal(size=(N_CLASSES, d)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, size=n)
    x = centres[labels] + rng.normal(scale=1.5, size=(n, d)).astype(np.float32)
    xp, yp = folder / f"x_{n}_{d}.npy", folder / f"y_{n}_{d}.npy"
    np.save(xp, x)
    np.save(yp, labels)
    # One grid for both implementations, spanning the normalised features' distance scale.
    from dfp_engine.deltas import auto_deltas
    from dfp_engine.normalization import normalize

    deltas = auto_deltas(normalize(x[:4096], "max_abs_per_dim"), N_DELTAS)
    return xp, yp, deltas


def baseline_fits(n: int) -> bool:
    """The baseline holds m + 1 dense n x n float64 matrices; skip it beyond 80% of RAM."""
    need = (N_DELTAS + 2) * n * n * 8
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return need < 0.8 * total


def dfp_command() -> list[str]:
    script = shutil.which("dfp", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "dfp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="2000,5000,10000,20000,60000")
    parser.add_argument("--d", default="64,512,3072")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="Engine runs per size.")
    parser.add_argument("--markdown", action="store_true", help="Print a Markdown table.")
    args = parser.parse_args()
    sizes = [int(v) for v in args.n.split(",")]
    dims = [int(v) for v in args.d.split(",")]

    limits = measure_limits()
    print(
        f"machine: fp32 GEMM {limits.gemm_flops / 1e9:.0f} GFLOP/s, "
        f"exp {limits.exp_per_s / 1e9:.2f} G/s, "
        f"kernel x labels {limits.product_flops / 1e9:.0f} GFLOP/s; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    header = (
        "n",
        "d",
        "engine s (median)",
        "engine RSS GiB",
        "engine compute s (best)",
        "bound s",
        "compute/bound",
        "baseline s",
        "baseline RSS GiB",
        "baseline/engine",
        "max |ΔLFR|",
    )
    rows: list[tuple[str, ...]] = []
    print(" | ".join(header), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for d in dims:
                xp, yp, deltas = make_data(n, d, Path(tmp))
                grid = ",".join(repr(v) for v in deltas)
                runs = [
                    run_measured(
                        [*dfp_command(), "analyze", str(xp), str(yp), "--deltas", grid, "--json"]
                    )
                    for _ in range(args.repeats)
                ]
                if any(r.returncode != 0 for r in runs):
                    print(f"engine failed at n={n}, d={d}", flush=True)
                    continue
                # The median run for wall time and memory; the best compute time, like-for-like
                # with the machine limits, which are best-of-five too.
                engine = sorted(runs, key=lambda r: r.wall)[len(runs) // 2]
                result = json.loads(engine.stdout)
                compute = min(json.loads(r.stdout)["elapsed_seconds"] for r in runs)
                bound = limits.lower_bound(n, d, N_DELTAS)
                base_cells = ("-", "-", "-", "-")
                if not args.no_baseline and baseline_fits(n):
                    base = run_measured(
                        [sys.executable, str(HERE / "dense_baseline.py"), str(xp), str(yp), grid]
                    )
                    if base.returncode == 0:
                        diff = max(
                            abs(a - b)
                            for a, b in zip(
                                json.loads(base.stdout)["lfr"], result["lfr"], strict=True
                            )
                        )
                        base_cells = (
                            f"{base.wall:.2f}",
                            f"{base.peak_rss_gib:.2f}",
                            f"{base.wall / engine.wall:.1f}x",
                            f"{diff:.1e}",
                        )
                row = (
                    str(n),
                    str(d),
                    f"{engine.wall:.2f}",
                    f"{engine.peak_rss_gib:.2f}",
                    f"{compute:.2f}",
                    f"{bound:.2f}",
                    f"{compute / bound:.2f}",
                    *base_cells,
                )
                rows.append(row)
                print(" | ".join(row), flush=True)
                xp.unlink()
                yp.unlink()
    if args.markdown:
        print()
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
