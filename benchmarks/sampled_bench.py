"""The row-sampled estimator (`dfp analyze --ci W`) against the exact analysis, and at n = 10^6.

1. n = 60 000, d = 512, 20 δ, 10 classes (the data of frequency_bench.py): the exact result and
   `--ci W` on the same grid; reports both wall times, the largest half-width and the largest
   |estimate - exact| in half-widths.
2. n = 10^6, d = 512 (`--large`): the features written as one float32 .npy of 2 GiB, read by
   `dfp analyze --ci W` through a memory map; reports wall time and peak RSS.

Each measurement is its own `dfp analyze` process under /usr/bin/time (Debian package `time`),
and the load average is printed, since the machine is shared.
Usage: python benchmarks/sampled_bench.py [--ci 0.002] [--n 60000] [--large 1000000] [--skip-exact]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from frequency_bench import N_CLASSES, dfp_command, make_data, run_measured

WRITE_ROWS = 50_000  # rows generated and written at a time for the large file


def write_large(n: int, d: int, folder: Path) -> tuple[Path, Path]:
    """frequency_bench's class-structured features, written chunk by chunk to a float32 .npy."""
    rng = np.random.default_rng(n * 7 + d)
    centres = rng.normal(size=(N_CLASSES, d)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, size=n)
    xp, yp = folder / f"x_{n}_{d}.npy", folder / f"y_{n}_{d}.npy"
    x = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32, shape=(n, d))
    for i in range(0, n, WRITE_ROWS):
        rows = labels[i : i + WRITE_ROWS]
        noise = rng.standard_normal((len(rows), d), dtype=np.float32) * np.float32(1.5)
        x[i : i + len(rows)] = centres[rows] + noise
    x.flush()
    del x
    np.save(yp, labels)
    return xp, yp


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", type=float, default=0.002)
    parser.add_argument("--n", type=int, default=60_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--large", type=int, default=1_000_000, help="0 skips the large run.")
    parser.add_argument("--skip-exact", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_exact:
            xp, yp, deltas = make_data(args.n, args.d, Path(tmp))
            grid = ",".join(repr(v) for v in deltas)
            base = [*dfp_command(), "analyze", str(xp), str(yp), "--deltas", grid, "--json"]
            print(f"n = {args.n}, d = {args.d}: {load()}", flush=True)
            sampled = run_measured([*base, "--ci", str(args.ci)])
            print(f"  --ci {args.ci}: {sampled.wall:.1f} s, {sampled.peak_rss_gib:.2f} GiB")
            exact = run_measured(base)
            print(f"  exact: {exact.wall:.1f} s, {exact.peak_rss_gib:.2f} GiB  ({load()})")
            s, e = json.loads(sampled.stdout), json.loads(exact.stdout)
            halves = s["lfr_ci_half_width"]
            gaps = [
                abs(a - b) / h if h > 0 else (0.0 if a == b else float("inf"))
                for a, b, h in zip(s["lfr"], e["lfr"], halves, strict=True)
            ]
            print(
                f"  estimator {s['estimator']}, rows {s['rows_evaluated']} of {args.n}; "
                f"largest half-width {max(halves):.2e}; largest |estimate - exact| "
                f"{max(abs(a - b) for a, b in zip(s['lfr'], e['lfr'], strict=True)):.2e} "
                f"= {max(gaps):.2f} half-widths; time {sampled.wall / exact.wall:.3f} of exact",
                flush=True,
            )
        if args.large:
            xp, yp = write_large(args.large, args.d, Path(tmp))
            print(f"n = {args.large}, d = {args.d} (mapped .npy): {load()}", flush=True)
            run = run_measured(
                [*dfp_command(), "analyze", str(xp), str(yp), "--ci", str(args.ci), "--json"]
            )
            result = json.loads(run.stdout)
            print(
                f"  --ci {args.ci}: {run.wall:.1f} s, peak RSS {run.peak_rss_gib:.2f} GiB, "
                f"rows {result['rows_evaluated']}, largest half-width "
                f"{max(result['lfr_ci_half_width']):.2e}, engine {result['elapsed_seconds']:.1f} s"
                f"  ({load()})",
                flush=True,
            )


if __name__ == "__main__":
    main()
