"""Training loop pieces: device choice, seeding, optimiser, loss, one epoch, evaluation."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the universal alias
from torch import nn

from dfp_engine.datasets import Dataset
from dfp_engine.spec import TrainingSpec

StopReason = Literal["diverged", "cancelled", "max_steps", "target_reached"]
# Check `should_cancel` at every epoch start and also every this many batches within an epoch.
CANCEL_CHECK_BATCHES = 50
# Rows per forward pass when evaluating loss and accuracy.
EVAL_BATCH = 2048
# Below this many parameters x batch rows per step, CPU intra-op threads cost more than they
# save (measured on 2 busy cores: a 5x100 MLP at batch 256 steps 1.5-10x faster on one thread).
SMALL_STEP_WORK = 2e7
# The same for one layer's analysis, counted as n² (d + m) for n samples, d dims, m bandwidths.
SMALL_ANALYSIS_WORK = 5e7


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda when available, else cpu; an unavailable cuda is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"training.device: '{name}' requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"training.device: '{name}' does not exist on this machine")
    return device


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and use deterministic kernels inside the block; the caller's state comes back.

    The global generators are forked, so a run neither depends on nor disturbs the RNG state
    of the process around it (a worker runs many experiments one after another).
    """
    cuda = device.type == "cuda"
    if not cuda:
        # CPU kernels used here are deterministic already; the global switch also costs a
        # two-second import of torch's compiler stack, so it is only turned on for CUDA.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
        return
    # cuBLAS needs this before its first use to pick deterministic reduction workspaces.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    with torch.random.fork_rng(devices=[device]):
        torch.manual_seed(seed)
        # warn_only: the few CUDA kernels without a deterministic version warn instead of failing.
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
            torch.backends.cudnn.benchmark = previous[2]


def make_optimizer(model: nn.Module, spec: TrainingSpec) -> torch.optim.Optimizer:
    """Adam, or SGD with optional (Nesterov) momentum."""
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=spec.lr,
        momentum=spec.momentum,
        nesterov=spec.nesterov,
        weight_decay=spec.weight_decay,
    )


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with n torch CPU threads (None: unchanged), then restore the old count."""
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass(frozen=True)
class EpochStats:
    """One epoch: mean batch loss (before each update), accuracy, and why it stopped early."""

    loss: float
    accuracy: float | None
    batches: int
    stop: StopReason | None = None
    target_step: int | None = None  # full batch: updates done when the loss first hit the target


class Trainer:
    """Holds the model, data on the device, optimiser and schedule; trains epoch by epoch."""

    def __init__(
        self, model: nn.Module, data: Dataset, spec: TrainingSpec, device: torch.device
    ) -> None:
        if spec.loss == "cross_entropy" and data.task != "classification":
            raise ValueError(
                "training.loss: cross_entropy needs class labels; the data is regression"
            )
        self.model = model
        self.spec = spec
        self.device = device
        self.n_classes = data.n_classes
        self.x = data.x_train.to(device)
        self.y = data.y_train.to(device)
        self.x_test = data.x_test.to(device)
        self.y_test = data.y_test.to(device)
        self.optimizer = make_optimizer(model, spec)
        self.scheduler = (
            torch.optim.lr_scheduler.MultiStepLR(
                self.optimizer, milestones=spec.lr_schedule.milestones, gamma=spec.lr_schedule.gamma
            )
            if spec.lr_schedule.milestones
            else None
        )
        n = len(self.x)
        self.batch_size = min(spec.batch_size or n, n)
        self.full_batch = self.batch_size == n
        # Shuffling draws from its own generator so that analysis never shifts the batch order.
        self.generator = torch.Generator().manual_seed(spec.seed)
        self.step = 0
        work = self.batch_size * sum(p.numel() for p in model.parameters())
        self.threads = 1 if device.type == "cpu" and work < SMALL_STEP_WORK else None

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss: cross-entropy on classes, or MSE on one-hot / real targets."""
        if self.spec.loss == "cross_entropy":
            return F.cross_entropy(outputs, targets)
        if self.n_classes is not None:
            targets = F.one_hot(targets, self.n_classes).to(outputs.dtype)
        return F.mse_loss(outputs, targets)

    def _correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> int:
        return int((outputs.argmax(dim=1) == targets).sum())

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float | None, float | None]:
        """Loss and accuracy (classification) on (x, y) in eval mode; None for an empty split."""
        if len(x) == 0:
            return None, None
        was_training = self.model.training
        self.model.eval()
        total, correct = 0.0, 0
        try:
            with torch.no_grad(), cpu_threads(self.threads):
                for i in range(0, len(x), EVAL_BATCH):
                    out = self.model(x[i : i + EVAL_BATCH])
                    target = y[i : i + EVAL_BATCH]
                    total += float(self.loss(out, target)) * len(target)
                    if self.n_classes is not None:
                        correct += self._correct(out, target)
        finally:
            self.model.train(was_training)
        accuracy = correct / len(x) if self.n_classes is not None else None
        return total / len(x), accuracy

    def train_epoch(self, *, should_cancel: Callable[[], bool] | None = None) -> EpochStats:
        """One pass over the shuffled training set; stops early on divergence, cancel, limits."""
        with cpu_threads(self.threads):
            return self._train_epoch(should_cancel)

    def _train_epoch(self, should_cancel: Callable[[], bool] | None) -> EpochStats:
        self.model.train()
        n = len(self.x)
        order = (
            None if self.full_batch else torch.randperm(n, generator=self.generator).to(self.device)
        )
        target = self.spec.target_loss
        losses: list[float] = []
        correct = 0
        stop: StopReason | None = None
        target_step: int | None = None
        for b, start in enumerate(range(0, n, self.batch_size)):
            if self.spec.max_steps is not None and self.step >= self.spec.max_steps:
                stop = "max_steps"
                break
            if (
                should_cancel is not None
                and b
                and b % CANCEL_CHECK_BATCHES == 0
                and should_cancel()
            ):
                stop = "cancelled"
                break
            if order is None:
                xb, yb = self.x, self.y
            else:
                idx = order[start : start + self.batch_size]
                xb, yb = self.x[idx], self.y[idx]
            outputs = self.model(xb)
            loss = self.loss(outputs, yb)
            value = loss.item()
            if not math.isfinite(value):
                return EpochStats(value, None, b, stop="diverged")
            losses.append(value)
            if self.n_classes is not None:
                correct += self._correct(outputs.detach(), yb)
            if self.full_batch and target is not None and value <= target:
                target_step = self.step
                if self.spec.stop_at_target:
                    stop = "target_reached"
                    break
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            self.step += 1
        if self.scheduler is not None and stop is None:
            self.scheduler.step()
        seen = min(len(losses) * self.batch_size, n)
        accuracy = correct / seen if self.n_classes is not None and seen else None
        mean = sum(losses) / len(losses) if losses else math.nan
        return EpochStats(mean, accuracy, len(losses), stop=stop, target_step=target_step)
