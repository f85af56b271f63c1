"""The spill path: a convolutional stage too large for `max_memory`, captured and analysed.

A user-defined network whose first stage (3x3 conv, 32 channels, on 32x32 RGB images) gives
d = 32 768 features per sample: at n = 50 000 that is 6.1 GiB of float32, the size of a CIFAR
conv stage. Images come from a seeded generator in batches (class templates plus noise, 10
classes), so the inputs never sit in memory whole. Each measurement runs in its own process and
reports that process's peak RSS (ru_maxrss: anonymous and file-backed pages alike); "baseline"
is the same process after importing torch and building the model, before any capture.

    --mode capture   capture + spill + the streaming statistics pass (what precedes the tiles)
    --mode full      analyze_model end to end: capture, spill and the exact O(n^2 d) analysis

Usage: python benchmarks/spill_bench.py --mode full --n 10000 [--max-memory-gib 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

GIB = 2**30


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def child(mode: str, n: int, max_memory: int, batch: int) -> dict[str, float | int | str]:
    import numpy as np
    import torch
    from torch import nn

    from dfp_engine.model_analysis import analyze_model, capture_model
    from dfp_engine.normalization import column_statistics

    torch.manual_seed(0)
    model = nn.Module()
    model.stage = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
    model.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    model.forward = lambda x: model.head(model.stage(x))  # type: ignore[method-assign]
    templates = torch.randn(10, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(2)
        for start in range(0, n, batch):
            rows = min(batch, n - start)
            y = torch.randint(0, 10, (rows,), generator=gen)
            yield templates[y] + 1.5 * torch.randn(rows, 3, 32, 32, generator=gen), y

    baseline = rss_gib()
    out: dict[str, float | int | str] = {"mode": mode, "n": n, "baseline_rss_gib": baseline}
    start = time.perf_counter()
    if mode == "capture":
        with capture_model(model, batches(), None, ["stage"], max_memory=max_memory) as cap:
            captured = time.perf_counter()
            z = cap.representations["stage"]
            stats = column_statistics(z)
            out.update(
                d=int(z.shape[1]),
                spilled=",".join(cap.spilled),
                memmap=int(isinstance(z, np.memmap)),
                capture_s=captured - start,
                stats_s=time.perf_counter() - captured,
                finite=int(stats.finite),
            )
    else:
        result = analyze_model(model, batches(), None, ["stage"], max_memory=max_memory)
        entry = result.layers[0]
        out.update(
            d=entry.dim,
            spilled=",".join(result.spilled_layers),
            capture_s=result.capture_seconds,
            analysis_s=result.analysis_seconds,
            peak_inverse_delta=entry.peak_inverse_delta or 0.0,
            lfr_first=entry.lfr[0],
            lfr_last=entry.lfr[-1],
        )
    out["total_s"] = time.perf_counter() - start
    out["peak_rss_gib"] = rss_gib()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["capture", "full"], default="full")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--max-memory-gib", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    max_memory = int(args.max_memory_gib * GIB)
    if args.child:
        print(json.dumps(child(args.mode, args.n, max_memory, args.batch)))
        return
    command = [sys.executable, __file__, "--child", "--mode", args.mode, "--n", str(args.n)]
    command += ["--max-memory-gib", str(args.max_memory_gib), "--batch", str(args.batch)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    size = row["n"] * row["d"] * 4 / GIB
    print(
        f"{args.mode}: n = {row['n']}, d = {row['d']} ({size:.2f} GiB float32), "
        f"max_memory = {args.max_memory_gib} GiB, spilled: {row['spilled'] or 'nothing'}"
    )
    for key, value in row.items():
        if key.endswith("_s") or key.endswith("_gib"):
            print(f"  {key:18s} {value:9.2f}")
        elif key not in ("mode", "n", "d", "spilled"):
            print(f"  {key:18s} {value}")


if __name__ == "__main__":
    main()
