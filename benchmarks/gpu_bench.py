"""The exact blocked kernel and the row-sampled estimator on one CUDA device, at n = 10^6.

Features as in frequency_bench.py (10 Gaussian classes, d = 512), generated on the CPU; 20 δ.
Prints the exact time (target: under two minutes on one modern GPU), the `ci` estimate's time,
rows and half-widths, and the gap between them in half-widths.
Usage: python benchmarks/gpu_bench.py [--n 1000000] [--d 512] [--ci 0.002] [--skip-exact]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dfp_engine import analyze_frequency

N_CLASSES, N_DELTAS = 10, 20


def make_features(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n * 7 + d)
    centres = rng.normal(size=(N_CLASSES, d)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, size=n)
    x = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 100_000):
        rows = labels[i : i + 100_000]
        x[i : i + len(rows)] = centres[rows] + np.float32(1.5) * rng.standard_normal(
            (len(rows), d), dtype=np.float32
        )
    return x, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--ci", type=float, default=0.002)
    parser.add_argument("--skip-exact", action="store_true")
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    x, labels = make_features(args.n, args.d)
    # warm-up: CUDA context and kernels, off the clock
    analyze_frequency(x[:20_000], labels[:20_000], auto_deltas=N_DELTAS, device="cuda")
    start = time.perf_counter()
    sampled = analyze_frequency(x, labels, auto_deltas=N_DELTAS, device="cuda", ci=args.ci)
    torch.cuda.synchronize()
    ci_s = time.perf_counter() - start
    assert sampled.lfr_ci_half_width is not None
    print(
        f"n = {args.n}, d = {args.d}, ci {args.ci}: {ci_s:.1f} s, {sampled.estimator}, "
        f"rows {sampled.rows_evaluated}, largest half-width {max(sampled.lfr_ci_half_width):.2e}",
        flush=True,
    )
    if args.skip_exact:
        return
    start = time.perf_counter()
    exact = analyze_frequency(x, labels, deltas=sampled.deltas, device="cuda", on_progress=None)
    torch.cuda.synchronize()
    exact_s = time.perf_counter() - start
    gaps = [
        abs(a - b) / h if h > 0 else 0.0
        for a, b, h in zip(sampled.lfr, exact.lfr, sampled.lfr_ci_half_width, strict=True)
    ]
    print(
        f"exact: {exact_s:.1f} s (target < 120 s); estimate within {max(gaps):.2f} half-widths",
        flush=True,
    )


if __name__ == "__main__":
    main()
