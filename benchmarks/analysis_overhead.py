"""Share of an experiment's run time spent in per-layer analysis (target: under 25 %).

Runs example (3), one 5-hidden-layer MLP with every layer analysed at its default checkpoint
schedule, and reports where the time went: dataset, training, and analysis (capture of every
layer on the fixed analysis subset plus the frequency analysis), per checkpoint and in total.

Usage: python benchmarks/analysis_overhead.py [--spec examples/within_network_mnist1d.yaml]
                                              [--set field.path=value ...] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from dfp_engine.runner import run_one
from dfp_engine.spec import load_spec

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE.parent / "examples" / "within_network_mnist1d.yaml"
TARGET_SHARE = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeat", type=int, default=1, help="Runs to time (best is kept).")
    args = parser.parse_args()

    spec = load_spec(args.spec, args.overrides)
    print(
        f"spec: {args.spec.name} ({spec.name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    best = None
    for _ in range(args.repeat):
        started = time.perf_counter()
        run = run_one(spec, 0)
        wall = time.perf_counter() - started
        if best is None or run.analysis_seconds / wall < best[0].analysis_seconds / best[1]:
            best = (run, wall)
    assert best is not None
    run, wall = best
    checkpoints = len(run.checkpoints)
    layers = len(run.layer_names)
    share = run.analysis_seconds / run.elapsed_seconds
    print(
        f"run status {run.status}: {spec.training.epochs} epochs, {run.n_train} train samples, "
        f"{checkpoints} checkpoints x {layers} layers on {run.n_analysis} analysis samples"
    )
    print(f"total run time       {run.elapsed_seconds:8.2f} s")
    print(
        f"analysis time        {run.analysis_seconds:8.2f} s "
        f"({run.analysis_seconds / checkpoints * 1e3:.0f} ms per checkpoint, "
        f"{run.analysis_seconds / checkpoints / layers * 1e3:.0f} ms per layer)"
    )
    print(
        f"everything else      {run.elapsed_seconds - run.analysis_seconds:8.2f} s "
        f"(data, training, evaluation)"
    )
    verdict = "meets" if share < TARGET_SHARE else "MISSES"
    print(f"analysis share       {share:8.1%}  ({verdict} the {TARGET_SHARE:.0%} target)")


if __name__ == "__main__":
    main()
