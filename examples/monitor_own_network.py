"""Your own network, your own training loop, and dfp watching the frequency content of its layers.

A small residual CNN on scikit-learn's 8x8 digits (bundled, nothing downloaded) is trained by an
ordinary PyTorch loop; a FrequencyMonitor analyses four of its layers on a fixed probe set of
training images at a few epochs. The result is written in the shape of an experiment result,
with the RDF-by-layer figure:

    .venv/bin/python examples/monitor_own_network.py --epochs 12 --out runs/own_network
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dfp_engine import FrequencyMonitor


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class DigitsNet(nn.Module):
    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(Block(channels), nn.MaxPool2d(2), Block(channels))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(channels * 16, 64), nn.ReLU())
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.blocks(self.stem(x))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--probe", type=int, default=500, help="probe images analysed")
    parser.add_argument("--out", type=Path, default=Path("runs/own_network"))
    args = parser.parse_args()

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (n, 1, 8, 8)
    y = torch.tensor(digits.target)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    layers = ["stem", "blocks.0", "blocks.2", "head"]
    monitor = FrequencyMonitor(
        model, x[: args.probe], y[: args.probe], layers, name="digits resnet", auto_deltas=16
    )
    checkpoints = sorted({0, args.epochs // 4, args.epochs // 2, args.epochs})

    for epoch in range(args.epochs + 1):
        loss_sum, batches = 0.0, 0
        if epoch > 0:
            model.train()
            for xb, yb in loader:
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(xb), yb)
                loss.backward()
                optimizer.step()
                loss_sum, batches = loss_sum + loss.item(), batches + 1
        if epoch in checkpoints:
            train_loss = loss_sum / batches if batches else None  # no loss before training
            analysis = monitor.record(epoch=epoch, step=epoch * len(loader), train_loss=train_loss)
            peaks = ", ".join(f"{e.layer} {e.peak_inverse_delta:.3g}" for e in analysis.layers)
            loss_text = "-    " if train_loss is None else f"{train_loss:.3f}"
            print(f"epoch {epoch:3d}  loss {loss_text}  RDF peak 1/δ: {peaks}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    monitor.save(args.out / "result.json")
    monitor.plot(args.out / "rdf_layers.png")
    print(f"wrote {args.out / 'result.json'} and {args.out / 'rdf_layers.png'}")


if __name__ == "__main__":
    main()
