"""Recording hidden representations h^[l](x) with forward hooks, removed on exit or error."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from dfp_engine.models import Network

# Rows per forward pass while capturing: bounds activation memory for conv nets.
CAPTURE_BATCH = 512


@contextmanager
def capture_hooks(model: Network, names: Sequence[str]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Hook the named capture points; yields name -> list of (batch, d) outputs, one per forward."""
    points = model.capture_points()
    unknown = [n for n in names if n not in points]
    if unknown:
        raise ValueError(f"no capture point named {unknown}; the model has {list(points)}")
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    with forward_hooks({n: points[n] for n in names}, lambda n: _recorder(store[n])):
        yield store


@contextmanager
def forward_hooks(
    modules: Mapping[str, nn.Module], make_hook: Callable[[str], Any]
) -> Iterator[None]:
    """Register make_hook(name) as a forward hook on each module; all removed on exit or error."""
    handles = []
    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _recorder(sink: list[torch.Tensor]) -> Any:
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        sink.append(output.detach().flatten(1))  # (batch, ...) -> (batch, d)

    return hook


def capture_representations(
    model: Network,
    x: torch.Tensor,
    names: Sequence[str],
    *,
    batch_size: int = CAPTURE_BATCH,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each named layer's representation (n, d) of x, plus the network outputs (n, k).

    Runs in eval mode without gradients and restores the model's previous mode afterwards.
    `input` is x itself, flattened; `output` the network's outputs.
    """
    hooked = [n for n in names if n not in ("input", "output")]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), capture_hooks(model, hooked) as store:
            outputs = torch.cat(
                [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
            )
    finally:
        model.train(was_training)
    reps = {name: torch.cat(chunks) for name, chunks in store.items()}
    if "input" in names:
        reps["input"] = x.flatten(1)
    if "output" in names:
        reps["output"] = outputs
    return {name: reps[name] for name in names}, outputs
