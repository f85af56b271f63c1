"""analyze_model against analyze_frequency on the same captured arrays: the cost of the wrapper.

A user-defined network (an MLP with residual blocks, 5 analysed layers) on n seeded samples.
Each round times (A) `analyze_model(model, x, y, layers)` end to end, capture included, and
(B) `analyze_frequency` on each layer's array, captured beforehand by hooks written here, with
the same options; the two alternate in order from round to round, so a load change on a shared
machine hits both alike. Reported per round: wall and CPU seconds (all threads of this process,
which other processes' load does not inflate) of A and B and their ratios; then the medians
over rounds, the largest |ΔLFR| between the two and the median time A spent capturing (the
forward pass included). `--torch-threads 1` runs the forward pass on one thread: on an
oversubscribed machine torch's multi-threaded forward spends many times the CPU of one thread.

Usage: python benchmarks/model_analysis_bench.py [--n 10000] [--width 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from dfp_engine import analyze_frequency, analyze_model


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.fc2(torch.relu(self.fc1(x))))


class Net(nn.Module):
    def __init__(self, d_in: int, width: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(d_in, width), nn.ReLU())
        self.blocks = nn.Sequential(*(Block(width) for _ in range(4)))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


LAYERS = ["stem", "blocks.0", "blocks.1", "blocks.2", "blocks.3"]


def captured_by_hooks(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    modules = dict(model.named_modules())
    out: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    handles = [
        modules[name].register_forward_hook(lambda m, a, o, name=name: out[name].append(o))
        for name in LAYERS
    ]
    model.eval()
    with torch.no_grad():
        for i in range(0, len(x), 512):
            model(x[i : i + 512])
    for h in handles:
        h.remove()
    return {name: torch.cat(parts).numpy() for name, parts in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch intra-op threads for the forward"
    )
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    torch.manual_seed(0)
    model = Net(32, args.width, 10)
    x = torch.randn(args.n, 32)
    y = model(x).argmax(dim=1).detach()  # labels the network itself can express
    arrays = captured_by_hooks(model, x)
    labels = y.numpy()

    captures: list[float] = []

    def wrapped() -> tuple[float, float, list[list[float]]]:
        start, cpu = time.perf_counter(), time.process_time()
        result = analyze_model(model, x, y, LAYERS)
        lfrs = [e.lfr for e in result.layers]
        captures.append(result.capture_seconds)
        return time.perf_counter() - start, time.process_time() - cpu, lfrs

    def direct() -> tuple[float, float, list[list[float]]]:
        start, cpu = time.perf_counter(), time.process_time()
        lfrs = [analyze_frequency(arrays[name], labels).lfr for name in LAYERS]
        return time.perf_counter() - start, time.process_time() - cpu, lfrs

    print(
        f"n = {args.n}, width {args.width}, {len(LAYERS)} layers, 20 δ (automatic grid), "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        "round | analyze_model wall s | analyze_frequency wall s | wall ratio | "
        "analyze_model CPU s | analyze_frequency CPU s | CPU ratio"
    )
    wall_ratios, cpu_ratios = [], []
    worst = 0.0
    for r in range(args.rounds):
        order = [wrapped, direct] if r % 2 == 0 else [direct, wrapped]
        wall, cpu, lfrs = {}, {}, {}
        for fn in order:
            wall[fn.__name__], cpu[fn.__name__], lfrs[fn.__name__] = fn()
        wall_ratios.append(wall["wrapped"] / wall["direct"])
        cpu_ratios.append(cpu["wrapped"] / cpu["direct"])
        diff = np.abs(np.array(lfrs["wrapped"]) - np.array(lfrs["direct"])).max()
        worst = max(worst, float(diff))
        print(
            f"{r + 1} | {wall['wrapped']:.2f} | {wall['direct']:.2f} | {wall_ratios[-1]:.3f} | "
            f"{cpu['wrapped']:.2f} | {cpu['direct']:.2f} | {cpu_ratios[-1]:.3f}",
            flush=True,
        )
    wall_median, cpu_median = statistics.median(wall_ratios), statistics.median(cpu_ratios)
    print(
        f"median wall ratio {wall_median:.3f} ({100 * (wall_median - 1):+.1f} %), "
        f"median CPU ratio {cpu_median:.3f} ({100 * (cpu_median - 1):+.1f} %), "
        f"max |ΔLFR| {worst:.1e}; analyze_model's capture (forward pass included) "
        f"median {statistics.median(captures):.2f} s wall"
    )


if __name__ == "__main__":
    main()
