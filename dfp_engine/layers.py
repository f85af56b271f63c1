"""Layer names of a model spec, and how analysis requests resolve to them (no torch needed).

Names, in forward order: `input`, then the hidden layers (`hidden.1` … for the MLP; `stage.1` …
then `head.1` … for conv nets; the ResNet adds `stem` first), then `output`. Analysis may also
count from the output (docs/method.md §1): `-1` is the output, `-2` the last hidden layer, and
so on; a non-negative integer k is the k-th name (`0` is the input).
"""

from __future__ import annotations

from collections.abc import Sequence

from dfp_engine.spec import CNNModel, MLPModel, ModelSpec

# ResNet18 for CIFAR has four residual stages; a variant removes some from the deep end.
RESNET_STAGES = 4


def hidden_names(spec: ModelSpec) -> list[str]:
    """Names of the hidden layers of a model spec, in forward order (no dataset needed)."""
    if isinstance(spec, MLPModel):
        return [f"hidden.{i}" for i in range(1, spec.depth + 1)]
    heads = [f"head.{i}" for i in range(1, len(spec.head_widths) + 1)]
    if isinstance(spec, CNNModel):
        return [f"stage.{i}" for i in range(1, len(spec.channels) + 1)] + heads
    stages = [f"stage.{i}" for i in range(1, RESNET_STAGES - spec.variant + 1)]
    return ["stem", *stages, *heads]


def capture_names(spec: ModelSpec) -> list[str]:
    """`input`, every hidden layer, `output`."""
    return ["input", *hidden_names(spec), "output"]


def resolve_layer(name: str, names: Sequence[str]) -> str:
    """A layer name or index (`-2`, `3`) as its canonical name; ValueError lists the options."""
    if name in names:
        return name
    try:
        index = int(name)
    except ValueError:
        index = None
    if index is not None and -len(names) <= index < len(names):
        return names[index]
    options = ", ".join(names)
    raise ValueError(f"unknown layer '{name}'; this model has {options} (or -1 … -{len(names)})")


def resolve_layers(requested: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """'all' → input plus every hidden layer; otherwise each name resolved, in forward order."""
    if requested == "all":
        return [n for n in names if n != "output"]
    out = {resolve_layer(name, names) for name in requested}
    return sorted(out, key=list(names).index)
