"""The dense reference implementation the engine is compared with, run as its own process.

It computes LFR the straightforward way, as filtering code written for small data does: the
full n x n squared-distance matrix in float64, one n x n Gaussian kernel per δ (all kept), and
a dense kernel-times-labels product per δ. Usage:

    python benchmarks/dense_baseline.py FEATURES.npy LABELS.npy 0.5,1,2   # prints LFR as JSON
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def dense_lfr(x: np.ndarray, labels: np.ndarray, deltas: list[float]) -> list[float]:
    """LFR(δ) per docs/method.md §2, max-abs-per-dim normalised, everything dense in float64."""
    x = x.astype(np.float64)
    scale = np.abs(x).max(axis=0)
    x = x / np.where(scale > 0, scale, 1.0)
    y = np.eye(int(labels.max()) + 1)[labels]
    sq = (x * x).sum(axis=1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)  # (n, n)
    kernels = [np.exp(-dist / (2.0 * d)) for d in deltas]  # m x (n, n)
    power = (y * y).sum()
    out = []
    for kernel in kernels:
        low = kernel @ y / kernel.sum(axis=1, keepdims=True)
        out.append(float((low * low).sum() / power))
    return out


def main() -> None:
    x = np.load(sys.argv[1])
    labels = np.load(sys.argv[2])
    deltas = [float(v) for v in sys.argv[3].split(",")]
    start = time.perf_counter()
    lfr = dense_lfr(x, labels, deltas)
    print(json.dumps({"lfr": lfr, "elapsed_seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
